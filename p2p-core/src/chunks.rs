//! Chunked content addressing: how an artifact larger than one chunk is named and verified.
//!
//! Every artifact id is the SHA-256 of the artifact's *root*:
//! - an artifact of at most `chunk_size` bytes is its own root: its id is the SHA-256 of its
//!   bytes, as for any small artifact;
//! - a larger artifact is cut into chunks of [`chunk_size_for`] its size (the subnet's
//!   `chunk_size` for large artifacts, smaller ones down to [`SMALL_CHUNK_SIZE`] for mid-sized
//!   ones; the last chunk shorter or equal), and its root is its [`Manifest`]: [`MANIFEST_TAG`],
//!   the size, the chunk size and the SHA-256 of every chunk in order.
//!
//! The two cases cannot name the same bytes twice: a root that begins with [`MANIFEST_TAG`] is a
//! manifest by definition, so a small artifact whose bytes begin with the tag is refused (at
//! publish and on receipt), and a manifest must describe at least two chunks. A receiver checks
//! the root it fetched against the id with one SHA-256, then every chunk against the manifest as
//! it arrives, from any peer.
//!
//! Manifest layout (little-endian), `40 + 32 × count` bytes:
//!
//! | bytes         | field                                           |
//! |---------------|-------------------------------------------------|
//! | 0..24         | [`MANIFEST_TAG`]                                |
//! | 24..32        | `size: u64`, the artifact's size in bytes       |
//! | 32..36        | `chunk_size: u32`                               |
//! | 36..40        | `count: u32` = ceil(size / chunk_size), at least 2 |
//! | 40..          | `count` × SHA-256 of chunk `i` (bytes `i × chunk_size ..`) |

use crate::storage::{Buffer, StorageRef};
use crate::types::ArtifactId;
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::fmt;
use std::ops::Range;

/// The first bytes of every manifest; no small artifact may begin with them.
pub const MANIFEST_TAG: [u8; 24] = *b"p2p-gossip/manifest/v1\0\0";

/// The default chunk size: 128 KiB, the fastest of 64 KiB to 1 MiB for 4 MiB and 64 MiB
/// broadcasts to 40 simulated nodes (`p2p-sim measure --chunks`; `BENCHMARKS.md`, "Swarming").
pub const DEFAULT_CHUNK_SIZE: u32 = 128 << 10;

/// The smallest chunk size a node accepts.
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;

/// The smallest chunk size [`chunk_size_for`] picks (unless the subnet's chunk size is smaller).
pub const SMALL_CHUNK_SIZE: u32 = 32 << 10;

/// The number of chunks [`chunk_size_for`] cuts an artifact into at least, while its chunks stay
/// at or above [`SMALL_CHUNK_SIZE`]; an artifact too small for that many keeps the subnet's
/// chunk size.
pub const TARGET_CHUNK_COUNT: u64 = 128;

/// The chunk size of an artifact of `size` bytes in a subnet whose chunk size is `chunk_size`:
/// an artifact that makes at least [`TARGET_CHUNK_COUNT`] chunks of [`SMALL_CHUNK_SIZE`] (4 MiB)
/// is cut into the largest power of two that still makes that many, but at least
/// [`SMALL_CHUNK_SIZE`] and at most `chunk_size`; a smaller one into chunks of `chunk_size` (an
/// artifact of at most `chunk_size` bytes is not chunked at all). With the default 128 KiB:
/// chunks of 128 KiB below 4 MiB, 32 KiB from 4 MiB, 64 KiB from 8 MiB, 128 KiB from 16 MiB.
///
/// A chunk's fan-out from its first holder to every peer is what a broadcast waits for at its
/// end, so a mid-sized artifact travels in smaller chunks (4 MiB to 40 simulated nodes: 407 ms
/// in 128 KiB chunks, 339 ms in 32 KiB, 321 ms in 16 KiB), while every chunk costs CPU at both
/// ends (12 x 4 MiB to 13 real nodes sharing 2 cores: 4.2 s of CPU and 2.58 s in 128 KiB
/// chunks, 5.2 s and 2.81 s in 32 KiB, 7.1 s and 3.68 s in 16 KiB; `BENCHMARKS.md`,
/// "Swarming"); a large one keeps the per-chunk costs (requests, `Have`s, manifest bytes,
/// CPU) low, and so do artifacts below 4 MiB:
/// many of them swarming at once each gain a chunk too seldom for their `Have`s to batch (13
/// origins of 1 MiB artifacts in 16 KiB chunks, simulated: amplification 1.007 -> 1.045, the
/// median artifact 41 % later). Every member computes the same size, so a manifest in another
/// chunk size is refused.
pub fn chunk_size_for(size: u64, chunk_size: u32) -> u32 {
    let small = u64::from(SMALL_CHUNK_SIZE);
    if size < small * TARGET_CHUNK_COUNT {
        return chunk_size;
    }
    let fit = size / TARGET_CHUNK_COUNT;
    let pow = 1u64 << (63 - fit.leading_zeros());
    pow.max(small).min(u64::from(chunk_size)) as u32
}

/// Bytes of a manifest before its chunk hashes.
pub const MANIFEST_HEADER_LEN: usize = 40;

/// Why bytes are not a well-formed manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes do not begin with [`MANIFEST_TAG`] or are shorter than the header.
    #[error("not a manifest")]
    NotManifest,
    /// The chunk size is below [`MIN_CHUNK_SIZE`].
    #[error("chunk size {0} is below the minimum")]
    ChunkSize(u32),
    /// The count does not equal ceil(size / chunk_size), or is below two.
    #[error("chunk count {count} does not fit size {size} in chunks of {chunk_size}")]
    Count {
        /// The size.
        size: u64,
        /// The chunk size.
        chunk_size: u32,
        /// The count.
        count: u32,
    },
    /// The length does not match the count.
    #[error("manifest of {len} bytes for {count} chunks")]
    Length {
        /// The length.
        len: usize,
        /// The count.
        count: u32,
    },
}

/// The root of a chunked artifact: its size, chunk size and the hash of every chunk.
///
/// Holds the encoded bytes (cheap to clone and to send) and reads fields from them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Manifest {
    root: Bytes,
    size: u64,
    chunk_size: u32,
    count: u32,
}

impl Manifest {
    /// The manifest of `data` in a subnet whose chunk size is `chunk_size`, cut into chunks of
    /// [`chunk_size_for`] its size; `None` if `data` fits in `chunk_size` bytes (it is then its
    /// own root) or `chunk_size` is below [`MIN_CHUNK_SIZE`].
    pub fn build(data: &[u8], chunk_size: u32) -> Option<Manifest> {
        if data.len() as u64 <= u64::from(chunk_size) {
            return None;
        }
        let chunk_size = chunk_size_for(data.len() as u64, chunk_size);
        let mut b = ManifestBuilder::new(chunk_size)?;
        for chunk in data.chunks(chunk_size as usize) {
            b.push(chunk).ok()?;
        }
        b.finish()
    }

    /// Reads a manifest from its encoded bytes, checking its layout (not its id).
    pub fn parse(root: Bytes) -> Result<Manifest, ManifestError> {
        if root.len() < MANIFEST_HEADER_LEN || root[..24] != MANIFEST_TAG {
            return Err(ManifestError::NotManifest);
        }
        let size = u64::from_le_bytes(root[24..32].try_into().expect("8 bytes"));
        let chunk_size = u32::from_le_bytes(root[32..36].try_into().expect("4 bytes"));
        let count = u32::from_le_bytes(root[36..40].try_into().expect("4 bytes"));
        if chunk_size < MIN_CHUNK_SIZE {
            return Err(ManifestError::ChunkSize(chunk_size));
        }
        if count < 2 || size.div_ceil(chunk_size as u64) != count as u64 {
            return Err(ManifestError::Count {
                size,
                chunk_size,
                count,
            });
        }
        if (root.len() - MANIFEST_HEADER_LEN) as u64 != 32 * count as u64 {
            return Err(ManifestError::Length {
                len: root.len(),
                count,
            });
        }
        Ok(Manifest {
            root,
            size,
            chunk_size,
            count,
        })
    }

    /// The artifact id this manifest names: the SHA-256 of its bytes.
    pub fn id(&self) -> ArtifactId {
        ArtifactId::of(&self.root)
    }

    /// The encoded manifest.
    pub fn root(&self) -> &Bytes {
        &self.root
    }

    /// The artifact's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The number of chunks.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The byte range of chunk `index` within the artifact (empty past the last chunk).
    pub fn range(&self, index: u32) -> Range<u64> {
        let start = (index as u64 * self.chunk_size as u64).min(self.size);
        let end = (start + self.chunk_size as u64).min(self.size);
        start..end
    }

    /// The length of chunk `index` in bytes (zero past the last chunk).
    pub fn chunk_len(&self, index: u32) -> u64 {
        let r = self.range(index);
        r.end - r.start
    }

    /// The SHA-256 of chunk `index`, if there is such a chunk.
    pub fn chunk_hash(&self, index: u32) -> Option<&[u8]> {
        if index >= self.count {
            return None;
        }
        let at = MANIFEST_HEADER_LEN + 32 * index as usize;
        Some(&self.root[at..at + 32])
    }

    /// Whether `data` is chunk `index` of the artifact (right length and hash).
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> bool {
        match self.chunk_hash(index) {
            Some(h) => data.len() as u64 == self.chunk_len(index) && Sha256::digest(data)[..] == *h,
            None => false,
        }
    }

    /// The bytes of chunk `index` cut from the whole artifact's `data` (no copy).
    pub fn slice(&self, data: &Bytes, index: u32) -> Option<Bytes> {
        let r = self.range(index);
        if index >= self.count || data.len() as u64 != self.size {
            return None;
        }
        Some(data.slice(r.start as usize..r.end as usize))
    }
}

/// Builds a [`Manifest`] from an artifact's chunks handed over in order, one at a time, so an
/// artifact need not be in memory whole to be named (for example while it is read from a file).
#[derive(Debug)]
pub struct ManifestBuilder {
    root: BytesMut,
    size: u64,
    chunk_size: u32,
    count: u32,
    /// A chunk shorter than `chunk_size` was pushed: it must be the last.
    ended: bool,
}

/// A chunk handed to a [`ManifestBuilder`] out of shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkShapeError {
    /// The chunk is empty or longer than the chunk size.
    #[error("chunk of {len} bytes with chunk size {chunk_size}")]
    Length {
        /// Its length.
        len: usize,
        /// The chunk size.
        chunk_size: u32,
    },
    /// A chunk came after one shorter than the chunk size.
    #[error("a chunk after the last (shorter) one")]
    AfterLast,
    /// More than `u32::MAX` chunks.
    #[error("too many chunks")]
    TooMany,
}

impl ManifestBuilder {
    /// A builder for chunks of `chunk_size` bytes; `None` if it is below [`MIN_CHUNK_SIZE`].
    pub fn new(chunk_size: u32) -> Option<Self> {
        if chunk_size < MIN_CHUNK_SIZE {
            return None;
        }
        let mut root = BytesMut::with_capacity(MANIFEST_HEADER_LEN + 32 * 16);
        root.put_slice(&MANIFEST_TAG);
        root.put_bytes(0, MANIFEST_HEADER_LEN - MANIFEST_TAG.len());
        Some(ManifestBuilder {
            root,
            size: 0,
            chunk_size,
            count: 0,
            ended: false,
        })
    }

    /// Adds the next chunk: `chunk_size` bytes, or fewer for the last one.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ChunkShapeError> {
        if self.ended {
            return Err(ChunkShapeError::AfterLast);
        }
        if chunk.is_empty() || chunk.len() as u64 > self.chunk_size as u64 {
            return Err(ChunkShapeError::Length {
                len: chunk.len(),
                chunk_size: self.chunk_size,
            });
        }
        self.count = self.count.checked_add(1).ok_or(ChunkShapeError::TooMany)?;
        self.ended = chunk.len() < self.chunk_size as usize;
        self.size += chunk.len() as u64;
        self.root.put_slice(&Sha256::digest(chunk));
        Ok(())
    }

    /// The manifest of the chunks pushed; `None` if they fit in one chunk (the artifact is then
    /// its own root).
    pub fn finish(mut self) -> Option<Manifest> {
        if self.count < 2 {
            return None;
        }
        let tag = MANIFEST_TAG.len();
        self.root[tag..tag + 8].copy_from_slice(&self.size.to_le_bytes());
        self.root[tag + 8..tag + 12].copy_from_slice(&self.chunk_size.to_le_bytes());
        self.root[tag + 12..tag + 16].copy_from_slice(&self.count.to_le_bytes());
        Some(Manifest {
            root: self.root.freeze(),
            size: self.size,
            chunk_size: self.chunk_size,
            count: self.count,
        })
    }
}

/// The chunks of an incomplete artifact, written in place into one buffer of the artifact's
/// size from the node's [`Storage`](crate::Storage): completing it freezes that buffer with no
/// copy, so a receiver holds each byte once (the chunk it received is dropped once written). The
/// buffer is allocated at the first chunk.
///
/// A chunk held while the artifact is incomplete is served as a copy ([`Assembly::chunk`]); the
/// completed artifact serves slices of itself.
pub(crate) struct Assembly {
    storage: StorageRef,
    /// The artifact's buffer (`None` until the first chunk is written, and once taken whole).
    buf: Option<Box<dyn Buffer>>,
    /// Per chunk, whether it was written.
    have: Vec<bool>,
    held: u32,
}

impl fmt::Debug for Assembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembly")
            .field("allocated", &self.buf.is_some())
            .field("held", &self.held)
            .field("of", &self.have.len())
            .finish()
    }
}

impl Assembly {
    /// An assembly of `manifest`'s artifact in `storage`, holding no chunk (and no buffer).
    pub(crate) fn new(manifest: &Manifest, storage: &StorageRef) -> Self {
        Assembly {
            storage: storage.clone(),
            buf: None,
            have: vec![false; manifest.count() as usize],
            held: 0,
        }
    }

    /// Drops every chunk held, and the buffer.
    pub(crate) fn clear(&mut self) {
        self.buf = None;
        self.have.fill(false);
        self.held = 0;
    }

    /// Whether chunk `index` is held.
    pub(crate) fn has(&self, index: u32) -> bool {
        self.have.get(index as usize).copied().unwrap_or(false)
    }

    /// How many chunks are held.
    pub(crate) fn held(&self) -> u32 {
        self.held
    }

    /// The indices of the held chunks, in order.
    pub(crate) fn held_indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.have.len() as u32).filter(|i| self.have[*i as usize])
    }

    /// A copy of chunk `index` of `manifest`'s artifact, if held (and not yet taken whole).
    pub(crate) fn chunk(&self, manifest: &Manifest, index: u32) -> Option<Bytes> {
        let buf = self.buf.as_ref()?;
        let r = manifest.range(index);
        self.has(index)
            .then(|| Bytes::copy_from_slice(&buf.as_slice()[r.start as usize..r.end as usize]))
    }

    /// Writes chunk `index` (already verified against `manifest`); returns false, writing
    /// nothing, if it is held already or its length is not the chunk's.
    pub(crate) fn write(&mut self, manifest: &Manifest, index: u32, data: &[u8]) -> bool {
        if index >= manifest.count()
            || self.has(index)
            || data.len() as u64 != manifest.chunk_len(index)
        {
            return false;
        }
        let storage = &self.storage;
        let buf = self
            .buf
            .get_or_insert_with(|| storage.buffer(manifest.size() as usize));
        let r = manifest.range(index);
        buf.as_mut_slice()[r.start as usize..r.end as usize].copy_from_slice(data);
        self.have[index as usize] = true;
        self.held += 1;
        true
    }

    /// The whole artifact, once every chunk is held (the buffer itself, frozen). The assembly
    /// then still says every chunk is held but serves none: the whole artifact serves them.
    pub(crate) fn take_whole(&mut self) -> Option<Bytes> {
        if self.held as usize != self.have.len() {
            return None;
        }
        Some(self.buf.take()?.freeze())
    }
}

/// The SHA-256 of `data`: what a driver computes for [`Output::HashChunk`](crate::Output::HashChunk).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Whether `bytes` begin with [`MANIFEST_TAG`] (and so are read as a manifest, never as a small
/// artifact).
pub fn is_manifest(bytes: &[u8]) -> bool {
    bytes.len() >= MANIFEST_TAG.len() && bytes[..MANIFEST_TAG.len()] == MANIFEST_TAG
}

/// The id of an artifact of `data` in a subnet whose chunk size is `chunk_size`: the SHA-256 of
/// its bytes if they fit one chunk, else the id of its [`Manifest`] ([`Manifest::build`]).
pub fn content_id(data: &[u8], chunk_size: u32) -> ArtifactId {
    match Manifest::build(data, chunk_size) {
        Some(m) => m.id(),
        None => ArtifactId::of(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_artifact_is_its_own_root() {
        let data = vec![7u8; 5000];
        assert_eq!(content_id(&data, 8192), ArtifactId::of(&data));
        assert!(Manifest::build(&data, 8192).is_none());
        assert!(Manifest::build(&data, 5000).is_none());
    }

    #[test]
    fn mid_sized_artifacts_are_cut_into_small_chunks_large_ones_into_the_subnets() {
        const K: u64 = 1 << 10;
        let c = DEFAULT_CHUNK_SIZE;
        for (size, chunk) in [
            (128 * K + 1, 128 << 10),
            (1 << 20, 128 << 10),
            ((4 << 20) - 1, 128 << 10),
            (4 << 20, 32 << 10),
            ((8 << 20) - 1, 32 << 10),
            (8 << 20, 64 << 10),
            (16 << 20, 128 << 10),
            (32 << 20, 128 << 10),
            (64 << 20, 128 << 10),
            (1 << 30, 128 << 10),
        ] {
            assert_eq!(chunk_size_for(size, c), chunk, "size {size}");
            // Applying the rule to its own answer changes nothing.
            assert_eq!(chunk_size_for(size, chunk_size_for(size, c)), chunk);
        }
        // A subnet chunk size below the small one is kept.
        assert_eq!(chunk_size_for(4 << 20, 8192), 8192);
        assert_eq!(chunk_size_for(4 << 20, 16 << 10), 16 << 10);
        assert_eq!(chunk_size_for(1 << 20, 8192), 8192);
        assert_eq!(chunk_size_for(u64::MAX, c), c);
        // The manifest is cut by the rule: 4 MiB in 128 chunks of 32 KiB, not 32 of 128 KiB.
        let data = vec![3u8; 4 << 20];
        let m = Manifest::build(&data, c).expect("chunked");
        assert_eq!((m.chunk_size(), m.count()), (32 << 10, 128));
        assert!(Manifest::build(&data[..c as usize], c).is_none());
    }

    #[test]
    fn a_large_artifact_is_named_by_its_manifest_and_every_chunk_verifies() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let m = Manifest::build(&data, 8192).expect("three chunks");
        assert_eq!(m.count(), 3);
        assert_eq!(m.root().len(), MANIFEST_HEADER_LEN + 3 * 32);
        assert_eq!(m.range(2), 16384..20_000);
        assert_eq!(content_id(&data, 8192), m.id());
        assert_ne!(m.id(), ArtifactId::of(&data));
        let whole = Bytes::from(data.clone());
        for i in 0..3 {
            let chunk = m.slice(&whole, i).unwrap();
            assert!(m.verify_chunk(i, &chunk));
            assert!(!m.verify_chunk((i + 1) % 3, &chunk));
        }
        assert!(!m.verify_chunk(3, b""));
        assert_eq!(Manifest::parse(m.root().clone()), Ok(m.clone()));
    }

    #[test]
    fn malformed_manifests_are_typed_errors() {
        let data = vec![1u8; 3 * 4096];
        let m = Manifest::build(&data, 4096).unwrap();
        let root = m.root().to_vec();
        assert_eq!(
            Manifest::parse(Bytes::from_static(b"short")),
            Err(ManifestError::NotManifest)
        );
        let mut bad_count = root.clone();
        bad_count[36] = 4;
        assert!(matches!(
            Manifest::parse(Bytes::from(bad_count)),
            Err(ManifestError::Count { .. })
        ));
        let mut truncated = root.clone();
        truncated.pop();
        assert!(matches!(
            Manifest::parse(Bytes::from(truncated)),
            Err(ManifestError::Length { .. })
        ));
        let mut tiny_chunks = root;
        tiny_chunks[32..36].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(
            Manifest::parse(Bytes::from(tiny_chunks)),
            Err(ManifestError::ChunkSize(16))
        );
        assert!(is_manifest(&MANIFEST_TAG));
        assert!(!is_manifest(b"p2p"));
    }

    #[test]
    fn an_assembly_completes_in_place_from_chunks_in_any_order() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let m = Manifest::build(&data, 4096).unwrap();
        let mut a = Assembly::new(&m, &StorageRef::memory());
        assert_eq!(a.chunk(&m, 0), None);
        for i in [2, 0] {
            let r = m.range(i);
            assert!(a.write(&m, i, &data[r.start as usize..r.end as usize]));
        }
        // Held twice, or of the wrong length: refused, nothing changes.
        assert!(!a.write(&m, 0, &data[..4096]));
        assert!(!a.write(&m, 1, &data[..100]));
        assert!(!a.write(&m, 3, &data[..100]));
        assert_eq!(a.held(), 2);
        assert_eq!(a.held_indices().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(a.chunk(&m, 2).unwrap(), &data[8192..]);
        assert_eq!(a.take_whole(), None, "incomplete");
        let first = a.buf.as_ref().unwrap().as_slice().as_ptr();
        assert!(a.write(&m, 1, &data[4096..8192]));
        let whole = a.take_whole().unwrap();
        assert_eq!(whole, data);
        assert_eq!(
            whole.as_ptr(),
            first,
            "the buffer was frozen without a copy"
        );
        assert!(
            a.has(1) && a.chunk(&m, 1).is_none(),
            "the whole artifact serves its chunks"
        );
    }

    #[test]
    fn a_manifest_built_chunk_by_chunk_equals_the_one_built_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let whole = Manifest::build(&data, 4096).unwrap();
        let mut b = ManifestBuilder::new(4096).unwrap();
        for c in data.chunks(4096) {
            b.push(c).unwrap();
        }
        assert_eq!(b.finish().unwrap().root(), whole.root());
        assert_eq!(
            Manifest::parse(whole.root().clone()).unwrap().id(),
            whole.id()
        );
        // Out of shape: a chunk after a short one, an oversized or empty chunk.
        let mut b = ManifestBuilder::new(4096).unwrap();
        b.push(&data[..100]).unwrap();
        assert_eq!(b.push(&data[..100]), Err(ChunkShapeError::AfterLast));
        let mut b = ManifestBuilder::new(4096).unwrap();
        assert!(matches!(
            b.push(&data[..5000]),
            Err(ChunkShapeError::Length { .. })
        ));
        assert!(matches!(b.push(&[]), Err(ChunkShapeError::Length { .. })));
        // One chunk: the artifact is its own root.
        let mut b = ManifestBuilder::new(4096).unwrap();
        b.push(&data[..4096]).unwrap();
        assert!(b.finish().is_none());
        assert!(ManifestBuilder::new(MIN_CHUNK_SIZE - 1).is_none());
    }
}
