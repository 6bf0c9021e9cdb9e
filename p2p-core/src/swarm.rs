//! Swarms: chunked artifacts fetched chunk by chunk from every peer that holds part of them.
//!
//! A download of an artifact larger than one chunk fetches its manifest like any small artifact
//! (`downloads.rs`), and the verified manifest starts a swarm here. The swarm then:
//! - learns who holds which chunks: *full holders* advertised the artifact, *partial holders*
//!   sent `Have` (on starting, a node sends an empty `Have` to its peers, and a peer already
//!   swarming answers with every chunk it holds; each chunk verified later is announced to
//!   every peer that is not a full holder, batched per input);
//! - requests chunks in parallel, rarest first among partial holders, within per-peer and
//!   global limits, and from full holders only its *stripe* (chunk `i` belongs to one of the
//!   members that are not full holders, in turn by node id) until `swarm_patience` has passed
//!   since the swarm started: so the origin sends each chunk about once and peers exchange the
//!   rest; a swarm that is overdue or idle may ask them for other members' chunks, but only once
//!   this node has asked them for every chunk of its own stripes in every active swarm;
//! - verifies each chunk against the manifest on arrival, from any peer; a bad chunk penalizes
//!   the peer as bad data does and excludes it from the swarm, a timeout or not-found asks
//!   another holder;
//! - serves the chunks it holds to its peers (`Node` answers `ChunkRequest`s from here while
//!   the artifact is incomplete, from the pool afterwards);
//! - cancels its requests still in flight on the wire (`Cancel`) when it completes or is
//!   dropped.
//!
//! Memory: a swarm is *active* (its chunks may be fetched) only while the sizes of all active
//! swarms fit `max_incomplete_bytes`; the others wait, highest priority first, so every active
//! swarm can complete and no set of half-fetched artifacts can hold the budget for ever.

use crate::chunks::{Assembly, Manifest, chunk_size_for};
use crate::config::{Config, Decision};
use crate::downloads::{ManifestAsked, SwarmStart};
use crate::event::Output;
use crate::hash::{FastMap, FastState, Map, SaltedState, keyed_hash};
use crate::message::{ChunkRange, Message, PUSHED_CHUNK, RequestId};
use crate::sink::Sink;
use crate::types::{Advert, Artifact, ArtifactId, Class, NodeId, Priority, Time};
use bytes::Bytes;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Chunk request ids carry this bit, so that answers route to the swarms without a lookup in
/// the downloads' requests (whose ids count up from one and never reach it).
pub(crate) const CHUNK_REQ_BIT: u64 = 1 << 63;

/// A set of chunk indices.
#[derive(Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(count: u32) -> Self {
        Bits(vec![0; (count as usize).div_ceil(64)])
    }
    fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// Sets bit `i`; returns whether it was clear.
    fn set(&mut self, i: u32) -> bool {
        let w = &mut self.0[i as usize / 64];
        let was = *w & (1 << (i % 64)) == 0;
        *w |= 1 << (i % 64);
        was
    }
    fn clear(&mut self, i: u32) -> bool {
        let w = &mut self.0[i as usize / 64];
        let was = *w & (1 << (i % 64)) != 0;
        *w &= !(1 << (i % 64));
        was
    }
}

/// Turns ascending indices into ascending disjoint ranges, at most `max` per batch.
fn ranges_of(indices: impl Iterator<Item = u32>, max: usize) -> Vec<Vec<ChunkRange>> {
    let mut out: Vec<Vec<ChunkRange>> = vec![Vec::new()];
    for i in indices {
        let batch = out.last_mut().expect("one batch");
        match batch.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => {
                if batch.len() >= max.max(1) {
                    out.push(Vec::new());
                }
                let batch = out.last_mut().expect("one batch");
                batch.push(ChunkRange {
                    start: i,
                    end: i + 1,
                });
            }
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

/// How long a peer's chunk answers took.
struct Pace {
    /// A moving average, in nanoseconds (a timeout counts as its whole timeout).
    avg: u64,
    /// When it last answered (or timed out).
    at: Time,
    /// Its answers and timeouts so far.
    answers: u32,
}

/// A chunk request awaiting its answer.
struct ChunkReq {
    peer: NodeId,
    id: ArtifactId,
    index: u32,
    /// Counted in the global limit (false once timed out: the peer stays busy until it answers).
    counted: bool,
    deadline: Option<Time>,
    /// When it was sent.
    sent: Time,
}

struct Swarm {
    manifest: Manifest,
    advert: Advert,
    /// `None` while the priority function says `Later`.
    priority: Option<Priority>,
    seq: u64,
    /// Its size is reserved in `max_incomplete_bytes`.
    active: bool,
    /// When it became active: full holders serve every chunk `swarm_patience` after it.
    since: Time,
    /// `swarm_patience` has passed since it became active.
    patient: bool,
    /// One chunk request timeout has passed since it became active: any node asks the full
    /// holders for any chunk no partial holder has.
    overdue: bool,
    /// The chunks held, written in place.
    parts: Assembly,
    /// The completed artifact while it lingers (see `done_until`): it serves slices of itself.
    whole: Option<Bytes>,
    /// The request in flight per chunk.
    asked: Vec<Option<RequestId>>,
    /// Per chunk, the keyed hash that breaks ties between equally rare chunks.
    tiebreak: Vec<u64>,
    /// The chunks a partial holder has and this node neither holds, nor asked for, nor is
    /// checking, by (partial holders, tiebreak, index): the order `Swarms::pick` takes them in.
    ready: BTreeSet<(u16, u64, u32)>,
    /// Per chunk, its partial holders as `ready` has it (`None`: not in `ready`).
    ready_at: Vec<Option<u16>>,
    /// The chunks in `ready`, as bits.
    ready_bits: Bits,
    /// Who fetches each chunk from the full holders: chunk `i` belongs to
    /// `takers[(i + offset) % takers.len()]` (see [`Swarm::asks_full`]).
    stripes: Stripes,
    /// Peers that sent a `Have` of it (they are fetching it, or hold it in part).
    interested: SmallVec<[NodeId; 8]>,
    /// Peers that said they fetch it (an empty `Have`, or any `Have` before it started): the
    /// peers this node pushes the chunks of its stripe to, and expects pushes from.
    fetching: SmallVec<[NodeId; 8]>,
    /// Connected peers that advertised the whole artifact.
    full: SmallVec<[NodeId; 4]>,
    /// Connected peers that told which chunks they hold.
    partial: Vec<(NodeId, Bits)>,
    /// Per chunk, how many partial holders have it.
    avail: Vec<u16>,
    /// Peers that sent a bad chunk: never asked again for this artifact.
    bad: SmallVec<[NodeId; 2]>,
    /// Chunks received and waiting for their hash from the driver, with their senders.
    checking: Vec<(u32, Bytes, NodeId)>,
    /// Chunks verified since the last flush (its owner pushes them then).
    announce: Vec<u32>,
    /// Chunks verified and not yet announced in a `Have` (see `Config::have_interval`).
    unannounced: Vec<u32>,
    /// When its last `Have` of verified chunks went out.
    announced_at: Option<Time>,
    /// Peers that asked what this node holds (an empty `Have`), to answer at the next flush.
    tell: SmallVec<[NodeId; 4]>,
    /// Something changed that may let another request start.
    dirty: bool,
    /// Complete and delivered but not pooled: it still serves its chunks until then.
    done_until: Option<Time>,
    /// The chunks held when progress was last seen, and when.
    progress: (u32, Time),
    /// When it last gained a verified chunk (or became active).
    gained: Time,
    /// It was set back to wait for lack of progress: it then ranks after every swarm that was
    /// not (see [`Swarm::key`]).
    stalled: bool,
    /// Per chunk, until when this node waits for its stripe's owner to push it (the owner
    /// announced it): it asks no one for the chunk before then.
    expect: Vec<Option<Time>>,
    /// Some chunk of `expect` is set.
    expecting: bool,
    /// Peers this node pushed a chunk of it to: their `Have`s revoke the pushes still queued.
    pushed_to: SmallVec<[NodeId; 8]>,
    /// Per peer, the chunks of this node's stripe it asked others for (its `Decline`s): they
    /// are not pushed to it.
    declined: Vec<(NodeId, Bits)>,
    /// Chunks asked of a peer other than their stripe's owner since the last flush, with that
    /// owner: it is told in one `Decline` then, so that it does not push them too.
    declines: Vec<(NodeId, u32)>,
    /// Chunks pushed and not yet announced back (`Have`) or declined by their receiver: they
    /// count in its push window ([`Swarms::pushes_out`]).
    unacked: Vec<(NodeId, u32)>,
    /// Pushes held back by a full push window, sent as it opens.
    owed: Vec<(NodeId, u32)>,
}

/// A swarm's place in the active and waiting orders.
type Key = (Reverse<Priority>, u64, ArtifactId);

impl Swarm {
    /// Its place in the orders: by priority, then age; a swarm once set back for lack of
    /// progress ranks as the lowest priority, so the waiting ones all get their turn before it
    /// comes back, whatever priority it claims.
    fn key(&self, id: ArtifactId) -> Key {
        let p = if self.stalled {
            Priority(0)
        } else {
            self.priority.unwrap_or_default()
        };
        (Reverse(p), self.seq, id)
    }

    /// Whether it has no request in flight and no chunk waiting for its hash.
    /// Chunk `i`'s place in `ready` as its state says: its partial holders, if it has any
    /// and this node neither holds it, nor asked for it, nor is checking it.
    fn ready_as(&self, i: u32) -> Option<u16> {
        let k = i as usize;
        (!self.parts.has(i)
            && self.asked[k].is_none()
            && self.avail[k] > 0
            && !self.checking.iter().any(|c| c.0 == i))
        .then_some(self.avail[k])
    }

    /// Puts chunk `i` in `ready` (or takes it out, or moves it) as its state now says.
    fn refresh(&mut self, i: u32) {
        let k = i as usize;
        let now = self.ready_as(i);
        let was = self.ready_at[k];
        if was != now {
            if let Some(a) = was {
                self.ready.remove(&(a, self.tiebreak[k], i));
                self.ready_bits.clear(i);
            }
            if let Some(a) = now {
                self.ready.insert((a, self.tiebreak[k], i));
                self.ready_bits.set(i);
            }
            self.ready_at[k] = now;
        }
    }

    /// Whether `ready` holds exactly the chunks its state says.
    #[cfg(any(test, feature = "fuzzing"))]
    fn ready_is_exact(&self) -> bool {
        (0..self.manifest.count()).all(|i| self.ready_at[i as usize] == self.ready_as(i))
            && self.ready.len() == self.ready_at.iter().flatten().count()
            && self.ready.iter().all(|&(a, t, i)| {
                self.ready_at[i as usize] == Some(a) && self.tiebreak[i as usize] == t
            })
            && (0..self.manifest.count())
                .all(|i| self.ready_bits.get(i) == self.ready_at[i as usize].is_some())
    }

    fn is_idle(&self) -> bool {
        self.asked.iter().all(Option::is_none) && self.checking.is_empty()
    }

    /// Whether it has nothing in flight and gained no chunk for `swarm_patience`: it may then
    /// ask a full holder for one chunk no partial holder has, so that an owner that is slow (or
    /// out of reach) holds its chunks back from no one, and the origin sends at most one extra
    /// chunk at a time per waiting node.
    fn idle(&self, cx: &SwarmCx) -> bool {
        self.is_idle() && cx.now >= self.gained + cx.cfg.swarm_patience
    }

    /// Whether this node still waits for chunk `i` to be pushed: its owner announced it less
    /// than `push_patience` ago, or the swarm gained a chunk less than `push_patience` ago (the
    /// pushes are still coming in, only slowly: a slow owner's are not fetched twice).
    fn awaits_push(&self, i: u32, now: Time, cfg: &Config) -> bool {
        self.expect[i as usize].is_some_and(|t| now < t.max(self.gained + cfg.push_patience))
    }

    /// Stops waiting for pushes from `peer` (it left, or sent a bad chunk): the chunks it owns
    /// may be asked of any holder at once.
    fn forget_expected(&mut self, peer: NodeId) {
        if self.stripes.takers.is_empty() {
            return;
        }
        for i in 0..self.manifest.count() {
            if self.expect[i as usize].is_some()
                && self.stripes.takers[self.stripes.owner(i)] == peer
            {
                self.expect[i as usize] = None;
                self.dirty = true;
            }
        }
    }

    /// Whether any connected peer is known to hold some of it.
    fn has_holder(&self) -> bool {
        !self.full.is_empty() || self.avail.iter().any(|n| *n > 0)
    }
}

/// What became of a chunk.
pub(crate) enum ChunkAnswer {
    /// No such request to that peer for that chunk: a protocol violation.
    Unsolicited,
    /// A pushed chunk no active swarm lacked: dropped.
    Unwanted,
    /// A pushed chunk no active swarm lacked, past the peer's allowance of them.
    TooManyUnwanted,
    /// The bytes do not match the manifest: the peer is to be penalized.
    BadData,
    /// Verified and kept (or not needed any more).
    Kept,
    /// Waiting for its hash from the driver.
    Checking,
    /// The last chunk: the whole artifact, verified chunk by chunk.
    Complete(Artifact),
}

/// The swarms of this node and their chunk requests.
///
/// Invariants: `reserved` is the sum of the sizes of the active swarms, at most
/// `max_incomplete_bytes` (one swarm larger than the budget may be active alone); every
/// request in `reqs` belongs to a swarm's `asked` entry or has timed out, and `in_flight` counts
/// the ones not timed out; `per_peer` counts every request awaiting an answer per peer; a
/// swarm's `avail` counts its partial holders per chunk; a partial or full holder is a
/// connected peer.
pub(crate) struct Swarms {
    table: Map<ArtifactId, Swarm>,
    /// Swarms in the order their chunks are fetched: priority, then age.
    order: BTreeSet<Key>,
    /// Inactive swarms waiting for the budget, in the same order.
    waiting: BTreeSet<Key>,
    reqs: FastMap<RequestId, ChunkReq>,
    deadlines: BTreeMap<(Time, RequestId), ()>,
    per_peer: FastMap<NodeId, usize>,
    /// Per connected peer, its pushed chunks that no active swarm lacked, net of its useful
    /// ones (at most `max_unwanted_pushes`).
    unwanted: FastMap<NodeId, u32>,
    /// Per connected peer, the bytes of chunks pushed to it and not yet announced back or
    /// declined (at most `max_pushes_in_flight_per_peer` chunks of `chunk_size`).
    pushes_out: FastMap<NodeId, u64>,
    /// A push window opened since the last flush: pushes owed may go.
    window_opened: bool,
    /// Per connected peer, how long its chunk answers took: a node asks the holder that
    /// should answer first.
    pace: FastMap<NodeId, Pace>,
    /// Per connected peer found slow, until when it counts as slow ([`Swarms::note_pace`]).
    slow: FastMap<NodeId, Time>,
    in_flight: usize,
    reserved: u64,
    next_req: u64,
    next_seq: u64,
    /// A request ended since the last schedule: limits it held may let any swarm go on.
    freed: bool,
    salt: SaltedState,
}

/// Whether a chunk of so many bytes may be pushed to a peer now (see [`SwarmCx::pushable`]).
pub(crate) type PushCheck<'a> = Box<dyn Fn(&NodeId, u64) -> bool + 'a>;

/// Peer and request bookkeeping of a swarm decision, carried out by `Node`.
pub(crate) struct SwarmCx<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) sink: &'a mut Sink,
    pub(crate) now: Time,
    /// The current members, sorted (for the stripes).
    pub(crate) members: &'a [NodeId],
    /// This node.
    pub(crate) me: NodeId,
    /// Whether a peer is connected.
    pub(crate) connected: Box<dyn Fn(&NodeId) -> bool + 'a>,
    /// Whether a chunk of this many bytes may be pushed to a peer now: it is connected, its
    /// send queue is not reported full, and its serving budget covers the chunk (then charged).
    pub(crate) pushable: PushCheck<'a>,
}

impl Swarms {
    pub(crate) fn new(salt: SaltedState, fast: FastState) -> Self {
        Swarms {
            table: Map::with_hasher(salt),
            order: BTreeSet::new(),
            waiting: BTreeSet::new(),
            reqs: FastMap::with_hasher(fast),
            deadlines: BTreeMap::new(),
            per_peer: FastMap::with_hasher(fast),
            unwanted: FastMap::with_hasher(fast),
            pushes_out: FastMap::with_hasher(fast),
            window_opened: false,
            pace: FastMap::with_hasher(fast),
            slow: FastMap::with_hasher(fast),
            in_flight: 0,
            reserved: 0,
            next_req: 0,
            next_seq: 0,
            freed: false,
            salt,
        }
    }

    /// Whether `id` is being swarmed.
    pub(crate) fn contains(&self, id: &ArtifactId) -> bool {
        self.table.contains_key(id)
    }

    /// Swarms (active or waiting).
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Chunk requests awaiting answers (timed out ones included).
    pub(crate) fn requests_len(&self) -> usize {
        self.reqs.len()
    }

    /// Chunk requests in flight (not timed out).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes reserved by active swarms.
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Bytes of chunks held by incomplete artifacts.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.table
            .values()
            .map(|s| {
                s.parts
                    .held_indices()
                    .map(|i| s.manifest.chunk_len(i))
                    .sum::<u64>()
            })
            .sum()
    }

    /// The manifest of `id`, if it is being swarmed.
    pub(crate) fn root(&self, id: &ArtifactId) -> Option<Bytes> {
        Some(self.table.get(id)?.manifest.root().clone())
    }

    /// The chunk `index` of `id`, if this node holds it while the artifact is incomplete (a
    /// copy) or lingers after completing it (a slice).
    pub(crate) fn chunk(&self, id: &ArtifactId, index: u32) -> Option<Bytes> {
        let s = self.table.get(id)?;
        match &s.whole {
            Some(whole) => s.manifest.slice(whole, index),
            None => s.parts.chunk(&s.manifest, index),
        }
    }

    /// Whether this node holds chunk `index` of `id` while the artifact is incomplete or
    /// lingers.
    pub(crate) fn holds(&self, id: &ArtifactId, index: u32) -> bool {
        self.table.get(id).is_some_and(|s| {
            s.parts.has(index) || (s.whole.is_some() && index < s.manifest.count())
        })
    }

    /// The earliest time a request times out or a swarm's patience ends.
    pub(crate) fn next_wakeup(&self, now: Time, cfg: &Config) -> Option<Time> {
        let deadline = self.deadlines.keys().next().map(|(t, _)| *t);
        let linger = self.table.values().filter_map(|s| s.done_until).min();
        let idle = self
            .table
            .values()
            .filter(|s| s.active && s.done_until.is_none() && s.is_idle())
            .map(|s| s.gained + cfg.swarm_patience)
            .filter(|t| *t > now)
            .min();
        let stall = if self.waiting.is_empty() {
            None
        } else {
            self.table
                .values()
                .filter(|s| s.active && s.done_until.is_none())
                .map(|s| (s.progress.1 + stall_after(s, cfg)).max(now))
                .min()
        };
        let patience = self
            .table
            .values()
            .filter(|s| s.active && !s.overdue)
            .map(|s| {
                let t = if s.patient {
                    s.since + overdue_after(s, cfg)
                } else {
                    s.since + cfg.swarm_patience
                };
                t.max(now)
            })
            .min();
        let expect = self
            .table
            .values()
            .filter(|s| s.active && s.expecting)
            .filter_map(|s| {
                let gained = s.gained + cfg.push_patience;
                s.expect.iter().flatten().map(|t| (*t).max(gained)).min()
            })
            .map(|t| t.max(now))
            .min();
        let have = self
            .table
            .values()
            .filter(|s| !s.unannounced.is_empty())
            .filter_map(|s| Some((s.announced_at? + have_interval(s, cfg)).max(now)))
            .min();
        [deadline, patience, linger, stall, idle, expect, have]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts a swarm of `manifest` for the download of `advert` at `priority`, whose sources
    /// are `full` holders and peers known to fetch it too (they sent `Have`), and that peers
    /// declined chunks of already.
    pub(crate) fn start(&mut self, start: SwarmStart, cx: &mut SwarmCx) {
        let SwarmStart {
            manifest,
            advert,
            priority,
            full,
            partial: interested,
            declined,
        } = start;
        let id = manifest.id();
        if self.table.contains_key(&id) {
            return;
        }
        let count = manifest.count();
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut swarm = Swarm {
            stripes: Stripes::new(&manifest.id(), &full, cx),
            fetching: interested.iter().copied().collect(),
            interested: interested.into_iter().collect(),
            parts: Assembly::new(&manifest, &cx.cfg.storage),
            whole: None,
            asked: vec![None; count as usize],
            tiebreak: (0..count)
                .map(|i| keyed_hash(&self.salt, (&id, i)))
                .collect(),
            ready: BTreeSet::new(),
            ready_at: vec![None; count as usize],
            ready_bits: Bits::new(count),
            avail: vec![0; count as usize],
            advert,
            priority,
            seq,
            active: false,
            since: cx.now,
            patient: false,
            overdue: false,
            full,
            partial: Vec::new(),
            bad: SmallVec::new(),
            checking: Vec::new(),
            announce: Vec::new(),
            unannounced: Vec::new(),
            announced_at: None,
            tell: SmallVec::new(),
            dirty: true,
            done_until: None,
            progress: (0, cx.now),
            stalled: false,
            gained: cx.now,
            expect: vec![None; count as usize],
            expecting: false,
            pushed_to: SmallVec::new(),
            declined: Vec::new(),
            declines: Vec::new(),
            unacked: Vec::new(),
            owed: Vec::new(),
            manifest,
        };
        swarm.full.retain(|p| (cx.connected)(p));
        for (peer, r) in declined {
            mark_declined(&mut swarm, peer, r);
        }
        let key = swarm.key(id);
        // Ask the peers what they hold of it: the partial holders among them answer, and the
        // others learn that this node fetches it too. In a partial mesh the advert goes with
        // it (`Fetching`): a neighbour that has not heard of the artifact yet (its other
        // neighbours advertise it only once they hold it) can fetch it from this node now.
        for peer in cx.members.iter().filter(|p| (cx.connected)(p)) {
            if !swarm.full.contains(peer) {
                let msg = if swarm.stripes.shared {
                    Message::Have {
                        id,
                        ranges: Vec::new(),
                    }
                } else {
                    Message::Fetching(swarm.advert.clone())
                };
                cx.sink.send(*peer, msg, Class::Control);
            }
        }
        self.table.insert(id, swarm);
        self.waiting.insert(key);
        self.adopt_prefetched(id, cx.sink);
        self.activate(cx);
    }

    /// Records the requests [`Swarms::prefetch`] sent for `id` in its swarm that just started;
    /// one for a chunk the manifest does not have (the advert's size was wrong) or already
    /// asked for ends and is cancelled on the wire.
    fn adopt_prefetched(&mut self, id: ArtifactId, sink: &mut Sink) {
        let mut early: SmallVec<[(RequestId, u32, bool); 8]> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.id == id)
            .map(|(req_id, r)| (*req_id, r.index, r.deadline.is_some()))
            .collect();
        if early.is_empty() {
            return;
        }
        early.sort_unstable();
        let s = self.table.get_mut(&id).expect("swarm exists");
        let mut stray: SmallVec<[RequestId; 4]> = SmallVec::new();
        for (req_id, index, live) in early {
            match s.asked.get_mut(index as usize) {
                // A timed-out one stays awaited, as any timed-out request.
                Some(_) if !live => {}
                Some(slot @ None) => {
                    *slot = Some(req_id);
                    s.refresh(index);
                }
                _ => stray.push(req_id),
            }
        }
        self.cancel_requests(&stray, sink);
    }

    /// Activates waiting swarms while their sizes fit the budget.
    fn activate(&mut self, cx: &mut SwarmCx) {
        // Swarms no connected peer holds any of wait without taking the budget.
        let candidates: SmallVec<[Key; 8]> = self
            .waiting
            .iter()
            .filter(|k| self.table[&k.2].has_holder())
            .take(8)
            .copied()
            .collect();
        for key in candidates {
            let size = self.table[&key.2].manifest.size();
            let fits = self.reserved + size <= cx.cfg.max_incomplete_bytes;
            if !fits && self.reserved > 0 {
                break;
            }
            self.waiting.remove(&key);
            self.reserved += size;
            self.order.insert(key);
            let s = self.table.get_mut(&key.2).expect("waiting swarm exists");
            s.active = true;
            s.since = cx.now;
            s.progress = (s.parts.held(), cx.now);
            s.gained = cx.now;
            s.dirty = true;
        }
    }

    /// `peer` advertised the whole artifact `id`.
    pub(crate) fn add_full(&mut self, id: &ArtifactId, peer: NodeId) {
        if let Some(s) = self.table.get_mut(id)
            && !s.full.contains(&peer)
        {
            s.full.push(peer);
            s.dirty = true;
        }
    }

    /// `peer` withdrew its advert of `id`.
    pub(crate) fn on_withdraw(&mut self, id: &ArtifactId, peer: NodeId) {
        if let Some(s) = self.table.get_mut(id) {
            s.full.retain(|p| *p != peer);
        }
    }

    /// A `Have` from `peer`; `Err` names a protocol violation.
    pub(crate) fn on_have(
        &mut self,
        peer: NodeId,
        id: ArtifactId,
        ranges: &[ChunkRange],
        (cfg, now, me): (&Config, Time, NodeId),
    ) -> Result<(), &'static str> {
        if ranges.len() > cfg.max_have_ranges {
            return Err("too many ranges in one have");
        }
        let Some(s) = self.table.get_mut(&id) else {
            // Not fetching it (any more): nothing to keep.
            return Ok(());
        };
        let count = s.manifest.count();
        if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
            return Err("have of chunks the artifact does not have");
        }
        if !s.interested.contains(&peer) {
            s.interested.push(peer);
            s.dirty = true;
        }
        if ranges.is_empty() {
            if !s.fetching.contains(&peer) {
                s.fetching.push(peer);
            }
            if s.parts.held() > 0 && !s.tell.contains(&peer) && !s.full.contains(&peer) {
                s.tell.push(peer);
            }
            return Ok(());
        }
        if s.bad.contains(&peer) {
            return Ok(());
        }
        let pos = match s.partial.iter().position(|(p, _)| *p == peer) {
            Some(pos) => pos,
            None => {
                s.partial.push((peer, Bits::new(count)));
                s.partial.len() - 1
            }
        };
        // The owner of a chunk's stripe pushes it to the peers fetching the artifact (this node
        // told every peer so when it started): once anyone holds the chunk, wait for the push
        // for `push_patience` if the owner fetches the artifact too (it sent a `Have`).
        let owns = |s: &Swarm, i: u32| {
            if s.stripes.takers.is_empty() {
                return false;
            }
            let owner = s.stripes.takers[s.stripes.owner(i)];
            s.stripes.complete
                && owner != me
                && s.fetching.contains(&owner)
                && !s.bad.contains(&owner)
        };
        let until = now + cfg.push_patience;
        self.window_opened |= release_pushes(s, &mut self.pushes_out, peer, ranges);
        for r in ranges {
            for i in r.start..r.end {
                if s.partial[pos].1.set(i) {
                    s.avail[i as usize] = s.avail[i as usize].saturating_add(1);
                    s.refresh(i);
                }
                if owns(s, i)
                    && s.expect[i as usize].is_none()
                    && !s.parts.has(i)
                    && s.asked[i as usize].is_none()
                    && !s.checking.iter().any(|c| c.0 == i)
                {
                    s.expect[i as usize] = Some(until);
                    s.expecting = true;
                }
            }
        }
        s.dirty = true;
        Ok(())
    }

    /// A `Decline` from `peer`: it asked others for these chunks of `id`, so this node pushes
    /// it none of them. Returns whether a swarm of `id` took it; `Err` names a protocol
    /// violation.
    pub(crate) fn on_decline(
        &mut self,
        peer: NodeId,
        id: ArtifactId,
        ranges: &[ChunkRange],
        cfg: &Config,
    ) -> Result<bool, &'static str> {
        if ranges.len() > cfg.max_have_ranges {
            return Err("too many ranges in one decline");
        }
        if ranges.iter().any(|r| r.start >= r.end) {
            return Err("empty range in a decline");
        }
        let Some(s) = self.table.get_mut(&id) else {
            return Ok(false);
        };
        let count = s.manifest.count();
        if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
            return Err("decline of chunks the artifact does not have");
        }
        for r in ranges {
            mark_declined(s, peer, *r);
        }
        s.owed
            .retain(|(p, i)| *p != peer || !ranges.iter().any(|r| (r.start..r.end).contains(i)));
        self.window_opened |= release_pushes(s, &mut self.pushes_out, peer, ranges);
        Ok(true)
    }

    /// Whether this node may have pushed chunks of `id` to `peer` that are still queued: it
    /// pushed it some while fetching `id`; `None` if it fetches `id` no more (or never did).
    pub(crate) fn pushed_to(&self, id: &ArtifactId, peer: &NodeId) -> Option<bool> {
        self.table.get(id).map(|s| s.pushed_to.contains(peer))
    }

    /// Forgets `peer` in every swarm; its requests are retried elsewhere (each counts as a
    /// retry).
    pub(crate) fn on_disconnect(&mut self, peer: NodeId, sink: &mut Sink) {
        for s in self.table.values_mut() {
            s.full.retain(|p| *p != peer);
            drop_partial(s, peer);
            s.tell.retain(|p| *p != peer);
            // A new connection starts afresh, as a source of a download does once it is
            // advertised again (its penalties live on in the peer's ban and bad-data count).
            s.bad.retain(|p| *p != peer);
            s.interested.retain(|p| *p != peer);
            s.fetching.retain(|p| *p != peer);
            s.declined.retain(|(p, _)| *p != peer);
            s.declines.retain(|(p, _)| *p != peer);
            s.unacked.retain(|(p, _)| *p != peer);
            s.owed.retain(|(p, _)| *p != peer);
            s.forget_expected(peer);
        }
        self.unwanted.remove(&peer);
        self.pushes_out.remove(&peer);
        let gone: Vec<RequestId> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for req_id in gone {
            if self
                .end_request(req_id)
                .is_some_and(|r| r.deadline.is_some())
            {
                sink.metrics.retries += 1;
            }
        }
        self.per_peer.remove(&peer);
        self.pace.remove(&peer);
        self.slow.remove(&peer);
    }

    /// Ends a request: out of the limits, its deadline and its chunk's `asked`.
    fn end_request(&mut self, req_id: RequestId) -> Option<ChunkReq> {
        let req = self.reqs.remove(&req_id)?;
        self.freed = true;
        if req.counted {
            self.in_flight -= 1;
        }
        if let Some(t) = req.deadline {
            self.deadlines.remove(&(t, req_id));
        }
        if let Some(n) = self.per_peer.get_mut(&req.peer) {
            *n = n.saturating_sub(1);
        }
        if let Some(s) = self.table.get_mut(&req.id)
            && let Some(asked @ Some(_)) = s.asked.get_mut(req.index as usize)
            && *asked == Some(req_id)
        {
            *asked = None;
            s.refresh(req.index);
            s.dirty = true;
        }
        Some(req)
    }

    /// Times out the requests whose deadline passed: the chunk is asked elsewhere, the peer
    /// stays busy until it answers and is no longer asked for that chunk.
    pub(crate) fn advance(&mut self, now: Time, cfg: &Config, sink: &mut Sink) {
        while let Some((&(t, req_id), _)) = self.deadlines.first_key_value() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, req_id));
            sink.metrics.timeouts += 1;
            let Some(req) = self.reqs.get_mut(&req_id) else {
                continue;
            };
            req.deadline = None;
            if req.counted {
                req.counted = false;
                self.in_flight -= 1;
                self.freed = true;
            }
            let (peer, id, index) = (req.peer, req.id, req.index);
            let waited = now.saturating_since(req.sent).as_nanos() as u64;
            self.note_pace(peer, waited, now);
            if let Some(s) = self.table.get_mut(&id) {
                if let Some(asked) = s.asked.get_mut(index as usize)
                    && *asked == Some(req_id)
                {
                    *asked = None;
                }
                if let Some((_, bits)) = s.partial.iter_mut().find(|(p, _)| *p == peer)
                    && bits.clear(index)
                {
                    s.avail[index as usize] -= 1;
                }
                s.refresh(index);
                s.dirty = true;
            }
        }
        let expired: Vec<ArtifactId> = self
            .table
            .iter()
            .filter(|(_, s)| s.done_until.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(s) = self.table.remove(&id) {
                self.reserved -= s.manifest.size();
                self.freed = true;
            }
        }
        if !self.waiting.is_empty() {
            let stalled: Vec<ArtifactId> = self
                .table
                .iter_mut()
                .filter(|(_, s)| s.active && s.done_until.is_none())
                .filter_map(|(id, s)| {
                    if s.parts.held() > s.progress.0 {
                        s.progress = (s.parts.held(), now);
                        None
                    } else {
                        (now >= s.progress.1 + stall_after(s, cfg)).then_some(*id)
                    }
                })
                .collect();
            for id in stalled {
                self.demote(&id, sink);
            }
        }
        for s in self.table.values_mut() {
            if s.active && !s.patient && now >= s.since + cfg.swarm_patience {
                s.patient = true;
                s.dirty = true;
            }
            if s.active && s.is_idle() && now >= s.gained + cfg.swarm_patience {
                s.dirty = true;
            }
            if s.active && !s.overdue && now >= s.since + overdue_after(s, cfg) {
                s.overdue = true;
                s.dirty = true;
            }
            if s.expecting {
                // Waits that ended are over for good: the chunk may be asked of anyone.
                let gained = s.gained + cfg.push_patience;
                let mut left = false;
                for e in s.expect.iter_mut() {
                    match e {
                        Some(t) if now >= (*t).max(gained) => {
                            *e = None;
                            s.dirty = true;
                        }
                        Some(_) => left = true,
                        None => {}
                    }
                }
                s.expecting = left;
            }
        }
    }

    /// Whether `req_id` is a chunk request id this node handed out (answered or not).
    fn issued(&self, req_id: RequestId) -> bool {
        req_id & CHUNK_REQ_BIT != 0 && req_id & !CHUNK_REQ_BIT < self.next_req
    }

    /// A not-found from `peer` for chunk request `req_id`; `false` if this node never asked
    /// `peer` such a request.
    pub(crate) fn on_not_found(&mut self, peer: NodeId, req_id: RequestId) -> bool {
        match self.reqs.get(&req_id) {
            Some(r) if r.peer == peer => {}
            None => return self.issued(req_id),
            _ => return false,
        }
        let req = self.end_request(req_id).expect("request exists");
        if let Some(s) = self.table.get_mut(&req.id) {
            s.full.retain(|p| *p != peer);
            if let Some((_, bits)) = s.partial.iter_mut().find(|(p, _)| *p == peer)
                && bits.clear(req.index)
            {
                s.avail[req.index as usize] -= 1;
            }
            s.refresh(req.index);
        }
        true
    }

    /// A chunk from `peer`.
    pub(crate) fn on_chunk(
        &mut self,
        peer: NodeId,
        (req_id, id, index, data): (RequestId, ArtifactId, u32, Bytes),
        (offload, now): (bool, Time),
        sink: &mut Sink,
    ) -> ChunkAnswer {
        match self.reqs.get(&req_id) {
            Some(r) if r.peer == peer && r.id == id && r.index == index => {
                if r.deadline.is_some() {
                    let took = now.saturating_since(r.sent).as_nanos() as u64;
                    self.note_pace(peer, took, now);
                }
            }
            None if self.issued(req_id) => {
                // Cancelled, or the swarm ended: an answer may already have been on its way.
                sink.metrics.duplicates += 1;
                return ChunkAnswer::Kept;
            }
            _ => return ChunkAnswer::Unsolicited,
        }
        self.end_request(req_id);
        sink.metrics.bytes_received += data.len() as u64;
        sink.metrics.chunks_received += 1;
        let Some(s) = self.table.get_mut(&id).filter(|s| s.active) else {
            // Completed, dropped or set back to wait meanwhile (a late answer to a request
            // that timed out): a waiting swarm holds nothing.
            sink.metrics.duplicates += 1;
            return ChunkAnswer::Kept;
        };
        if index >= s.manifest.count()
            || s.parts.has(index)
            || s.checking.iter().any(|c| c.0 == index)
        {
            sink.metrics.duplicates += 1;
            return ChunkAnswer::Kept;
        }
        check_chunk(s, peer, (id, index, data), (offload, now), sink)
    }

    /// A chunk `peer` pushed (no request asked for it): kept if an active swarm lacks it (a
    /// request for it still in flight then ends and is cancelled on the wire), else dropped and
    /// counted against the peer's allowance of unwanted pushes (`max_unwanted_pushes`, net of
    /// its useful ones). A bad one is judged as a bad requested chunk.
    pub(crate) fn on_pushed(
        &mut self,
        peer: NodeId,
        (id, index, data): (ArtifactId, u32, Bytes),
        (offload, now): (bool, Time),
        cfg: &Config,
        sink: &mut Sink,
    ) -> ChunkAnswer {
        let wanted = self.table.get(&id).is_some_and(|s| {
            s.active
                && s.done_until.is_none()
                && index < s.manifest.count()
                && !s.parts.has(index)
                && !s.checking.iter().any(|c| c.0 == index)
                && !s.bad.contains(&peer)
        });
        if !wanted {
            sink.metrics.duplicates += 1;
            sink.metrics.pushes_unwanted += 1;
            let n = self.unwanted.entry(peer).or_default();
            *n = n.saturating_add(1);
            if *n > cfg.max_unwanted_pushes {
                return ChunkAnswer::TooManyUnwanted;
            }
            return ChunkAnswer::Unwanted;
        }
        if let Some(n) = self.unwanted.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
        sink.metrics.chunks_received += 1;
        sink.metrics.bytes_received += data.len() as u64;
        let s = self
            .table
            .get_mut(&id)
            .expect("a wanted chunk's swarm exists");
        s.expect[index as usize] = None;
        mark_holds(s, peer, index);
        if let Some(req_id) = s.asked[index as usize] {
            self.cancel_requests(&[req_id], sink);
        }
        let s = self
            .table
            .get_mut(&id)
            .expect("a wanted chunk's swarm exists");
        check_chunk(s, peer, (id, index, data), (offload, now), sink)
    }

    /// The driver's hash of a chunk it was asked to hash; returns the sender and what became
    /// of the chunk (`None` if no such chunk waits).
    pub(crate) fn on_hashed(
        &mut self,
        id: ArtifactId,
        index: u32,
        digest: &[u8; 32],
        now: Time,
    ) -> Option<(NodeId, ChunkAnswer)> {
        let s = self.table.get_mut(&id)?;
        let pos = s.checking.iter().position(|c| c.0 == index)?;
        let (_, data, peer) = s.checking.swap_remove(pos);
        let ok = data.len() as u64 == s.manifest.chunk_len(index)
            && s.manifest.chunk_hash(index) == Some(&digest[..]);
        if ok {
            s.gained = now;
        }
        let answer = judge(s, id, index, data, peer, ok);
        s.refresh(index);
        Some((peer, answer))
    }
}

/// Checks a chunk `peer` sent for swarm `s` (answered or pushed): hands it to the driver to
/// hash if hashing is offloaded (the chunk then waits in `checking`), else verifies it against
/// the manifest and judges it.
fn check_chunk(
    s: &mut Swarm,
    peer: NodeId,
    (id, index, data): (ArtifactId, u32, Bytes),
    (offload, now): (bool, Time),
    sink: &mut Sink,
) -> ChunkAnswer {
    if offload {
        sink.push(Output::HashChunk {
            id,
            index,
            data: data.clone(),
        });
        s.checking.push((index, data, peer));
        s.refresh(index);
        return ChunkAnswer::Checking;
    }
    let ok = s.manifest.verify_chunk(index, &data);
    if ok {
        s.gained = now;
    }
    let answer = judge(s, id, index, data, peer, ok);
    s.refresh(index);
    answer
}

/// Keeps a chunk whose hash matched (`ok`), or excludes its sender; the whole artifact once
/// every chunk is held.
fn judge(
    s: &mut Swarm,
    id: ArtifactId,
    index: u32,
    data: Bytes,
    peer: NodeId,
    ok: bool,
) -> ChunkAnswer {
    {
        if !ok {
            if !s.bad.contains(&peer) {
                s.bad.push(peer);
            }
            s.full.retain(|p| *p != peer);
            drop_partial(s, peer);
            s.forget_expected(peer);
            s.dirty = true;
            return ChunkAnswer::BadData;
        }
        if !s.parts.write(&s.manifest, index, &data) {
            return ChunkAnswer::Kept;
        }
        s.announce.push(index);
        s.dirty = true;
        let Some(whole) = s.parts.take_whole() else {
            return ChunkAnswer::Kept;
        };
        let artifact = Artifact {
            id,
            kind: s.advert.kind,
            attr: s.advert.attr.clone(),
            data: whole,
        };
        ChunkAnswer::Complete(artifact)
    }
}

impl Swarms {
    /// Ends the swarm of `id` that completed with `data`: cancels its requests still in flight
    /// and, unless the artifact is pooled (`pooled`: the pool serves it), keeps serving its
    /// chunks, cut from `data`, for `swarm_linger`: peers that count on the chunks it announced
    /// (or announces now) find them. Returns its manifest and full holders.
    pub(crate) fn finish(
        &mut self,
        id: &ArtifactId,
        data: &Bytes,
        pooled: bool,
        cx: &mut SwarmCx,
    ) -> Option<(Manifest, SmallVec<[NodeId; 4]>)> {
        if let Some(s) = self.table.get_mut(id) {
            // The chunks verified in this input, and the pushes the windows held back, are
            // pushed before the swarm ends.
            s.whole = Some(data.clone());
            let fresh = std::mem::take(&mut s.announce);
            push_owned(s, *id, &fresh, (&mut self.pushes_out, None), cx);
            s.announce = fresh;
            push_owed(s, *id, (&mut self.pushes_out, None), cx);
            // The chunks held back by `have_interval` are announced now: the artifact is
            // advertised whole only if it is pooled, and the neighbours may count on them.
            announce(s, *id, cx);
        }
        if pooled {
            return self.end(id, cx);
        }
        let s = self.table.get_mut(id)?;
        let key = s.key(*id);
        let asked: SmallVec<[RequestId; 4]> = s.asked.iter().flatten().copied().collect();
        s.done_until = Some(cx.now + cx.cfg.swarm_linger);
        s.whole = Some(data.clone());
        let out = (s.manifest.clone(), s.full.clone());
        self.order.remove(&key);
        self.cancel_requests(&asked, cx.sink);
        Some(out)
    }

    /// Ends requests and cancels them on the wire.
    fn cancel_requests(&mut self, asked: &[RequestId], sink: &mut Sink) {
        for req_id in asked {
            if let Some(req) = self.end_request(*req_id) {
                sink.send(
                    req.peer,
                    Message::Cancel { req_id: *req_id },
                    Class::Control,
                );
                sink.metrics.chunks_cancelled += 1;
            }
        }
    }

    /// Takes an active swarm that made no progress for a while back to the end of the waiting
    /// ones while others wait: its requests are cancelled, its chunks dropped and its budget
    /// freed, so swarms that no one serves (a member advertising artifacts it never serves
    /// the chunks of) cannot hold `max_incomplete_bytes` for ever.
    fn demote(&mut self, id: &ArtifactId, sink: &mut Sink) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        self.order.remove(&s.key(*id));
        let asked: SmallVec<[RequestId; 4]> = s.asked.iter().flatten().copied().collect();
        self.reserved -= s.manifest.size();
        s.active = false;
        s.patient = false;
        s.overdue = false;
        s.parts.clear();
        s.checking.clear();
        (0..s.manifest.count()).for_each(|i| s.refresh(i));
        s.announce.clear();
        s.unannounced.clear();
        s.expect.iter_mut().for_each(|e| *e = None);
        s.expecting = false;
        s.owed.clear();
        release_all(s, &mut self.pushes_out);
        s.seq = self.next_seq;
        s.stalled = true;
        self.next_seq += 1;
        self.waiting.insert(s.key(*id));
        self.freed = true;
        sink.metrics.swarms_stalled += 1;
        self.cancel_requests(&asked, sink);
    }

    /// Ends the swarm of `id` (completed, dropped, or obtained otherwise): cancels its requests
    /// in flight on the wire and frees its budget. Returns its manifest and full holders.
    pub(crate) fn end(
        &mut self,
        id: &ArtifactId,
        cx: &mut SwarmCx,
    ) -> Option<(Manifest, SmallVec<[NodeId; 4]>)> {
        let mut s = self.table.remove(id)?;
        release_all(&mut s, &mut self.pushes_out);
        let key = s.key(*id);
        if s.active {
            self.order.remove(&key);
            self.reserved -= s.manifest.size();
        } else {
            self.waiting.remove(&key);
        }
        let asked: SmallVec<[RequestId; 4]> = s.asked.iter().flatten().copied().collect();
        self.cancel_requests(&asked, cx.sink);
        self.activate(cx);
        Some((s.manifest, s.full))
    }

    /// Asks the priority function again about every swarm: a dropped one ends (its requests
    /// cancelled), one wanted later pauses, the others take their new priority. Returns the
    /// adverts dropped.
    pub(crate) fn reevaluate(
        &mut self,
        decide: impl Fn(&Advert) -> Decision,
        cx: &mut SwarmCx,
    ) -> Vec<Advert> {
        let mut dropped = Vec::new();
        let ids: Vec<ArtifactId> = self.table.keys().copied().collect();
        for id in ids {
            let s = &self.table[&id];
            if s.done_until.is_some() {
                continue;
            }
            let now_p = match decide(&s.advert) {
                Decision::Drop => {
                    dropped.push(s.advert.clone());
                    self.end(&id, cx);
                    continue;
                }
                Decision::Later => None,
                Decision::Fetch(p) => Some(p),
            };
            if now_p == s.priority {
                continue;
            }
            let active = s.active;
            let old = s.key(id);
            let s = self.table.get_mut(&id).expect("swarm exists");
            s.priority = now_p;
            s.dirty = true;
            let new = s.key(id);
            let set = if active {
                &mut self.order
            } else {
                &mut self.waiting
            };
            set.remove(&old);
            set.insert(new);
        }
        dropped
    }

    /// Starts chunk requests within the limits, swarms in priority order.
    pub(crate) fn schedule(&mut self, cx: &mut SwarmCx) {
        // A budget freed by a lingering swarm that ended lets waiting ones start.
        self.activate(cx);
        let order: Vec<ArtifactId> = self.order.iter().map(|k| k.2).collect();
        let freed = std::mem::take(&mut self.freed);
        // Whether this node still has chunks of its own stripes to ask the full holders for:
        // until it has asked for all of them, it asks them for no one else's (see `pick`).
        let mut duty = None;
        let most = cx.cfg.max_chunks_in_flight * cx.cfg.max_chunk_window_scale();
        for id in order {
            if self.in_flight >= most {
                return;
            }
            let s = self.table.get_mut(&id).expect("ordered swarm exists");
            if !s.dirty && !freed {
                continue;
            }
            s.dirty = false;
            let Some(priority) = s.priority else {
                continue;
            };
            let scale = cx.cfg.chunk_window_scale(s.manifest.chunk_size());
            let slow = self.slow_holders(&self.table[&id], cx.now);
            // The limits count chunks of `chunk_size` (see `Config::max_chunks_in_flight`).
            while self.in_flight < cx.cfg.max_chunks_in_flight * scale {
                let s = &self.table[&id];
                let fallback = s.overdue || s.idle(cx);
                let owes = fallback && *duty.get_or_insert_with(|| self.has_duty(cx));
                let Some((index, peer)) = self.pick(&id, fallback && !owes, &slow, cx) else {
                    break;
                };
                let s = &self.table[&id];
                let from_full = !s
                    .partial
                    .iter()
                    .any(|(p, bits)| *p == peer && bits.get(index));
                let t = &s.stripes.takers;
                if from_full && !t.is_empty() && t[s.stripes.owner(index)] != cx.me {
                    let m = &mut cx.sink.metrics;
                    let duty = s.asks_full(index, cx.me, &slow);
                    if duty && slow.contains(&t[s.stripes.owner(index)]) {
                        m.chunks_asked_slow_owner += 1;
                    } else if duty {
                        m.chunks_asked_handed_over += 1;
                    } else if s.overdue {
                        m.chunks_asked_overdue += 1;
                    } else {
                        m.chunks_asked_idle += 1;
                    }
                }
                self.request(id, index, peer, priority, cx);
                if owes {
                    // That may have been the last chunk of its own stripes.
                    duty = None;
                }
            }
        }
    }

    /// Whether every swarm's `ready` index agrees with its chunks' state.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn ready_is_exact(&self) -> bool {
        self.table.values().all(Swarm::ready_is_exact)
    }

    /// The members of swarm `s` (partial holders and stripe takers) found slow
    /// ([`Swarms::note_pace`]): a holder with a slow uplink. Their chunks are asked of them
    /// last, and their stripes pass to the next taker (see [`Swarm::asks_full`]).
    fn slow_holders(&self, s: &Swarm, now: Time) -> SmallVec<[NodeId; 4]> {
        let mut slow = SmallVec::new();
        if self.slow.is_empty() {
            return slow;
        }
        for p in s.partial.iter().map(|(p, _)| p).chain(&s.stripes.takers) {
            if self.slow.get(p).is_some_and(|until| now < *until) && !slow.contains(p) {
                slow.push(*p);
            }
        }
        slow
    }

    /// Records that `peer` took `took` nanoseconds to answer a chunk request (or to time out),
    /// at `now`, and whether that makes it slow: after [`SLOW_MIN_ANSWERS`] answers, its pace
    /// at least [`SLOW_PACE_FACTOR`] times the median pace of the peers that answered within
    /// [`SLOW_VERDICT_LIFETIME`]. The verdict holds for that lifetime whatever its later
    /// answers show: a slow holder that is asked little answers nearly as fast as any (the
    /// latency dominates), and would otherwise be found slow and not slow in turn.
    fn note_pace(&mut self, peer: NodeId, took: u64, now: Time) {
        let e = self.pace.entry(peer).or_insert(Pace {
            avg: took,
            at: now,
            answers: 0,
        });
        e.avg = e.avg.saturating_mul(3).saturating_add(took) / 4;
        e.at = now;
        e.answers = e.answers.saturating_add(1);
        let (pace, answers) = (e.avg, e.answers);
        let mut recent: SmallVec<[u64; 16]> = self
            .pace
            .values()
            .filter(|p| now < p.at + SLOW_VERDICT_LIFETIME)
            .map(|p| p.avg)
            .collect();
        if recent.len() < 2 {
            return;
        }
        recent.sort_unstable();
        let median = recent[(recent.len() - 1) / 2].max(1);
        if answers >= SLOW_MIN_ANSWERS && pace / SLOW_PACE_FACTOR >= median {
            self.slow.insert(peer, now + SLOW_VERDICT_LIFETIME);
        } else {
            self.slow.retain(|_, until| now < *until);
        }
    }

    /// Whether an active swarm has a chunk this node is to ask the full holders for (its
    /// stripe, [`Swarm::asks_full`]) that it has not asked for, no partial holder offers and a
    /// full holder not excluded holds.
    fn has_duty(&self, cx: &SwarmCx) -> bool {
        self.order.iter().any(|k| {
            let s = &self.table[&k.2];
            if s.priority.is_none() || !s.full.iter().any(|p| !s.bad.contains(p)) {
                return false;
            }
            let slow = self.slow_holders(s, cx.now);
            (0..s.manifest.count()).any(|i| {
                !s.parts.has(i)
                    && s.asked[i as usize].is_none()
                    && s.avail[i as usize] == 0
                    && !s.checking.iter().any(|c| c.0 == i)
                    && s.asks_full(i, cx.me, &slow)
            })
        })
    }

    /// The next chunk of `id` to ask for and whom to ask: the rarest chunk among partial
    /// holders, ties by a keyed hash; partial holders before full ones, then the least busy.
    /// With `fallback` (the swarm is overdue or idle, and this node has asked the full holders
    /// for every chunk of its own stripes) it may ask a full holder for a chunk of another
    /// node's stripe.
    fn pick(
        &self,
        id: &ArtifactId,
        fallback: bool,
        slow: &[NodeId],
        cx: &SwarmCx,
    ) -> Option<(u32, NodeId)> {
        let s = &self.table[id];
        let per_peer = cx.cfg.max_chunks_in_flight_per_peer
            * cx.cfg.chunk_window_scale(s.manifest.chunk_size());
        let room = |p: &NodeId| self.per_peer.get(p).copied().unwrap_or(0) < per_peer;
        let load = |p: &NodeId| self.per_peer.get(p).copied().unwrap_or(0);
        let full_open: SmallVec<[NodeId; 4]> = s
            .full
            .iter()
            .filter(|p| room(p) && !s.bad.contains(p))
            .copied()
            .collect();
        // The chunks some partial holder with room (not excluded, not slow) offers, as one
        // bitset: a chunk among them beats every other (`!partial_ok` leads the key).
        let mut offered = Bits::new(s.manifest.count());
        for (p, bits) in &s.partial {
            if room(p) && !s.bad.contains(p) && !slow.contains(p) {
                for (w, b) in offered.0.iter_mut().zip(&bits.0) {
                    *w |= b;
                }
            }
        }
        let open = |i: u32| {
            !(s.parts.has(i)
                || s.asked[i as usize].is_some()
                || s.checking.iter().any(|c| c.0 == i)
                || s.awaits_push(i, cx.now, cx.cfg))
        };
        let key =
            |i: u32, partial_ok: bool| (!partial_ok, s.avail[i as usize], s.tiebreak[i as usize]);
        let mut best: Option<((bool, u16, u64), u32)> = None;
        // Ties (equal keys) go to the lower index, whatever order the chunks are looked at in.
        let consider = |best: &mut Option<((bool, u16, u64), u32)>, i: u32, partial_ok: bool| {
            let k = key(i, partial_ok);
            if best.is_none_or(|b| (k, i) < b) {
                *best = Some((k, i));
            }
        };
        // First the chunks partial holders with room offer that are ready. Where they
        // are many, walk `ready` (in the key's order) to the first one offered; where
        // few, look at each.
        for (w, r) in offered.0.iter_mut().zip(&s.ready_bits.0) {
            *w &= r;
        }
        let offers: usize = offered.0.iter().map(|w| w.count_ones() as usize).sum();
        if offers > 0 && offers >= s.ready.len() / 8 {
            for &(avail, tiebreak, i) in &s.ready {
                if offered.get(i) && !s.awaits_push(i, cx.now, cx.cfg) {
                    best = Some(((false, avail, tiebreak), i));
                    break;
                }
            }
        } else {
            for (w, &word) in offered.0.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let i = w as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    if open(i) {
                        consider(&mut best, i, true);
                    }
                }
            }
        }
        // Then, if none is open, those a full holder may be asked for: any chunk when
        // falling back, else those of the stripes this node takes. Whether it takes
        // chunk `i`'s stripe depends on `i` modulo the takers only, so each stripe is
        // looked at once, then walked.
        let count = s.manifest.count();
        let takers = s.stripes.takers.len() as u32;
        if best.is_none() && !full_open.is_empty() {
            if fallback || takers == 0 {
                for i in 0..count {
                    if open(i) {
                        consider(&mut best, i, false);
                    }
                }
            } else {
                for first in 0..takers.min(count) {
                    if !s.asks_full(first, cx.me, slow) {
                        continue;
                    }
                    for i in (first..count).step_by(takers as usize) {
                        if open(i) {
                            consider(&mut best, i, false);
                        }
                    }
                }
            }
        }
        // Last, a chunk only slow partial holders offer, while this swarm has no request in
        // flight to any other holder, and not of a slow owner's stripe while a full holder is
        // left: that comes sooner from the taker it passed to, who asks the full holder.
        let full_left = s.full.iter().any(|p| !s.bad.contains(p));
        if best.is_none()
            && !slow.is_empty()
            && !self
                .reqs
                .values()
                .any(|r| r.id == *id && r.deadline.is_some() && !slow.contains(&r.peer))
        {
            for (p, bits) in &s.partial {
                if !(room(p) && !s.bad.contains(p) && slow.contains(p)) {
                    continue;
                }
                for (w, &word) in bits.0.iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        let i = w as u32 * 64 + bits.trailing_zeros();
                        bits &= bits - 1;
                        if open(i) && !(full_left && s.handed_from_slow(i, slow)) {
                            consider(&mut best, i, true);
                        }
                    }
                }
            }
        }
        let (key, i) = best?;
        // The key's first field is `!partial_ok`.
        let from_partial = !key.0;
        // The holder expected to answer first: its requests in flight (this one included)
        // times its pace; one not yet heard from is tried first. A slow partial holder comes
        // after the full holders for a chunk this node asks them for.
        let rank = |p: &NodeId| {
            let pace = self.pace.get(p).map_or(0, |e| e.avg);
            let expected = (load(p) as u64 + 1).saturating_mul(pace);
            (expected, load(p), keyed_hash(&self.salt, (id, i, p)))
        };
        let partial = |slow_ok: bool| {
            s.partial
                .iter()
                .filter(|(p, bits)| {
                    bits.get(i) && room(p) && !s.bad.contains(p) && slow_ok == slow.contains(p)
                })
                .map(|(p, _)| *p)
                .min_by_key(rank)
        };
        let peer = partial(false)
            .or_else(|| {
                (!from_partial)
                    .then(|| full_open.iter().copied().min_by_key(rank))
                    .flatten()
            })
            .or_else(|| partial(true))?;
        Some((i, peer))
    }

    fn request(
        &mut self,
        id: ArtifactId,
        index: u32,
        peer: NodeId,
        priority: Priority,
        cx: &mut SwarmCx,
    ) {
        let s = self.table.get_mut(&id).expect("swarm exists");
        let len = s.manifest.chunk_len(index);
        let req_id = self.send_request((id, index, len), peer, priority, cx);
        let s = self.table.get_mut(&id).expect("swarm exists");
        s.asked[index as usize] = Some(req_id);
        s.refresh(index);
        // The chunk's owner would push it too: tell it this node fetches it elsewhere.
        if s.stripes.complete && !s.stripes.takers.is_empty() {
            let owner = s.stripes.takers[s.stripes.owner(index)];
            if owner != cx.me && owner != peer && !s.bad.contains(&owner) && (cx.connected)(&owner)
            {
                s.declines.push((owner, index));
            }
        }
    }

    /// Sends a chunk request for chunk `index` (of `len` bytes) of `id` to `peer` and counts it
    /// in the limits; the caller records it in its swarm.
    fn send_request(
        &mut self,
        (id, index, len): (ArtifactId, u32, u64),
        peer: NodeId,
        priority: Priority,
        cx: &mut SwarmCx,
    ) -> RequestId {
        let req_id = CHUNK_REQ_BIT | self.next_req;
        self.next_req += 1;
        let deadline = cx.now + cx.cfg.request_timeout(len);
        self.reqs.insert(
            req_id,
            ChunkReq {
                peer,
                id,
                index,
                counted: true,
                deadline: Some(deadline),
                sent: cx.now,
            },
        );
        self.deadlines.insert((deadline, req_id), ());
        self.in_flight += 1;
        *self.per_peer.entry(peer).or_default() += 1;
        cx.sink.metrics.chunks_requested += 1;
        let msg = Message::ChunkRequest {
            req_id,
            id,
            index,
            priority,
        };
        cx.sink.send(peer, msg, Class::Control);
        req_id
    }

    /// Asks `asked.peer`, a full holder of a chunked artifact whose manifest this node has just
    /// requested from it, for the chunks of this node's own stripe and of the slow owners' that
    /// pass to it (as the swarm would deal them from the advert's size and the connected
    /// members) in the same round trip, so that they
    /// follow the manifest instead of waiting for it: the pull then costs two one-way latencies
    /// before the first chunk leaves the holder, not four. Only when this node has no swarm active
    /// or waiting and no chunk request in flight (so that its swarm can be active when the chunks
    /// arrive, and a burst of adverts does not queue every swarm's chunks at the holder ahead of
    /// their manifests: the simulated W2 of 50 artifacts took 2.12 s with that, 1.66 s without),
    /// within the per-peer and global limits. The swarm adopts these requests when it starts
    /// ([`Swarms::start`]); a chunk that arrives without an active swarm is dropped as a
    /// duplicate.
    pub(crate) fn prefetch(&mut self, asked: ManifestAsked, cx: &mut SwarmCx) {
        let ManifestAsked {
            advert,
            peer,
            priority,
            full,
        } = asked;
        let id = advert.id;
        let size = advert.size;
        let chunk = u64::from(chunk_size_for(size, cx.cfg.chunk_size));
        if self.table.contains_key(&id)
            || !(cx.connected)(&peer)
            || !self.waiting.is_empty()
            || self.reserved > 0
            || self.in_flight > 0
            || size > cx.cfg.max_artifact_size
            || size <= u64::from(cx.cfg.chunk_size)
        {
            return;
        }
        let Ok(count) = u32::try_from(size.div_ceil(chunk)) else {
            return;
        };
        let scale = cx.cfg.chunk_window_scale(chunk as u32);
        let stripes = Stripes::new(&id, &full, cx);
        if !stripes.takers.contains(&cx.me) {
            return;
        }
        // The stripes this node takes: its own, and those of owners found slow that pass to it
        // (as `Swarm::asks_full` deals them before `swarm_patience`). Whether it takes chunk
        // `i` depends on `i`'s owner only.
        let slow: SmallVec<[NodeId; 4]> = stripes
            .takers
            .iter()
            .filter(|p| self.slow.get(*p).is_some_and(|until| cx.now < *until))
            .copied()
            .collect();
        let takes: SmallVec<[bool; 16]> = (0..stripes.takers.len() as u32)
            .map(|first| stripes.taker(first, &slow) == Some(cx.me))
            .collect();
        for i in (0..count).filter(|i| takes[(*i % stripes.takers.len() as u32) as usize]) {
            let busy = self.per_peer.get(&peer).copied().unwrap_or(0);
            if busy >= cx.cfg.max_chunks_in_flight_per_peer * scale
                || self.in_flight >= cx.cfg.max_chunks_in_flight * scale
            {
                break;
            }
            let len = if i + 1 == count {
                size - chunk * u64::from(count - 1)
            } else {
                chunk
            };
            self.send_request((id, i, len), peer, priority, cx);
            if stripes.takers[stripes.owner(i)] != cx.me {
                cx.sink.metrics.chunks_asked_slow_owner += 1;
            }
        }
    }

    /// Announces newly verified chunks to every connected peer that is not a full holder, and
    /// answers the peers that asked what this node holds.
    pub(crate) fn flush(&mut self, cx: &mut SwarmCx) {
        let window = (cx.cfg.max_pushes_in_flight_per_peer as u64)
            .saturating_mul(u64::from(cx.cfg.chunk_size));
        let opened = std::mem::take(&mut self.window_opened);
        for (id, s) in self.table.iter_mut() {
            decline(s, *id, cx);
            if opened && !s.owed.is_empty() {
                push_owed(s, *id, (&mut self.pushes_out, Some(window)), cx);
            }
            if !s.tell.is_empty() {
                // Peers that start fetching it get the chunks of this node's stripe it holds.
                let held: Vec<u32> = s.parts.held_indices().collect();
                push_owned(s, *id, &held, (&mut self.pushes_out, Some(window)), cx);
            } else if !s.announce.is_empty() {
                let fresh = s.announce.clone();
                push_owned(s, *id, &fresh, (&mut self.pushes_out, Some(window)), cx);
            }
            s.unannounced.append(&mut s.announce);
            if s.announced_at
                .is_none_or(|t| cx.now >= t + have_interval(s, cx.cfg))
            {
                announce(s, *id, cx);
            }
            if !s.tell.is_empty() {
                let held = s.parts.held_indices();
                let batches = ranges_of(held, cx.cfg.max_have_ranges);
                for peer in s.tell.drain(..) {
                    if !(cx.connected)(&peer) {
                        continue;
                    }
                    for ranges in &batches {
                        let msg = Message::Have {
                            id: *id,
                            ranges: ranges.clone(),
                        };
                        cx.sink.send(peer, msg, Class::Control);
                    }
                }
            }
        }
    }
}

/// The least time between two `Have`s of a swarm's new chunks: `have_interval` for a swarm in
/// chunks smaller than `chunk_size` (a `Have` of one 16 KiB chunk to 39 peers costs about 12 %
/// of its bytes), none for one in chunks of `chunk_size` (0.5 % at 128 KiB to 12 peers: a pull
/// need not wait for its `Have`).
fn have_interval(s: &Swarm, cfg: &Config) -> Duration {
    if s.manifest.chunk_size() < cfg.chunk_size {
        cfg.have_interval
    } else {
        Duration::ZERO
    }
}

/// How long an active swarm may go without a verified chunk while others wait for the budget:
/// two chunk request timeouts.
fn stall_after(s: &Swarm, cfg: &Config) -> Duration {
    cfg.request_timeout(u64::from(s.manifest.chunk_size())) * 2
}

/// How long after it became active a swarm asks full holders for any chunk: one chunk request
/// timeout, the time an owner that wants the artifact has to fetch its chunks and say so; in a
/// partial mesh (the deals differ, and an owner in this node's deal may never fetch what this
/// node counts on it for) [`PARTIAL_MESH_PATIENCES`] times `swarm_patience` if that is shorter.
fn overdue_after(s: &Swarm, cfg: &Config) -> Duration {
    let timeout = cfg.request_timeout(u64::from(s.manifest.chunk_size()));
    if s.stripes.shared {
        timeout
    } else {
        timeout.min(cfg.swarm_patience * PARTIAL_MESH_PATIENCES)
    }
}

/// How many `swarm_patience`s a swarm in a partial mesh waits before it asks the full holders
/// for any chunk (`p2p-sim run swarm-partial-mesh --seeds 0..10`, all-hold p50 / max and the
/// origin's chunk messages for 128 chunks: 2: 674 / 705 ms, 537-648; 4: 709 / 774 ms,
/// 305-349; 8: 1,088 / 1,130 ms, 256-305; one chunk request timeout: 1,241 / 2,073 ms).
const PARTIAL_MESH_PATIENCES: u32 = 4;

/// How many times slower than the median of the peers' a holder's chunk answers must be for it
/// to count as slow ([`Swarms::note_pace`]). Queueing alone made answers up to five times
/// slower than the fastest member's in the simulator's `mesh`; a node at a tenth of its peers'
/// rate answered twelve times slower than the median in `swarm-slow-nodes`.
const SLOW_PACE_FACTOR: u64 = 8;

/// How many answers (or timeouts) of a peer make its pace evidence that it is slow
/// ([`Swarms::note_pace`]): one late answer (a pause of the peer's process) is not.
const SLOW_MIN_ANSWERS: u32 = 4;

/// How long a holder found slow counts as slow ([`Swarms::note_pace`]), and how recent the
/// paces are that it is measured against: once the verdict lapses it is asked as any other,
/// and found slow again or not.
const SLOW_VERDICT_LIFETIME: Duration = Duration::from_secs(30);

/// Records that `peer` declined the chunks of `r` (those within the artifact).
fn mark_declined(s: &mut Swarm, peer: NodeId, r: ChunkRange) {
    let count = s.manifest.count();
    let pos = match s.declined.iter().position(|(p, _)| *p == peer) {
        Some(pos) => pos,
        None => {
            s.declined.push((peer, Bits::new(count)));
            s.declined.len() - 1
        }
    };
    for i in r.start..r.end.min(count) {
        s.declined[pos].1.set(i);
    }
}

/// Records that `peer` holds chunk `i` (it pushed it, or was pushed it by this node).
fn mark_holds(s: &mut Swarm, peer: NodeId, i: u32) {
    let pos = match s.partial.iter().position(|(p, _)| *p == peer) {
        Some(pos) => pos,
        None => {
            s.partial.push((peer, Bits::new(s.manifest.count())));
            s.partial.len() - 1
        }
    };
    if s.partial[pos].1.set(i) {
        s.avail[i as usize] = s.avail[i as usize].saturating_add(1);
        s.refresh(i);
    }
}

/// The push window: the bytes pushed and not yet announced back per peer, and the most it may
/// hold (`None`: no limit, for a swarm that ends).
type Window<'a> = (&'a mut FastMap<NodeId, u64>, Option<u64>);

/// Pushes the chunks among `indices` that this node owns in the swarm's stripes to every peer
/// that told it it fetches the artifact (a `Have`): see [`push_to`].
fn push_owned(s: &mut Swarm, id: ArtifactId, indices: &[u32], window: Window, cx: &mut SwarmCx) {
    if !s.stripes.complete {
        return;
    }
    let Some(mine) = s.stripes.takers.iter().position(|p| *p == cx.me) else {
        return;
    };
    let (out, limit) = window;
    for &i in indices {
        if i >= s.manifest.count() || s.stripes.owner(i) != mine {
            continue;
        }
        let targets = s.fetching.clone();
        push_to(s, (id, i), &targets, (&mut *out, limit), cx);
    }
}

/// Pushes chunk `i` of the swarm to those of `targets` that are not known to hold it, did not
/// decline it, are not full holders nor excluded, whose push window has room (else the push
/// is owed until it does) and whose serving budget covers it; each such peer is then taken to
/// hold the chunk, so it is pushed each chunk at most once. A peer that misses a push (this
/// node learnt of it later) gets it when it asks what this node holds, or fetches it after
/// `push_patience`.
fn push_to(
    s: &mut Swarm,
    (id, i): (ArtifactId, u32),
    targets: &[NodeId],
    (out, limit): Window,
    cx: &mut SwarmCx,
) {
    let len = s.manifest.chunk_len(i);
    let data = match &s.whole {
        Some(whole) => s.manifest.slice(whole, i),
        None => s.parts.chunk(&s.manifest, i),
    };
    let Some(data) = data else {
        return;
    };
    let class = s.priority.unwrap_or_default().class();
    for &peer in targets {
        let wanted = !s.full.contains(&peer)
            && !s.bad.contains(&peer)
            && !s.partial.iter().any(|(q, bits)| *q == peer && bits.get(i))
            && !s.declined.iter().any(|(q, bits)| *q == peer && bits.get(i));
        if !wanted {
            continue;
        }
        let sent = out.get(&peer).copied().unwrap_or(0);
        if limit.is_some_and(|l| sent > 0 && sent + len > l) {
            if !s.owed.contains(&(peer, i)) {
                s.owed.push((peer, i));
            }
            continue;
        }
        if !(cx.pushable)(&peer, len) {
            continue;
        }
        cx.sink.metrics.chunks_served += 1;
        cx.sink.metrics.bytes_served += data.len() as u64;
        let msg = Message::Chunk {
            req_id: PUSHED_CHUNK,
            id,
            index: i,
            data: data.clone(),
        };
        cx.sink.send(peer, msg, class);
        mark_holds(s, peer, i);
        if !s.pushed_to.contains(&peer) {
            s.pushed_to.push(peer);
        }
        *out.entry(peer).or_default() += len;
        s.unacked.push((peer, i));
    }
}

/// Sends the swarm's owed pushes that its peers' windows now have room for (or all of them,
/// with no limit); the others stay owed.
fn push_owed(s: &mut Swarm, id: ArtifactId, (out, limit): Window, cx: &mut SwarmCx) {
    let mut owed = std::mem::take(&mut s.owed);
    owed.sort_unstable_by_key(|(_, i)| *i);
    for group in owed.chunk_by(|a, b| a.1 == b.1) {
        let peers: SmallVec<[NodeId; 8]> = group
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| s.fetching.contains(p))
            .collect();
        push_to(s, (id, group[0].1), &peers, (&mut *out, limit), cx);
    }
}

/// Takes the chunks of `ranges` pushed to `peer` (it announced or declined them) out of its
/// push window; returns whether any was.
fn release_pushes(
    s: &mut Swarm,
    out: &mut FastMap<NodeId, u64>,
    peer: NodeId,
    ranges: &[ChunkRange],
) -> bool {
    let before = s.unacked.len();
    let manifest = &s.manifest;
    s.unacked.retain(|(p, i)| {
        let acked = *p == peer && ranges.iter().any(|r| (r.start..r.end).contains(i));
        if acked && let Some(n) = out.get_mut(p) {
            *n = n.saturating_sub(manifest.chunk_len(*i));
        }
        !acked
    });
    s.unacked.len() < before
}

/// Takes every chunk the swarm pushed out of its receivers' push windows (the swarm ends or
/// starts over).
fn release_all(s: &mut Swarm, out: &mut FastMap<NodeId, u64>) {
    for (p, i) in s.unacked.drain(..) {
        if let Some(n) = out.get_mut(&p) {
            *n = n.saturating_sub(s.manifest.chunk_len(i));
        }
    }
}

/// Sends each owner of chunks asked of other peers since the last flush one `Decline` of them.
fn decline(s: &mut Swarm, id: ArtifactId, cx: &mut SwarmCx) {
    if s.declines.is_empty() {
        return;
    }
    s.declines.sort_unstable();
    s.declines.dedup();
    for owner in s.declines.chunk_by(|a, b| a.0 == b.0) {
        let peer = owner[0].0;
        for ranges in ranges_of(owner.iter().map(|d| d.1), cx.cfg.max_have_ranges) {
            cx.sink
                .send(peer, Message::Decline { id, ranges }, Class::Control);
        }
    }
    s.declines.clear();
}

/// Announces the swarm's verified chunks not yet announced (`unannounced`) in one `Have` to
/// every connected peer that is not a full holder, so one that starts fetching it later already
/// knows who holds what (peers about to be told everything this node holds are skipped).
fn announce(s: &mut Swarm, id: ArtifactId, cx: &mut SwarmCx) {
    if s.unannounced.is_empty() {
        return;
    }
    s.announced_at = Some(cx.now);
    s.unannounced.sort_unstable();
    s.unannounced.dedup();
    let batches = ranges_of(s.unannounced.drain(..), cx.cfg.max_have_ranges);
    for peer in cx.members.iter().filter(|p| (cx.connected)(p)) {
        if s.full.contains(peer) || s.tell.contains(peer) {
            continue;
        }
        for ranges in &batches {
            let msg = Message::Have {
                id,
                ranges: ranges.clone(),
            };
            cx.sink.send(*peer, msg, Class::Control);
        }
    }
}

/// Takes `peer`'s partial holdings out of a swarm's availability counts.
fn drop_partial(s: &mut Swarm, peer: NodeId) {
    if let Some(pos) = s.partial.iter().position(|(p, _)| *p == peer) {
        let (_, bits) = s.partial.swap_remove(pos);
        for i in 0..s.manifest.count() {
            if bits.get(i) {
                s.avail[i as usize] -= 1;
                s.refresh(i);
            }
        }
        s.dirty = true;
    }
}

/// The assignment of chunks to the nodes that fetch them from the full holders: chunk `i`
/// belongs to the `(i + offset)`-th of the members that were connected (or this node) and not
/// full holders when the swarm started, sorted by id, where the offset comes from the
/// artifact's id. In a full mesh every member computes the same assignment, so the origin sends
/// each chunk about once; a member that is down or unreachable owns no chunk.
struct Stripes {
    takers: Vec<NodeId>,
    offset: u64,
    /// At most a third of the members that are not full holders were out of this node's
    /// reach (down, or not its neighbours): the members deal the chunks alike (in a full mesh
    /// with a few members down, exactly). In a partial mesh the deals differ: an owner in this
    /// node's deal may never fetch the chunks this node counts on it for.
    shared: bool,
    /// Pushes are on (`Config::push_chunks`) and the deal is `shared`: owners push the chunks
    /// of their stripes and the others wait for them; in a partial mesh nodes fetch every
    /// chunk.
    complete: bool,
}

impl Stripes {
    fn new(id: &ArtifactId, full: &[NodeId], cx: &SwarmCx) -> Self {
        let takers: Vec<NodeId> = cx
            .members
            .iter()
            .filter(|m| !full.contains(m) && (**m == cx.me || (cx.connected)(m)))
            .copied()
            .collect();
        let offset = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
        let dealt = cx.members.iter().filter(|m| !full.contains(m)).count();
        let shared = (dealt - takers.len().min(dealt)) * 3 <= dealt.saturating_sub(1);
        Stripes {
            takers,
            offset,
            shared,
            complete: cx.cfg.push_chunks && shared,
        }
    }

    /// Who takes chunk `i` from the full holders before `swarm_patience`: its owner, or if the
    /// owner is in `slow`, the next taker after it that is not (`None` if all are).
    fn taker(&self, i: u32, slow: &[NodeId]) -> Option<NodeId> {
        let n = self.takers.len();
        let owner = self.owner(i);
        (0..n)
            .map(|k| self.takers[(owner + k) % n])
            .find(|p| !slow.contains(p))
    }

    /// The position in `takers` of chunk `i`'s owner (`takers` must not be empty).
    fn owner(&self, i: u32) -> usize {
        let n = self.takers.len() as u64;
        ((u64::from(i) + self.offset % n) % n) as usize
    }
}

impl Swarm {
    /// Whether chunk `i`'s stripe owner is in `slow` and has passed its stripe on to a taker
    /// that is not ([`Swarm::asks_full`]).
    fn handed_from_slow(&self, i: u32, slow: &[NodeId]) -> bool {
        let t = &self.stripes.takers;
        !slow.is_empty()
            && !t.is_empty()
            && slow.contains(&t[self.stripes.owner(i)])
            && self.stripes.taker(i, slow).is_some()
    }

    /// Whether this node (`me`) asks the full holders for chunk `i`: the chunk's owner does
    /// until `swarm_patience` has passed; after it, the first taker from the owner on (in the
    /// stripes' order) that is this node or a peer known to fetch the artifact (it sent a
    /// `Have`), so a chunk whose owner does not want the artifact passes to the next one that
    /// does. (Past one chunk request timeout, any node asks; see `pick`.)
    ///
    /// An owner in `slow` (see [`Swarms::slow_holders`]) hands its chunks over at once to the
    /// next taker that is not: a holder with a slow uplink would otherwise send each chunk of
    /// its stripe to every peer, and they would all wait for it.
    fn asks_full(&self, i: u32, me: NodeId, slow: &[NodeId]) -> bool {
        let t = &self.stripes.takers;
        if t.is_empty() {
            return true;
        }
        let n = t.len() as u64;
        let owner = self.stripes.owner(i) as u64;
        let next = |k: u64| t[((owner + k) % n) as usize];
        if !self.patient {
            return self.stripes.taker(i, slow) == Some(me);
        }
        (0..n)
            .map(next)
            .find(|p| *p == me || (self.interested.contains(p) && !slow.contains(p)))
            == Some(me)
    }
}
