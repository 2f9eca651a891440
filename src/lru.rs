//! A string-keyed map that remembers the order in which its entries were last used, for every map
//! in the process that grows with clients (store shards, the deny cache, alert and event
//! bookkeeping). Every operation is O(1): entries live in a slab linked into one recency list by
//! slab indices, and a `HashTable` of slab indices finds them by key, so a key is stored once.
//!
//! The map itself never refuses an insert nor evicts on its own: the owner decides what to drop
//! (usually from [`Lru::oldest`] towards [`Lru::newer`]) before inserting, so that what "full"
//! means (an entry limiting a client, an expired one) stays with the code that knows.
//!
//! Keys carry a one-byte tag so that several kinds of entries (counters, blocks, ...) share one
//! recency order without their key spaces colliding and without building a prefixed key per
//! lookup.

use hashbrown::HashTable;

/// End of the recency list.
const NIL: u32 = u32::MAX;

/// Most entries one map can index (indices are `u32` to keep nodes small).
pub(crate) const MAX_ENTRIES: usize = (u32::MAX - 1) as usize;

/// Where an entry lives; valid until that entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(u32);

#[derive(Debug)]
struct Node<V> {
    tag: u8,
    key: Box<str>,
    value: V,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
}

pub(crate) struct Lru<V> {
    table: HashTable<u32>,
    nodes: Vec<Option<Node<V>>>,
    /// Free slab indices, reused before the slab grows.
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    hasher: ahash::RandomState,
}

impl<V> std::fmt::Debug for Lru<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru").field("len", &self.len()).finish()
    }
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Lru {
            table: HashTable::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hasher: ahash::RandomState::new(),
        }
    }
}

fn hash_of(hasher: &ahash::RandomState, tag: u8, key: &str) -> u64 {
    hasher.hash_one((tag, key))
}

impl<V> Lru<V> {
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    fn node(&self, i: u32) -> Option<&Node<V>> {
        self.nodes.get(i as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, i: u32) -> Option<&mut Node<V>> {
        self.nodes.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// The entry of `(tag, key)`, without changing its recency.
    pub(crate) fn find(&self, tag: u8, key: &str) -> Option<Slot> {
        let hash = hash_of(&self.hasher, tag, key);
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| {
                nodes
                    .get(i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|n| n.tag == tag && &*n.key == key)
            })
            .map(|&i| Slot(i))
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<&V> {
        self.node(slot.0).map(|n| &n.value)
    }

    pub(crate) fn get_mut(&mut self, slot: Slot) -> Option<&mut V> {
        self.node_mut(slot.0).map(|n| &mut n.value)
    }

    /// Tag, key and value of an entry.
    pub(crate) fn entry(&self, slot: Slot) -> Option<(u8, &str, &V)> {
        self.node(slot.0).map(|n| (n.tag, &*n.key, &n.value))
    }

    /// The least recently used entry.
    pub(crate) fn oldest(&self) -> Option<Slot> {
        (self.oldest != NIL).then_some(Slot(self.oldest))
    }

    /// The entry used just after `slot`.
    pub(crate) fn newer(&self, slot: Slot) -> Option<Slot> {
        self.node(slot.0)
            .filter(|n| n.newer != NIL)
            .map(|n| Slot(n.newer))
    }

    fn unlink(&mut self, i: u32) {
        let Some((newer, older)) = self.node(i).map(|n| (n.newer, n.older)) else {
            return;
        };
        match self.node_mut(newer) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.node_mut(older) {
            Some(n) => n.newer = newer,
            None => self.oldest = newer,
        }
    }

    fn link_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        if let Some(n) = self.node_mut(i) {
            n.newer = NIL;
            n.older = old_newest;
        }
        match self.node_mut(old_newest) {
            Some(n) => n.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
    }

    /// Mark an entry as just used.
    pub(crate) fn touch(&mut self, slot: Slot) {
        if self.newest == slot.0 || self.node(slot.0).is_none() {
            return;
        }
        self.unlink(slot.0);
        self.link_newest(slot.0);
    }

    /// Insert a new entry as the most recently used one; an existing entry of the same key gets
    /// the new value and is touched. The caller keeps the map within its bound (see the module
    /// docs); past [`MAX_ENTRIES`] nothing is inserted and `None` is returned.
    pub(crate) fn insert(&mut self, tag: u8, key: &str, value: V) -> Option<Slot> {
        if let Some(slot) = self.find(tag, key) {
            if let Some(v) = self.get_mut(slot) {
                *v = value;
            }
            self.touch(slot);
            return Some(slot);
        }
        let node = Node {
            tag,
            key: key.into(),
            value,
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                i
            }
            None if self.nodes.len() < MAX_ENTRIES => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
            None => return None,
        };
        let Lru {
            table,
            nodes,
            hasher,
            ..
        } = self;
        table.insert_unique(hash_of(hasher, tag, key), i, |&j| {
            nodes
                .get(j as usize)
                .and_then(Option::as_ref)
                .map_or(0, |n| hash_of(hasher, n.tag, &n.key))
        });
        self.link_newest(i);
        Some(Slot(i))
    }

    /// Remove an entry; returns its tag and value.
    pub(crate) fn remove(&mut self, slot: Slot) -> Option<(u8, V)> {
        let i = slot.0;
        let hash = self.node(i).map(|n| hash_of(&self.hasher, n.tag, &n.key))?;
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.unlink(i);
        let node = self.nodes.get_mut(i as usize)?.take()?;
        self.free.push(i);
        Some((node.tag, node.value))
    }

    pub(crate) fn remove_key(&mut self, tag: u8, key: &str) -> Option<V> {
        let slot = self.find(tag, key)?;
        self.remove(slot).map(|(_, v)| v)
    }

    /// Keep only the entries for which `keep` is true; returns how many were removed. O(slab).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u8, &str, &mut V) -> bool) -> usize {
        let mut removed = 0;
        for i in 0..self.nodes.len() {
            let i = i as u32;
            let drop = match self.node_mut(i) {
                Some(n) => !keep(n.tag, &n.key, &mut n.value),
                None => false,
            };
            if drop && self.remove(Slot(i)).is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// Every entry as `(tag, key, value)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u8, &str, &V)> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.as_ref().map(|n| (n.tag, &*n.key, &n.value)))
    }

    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.nodes.clear();
        self.free.clear();
        self.newest = NIL;
        self.oldest = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys from the least to the most recently used.
    fn order(l: &Lru<u32>) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = l.oldest();
        while let Some(slot) = s {
            out.push(l.entry(slot).unwrap().1.to_string());
            s = l.newer(slot);
        }
        out
    }

    #[test]
    fn recency_order_follows_use() {
        let mut l = Lru::default();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            l.insert(0, k, i as u32);
        }
        assert_eq!(order(&l), ["a", "b", "c"]);
        let a = l.find(0, "a").unwrap();
        l.touch(a);
        assert_eq!(order(&l), ["b", "c", "a"]);
        // Re-inserting replaces the value and touches.
        l.insert(0, "b", 9);
        assert_eq!(order(&l), ["c", "a", "b"]);
        assert_eq!(l.get(l.find(0, "b").unwrap()), Some(&9));
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn tags_separate_key_spaces() {
        let mut l = Lru::default();
        l.insert(0, "k", 1);
        l.insert(1, "k", 2);
        assert_eq!(l.len(), 2);
        assert_eq!(l.remove_key(1, "k"), Some(2));
        assert_eq!(l.get(l.find(0, "k").unwrap()), Some(&1));
        assert!(l.find(1, "k").is_none());
    }

    #[test]
    fn remove_and_retain_keep_the_list_consistent() {
        let mut l = Lru::default();
        for i in 0..10u32 {
            l.insert(0, &i.to_string(), i);
        }
        let oldest = l.oldest().unwrap();
        assert_eq!(l.remove(oldest), Some((0, 0)));
        assert_eq!(l.retain(|_, _, v| *v % 2 == 0), 5);
        assert_eq!(order(&l), ["2", "4", "6", "8"]);
        // Freed slots are reused.
        l.insert(0, "x", 100);
        l.insert(0, "y", 101);
        assert_eq!(order(&l), ["2", "4", "6", "8", "x", "y"]);
        assert_eq!(l.nodes.len(), 10);
        l.clear();
        assert!(l.is_empty());
        assert!(l.oldest().is_none());
        l.insert(0, "z", 1);
        assert_eq!(order(&l), ["z"]);
    }
}
