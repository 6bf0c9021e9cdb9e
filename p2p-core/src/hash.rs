//! Deterministic, keyed hashing for the core's tables.
//!
//! A random per-process hasher would make iteration order (and so the order of outputs) differ
//! between runs; an unkeyed one would let a peer choose advert ids that collide in our tables.
//! The core's tables therefore hash with a key derived from the configured seed.

use std::hash::{BuildHasher, Hasher};

/// Builds [`SaltedHasher`]s with a fixed salt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SaltedState(pub u64);

impl BuildHasher for SaltedState {
    type Hasher = SaltedHasher;
    fn build_hasher(&self) -> SaltedHasher {
        SaltedHasher(self.0)
    }
}

/// A multiply-xorshift hasher over 8-byte words, seeded with a salt.
pub(crate) struct SaltedHasher(u64);

#[inline]
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (x >> 29)
}

impl Hasher for SaltedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = mix(self.0 ^ w);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.0 = mix(self.0 ^ u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with the core's keyed, deterministic hasher.
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, SaltedState>;
/// A hash set with the core's keyed, deterministic hasher.
pub(crate) type Set<K> = hashbrown::HashSet<K, SaltedState>;

/// A table of values keyed by an id that the value itself holds, so the 32-byte key is stored
/// once.
pub(crate) struct KeyedTable<K, V> {
    table: hashbrown::HashTable<V>,
    hasher: SaltedState,
    key: fn(&V) -> &K,
}

impl<K: std::hash::Hash + Eq, V> KeyedTable<K, V> {
    pub(crate) fn new(hasher: SaltedState, key: fn(&V) -> &K) -> Self {
        KeyedTable {
            table: hashbrown::HashTable::new(),
            hasher,
            key,
        }
    }

    fn hash(&self, k: &K) -> u64 {
        self.hasher.hash_one(k)
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        let key = self.key;
        self.table.find(self.hash(k), |v| key(v) == k)
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let (h, key) = (self.hash(k), self.key);
        self.table.find_mut(h, |v| key(v) == k)
    }

    /// Inserts a value whose key is not in the table yet.
    pub(crate) fn insert_new(&mut self, v: V) {
        let (hasher, key) = (self.hasher, self.key);
        let h = hasher.hash_one(key(&v));
        self.table
            .insert_unique(h, v, move |v| hasher.hash_one(key(v)));
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let (h, key) = (self.hash(k), self.key);
        match self.table.find_entry(h, |v| key(v) == k) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &V> {
        self.table.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut()
    }
}

impl<K: std::hash::Hash + Eq, V> std::ops::Index<&K> for KeyedTable<K, V> {
    type Output = V;
    fn index(&self, k: &K) -> &V {
        self.get(k).expect("key present")
    }
}
