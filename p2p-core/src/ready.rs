//! The downloads ready for a request, ordered by priority and indexed by source.
//!
//! One global queue scanned from the head lets a peer hold others back: adverts of a peer that
//! never answers sit at the head, its in-flight slots stay busy, and a bounded scan never reaches
//! the honest downloads behind them. Here every peer has its own ordered set of the ready
//! downloads it may be asked for, so the scheduler looks at the head of each open peer's set:
//! a busy peer blocks only its own set, never another peer's.

use crate::types::{ArtifactId, Priority};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A ready download's place in the order: highest priority first, then FIFO.
pub(crate) type ReadyKey = (Reverse<Priority>, u64);

/// A peer's small index (see `Node`).
pub(crate) type Slot = u32;

/// The ready downloads, globally and per source.
#[derive(Default)]
pub(crate) struct Ready {
    all: BTreeMap<ReadyKey, ArtifactId>,
    by_slot: Vec<BTreeSet<ReadyKey>>,
}

impl Ready {
    /// Whether no download is ready.
    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Marks a download ready (listed under no source yet).
    pub(crate) fn insert(&mut self, key: ReadyKey, id: ArtifactId) {
        self.all.insert(key, id);
    }

    /// Takes a download out of the ready set and out of the sets of `listed`.
    pub(crate) fn remove(&mut self, key: ReadyKey, listed: &[Slot]) {
        self.all.remove(&key);
        for slot in listed {
            self.unlist(key, *slot);
        }
    }

    /// Lists a ready download under a source that may be asked for it.
    pub(crate) fn list(&mut self, key: ReadyKey, slot: Slot) {
        let i = slot as usize;
        if self.by_slot.len() <= i {
            self.by_slot.resize_with(i + 1, BTreeSet::new);
        }
        self.by_slot[i].insert(key);
    }

    /// Takes a download off a source's set.
    pub(crate) fn unlist(&mut self, key: ReadyKey, slot: Slot) {
        if let Some(set) = self.by_slot.get_mut(slot as usize) {
            set.remove(&key);
        }
    }

    /// Forgets a source's whole set (the peer is gone).
    pub(crate) fn clear_slot(&mut self, slot: Slot) {
        if let Some(set) = self.by_slot.get_mut(slot as usize) {
            *set = BTreeSet::new();
        }
    }

    /// The download at `key`.
    pub(crate) fn id(&self, key: &ReadyKey) -> Option<ArtifactId> {
        self.all.get(key).copied()
    }

    /// The best head among the sources for which `open` holds: (key, slot).
    pub(crate) fn best_head(&self, open: impl Fn(Slot) -> bool) -> Option<(ReadyKey, Slot)> {
        let mut best: Option<(ReadyKey, Slot)> = None;
        for (i, set) in self.by_slot.iter().enumerate() {
            let Some(&head) = set.first() else {
                continue;
            };
            let slot = i as Slot;
            if best.is_none_or(|(b, _)| head < b) && open(slot) {
                best = Some((head, slot));
            }
        }
        best
    }
}
