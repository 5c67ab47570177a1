//! Signing keys in PEM: what `openssl` writes, read with RustCrypto's `p256`.
//!
//! - Private: unencrypted PKCS#8 (`PRIVATE KEY`, `openssl genpkey -algorithm EC -pkeyopt
//!   ec_paramgen_curve:P-256`) or SEC1 (`EC PRIVATE KEY`, `openssl ecparam -genkey`).
//! - Public: SubjectPublicKeyInfo (`PUBLIC KEY`, `openssl pkey -pubout`; what `cosign
//!   generate-key-pair` writes as `cosign.pub`).
//!
//! cosign's own encrypted private keys (scrypt + NaCl secretbox) are refused with the openssl
//! commands that make a key strata reads: supporting them needs two more crates and a password
//! prompt, and cosign reads the PKCS#8 keys strata reads (`cosign import-key-pair`).

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a cosign encrypted private key (`{label}`) is not supported yet")]
    CosignEncrypted { label: String },
    #[error("an encrypted PKCS#8 private key is not supported yet")]
    Encrypted,
    #[error("expected {expected}, found a PEM `{label}` block")]
    WrongKind {
        expected: &'static str,
        label: String,
    },
    #[error("no PEM block (`-----BEGIN …-----`) found")]
    NotPem,
    #[error("not an EC P-256 key: {reason}")]
    Invalid { reason: String },
}

impl KeyError {
    /// What to run instead, for the errors a user can fix with openssl.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            KeyError::CosignEncrypted { .. } | KeyError::Encrypted => Some(
                "make a P-256 key strata reads with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem` \
                 (public half: `openssl pkey -in key.pem -pubout -out key.pub`; `cosign import-key-pair --key key.pem` gives cosign the same key), \
                 or decrypt a PKCS#8 key with `openssl pkcs8 -in enc.pem -out key.pem`",
            ),
            KeyError::WrongKind { .. } | KeyError::NotPem | KeyError::Invalid { .. } => Some(
                "strata reads PEM EC P-256 keys: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` to sign, `PUBLIC KEY` to verify",
            ),
        }
    }
}

/// The label of the first PEM block of `pem`.
fn label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = pem[start..].find("-----")?;
    Some(&pem[start..start + len])
}

/// A private key from PEM text.
pub fn signing_key(pem: &str) -> Result<SigningKey, KeyError> {
    let label = label(pem).ok_or(KeyError::NotPem)?;
    let invalid = |e: &dyn std::fmt::Display| KeyError::Invalid {
        reason: e.to_string(),
    };
    match label {
        "PRIVATE KEY" => SigningKey::from_pkcs8_pem(pem).map_err(|e| invalid(&e)),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(pem)
            .map(SigningKey::from)
            .map_err(|e| invalid(&e)),
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
        l if l.starts_with("ENCRYPTED") && (l.contains("COSIGN") || l.contains("SIGSTORE")) => {
            Err(KeyError::CosignEncrypted {
                label: l.to_string(),
            })
        }
        l => Err(KeyError::WrongKind {
            expected: "a private key (`PRIVATE KEY` or `EC PRIVATE KEY`)",
            label: l.to_string(),
        }),
    }
}

/// A public key from PEM text (SubjectPublicKeyInfo).
pub fn verifying_key(pem: &str) -> Result<VerifyingKey, KeyError> {
    match label(pem).ok_or(KeyError::NotPem)? {
        "PUBLIC KEY" => VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Invalid {
            reason: e.to_string(),
        }),
        l => Err(KeyError::WrongKind {
            expected: "a public key (`PUBLIC KEY`)",
            label: l.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_and_foreign_keys_are_refused_with_a_hint() {
        let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let e = signing_key(cosign).unwrap_err();
        assert!(matches!(e, KeyError::CosignEncrypted { .. }), "{e}");
        assert!(e.to_string().contains("not supported yet"));
        assert!(e.hint().unwrap().contains("openssl genpkey"));
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(signing_key(rsa), Err(KeyError::WrongKind { .. })));
        assert!(matches!(signing_key("hello"), Err(KeyError::NotPem)));
        assert!(matches!(
            verifying_key(rsa),
            Err(KeyError::WrongKind { .. })
        ));
    }
}
