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
