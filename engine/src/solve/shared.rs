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
}

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
