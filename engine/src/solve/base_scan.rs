//! One read of a new base image's layers for what its stage will ask of them.
//!
//! After a base patch every image of a fleet stands on layers the store has never seen, and
//! two things are derived from them: the read-set index of each layer (a RUN checks its
//! observations against it: `reuse`) and the metadata tree of the whole base (the parent facts
//! of a first COPY: `copy::parent_tree`). Each used to read the base by itself: two inflations
//! of the same bytes, in each other's way on a small machine. [`scan`] makes both in one pass,
//! from the image's OCI layout while the store imports the blobs, and leaves them in the
//! session's slots ([`Shared`]) where those two look. It holds the slots while it reads, so
//! they wait for it instead of starting a read of their own; a slot it could not fill (an
//! error, a layer it did not read) is left empty, and whoever needs it reads the layer as
//! before and meets the error there.
//!
//! Soundness: the pass checks the sha256 of the tar stream against the layer's diff_id
//! ([`LayerIndex::build_from_with`]) and keeps nothing of a layer that fails it, so what it
//! derives describes the layer whatever file the bytes came from.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, MutexGuard};

use strata_cache::Store;

use super::keys;
use super::layer_tree::TreeBuilder;
use super::shared::{IndexSlot, TreeSlot};
use crate::image::{BaseImage, BlobSource};
use crate::readset::LayerIndex;
use crate::solve::Shared;

/// A registry base's fresh layers as its import downloads them: the scan reads each from a
/// [`FeedReader`] while the store writes it ([`Feeds::observer`], `commit::import_base_fed`),
/// so the base is read once and the reading overlaps the download.
pub(crate) struct Feeds(Vec<Option<SyncSender<Vec<u8>>>>);

/// Chunks of a download a reader may lag behind (the registry fetcher hands over up to 256 KiB
/// at a time: 2 MiB at most in flight per layer).
const FEED_CHUNKS: usize = 8;

/// The feeds of the `fresh` layers, and their readers (one per layer, `None` where not fresh).
pub(crate) fn feeds(fresh: &[bool]) -> (Feeds, Vec<Option<FeedReader>>) {
    let (tx, rx) = fresh
        .iter()
        .map(|&f| {
            if !f {
                return (None, None);
            }
            let (tx, rx) = sync_channel(FEED_CHUNKS);
            (
                Some(tx),
                Some(FeedReader {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                }),
            )
        })
        .unzip();
    (Feeds(tx), rx)
}

impl Feeds {
    /// What the download of layer `i` is shown to; dropping it ends the reader's stream.
    pub(crate) fn observer(&mut self, i: usize) -> impl FnMut(&[u8]) -> bool {
        let mut tx = self.0.get_mut(i).and_then(Option::take);
        move |bytes| match &tx {
            Some(t) if t.send(bytes.to_vec()).is_ok() => true,
            _ => {
                // The reader is gone (it did not want this layer, or stopped).
                tx = None;
                false
            }
        }
    }
}

/// The bytes of one download, in order; the end of the stream when the download stops (the
/// diff_id check tells a stream cut short).
pub(crate) struct FeedReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What the stage will ask of its base.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wants {
    /// A RUN may be reused by read set: it needs every base layer's index.
    pub index: bool,
    /// The first step is a COPY whose key takes the parent's facts from the shared tree.
    pub tree: bool,
}

/// Reads the layers of `img` marked `fresh` (the store had no blob of them when the stage
/// started), once each, making what `wants` asks for (module docs): from the image's OCI
/// layout while the store imports them, or, for a registry base, from `feeds` as the import
/// downloads them (else from the store, once they are there). `claimed` is called as soon as the slots this scan will fill are held (or it has
/// found nothing to do): a caller that waits for it before going on is sure that its own
/// requests wait for this scan rather than race it.
pub(crate) fn scan(
    store: &Store,
    shared: &Shared,
    img: &BaseImage,
    fresh: &[bool],
    mut feeds: Vec<Option<FeedReader>>,
    wants: Wants,
    claimed: impl FnOnce(),
) {
    if !wants.index || !fresh.contains(&true) {
        return claimed();
    }
    feeds.resize_with(img.layers.len(), || None);
    // Where a fresh layer's bytes are: its feed (a registry base being downloaded), else the
    // layout's file until the store has the blob, else the store's.
    let file = |l: &crate::image::LayerDesc| match &img.source {
        BlobSource::Layout(dir) if !store.blobs().contains(&l.digest) => {
            Some(dir.join("blobs/sha256").join(l.digest.hex()))
        }
        _ if store.blobs().contains(&l.digest) => Some(store.blobs().path(&l.digest)),
        // A registry base's layer not imported yet, and no feed: nothing local to read.
        _ => None,
    };
    let readable: Vec<bool> = img
        .layers
        .iter()
        .zip(&feeds)
        .map(|(l, f)| f.is_some() || file(l).is_some())
        .collect();
    // The index slots of the fresh layers that nobody has made or is making, and that the
    // store has no index file of (those are loaded, not read).
    let slots: Vec<Option<IndexSlot>> = img
        .layers
        .iter()
        .zip(fresh.iter().zip(&readable))
        .map(|(l, (&f, &r))| (f && r).then(|| shared.index_slot(&l.diff_id)))
        .collect();
    let mut held: Vec<Option<MutexGuard<'_, Option<Arc<LayerIndex>>>>> = slots
        .iter()
        .map(|s| {
            s.as_ref()
                .and_then(|s| s.try_lock().ok())
                .filter(|g| g.is_none())
        })
        .collect();
    for (l, g) in img.layers.iter().zip(held.iter_mut()) {
        if let Some(g) = g {
            if let Some(ix) = LayerIndex::load(store, l) {
                **g = Some(Arc::new(ix));
            }
        }
    }
    for g in held.iter_mut() {
        if g.as_ref().is_some_and(|g| g.is_some()) {
            *g = None;
        }
    }
    // The tree, when every layer is read here. (A base with layers the store has already, under
    // a new top layer, is left to the COPY's own scan: reading those first here would hold
    // back the download of the new one, which waits for this reader.)
    let tree_slot: Option<TreeSlot> = (wants.tree && held.iter().all(Option::is_some))
        .then(|| shared.tree_slot(keys::layers(&img.layers)));
    let mut tree_held = tree_slot
        .as_ref()
        .and_then(|s| s.try_lock().ok())
        .filter(|g| g.is_none());
    claimed();

    let mut tree = tree_held.is_some().then(TreeBuilder::metadata_only);
    for ((l, g), feed) in img.layers.iter().zip(held.iter_mut()).zip(feeds) {
        let dg = l.digest.to_string();
        if let Some(t) = tree.as_mut() {
            t.begin_layer();
        }
        let Some(slot) = g else {
            // Not read here (then there is no tree either: see `tree_slot`).
            continue;
        };
        let mut also = |le: &mut crate::layer::LayerEntry<'_, crate::layer::HashedStream>| {
            let failed = match tree.as_mut() {
                Some(t) => t.entry(le, &dg).is_err(),
                None => false,
            };
            if failed {
                tree = None;
            }
        };
        let built = match (feed, file(l)) {
            (Some(feed), _) => LayerIndex::build_from_reader(Box::new(feed), l, &mut also),
            (None, Some(file)) => LayerIndex::build_from_with(&file, l, &mut also),
            (None, None) => unreachable!("a layer with nothing to read is not held"),
        };
        match built.and_then(|ix| ix.save(store, l).map(|()| ix)) {
            Ok(ix) => **slot = Some(Arc::new(ix)),
            Err(_) => {
                // Left empty: the RUN that needs this index reads the layer and meets the error.
                tree = None;
                *g = None;
            }
        }
    }
    if let (Some(g), Some(t)) = (tree_held.as_mut(), tree) {
        **g = Some(Arc::new(t.finish()));
    }
}

/// Whether [`scan`] left a tree for `img` (tests).
#[cfg(test)]
pub(crate) fn tree_of(shared: &Shared, img: &BaseImage) -> Option<Arc<super::layer_tree::Tree>> {
    shared
        .tree_slot(keys::layers(&img.layers))
        .lock()
        .unwrap()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::LayerDesc;
    use crate::layer::{write_layer, Compression, Entry as LEntry, EntryKind as LKind};
    use crate::solve::layer_tree::{NodeKind, Tree};

    /// Two layers of a base in an OCI layout's `blobs/sha256` (the second removes a file and
    /// adds a symlink), and the image that names them.
    fn base(dir: &std::path::Path) -> BaseImage {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let lower = vec![
            LEntry::dir("etc", 0o755, 0, 0, 5),
            LEntry::file_bytes("etc/passwd", 0o644, 5, b"root:x:0:0\n"),
            LEntry::file_bytes("etc/old", 0o644, 5, b"old"),
            LEntry::dir("usr/lib", 0o750, 0, 0, 5),
        ];
        let mut upper = vec![LEntry::file_bytes("etc/.wh.old", 0o644, 5, b"")];
        upper.push(LEntry {
            path: "lib".into(),
            kind: LKind::Symlink {
                target: "usr/lib".into(),
            },
            ..LEntry::dir("", 0o777, 0, 0, 5)
        });
        let layers = [lower, upper]
            .into_iter()
            .map(|es| {
                let es = crate::layer::canonicalize(es, 0).unwrap();
                let mut blob = Vec::new();
                let out = write_layer(&es, Compression::Gzip, &mut blob).unwrap();
                std::fs::write(blobs.join(out.digest.hex()), &blob).unwrap();
                LayerDesc {
                    digest: out.digest,
                    size: blob.len() as u64,
                    media_type: out.media_type.to_string(),
                    diff_id: out.diff_id,
                }
            })
            .collect();
        BaseImage {
            reference: "oci-layout://base".into(),
            source: BlobSource::Layout(dir.to_path_buf()),
            pinned: strata_cache::Digest::of(b"m"),
            manifest_digest: strata_cache::Digest::of(b"m"),
            config_digest: strata_cache::Digest::of(b"c"),
            config: serde_json::json!({}),
            layers,
        }
    }

    /// A store, and a two-layer base in an OCI layout beside it (`tmp/layout`).
    fn fixture() -> (tempfile::TempDir, Store, BaseImage) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let img = base(&tmp.path().join("layout"));
        (tmp, store, img)
    }

    /// [`scan`] without feeds, not waited for.
    fn run(store: &Store, shared: &Shared, img: &BaseImage, fresh: &[bool], wants: Wants) {
        scan(store, shared, img, fresh, Vec::new(), wants, || {});
    }

    /// Whether layer `i`'s index is in the session's slot.
    fn made(shared: &Shared, img: &BaseImage, i: usize) -> bool {
        shared
            .index_slot(&img.layers[i].diff_id)
            .lock()
            .unwrap()
            .is_some()
    }

    const BOTH: Wants = Wants {
        index: true,
        tree: true,
    };

    /// One pass fills every layer's index slot and the base's tree slot, before it returns and
    /// after it said the slots were held; the tree is the one `Tree::scan` reads from the
    /// store, and the indexes are kept in the store too.
    #[test]
    fn one_pass_makes_the_indexes_and_the_tree() {
        let (tmp, store, img) = fixture();
        let shared = Shared::default();
        let mut said = false;
        scan(
            &store,
            &shared,
            &img,
            &[true, true],
            Vec::new(),
            BOTH,
            || said = true,
        );
        assert!(said);
        for l in &img.layers {
            assert!(shared.index_slot(&l.diff_id).lock().unwrap().is_some());
            assert!(LayerIndex::load(&store, l).is_some(), "kept in the store");
        }
        let tree = tree_of(&shared, &img).expect("the tree was made in the same pass");
        assert!(
            tree.get("etc/old").is_none(),
            "the upper layer's whiteout applied"
        );
        assert_eq!(
            tree.get("lib").unwrap().kind,
            NodeKind::Symlink("usr/lib".into())
        );
        crate::solve::import_base(&store, &img).unwrap();
        let spool = tmp.path().join("spool");
        let scanned = Tree::scan(store.blobs(), &img.layers, &|_| false, &spool).unwrap();
        assert_eq!(tree.nodes, scanned.nodes);
    }

    /// A layer whose bytes are not its diff_id: nothing of the pass is kept (no index, no
    /// tree), so whoever needs them reads the layer and meets the error.
    #[test]
    fn a_layer_that_is_not_its_diff_id_leaves_the_slots_empty() {
        let (_tmp, store, mut img) = fixture();
        img.layers[1].diff_id = strata_cache::Digest::of(b"a lie");
        let shared = Shared::default();
        run(&store, &shared, &img, &[true, true], BOTH);
        assert!(made(&shared, &img, 0));
        assert!(!made(&shared, &img, 1));
        assert!(LayerIndex::load(&store, &img.layers[1]).is_none());
        assert!(tree_of(&shared, &img).is_none());
    }

    /// Slots filled or held by someone else are left to them; the tree is made only when the
    /// stage asks for it; a base whose blobs the store has is not read.
    #[test]
    fn what_is_not_wanted_or_someone_else_makes_is_left_alone() {
        let (_tmp, store, img) = fixture();
        let shared = Shared::default();
        let slot = shared.index_slot(&img.layers[0].diff_id);
        let busy = slot.lock().unwrap();
        run(&store, &shared, &img, &[true, true], BOTH);
        drop(busy);
        assert!(slot.lock().unwrap().is_none(), "held by another: not made");
        assert!(
            tree_of(&shared, &img).is_none(),
            "a layer not read: no tree"
        );
        assert!(made(&shared, &img, 1));

        let shared = Shared::default();
        let index_only = Wants {
            index: true,
            tree: false,
        };
        run(&store, &shared, &img, &[true, true], index_only);
        assert!(tree_of(&shared, &img).is_none());

        crate::solve::import_base(&store, &img).unwrap();
        let shared = Shared::default();
        run(&store, &shared, &img, &[false, false], BOTH);
        assert!(tree_of(&shared, &img).is_none(), "no fresh layer: no pass");
    }

    /// A registry's blobs, as a test double: copied from a directory.
    struct FromDir(std::path::PathBuf);

    impl crate::image::BlobFetcher for FromDir {
        fn fetch(
            &self,
            l: &LayerDesc,
            store: &strata_cache::BlobStore,
        ) -> Result<(), crate::image::BlobFetchError> {
            let file = self.0.join("blobs/sha256").join(l.digest.hex());
            store.import_file(&file, Some(&l.digest))?;
            Ok(())
        }
        fn origin(&self) -> String {
            "a test directory".into()
        }
    }

    /// A registry base has nothing local to read before its import (the scan holds nothing,
    /// so the steps read it themselves); after it, the one pass reads the store's blobs.
    #[test]
    fn a_registry_base_is_read_from_the_store_after_its_import() {
        let (tmp, store, mut img) = fixture();
        img.source = BlobSource::Fetcher(Arc::new(FromDir(tmp.path().join("layout"))));
        let shared = Shared::default();
        run(&store, &shared, &img, &[true, true], BOTH);
        assert!(tree_of(&shared, &img).is_none());
        assert!(!made(&shared, &img, 0) && !made(&shared, &img, 1));
        crate::solve::import_base(&store, &img).unwrap();
        std::fs::remove_dir_all(tmp.path().join("layout")).unwrap();
        run(&store, &shared, &img, &[true, true], BOTH);
        assert!(tree_of(&shared, &img).is_some());
        assert!(made(&shared, &img, 0) && made(&shared, &img, 1));
    }

    /// A registry base read as it downloads: the import shows each fresh layer's bytes to the
    /// scan's feed, and the one pass makes the indexes and the tree from them.
    #[test]
    fn a_registry_base_is_read_from_its_download() {
        let (tmp, store, mut img) = fixture();
        let fetcher = Arc::new(FromDir(tmp.path().join("layout")));
        img.source = BlobSource::Fetcher(fetcher.clone());
        let shared = Shared::default();
        let fresh = [true, true];
        let (mut feeds, readers) = feeds(&fresh);
        std::thread::scope(|sc| {
            let (claimed, is_claimed) = sync_channel(1);
            let scanning = sc.spawn(|| {
                scan(&store, &shared, &img, &fresh, readers, BOTH, move || {
                    claimed.send(()).unwrap()
                })
            });
            is_claimed.recv().unwrap();
            crate::solve::commit::import_base_fed(&store, &img, Some(&mut feeds)).unwrap();
            scanning.join().unwrap();
        });
        assert!(made(&shared, &img, 0) && made(&shared, &img, 1));
        assert!(tree_of(&shared, &img).is_some());
    }

    /// A download that ends before the layer does (a cut connection, a retry): the stream
    /// fails the diff_id check, and the slots are left empty for the steps to fill.
    #[test]
    fn a_cut_download_leaves_the_slots_empty() {
        let (_tmp, store, img) = fixture();
        let shared = Shared::default();
        let fresh = [true, true];
        let (mut feeds, readers) = feeds(&fresh);
        std::thread::scope(|sc| {
            let scanning = sc.spawn(|| scan(&store, &shared, &img, &fresh, readers, BOTH, || {}));
            for i in 0..2 {
                let mut show = feeds.observer(i);
                show(b"\x1f\x8b\x08\x00 and then nothing");
            }
            scanning.join().unwrap();
        });
        assert!(!made(&shared, &img, 0) && !made(&shared, &img, 1));
        assert!(tree_of(&shared, &img).is_none());
    }
}
