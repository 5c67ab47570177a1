use std::path::Path;

pub fn run(store_dir: &Path) -> anyhow::Result<i32> {
    let store = super::open_store(store_dir)?;
    for (name, rec) in store.index().list_tags()? {
        println!("{name}\t{}", rec.manifest);
    }
    Ok(0)
}
