//! What the builds of one session share: the lock that makes one step key run once, and the
//! metadata trees of recent parents. A workspace builds its images in one process, each its own
//! [`run`](super::run) with the same [`Shared`] (the session's), so a step two images share runs
//! once and a base two images stand on is read once.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};

use super::layer_tree::Tree;
use crate::plan::key::Key;

/// How many parent trees are kept (each is metadata only: a Debian base is a few MB).
const TREES_KEPT: usize = 8;

/// One parent tree, filled by the first build that needs it (the others wait on its lock).
pub(crate) type TreeSlot = Arc<Mutex<Option<Arc<Tree>>>>;

#[derive(Default)]
pub struct Shared {
    /// Step keys being run now.
    running: Mutex<HashSet<Key>>,
    done: Condvar,
    /// Recent parent trees by their layers (`keys::layers`), oldest first.
    trees: Mutex<Vec<(Key, TreeSlot)>>,
    /// Layer indexes for read-set reuse, by diff_id: a fleet's images share their base's.
    indexes: Mutex<Vec<(strata_cache::Digest, IndexSlot)>>,
}

/// One layer index, filled by the first build that needs it (the others wait on its lock).
pub(crate) type IndexSlot = Arc<Mutex<Option<Arc<crate::readset::LayerIndex>>>>;

/// How many layer indexes are kept in memory (a Debian base's is a few MB).
const INDEXES_KEPT: usize = 64;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared { .. }")
    }
}

impl Shared {
    /// Waits until no other build of the session runs step `key`, then holds it until the
    /// returned lock is dropped (after the step's record is written: the waiting build then
    /// finds it cached instead of running it again).
    pub(crate) fn lock(&self, key: Key) -> KeyLock<'_> {
        let mut set = self.running.lock().unwrap();
        while set.contains(&key) {
            set = self.done.wait(set).unwrap();
        }
        set.insert(key);
        KeyLock { shared: self, key }
    }

    /// The slot of the parent tree of layers `id` (a new empty one, evicting the oldest).
    pub(crate) fn tree_slot(&self, id: Key) -> TreeSlot {
        let mut c = self.trees.lock().unwrap();
        if let Some((_, s)) = c.iter().find(|(k, _)| *k == id) {
            return s.clone();
        }
        if c.len() >= TREES_KEPT {
            c.remove(0);
        }
        let s = TreeSlot::default();
        c.push((id, s.clone()));
        s
    }
}

impl Shared {
    /// The slot of the index of layer `diff_id` (a new empty one, evicting the oldest). Who
    /// holds its lock is making it; [`layer_index`](Self::layer_index) waits for that.
    pub(crate) fn index_slot(&self, diff_id: &strata_cache::Digest) -> IndexSlot {
        let mut c = self.indexes.lock().unwrap();
        if let Some((_, s)) = c.iter().find(|(d, _)| d == diff_id) {
            return s.clone();
        }
        if c.len() >= INDEXES_KEPT {
            c.remove(0);
        }
        let s = IndexSlot::default();
        c.push((*diff_id, s.clone()));
        s
    }

    /// The index of layer `diff_id`, made by `make` the first time. A build that asks while
    /// another makes it waits for that one (indexing a base layer of 100 MB takes a second;
    /// every image of a fleet asks for it at once after a base patch).
    pub(crate) fn layer_index<E>(
        &self,
        diff_id: &strata_cache::Digest,
        make: impl FnOnce() -> Result<Arc<crate::readset::LayerIndex>, E>,
    ) -> Result<Arc<crate::readset::LayerIndex>, E> {
        let slot = self.index_slot(diff_id);
        let mut g = slot.lock().unwrap();
        if let Some(i) = g.as_ref() {
            return Ok(i.clone());
        }
        let i = make()?;
        *g = Some(i.clone());
        Ok(i)
    }
}

/// A step key held by one build ([`Shared::lock`]).
pub(crate) struct KeyLock<'a> {
    shared: &'a Shared,
    key: Key,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        self.shared.running.lock().unwrap().remove(&self.key);
        self.shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_by_one_build_at_a_time() {
        let s = Shared::default();
        let order = Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            let held = s.lock([1; 32]);
            sc.spawn(|| {
                let _l = s.lock([1; 32]);
                order.lock().unwrap().push("second");
            });
            // Another key is not held back.
            drop(s.lock([2; 32]));
            std::thread::sleep(std::time::Duration::from_millis(50));
            order.lock().unwrap().push("first");
            drop(held);
        });
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }

    #[test]
    fn tree_slots_are_shared_by_id_and_the_oldest_is_evicted() {
        let s = Shared::default();
        let a = s.tree_slot([0; 32]);
        assert!(Arc::ptr_eq(&a, &s.tree_slot([0; 32])));
        for i in 1..=TREES_KEPT as u8 {
            s.tree_slot([i; 32]);
        }
        assert!(!Arc::ptr_eq(&a, &s.tree_slot([0; 32])), "evicted");
    }
}
