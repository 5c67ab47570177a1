//! `strata rmi NAME…`: removes tags; the blobs stay until `strata gc`.

use std::path::Path;

use strata_engine::export::ImageName;

use crate::args::RmiArgs;

/// Exit 1 if any name was not a tag in the store (the others are still removed).
pub fn run(store_dir: &Path, a: RmiArgs) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    let mut code = 0;
    for n in &a.names {
        let full = ImageName::parse(n)?.full();
        if store.index().delete_tag(&full)? {
            println!("untagged {full}");
        } else {
            eprintln!("error: no image `{full}` in the store");
            code = 1;
        }
    }
    Ok(code)
}
