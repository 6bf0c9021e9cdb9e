//! The simulator's randomness is the workspace generator [`p2p_core::rng`]; this module adds
//! the running hash of the determinism check.

pub use p2p_core::rng::{Rng, derive, splitmix64};

/// A 64-bit FNV-1a style running hash used for the determinism check.
#[derive(Clone, Copy, Debug)]
pub struct RunHash(u64);

impl Default for RunHash {
    fn default() -> Self {
        RunHash(0xcbf2_9ce4_8422_2325)
    }
}

impl RunHash {
    /// Mixes `x` into the hash.
    pub fn u64(&mut self, x: u64) {
        self.0 = splitmix64(self.0 ^ x).wrapping_mul(0x0000_0100_0000_01b3);
    }

    /// Mixes bytes into the hash.
    pub fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.u64(u64::from_le_bytes(last) ^ (b.len() as u64) << 56);
    }

    /// The hash value.
    pub fn value(&self) -> u64 {
        self.0
    }
}
