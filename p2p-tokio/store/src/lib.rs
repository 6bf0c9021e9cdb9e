//! File-backed [`Storage`] for p2p-core's chunked artifacts.
//!
//! [`FileStorage`] assembles each incoming chunked artifact in its own file, mapped into the
//! node's memory: the core writes every verified chunk into the mapping, and the completed
//! artifact is the mapping itself, frozen into [`Bytes`] with no copy (pooled, served and
//! delivered from it). The kernel keeps the file's pages in its page cache and writes them
//! back to disk when memory is short, so a node's own memory (its anonymous pages) stays
//! bounded by the chunks in flight, however large the artifacts: artifacts larger than the
//! node's memory can be carried, up to the disk's free space.
//!
//! Each file's disk space is reserved when it is made (`fallocate`), so a full disk makes the
//! allocation fail (the artifact is then assembled in memory) rather than a later write fault.
//! Each file is unlinked as soon as it is mapped: it has no name on disk while the node runs,
//! and its space returns to the disk when the artifact is dropped (also when the process dies).
//! An artifact the embedder publishes can be built the same way ([`FileStorage::map`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use p2p_core::{Config, StorageRef};
//! use p2p_store::FileStorage;
//!
//! let files = Arc::new(FileStorage::new("/var/lib/p2p/parts")?);
//! let mut cfg = Config::default();
//! cfg.storage = StorageRef(files.clone());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A write into a mapped page may wait for the disk (a page fault while the kernel writes
//! pages back), on the task that runs the core; with memory storage it never does.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{MmapMut, MmapOptions};
use p2p_core::{Buffer, Memory, Storage};

/// Assembles chunked artifacts in files of one directory, each mapped into memory.
///
/// A file that cannot be made (the directory is gone, the disk is full, no address space for
/// the mapping) is replaced by a buffer in memory: the artifact is still assembled, and
/// [`FileStorage::fallbacks`] and [`FileStorage::last_error`] say so.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    next: AtomicU64,
    mapped: AtomicU64,
    mapped_bytes: AtomicU64,
    fallbacks: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl FileStorage {
    /// Storage in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FileStorage {
            dir,
            next: AtomicU64::new(0),
            mapped: AtomicU64::new(0),
            mapped_bytes: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The directory the files are made in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A buffer of `len` bytes (all zero) in a fresh file of this storage's directory, mapped
    /// into memory and already unlinked.
    pub fn map(&self, len: usize) -> io::Result<FileBuffer> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("artifact-{}-{n}.part", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let unlinked = fs::remove_file(&path);
        let map = unlinked.and_then(|()| map_file(&file, len))?;
        self.mapped.fetch_add(1, Ordering::Relaxed);
        self.mapped_bytes.fetch_add(len as u64, Ordering::Relaxed);
        Ok(FileBuffer { map })
    }

    /// How many buffers were made as files.
    pub fn mapped(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// The bytes of all buffers made as files.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_bytes.load(Ordering::Relaxed)
    }

    /// How many buffers were made in memory because no file could be.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Why the last file could not be made, if one could not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Maps `len` bytes of `file`, first sized to `len` with its disk blocks reserved (zero
/// bytes): a write into the mapping then never needs a block the disk no longer has, which
/// would be a fault (SIGBUS) instead of an error.
#[allow(unsafe_code)]
fn map_file(file: &File, len: usize) -> io::Result<MmapMut> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len as u64)?;
    // SAFETY: the mapping is undefined behaviour only if the file is changed by someone else
    // while mapped. The file was created here (`create_new`, mode 0600) and unlinked before
    // this call, and `file` is closed when the caller returns: no other handle to it remains,
    // so only this mapping can change its bytes.
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

impl Storage for FileStorage {
    fn allocate(&self, len: usize) -> Box<dyn Buffer> {
        match self.map(len) {
            Ok(buf) => Box::new(buf),
            Err(e) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{len} bytes in {}: {e}", self.dir.display()));
                Memory.allocate(len)
            }
        }
    }
}

/// One artifact's file, mapped into memory.
#[derive(Debug)]
pub struct FileBuffer {
    map: MmapMut,
}

impl Buffer for FileBuffer {
    fn as_slice(&self) -> &[u8] {
        &self.map
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    fn freeze(self: Box<Self>) -> Bytes {
        Bytes::from_owner(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2p-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_buffer_is_a_nameless_file_frozen_without_a_copy() {
        let dir = scratch("freeze");
        let files = FileStorage::new(&dir).unwrap();
        let mut buf = files.allocate(3 << 20);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "the file is unlinked once mapped"
        );
        assert!(buf.as_slice().iter().all(|b| *b == 0));
        buf.as_mut_slice()[(3 << 20) - 3..].copy_from_slice(b"end");
        let at = buf.as_slice().as_ptr();
        let whole = buf.freeze();
        assert_eq!(whole.as_ptr(), at, "frozen in place");
        assert_eq!(&whole[(3 << 20) - 3..], b"end");
        let chunk = whole.slice(1 << 20..2 << 20);
        drop(whole);
        assert_eq!(chunk.len(), 1 << 20, "a slice keeps the mapping alive");
        assert_eq!(
            (files.mapped(), files.mapped_bytes(), files.fallbacks()),
            (1, 3 << 20, 0)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_larger_than_the_disk_is_refused_when_made_and_leaves_nothing() {
        let dir = scratch("huge");
        let files = FileStorage::new(&dir).unwrap();
        // A pebibyte: no test machine's disk has it free, so the reservation fails at once.
        let e = files.map(1 << 50).expect_err("more than the disk");
        assert!(
            matches!(e.raw_os_error(), Some(28 | 27)),
            "ENOSPC or EFBIG, not {e}"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(files.mapped(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_its_directory_the_storage_falls_back_to_memory_and_says_why() {
        let dir = scratch("gone");
        let files = FileStorage::new(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let mut buf = files.allocate(4096);
        buf.as_mut_slice()[0] = 1;
        assert_eq!(buf.freeze()[0], 1);
        assert_eq!((files.mapped(), files.fallbacks()), (0, 1));
        let why = files.last_error().expect("the error is kept");
        assert!(why.contains("4096 bytes in"), "{why}");
    }
}
