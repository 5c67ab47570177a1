//! `strata sign --key KEY IMAGE` and `strata verify-signature --key PUB IMAGE`: cosign
//! signatures (the work is in `strata_engine::sign` and `strata_engine::session::sign`).

use strata_engine::session::sign::SignTarget;
use strata_engine::sign::VerifyError;

use super::{common, Globals};
use crate::args::{SignArgs, VerifySignatureArgs};

pub fn sign(g: &Globals, a: SignArgs) -> anyhow::Result<i32> {
    let key = common::signing_key(&a.key)?;
    let session = g.session()?;
    let target = SignTarget::parse(&session, &a.image)?;
    let signed = session.sign(&target, &key, a.reference.as_deref())?;
    eprintln!("{}", common::signed_line(&signed));
    println!("{}", signed.signature);
    Ok(0)
}

/// Exit 0 verified, 1 no signature or one that does not verify, 2 (an error) otherwise.
pub fn verify(g: &Globals, a: VerifySignatureArgs) -> anyhow::Result<i32> {
    let key = common::verifying_key(&a.key)?;
    let session = g.session()?;
    let target = SignTarget::parse(&session, &a.image)?;
    match session.verify_signature(&target, &key) {
        Ok(v) => {
            println!(
                "verified: {} is signed by `{}` (docker-reference `{}`, {})",
                v.image,
                a.key.display(),
                v.verified.docker_reference,
                v.at
            );
            Ok(0)
        }
        Err(e) if e.downcast_ref::<VerifyError>().is_some() => {
            eprintln!("not verified: {}: {}", a.image, crate::render(&e));
            Ok(1)
        }
        Err(e) => Err(e),
    }
}
