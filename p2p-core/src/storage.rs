//! Where a receiver assembles a chunked artifact.
//!
//! A swarm writes every verified chunk in place into one buffer of the artifact's size and, once
//! the last chunk is written, freezes that buffer into the delivered (and pooled) artifact with
//! no copy. The buffer comes from the node's [`Storage`] (`Config::storage`): memory by default
//! ([`Memory`]), or the embedder's own, for example a file mapped into memory, so that artifacts
//! larger than the node's memory can be carried (`p2p-store`'s `FileStorage` is one).
//!
//! The core only writes into the buffer and reads from it, as memory: it opens no file. A
//! storage whose pages are backed by a disk may make a write wait for that disk (a page fault),
//! on the task that runs the core.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Makes the buffers chunked artifacts are assembled in.
pub trait Storage: Send + Sync {
    /// A writable buffer of exactly `len` bytes. Its contents before they are written do not
    /// matter: every byte is written before the buffer is frozen. A buffer of another length is
    /// not used (the node assembles that artifact in memory instead).
    fn allocate(&self, len: usize) -> Box<dyn Buffer>;
}

/// One artifact's buffer: written chunk by chunk, then frozen into the artifact.
pub trait Buffer: Send {
    /// The buffer's bytes.
    fn as_slice(&self) -> &[u8];
    /// The buffer's bytes, to write.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// The buffer as the immutable artifact, with no copy.
    fn freeze(self: Box<Self>) -> Bytes;
}

/// A shared handle to a [`Storage`].
#[derive(Clone)]
pub struct StorageRef(pub Arc<dyn Storage>);

impl StorageRef {
    /// Wraps a storage.
    pub fn new(s: impl Storage + 'static) -> Self {
        StorageRef(Arc::new(s))
    }

    /// The default: buffers in memory ([`Memory`]).
    pub fn memory() -> Self {
        StorageRef::new(Memory)
    }

    /// A buffer of `len` bytes from this storage, or from memory if the storage's buffer is not
    /// of that length (an embedder can make the artifacts it publishes this way too).
    pub fn buffer(&self, len: usize) -> Box<dyn Buffer> {
        let buf = self.0.allocate(len);
        if buf.as_slice().len() == len {
            buf
        } else {
            Memory.allocate(len)
        }
    }
}

impl Default for StorageRef {
    fn default() -> Self {
        StorageRef::memory()
    }
}

impl fmt::Debug for StorageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Storage")
    }
}

/// Buffers on the heap, zeroed at allocation (where the allocator maps large blocks lazily,
/// pages not yet written cost no memory).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory;

impl Storage for Memory {
    fn allocate(&self, len: usize) -> Box<dyn Buffer> {
        Box::new(MemoryBuffer(BytesMut::zeroed(len)))
    }
}

struct MemoryBuffer(BytesMut);

impl Buffer for MemoryBuffer {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    fn freeze(self: Box<Self>) -> Bytes {
        self.0.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage that hands out buffers of the wrong length.
    struct Short;

    impl Storage for Short {
        fn allocate(&self, len: usize) -> Box<dyn Buffer> {
            Memory.allocate(len / 2)
        }
    }

    #[test]
    fn a_buffer_of_the_wrong_length_is_replaced_by_one_in_memory() {
        let s = StorageRef::new(Short);
        let mut b = s.buffer(1000);
        assert_eq!(b.as_slice().len(), 1000);
        b.as_mut_slice()[999] = 7;
        assert_eq!(b.freeze()[999], 7);
    }

    #[test]
    fn a_memory_buffer_freezes_without_a_copy() {
        let mut b = StorageRef::memory().buffer(4096);
        b.as_mut_slice()[..3].copy_from_slice(b"abc");
        let at = b.as_slice().as_ptr();
        let frozen = b.freeze();
        assert_eq!(&frozen[..3], b"abc");
        assert_eq!(frozen.as_ptr(), at);
    }
}
