//! Deterministic, keyed hashing for the core's tables.
//!
//! A random per-process hasher would make iteration order (and so the order of outputs) differ
//! between runs, so every table hashes with a key derived from the configured seed. Tables keyed
//! by what a peer chooses (artifact ids) hash with SipHash-1-3, a keyed function built to resist
//! chosen collisions while its key is secret: with a weak or known key a peer could craft advert
//! ids that collide and turn every lookup into a scan. A live node must draw that seed from the
//! operating system (the drivers do) and record it in its trace, so replay stays exact. Tables
//! keyed by what the node itself or the registry chooses (request ids, member ids) use a fast
//! word mixer instead.

use std::hash::{BuildHasher, Hash};

use siphasher::sip::SipHasher13;

/// Builds SipHash-1-3 hashers with a fixed secret key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SaltedState {
    k0: u64,
    k1: u64,
}

impl SaltedState {
    /// A hasher state keyed from `key` (expanded to SipHash's 128-bit key).
    pub(crate) fn new(key: u64) -> Self {
        SaltedState {
            k0: key,
            k1: key.rotate_left(32) ^ 0x5851_f42d_4c95_7f2d,
        }
    }
}

impl BuildHasher for SaltedState {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// Builds [`FastHasher`]s: for keys no peer chooses (request ids, the registry's member ids).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState(pub u64);

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// A multiply-xorshift hasher over 8-byte words, seeded. Fast, deterministic, and no defence
/// against chosen keys: only for keys that no peer chooses.
pub(crate) struct FastHasher(u64);

#[inline]
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (x >> 29)
}

impl std::hash::Hasher for FastHasher {
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

/// A keyed hash of `value`: the source tie-break and advert digests use it.
pub(crate) fn keyed_hash(state: &SaltedState, value: impl Hash) -> u64 {
    state.hash_one(value)
}

/// A hash map keyed by what a peer chooses: SipHash-1-3 with the node's secret key.
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, SaltedState>;
/// A hash map keyed by what no peer chooses: the fast deterministic hasher.
pub(crate) type FastMap<K, V> = hashbrown::HashMap<K, V, FastState>;
/// A hash set keyed by what no peer chooses.
pub(crate) type FastSet<K> = hashbrown::HashSet<K, FastState>;

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

#[cfg(test)]
mod tests {
    use super::{SaltedState, keyed_hash};
    use crate::ArtifactId;
    use std::collections::HashSet;

    /// Ids whose hash under `state` has the same low `bits` bits: what hashbrown uses to pick a
    /// bucket, so these ids all probe the same few buckets.
    fn crafted(state: &SaltedState, bits: u32, n: usize) -> Vec<ArtifactId> {
        let mask = (1u64 << bits) - 1;
        let mut out = Vec::new();
        let mut i = 0u64;
        while out.len() < n {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            i += 1;
            let id = ArtifactId(id);
            if keyed_hash(state, id) & mask == 0 {
                out.push(id);
            }
        }
        out
    }

    #[test]
    fn ids_crafted_to_collide_under_one_key_spread_out_under_another() {
        let known = SaltedState::new(0);
        let ids = crafted(&known, 8, 200);
        let buckets = |s: &SaltedState| -> usize {
            ids.iter()
                .map(|id| keyed_hash(s, id) & 0xff)
                .collect::<HashSet<_>>()
                .len()
        };
        assert_eq!(buckets(&known), 1, "crafted against the known key");
        // 200 ids in 256 buckets: about 140 distinct buckets expected when the key is unknown.
        let secret = SaltedState::new(0x1234_5678_9abc_def0);
        assert!(buckets(&secret) > 100, "{} buckets", buckets(&secret));
    }

    #[test]
    fn the_key_changes_every_hash() {
        let (a, b) = (SaltedState::new(1), SaltedState::new(2));
        let id = ArtifactId([7; 32]);
        assert_ne!(keyed_hash(&a, id), keyed_hash(&b, id));
        assert_eq!(keyed_hash(&a, id), keyed_hash(&SaltedState::new(1), id));
    }
}
