//! The per-node state machine: membership, pool, adverts, downloads and serving.

use crate::budget::FairShare;
use crate::config::{Config, Decision, PriorityFnRef};
use crate::event::{DisconnectReason, DropReason, Event, Input, InputError, Output, RetryReason};
use crate::hash::{FastMap, FastSet, FastState, KeyedTable, Map, SaltedState, keyed_hash};
use crate::message::{Message, RequestId};
use crate::metrics::Metrics;
use crate::ready::{Ready, ReadyKey, Slot};
use crate::rng::splitmix64;
use crate::types::{Advert, Artifact, ArtifactId, Class, Kind, NodeId, Priority, Time};
use bytes::Bytes;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

/// Peers known to hold an artifact (they sent or advertised it to us), as [`PeerKey`]s.
type Holders = SmallVec<[PeerKey; 4]>;

/// A peer's stable small number: given on first connection and never reused, so that holder
/// lists (which outlive connections) cost 4 bytes a peer instead of 32.
type PeerKey = u32;

/// One node's gossip state machine.
///
/// Drive it with one loop, in this order:
///
/// 1. [`handle_input`](Node::handle_input) with the current time and one [`Input`];
/// 2. drain [`poll_output`](Node::poll_output) until it returns `None`, carrying out every
///    [`Output`];
/// 3. arm a timer at [`poll_timeout`](Node::poll_timeout) and feed [`Input::Timeout`] when it fires.
///
/// ```
/// use p2p_core::{Artifact, Config, Input, Kind, Message, Node, NodeId, Output, Time};
///
/// let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
/// let mut na = Node::new(a, Config::default());
/// let mut nb = Node::new(b, Config::default());
/// let now = Time::ZERO;
/// for (n, peer) in [(&mut na, b), (&mut nb, a)] {
///     n.handle_input(now, Input::Membership { version: 1, members: vec![a, b] }).unwrap();
///     n.handle_input(now, Input::PeerConnected(peer)).unwrap();
/// }
/// let artifact = Artifact::new(Kind(0), &b""[..], vec![7u8; 4096]);
/// na.handle_input(now, Input::Publish(artifact.clone())).unwrap();
///
/// // A tiny network: carry every Send to the other node until both are quiet.
/// let mut delivered = Vec::new();
/// loop {
///     let mut moved = false;
///     for (from, to) in [(a, b), (b, a)] {
///         let (src, dst) = if from == a { (&mut na, &mut nb) } else { (&mut nb, &mut na) };
///         while let Some(out) = src.poll_output() {
///             match out {
///                 Output::Send { msg, .. } => {
///                     dst.handle_input(now, Input::Message { from, msg }).unwrap();
///                     moved = true;
///                 }
///                 Output::Deliver { artifact, .. } => delivered.push((to, artifact)),
///                 _ => {}
///             }
///         }
///     }
///     if !moved { break; }
/// }
/// assert_eq!(delivered.len(), 1);
/// ```
pub struct Node {
    id: NodeId,
    cfg: Config,
    priority_fn: PriorityFnRef,
    members: FastSet<NodeId>,
    peers: FastMap<NodeId, Peer>,
    /// Slot -> peer id, for connected peers.
    slots: Vec<NodeId>,
    free_slots: Vec<Slot>,
    /// Peer id -> its stable key (one entry per member ever connected).
    keys: FastMap<NodeId, PeerKey>,
    pool: Map<ArtifactId, PoolEntry>,
    pool_bytes: u64,
    downloads: KeyedTable<ArtifactId, Download>,
    /// The download table's bound, with a reserved share per member (charged to each download's
    /// owner), so that squatters cannot fill it.
    table: FairShare,
    /// Downloads ready for another request, in priority order, per source.
    ready: Ready,
    /// Downloads waiting out a back-off.
    backoff: BTreeSet<(Time, ArtifactId)>,
    requests: FastMap<RequestId, Req>,
    /// Request deadlines; entries of finished requests are skipped when they surface.
    deadlines: BinaryHeap<Reverse<(Time, RequestId)>>,
    delivered: Map<ArtifactId, Holders>,
    delivered_order: VecDeque<ArtifactId>,
    /// Adverts the priority function dropped: id -> digest of the advert's metadata, so that an
    /// advert of the same id with other metadata (a peer lying first) is still evaluated.
    dropped: Map<ArtifactId, u64>,
    dropped_order: VecDeque<ArtifactId>,
    hasher: SaltedState,
    next_req_id: RequestId,
    next_seq: u64,
    next_reevaluate: Time,
    /// Requests in flight (counted ones), with a reserved share per connected peer.
    flight_n: FairShare,
    /// Bytes in flight (counted ones), with a reserved share per connected peer.
    flight_bytes: FairShare,
    tracked_adverts: usize,
    outputs: VecDeque<Output>,
    advert_dirty: Vec<NodeId>,
    metrics: Metrics,
    now: Time,
}

struct Peer {
    /// This peer's small index, used in the download table instead of its 32-byte id.
    slot: Slot,
    /// This peer's stable key, used in holder lists.
    key: PeerKey,
    /// Adverts of this peer that we track for download.
    adverts: usize,
    /// Tracked adverts per kind.
    per_kind: SmallVec<[(Kind, u32); 4]>,
    /// Requests awaiting this peer's answer (timed-out ones included: the peer stays busy).
    in_flight: usize,
    in_flight_bytes: u64,
    /// This peer's requests counted in the global limits (not timed out).
    counted: u64,
    counted_bytes: u64,
    /// Downloads charged to this peer in the download table's fair share.
    owned: u64,
    bad_data: u32,
    /// Adverts to send at the end of the current input, batched.
    outbox: Vec<Advert>,
    congested: bool,
    queued_requests: VecDeque<(RequestId, ArtifactId, Priority)>,
}

struct PoolEntry {
    artifact: Artifact,
    holders: Holders,
}

struct Download {
    advert: Advert,
    /// Peers advertising it (their slots).
    sources: SmallVec<[Slot; 4]>,
    /// The source charged for this download in the table's fair share: the first advertiser,
    /// then another source if it leaves.
    owner: Slot,
    /// Sources under which the download is listed as ready.
    listed: SmallVec<[Slot; 4]>,
    /// Sources that failed since the last back-off.
    failed: SmallVec<[Slot; 2]>,
    /// `None` while the priority function says `Later`.
    priority: Option<Priority>,
    seq: u64,
    queued: bool,
    backoff_until: Option<Time>,
    attempts: u32,
    active: SmallVec<[RequestId; 1]>,
}

struct Req {
    peer: NodeId,
    id: ArtifactId,
    size: u64,
    /// Counted in the global in-flight limits (false once timed out or detached from its download).
    counted: bool,
    deadline: Option<Time>,
}

enum Attempt {
    /// A request went out.
    Started,
    /// Limits (global or per-peer) hold it back for now.
    Busy,
    /// Every source failed since the last back-off.
    Exhausted,
}

enum NoSource {
    /// Sources exist but are at their in-flight limits now.
    Busy,
    /// Every source failed since the last back-off (or none is left).
    Exhausted,
}

impl Node {
    /// A node with identity `id` and configuration `cfg`.
    pub fn new(id: NodeId, cfg: Config) -> Self {
        let hs = table_hasher(cfg.seed, id);
        let fast = FastState(splitmix64(cfg.seed ^ 0x243f_6a88_85a3_08d3));
        let table = FairShare::new(cfg.max_pending_downloads as u64);
        let flight_n = FairShare::new(cfg.max_in_flight as u64);
        let flight_bytes = FairShare::new(cfg.max_in_flight_bytes);
        Node {
            id,
            priority_fn: cfg.priority_fn.clone(),
            next_reevaluate: Time::ZERO + cfg.reevaluate_interval,
            cfg,
            members: FastSet::with_hasher(fast),
            peers: FastMap::with_hasher(fast),
            slots: Vec::new(),
            free_slots: Vec::new(),
            keys: FastMap::with_hasher(fast),
            pool: Map::with_hasher(hs),
            pool_bytes: 0,
            downloads: KeyedTable::new(hs, |d: &Download| &d.advert.id),
            table,
            ready: Ready::default(),
            backoff: BTreeSet::new(),
            requests: FastMap::with_hasher(fast),
            deadlines: BinaryHeap::new(),
            delivered: Map::with_hasher(hs),
            delivered_order: VecDeque::new(),
            dropped: Map::with_hasher(hs),
            dropped_order: VecDeque::new(),
            hasher: hs,
            next_req_id: 1,
            next_seq: 0,
            flight_n,
            flight_bytes,
            tracked_adverts: 0,
            outputs: VecDeque::new(),
            advert_dirty: Vec::new(),
            metrics: Metrics::default(),
            now: Time::ZERO,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the priority function; it applies to adverts from now on and to kept adverts at the
    /// next re-evaluation (feed [`Input::Reevaluate`] to re-evaluate at once).
    pub fn set_priority_fn(&mut self, f: PriorityFnRef) {
        self.priority_fn = f;
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics;
        m.tracked_adverts = self.tracked_adverts as u64;
        m.pending_downloads = self.downloads.len() as u64;
        m.in_flight = self.flight_n.used();
        m.in_flight_bytes = self.flight_bytes.used();
        m.pool_artifacts = self.pool.len() as u64;
        m.pool_bytes = self.pool_bytes;
        m.connected_peers = self.peers.len() as u64;
        m
    }

    /// Whether the local pool holds `id`.
    pub fn has_artifact(&self, id: &ArtifactId) -> bool {
        self.pool.contains_key(id)
    }

    /// The artifact `id` from the local pool.
    pub fn artifact(&self, id: &ArtifactId) -> Option<&Artifact> {
        self.pool.get(id).map(|e| &e.artifact)
    }

    /// The connected peers.
    pub fn connected_peers(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    /// Sizes of every table a peer can grow, for bound checks.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            tracked_adverts: self.tracked_adverts,
            max_adverts_of_one_peer: self.peers.values().map(|p| p.adverts).max().unwrap_or(0),
            max_queued_requests_of_one_peer: self
                .peers
                .values()
                .map(|p| p.queued_requests.len())
                .max()
                .unwrap_or(0),
            pending_downloads: self.downloads.len(),
            requests: self.requests.len(),
            in_flight: self.flight_n.used() as usize,
            in_flight_bytes: self.flight_bytes.used(),
            delivered_memory: self.delivered.len(),
            dropped_memory: self.dropped.len(),
            outputs: self.outputs.len(),
        }
    }

    /// Feeds one input at time `now`. Time must not go backwards (an earlier `now` is treated as
    /// the latest seen). Only the application's inputs can fail; a faulty peer is disconnected.
    pub fn handle_input(&mut self, now: Time, input: Input) -> Result<(), InputError> {
        self.now = self.now.max(now);
        self.advance();
        let result = match input {
            Input::Membership { version, members } => {
                self.on_membership(version, members);
                Ok(())
            }
            Input::PeerConnected(peer) => {
                self.on_connected(peer);
                Ok(())
            }
            Input::PeerDisconnected(peer) => {
                self.drop_peer(peer);
                Ok(())
            }
            Input::Message { from, msg } => {
                self.on_message(from, msg);
                Ok(())
            }
            Input::Publish(artifact) => self.publish(artifact),
            Input::Remove(id) => {
                self.remove(id);
                Ok(())
            }
            Input::Reevaluate => {
                self.reevaluate();
                Ok(())
            }
            Input::Congestion { peer, congested } => {
                self.on_congestion(peer, congested);
                Ok(())
            }
            Input::Timeout => Ok(()),
        };
        self.schedule();
        self.flush_adverts();
        self.prune_deadlines();
        result
    }

    /// Drops deadlines of finished requests from the top of the heap (so that `poll_timeout` is
    /// exact) and rebuilds the heap when they make up most of it.
    fn prune_deadlines(&mut self) {
        let live = |requests: &FastMap<RequestId, Req>, t: Time, r: RequestId| {
            requests.get(&r).is_some_and(|q| q.deadline == Some(t))
        };
        while let Some(&Reverse((t, r))) = self.deadlines.peek() {
            if live(&self.requests, t, r) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.len() > 2 * self.requests.len() + 64 {
            let requests = &self.requests;
            self.deadlines
                .retain(|Reverse((t, r))| live(requests, *t, *r));
        }
    }

    /// The next action for the driver, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed [`Input::Timeout`] next, if anything waits on time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let deadline = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let backoff = self.backoff.first().map(|(t, _)| *t);
        let reevaluate = (!self.downloads.is_empty() || !self.dropped.is_empty())
            .then_some(self.next_reevaluate);
        [deadline, backoff, reevaluate].into_iter().flatten().min()
    }

    // ---- time ----

    fn advance(&mut self) {
        let now = self.now;
        while let Some(&Reverse((t, req_id))) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if self
                .requests
                .get(&req_id)
                .is_some_and(|r| r.deadline == Some(t))
            {
                self.on_request_timeout(req_id);
            }
        }
        while let Some(&(t, id)) = self.backoff.first() {
            if t > now {
                break;
            }
            self.backoff.pop_first();
            if let Some(dl) = self.downloads.get_mut(&id) {
                dl.backoff_until = None;
                dl.failed.clear();
            }
            self.requeue(id);
        }
        if now >= self.next_reevaluate {
            self.reevaluate();
        }
    }

    // ---- membership and connections ----

    fn on_membership(&mut self, version: u64, members: Vec<NodeId>) {
        self.members.clear();
        self.members.extend(members);
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|p| !self.members.contains(*p))
            .copied()
            .collect();
        for peer in gone {
            self.disconnect(peer, DisconnectReason::NotMember);
        }
        self.reshare();
        self.event(Event::MembershipChanged {
            version,
            members: self.members.len(),
        });
    }

    fn on_connected(&mut self, peer: NodeId) {
        if peer == self.id || !self.members.contains(&peer) {
            self.outputs.push_back(Output::Disconnect {
                peer,
                reason: DisconnectReason::NotMember,
            });
            self.metrics.peers_disconnected += 1;
            return;
        }
        if self.peers.contains_key(&peer) {
            // A reconnect: the old connection's state is gone with it.
            self.drop_peer(peer);
        }
        // Resync: advertise the whole pool; the peer may have lost what we sent before.
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = peer;
                slot
            }
            None => {
                self.slots.push(peer);
                (self.slots.len() - 1) as Slot
            }
        };
        let next_key = self.keys.len() as PeerKey;
        let key = *self.keys.entry(peer).or_insert(next_key);
        let state = Peer {
            slot,
            key,
            adverts: 0,
            per_kind: SmallVec::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            counted: 0,
            counted_bytes: 0,
            owned: 0,
            bad_data: 0,
            outbox: self.pool.values().map(|e| e.artifact.advert()).collect(),
            congested: false,
            queued_requests: VecDeque::new(),
        };
        self.peers.insert(peer, state);
        self.advert_dirty.push(peer);
        self.reshare();
    }

    /// Recomputes the fair shares after the set of peers or members changed: in-flight limits
    /// are shared among connected peers, the download table among the other members.
    fn reshare(&mut self) {
        let peers = self.peers.len();
        let cfg = &self.cfg;
        self.flight_n.reshare(
            peers,
            cfg.max_in_flight_per_peer as u64,
            self.peers.values().map(|p| p.counted),
        );
        self.flight_bytes.reshare(
            peers,
            cfg.max_in_flight_bytes_per_peer,
            self.peers.values().map(|p| p.counted_bytes),
        );
        let others = self.members.len() - usize::from(self.members.contains(&self.id));
        self.table.reshare(
            others.max(peers),
            cfg.max_adverts_per_peer as u64,
            self.peers.values().map(|p| p.owned),
        );
    }

    /// Cuts `peer` off: tells the driver and forgets the peer.
    fn disconnect(&mut self, peer: NodeId, reason: DisconnectReason) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.drop_peer(peer);
        self.metrics.peers_disconnected += 1;
        self.outputs.push_back(Output::Disconnect {
            peer,
            reason: reason.clone(),
        });
        self.event(Event::PeerDisconnected { peer, reason });
    }

    /// Forgets everything about `peer`: its adverts, its requests, its queued work.
    fn drop_peer(&mut self, peer: NodeId) {
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        let (slot, adverts) = (state.slot, state.adverts);
        let reqs: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        // Give back the peer's share of the in-flight limits while it is still known.
        for req_id in &reqs {
            self.uncount_request(*req_id);
        }
        if adverts > 0 {
            // Disconnects are rare: a scan of the download table beats a per-peer index.
            let mut orphaned = Vec::new();
            let mut handed_over = Vec::new();
            for dl in self.downloads.iter_mut() {
                if let Some(i) = dl.sources.iter().position(|s| *s == slot) {
                    dl.sources.remove(i);
                    dl.failed.retain(|s| *s != slot);
                    dl.listed.retain(|s| *s != slot);
                    if dl.sources.is_empty() {
                        orphaned.push(dl.advert.id);
                    } else if dl.owner == slot {
                        dl.owner = dl.sources[0];
                        handed_over.push(dl.owner);
                    }
                }
            }
            for id in orphaned {
                self.end_download(id);
            }
            for new_owner in handed_over {
                self.charge_owner(slot, new_owner);
            }
        }
        let state = self.peers.remove(&peer).expect("checked above");
        self.tracked_adverts -= state.adverts;
        self.ready.clear_slot(slot);
        for req_id in reqs {
            if let Some(req) = self.finish_request(req_id) {
                if self.downloads.get(&req.id).is_some() {
                    self.retry(req.id, peer, req_id, RetryReason::Disconnected);
                } else {
                    // Its only source left: the download waits for a new advert.
                    self.retry_event(req.id, peer, req_id, RetryReason::Disconnected);
                }
            }
        }
        self.free_slots.push(slot);
        self.reshare();
    }

    /// Moves the charge of one download in the table's fair share from `from` to `to`.
    fn charge_owner(&mut self, from: Slot, to: Slot) {
        let from = self.slots[from as usize];
        if let Some(p) = self.peers.get_mut(&from) {
            self.table.give(p.owned, 1);
            p.owned -= 1;
        }
        let to = self.slots[to as usize];
        if let Some(p) = self.peers.get_mut(&to) {
            self.table.take(p.owned, 1);
            p.owned += 1;
        }
    }

    fn on_congestion(&mut self, peer: NodeId, congested: bool) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.congested = congested;
        if !congested {
            let queued = std::mem::take(&mut state.queued_requests);
            for (req_id, id, priority) in queued {
                self.serve(peer, req_id, id, priority);
            }
        }
    }

    // ---- messages ----

    fn on_message(&mut self, from: NodeId, msg: Message) {
        if !self.peers.contains_key(&from) {
            // Not connected (or already cut off): nothing from it is accepted.
            return;
        }
        match msg {
            Message::Push { advert, data } => self.on_push(from, advert, data),
            Message::Adverts(adverts) => {
                if adverts.len() > self.cfg.max_adverts_per_message {
                    return self.violation(from, "too many adverts in one message");
                }
                for advert in adverts {
                    if !self.peers.contains_key(&from) {
                        break;
                    }
                    self.on_advert(from, advert);
                }
            }
            Message::Withdraw(id) => self.on_withdraw(from, id),
            Message::Request {
                req_id,
                id,
                priority,
            } => self.on_request(from, req_id, id, priority),
            Message::Response { req_id, id, data } => {
                self.on_response(from, req_id, id, Some(data))
            }
            Message::NotFound { req_id, id } => self.on_response(from, req_id, id, None),
        }
    }

    fn violation(&mut self, peer: NodeId, what: &'static str) {
        self.disconnect(peer, DisconnectReason::ProtocolViolation(what));
    }

    /// Checks an advert's fields against the configured limits.
    fn check_advert(&self, advert: &Advert) -> Result<(), &'static str> {
        if advert.attr.len() > self.cfg.max_attr_len {
            return Err("advert attr too long");
        }
        if advert.size > self.cfg.max_artifact_size {
            return Err("advertised artifact too large");
        }
        Ok(())
    }

    fn on_advert(&mut self, from: NodeId, advert: Advert) {
        self.metrics.adverts_received += 1;
        if let Err(what) = self.check_advert(&advert) {
            return self.violation(from, what);
        }
        let id = advert.id;
        let key = self.peers[&from].key;
        if let Some(entry) = self.pool.get_mut(&id) {
            add_holder(&mut entry.holders, key);
            return;
        }
        if let Some(holders) = self.delivered.get_mut(&id) {
            add_holder(holders, key);
            return;
        }
        if self.is_dropped(&advert) {
            return self.dropped_advert(id, from, DropReason::Unwanted);
        }
        let slot = self.peers[&from].slot;
        if let Some(dl) = self.downloads.get(&id) {
            if dl.sources.contains(&slot) {
                return;
            }
            // Metadata that differs from the first advert's is not grounds to ignore a source:
            // the first advertiser may be the liar, and the hash decides what is delivered. The
            // advert counts against the download's kind, so that it is uncounted the same way.
            let (kind, differs) = (dl.advert.kind, dl.advert != advert);
            if !self.track_advert(from, kind) {
                return;
            }
            let dl = self.downloads.get_mut(&id).expect("checked above");
            dl.sources.push(slot);
            // A new source need not wait out a back-off earned by the others.
            if let Some(t) = dl.backoff_until.take() {
                self.backoff.remove(&(t, id));
            }
            if differs {
                self.adopt_if_better(id, advert);
            }
            self.sync_ready(id);
            self.requeue(id);
            return;
        }
        // Each member has a reserved share of the table: others filling theirs cannot keep
        // this peer's adverts out.
        if !self.table.admits(self.peers[&from].owned, 1) {
            return self.dropped_advert(id, from, DropReason::TableFull);
        }
        let priority = match self.priority_fn.0.decide(&advert) {
            Decision::Drop => {
                self.remember_dropped(&advert);
                return self.dropped_advert(id, from, DropReason::Unwanted);
            }
            Decision::Later => None,
            Decision::Fetch(p) => Some(p),
        };
        if !self.track_advert(from, advert.kind) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut sources = SmallVec::new();
        sources.push(slot);
        let owner = self.peers.get_mut(&from).expect("peer is connected");
        self.table.take(owner.owned, 1);
        owner.owned += 1;
        self.downloads.insert_new(Download {
            advert,
            sources,
            owner: slot,
            listed: SmallVec::new(),
            failed: SmallVec::new(),
            priority,
            seq,
            queued: false,
            backoff_until: None,
            attempts: 0,
            active: SmallVec::new(),
        });
        self.requeue(id);
    }

    /// Another source's advert of a download, with other metadata: the download takes it if the
    /// priority function wants it more (fetch rather than later, or at a higher priority). So a
    /// peer that advertises an artifact first with metadata the application does not want cannot
    /// hold back the honest adverts of it; the hash still decides what is delivered.
    fn adopt_if_better(&mut self, id: ArtifactId, advert: Advert) {
        let current = self.downloads[&id].priority;
        let p = match self.priority_fn.0.decide(&advert) {
            Decision::Fetch(p) if current.is_none_or(|c| p > c) => p,
            _ => return,
        };
        self.unqueue(id);
        let dl = self.downloads.get_mut(&id).expect("exists");
        let (old_kind, new_kind) = (dl.advert.kind, advert.kind);
        dl.advert = advert;
        dl.priority = Some(p);
        if old_kind != new_kind {
            // Every source's advert counts against the download's kind: move the counts.
            let sources = dl.sources.clone();
            for slot in sources {
                let peer = self.slots[slot as usize];
                let state = self.peers.get_mut(&peer).expect("sources are connected");
                if let Some(k) = state.per_kind.iter_mut().find(|(k, _)| *k == old_kind) {
                    k.1 -= 1;
                }
                match state.per_kind.iter_mut().find(|(k, _)| *k == new_kind) {
                    Some(k) => k.1 += 1,
                    None => state.per_kind.push((new_kind, 1)),
                }
            }
        }
    }

    fn dropped_advert(&mut self, id: ArtifactId, from: NodeId, reason: DropReason) {
        self.metrics.adverts_dropped += 1;
        self.event(Event::Dropped { id, from, reason });
    }

    /// Counts an advert of `kind` from `peer`, within the per-peer and per-kind limits.
    /// Returns false (and disconnects the peer) past a limit.
    fn track_advert(&mut self, peer: NodeId, kind: Kind) -> bool {
        let (max_all, max_kind) = (
            self.cfg.max_adverts_per_peer,
            self.cfg.max_adverts_per_peer_per_kind,
        );
        let state = self.peers.get_mut(&peer).expect("peer is connected");
        if state.adverts >= max_all {
            self.disconnect(peer, DisconnectReason::TooManyAdverts { limit: max_all });
            return false;
        }
        let slot = match state.per_kind.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                state.per_kind.push((kind, 0));
                state.per_kind.len() - 1
            }
        };
        if state.per_kind[slot].1 as usize >= max_kind {
            self.disconnect(
                peer,
                DisconnectReason::TooManyAdvertsOfKind {
                    kind,
                    limit: max_kind,
                },
            );
            return false;
        }
        state.per_kind[slot].1 += 1;
        state.adverts += 1;
        self.tracked_adverts += 1;
        true
    }

    /// The stable key of the connected peer in `slot`.
    fn key_of_slot(&self, slot: Slot) -> PeerKey {
        self.peers[&self.slots[slot as usize]].key
    }

    /// Uncounts an advert of `kind` from the peer in `slot`.
    fn untrack_advert(&mut self, slot: Slot, kind: Kind) {
        let peer = self.slots[slot as usize];
        let state = self.peers.get_mut(&peer).expect("sources are connected");
        state.adverts -= 1;
        self.tracked_adverts -= 1;
        if let Some(k) = state.per_kind.iter_mut().find(|(k, _)| *k == kind) {
            k.1 -= 1;
        }
    }

    /// Removes `peer` as a source of `id`; the download ends when no source is left.
    fn remove_source(&mut self, id: ArtifactId, peer: NodeId) {
        let Some(slot) = self.peers.get(&peer).map(|p| p.slot) else {
            return;
        };
        let Some(dl) = self.downloads.get_mut(&id) else {
            return;
        };
        let Some(i) = dl.sources.iter().position(|s| *s == slot) else {
            return;
        };
        dl.sources.remove(i);
        dl.failed.retain(|s| *s != slot);
        let (kind, empty) = (dl.advert.kind, dl.sources.is_empty());
        if empty {
            self.end_download(id);
        } else if dl.owner == slot {
            dl.owner = dl.sources[0];
            let to = dl.owner;
            self.charge_owner(slot, to);
        }
        self.untrack_advert(slot, kind);
        self.sync_ready(id);
    }

    fn on_withdraw(&mut self, from: NodeId, id: ArtifactId) {
        let key = self.peers[&from].key;
        if let Some(entry) = self.pool.get_mut(&id) {
            entry.holders.retain(|p| *p != key);
        }
        if let Some(holders) = self.delivered.get_mut(&id) {
            holders.retain(|p| *p != key);
        }
        let Some(dl) = self.downloads.get(&id) else {
            return;
        };
        let aborted: SmallVec<[RequestId; 1]> = dl
            .active
            .iter()
            .copied()
            .filter(|r| self.requests.get(r).is_some_and(|q| q.peer == from))
            .collect();
        for req_id in aborted {
            self.detach_request(req_id);
            self.retry_event(id, from, req_id, RetryReason::Withdrawn);
        }
        self.remove_source(id, from);
        self.requeue(id);
    }

    fn on_push(&mut self, from: NodeId, advert: Advert, data: Bytes) {
        self.metrics.pushes_received += 1;
        self.metrics.bytes_received += data.len() as u64;
        if let Err(what) = self.check_advert(&advert) {
            return self.violation(from, what);
        }
        // Only small artifacts may be pushed: a larger one would bypass every in-flight limit
        // and cost its full size before any check.
        if data.len() as u64 > self.cfg.push_threshold || advert.size > self.cfg.push_threshold {
            return self.violation(from, "push above the push threshold");
        }
        // Integrity first: nothing about the artifact is trusted before its hash is checked.
        if data.len() as u64 != advert.size || ArtifactId::of(&data) != advert.id {
            self.penalize(from);
            return;
        }
        let id = advert.id;
        let key = self.peers[&from].key;
        if let Some(entry) = self.pool.get_mut(&id) {
            add_holder(&mut entry.holders, key);
            self.metrics.duplicates += 1;
            return;
        }
        if let Some(holders) = self.delivered.get_mut(&id) {
            add_holder(holders, key);
            self.metrics.duplicates += 1;
            return;
        }
        if self.is_dropped(&advert) {
            return self.dropped_advert(id, from, DropReason::Unwanted);
        }
        if self.priority_fn.0.decide(&advert) == Decision::Drop {
            self.remember_dropped(&advert);
            return self.dropped_advert(id, from, DropReason::Unwanted);
        }
        let artifact = Artifact {
            id,
            kind: advert.kind,
            attr: advert.attr,
            data,
        };
        self.deliver(artifact, from);
    }

    fn on_request(&mut self, from: NodeId, req_id: RequestId, id: ArtifactId, priority: Priority) {
        let limit = self.cfg.max_queued_requests_per_peer;
        let state = self.peers.get_mut(&from).expect("peer is connected");
        if state.congested {
            if state.queued_requests.len() >= limit {
                return self.disconnect(from, DisconnectReason::TooManyRequests { limit });
            }
            state.queued_requests.push_back((req_id, id, priority));
            return;
        }
        self.serve(from, req_id, id, priority);
    }

    fn serve(&mut self, to: NodeId, req_id: RequestId, id: ArtifactId, priority: Priority) {
        let (msg, class) = match self.pool.get(&id) {
            Some(entry) => {
                self.metrics.requests_served += 1;
                self.metrics.bytes_served += entry.artifact.data.len() as u64;
                let data = entry.artifact.data.clone();
                (Message::Response { req_id, id, data }, priority.class())
            }
            None => {
                self.metrics.not_found_sent += 1;
                (Message::NotFound { req_id, id }, Class::Control)
            }
        };
        self.outputs.push_back(Output::Send { to, msg, class });
    }

    fn on_response(
        &mut self,
        from: NodeId,
        req_id: RequestId,
        id: ArtifactId,
        data: Option<Bytes>,
    ) {
        self.metrics.responses_received += 1;
        match self.requests.get(&req_id) {
            Some(req) if req.peer == from && req.id == id => {}
            _ => return self.violation(from, "answer to a request never made"),
        }
        self.finish_request(req_id);
        let Some(data) = data else {
            // Not found: the peer no longer has it; forget its advert and try elsewhere.
            self.remove_source(id, from);
            return self.retry(id, from, req_id, RetryReason::NotFound);
        };
        self.metrics.bytes_received += data.len() as u64;
        // Integrity first. The hash alone decides: an advert's size is a hint, and the first
        // advertiser may have lied about it.
        if ArtifactId::of(&data) != id {
            self.remove_source(id, from);
            self.retry(id, from, req_id, RetryReason::BadData);
            self.penalize(from);
            return;
        }
        let Some(dl) = self.downloads.get(&id) else {
            // Delivered already (a parallel or late request), or no longer wanted.
            self.metrics.duplicates += 1;
            return;
        };
        let artifact = Artifact {
            id,
            kind: dl.advert.kind,
            attr: dl.advert.attr.clone(),
            data,
        };
        self.deliver(artifact, from);
    }

    fn penalize(&mut self, peer: NodeId) {
        self.metrics.bad_data += 1;
        let max = self.cfg.max_bad_data_per_peer;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.bad_data += 1;
        let count = state.bad_data;
        self.event(Event::Penalized { peer, count });
        if count > max {
            self.disconnect(peer, DisconnectReason::BadData { count });
        }
    }

    // ---- delivery and the pool ----

    /// Hands a verified artifact to the application, once, and ends its download.
    fn deliver(&mut self, artifact: Artifact, from: NodeId) {
        let id = artifact.id;
        let mut holders: Holders = SmallVec::new();
        if let Some(state) = self.peers.get(&from) {
            holders.push(state.key);
        }
        if let Some(dl) = self.downloads.get(&id) {
            for s in &dl.sources {
                add_holder(&mut holders, self.key_of_slot(*s));
            }
            self.end_download(id);
        }
        self.remember_delivered(id, holders);
        self.metrics.delivered += 1;
        self.outputs.push_back(Output::Deliver {
            artifact: artifact.clone(),
            from,
        });
        let size = artifact.data.len() as u64;
        if self.cfg.auto_relay
            && self.pool.len() < self.cfg.max_auto_relay_pool
            && self.pool_bytes + size <= self.cfg.max_auto_relay_pool_bytes
        {
            self.add_to_pool(artifact);
        }
    }

    fn publish(&mut self, artifact: Artifact) -> Result<(), InputError> {
        let size = artifact.data.len() as u64;
        if size > self.cfg.max_artifact_size {
            return Err(InputError::ArtifactTooLarge {
                size,
                max: self.cfg.max_artifact_size,
            });
        }
        if artifact.attr.len() > self.cfg.max_attr_len {
            return Err(InputError::AttrTooLong {
                len: artifact.attr.len(),
                max: self.cfg.max_attr_len,
            });
        }
        if ArtifactId::of(&artifact.data) != artifact.id {
            return Err(InputError::IdMismatch);
        }
        if self.pool.contains_key(&artifact.id) {
            return Ok(());
        }
        if let Some(dl) = self.downloads.get(&artifact.id) {
            // The application got it elsewhere: stop fetching, and remember who holds it.
            let holders: Holders = dl.sources.iter().map(|s| self.key_of_slot(*s)).collect();
            self.end_download(artifact.id);
            self.remember_delivered(artifact.id, holders);
        }
        self.add_to_pool(artifact);
        Ok(())
    }

    /// Adds to the pool and announces to every connected peer not known to hold it: the origin
    /// pushes small artifacts, a relay (an artifact we received) only advertises.
    fn add_to_pool(&mut self, artifact: Artifact) {
        let id = artifact.id;
        let (holders, relay) = match self.delivered.get(&id) {
            Some(h) => (h.clone(), true),
            None => (SmallVec::new(), false),
        };
        let push = !relay && artifact.data.len() as u64 <= self.cfg.push_threshold;
        let advert = artifact.advert();
        for (peer, state) in self.peers.iter_mut() {
            if holders.contains(&state.key) {
                continue;
            }
            if push {
                self.outputs.push_back(Output::Send {
                    to: *peer,
                    msg: Message::Push {
                        advert: advert.clone(),
                        data: artifact.data.clone(),
                    },
                    class: Class::Urgent,
                });
                self.metrics.bytes_served += artifact.data.len() as u64;
            } else {
                if state.outbox.is_empty() {
                    self.advert_dirty.push(*peer);
                }
                state.outbox.push(advert.clone());
            }
        }
        self.pool_bytes += artifact.data.len() as u64;
        self.pool.insert(id, PoolEntry { artifact, holders });
    }

    fn remove(&mut self, id: ArtifactId) {
        let Some(entry) = self.pool.remove(&id) else {
            return;
        };
        self.pool_bytes -= entry.artifact.data.len() as u64;
        for (peer, state) in self.peers.iter() {
            if !entry.holders.contains(&state.key) {
                self.outputs.push_back(Output::Send {
                    to: *peer,
                    msg: Message::Withdraw(id),
                    class: Class::Control,
                });
            }
        }
    }

    fn flush_adverts(&mut self) {
        let batch = self.cfg.advert_batch_size.max(1);
        for peer in std::mem::take(&mut self.advert_dirty) {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let outbox = std::mem::take(&mut state.outbox);
            let mut rest = outbox.as_slice();
            while !rest.is_empty() {
                let (head, tail) = rest.split_at(batch.min(rest.len()));
                self.outputs.push_back(Output::Send {
                    to: peer,
                    msg: Message::Adverts(head.to_vec()),
                    class: Class::Control,
                });
                rest = tail;
            }
        }
    }

    fn remember_delivered(&mut self, id: ArtifactId, holders: Holders) {
        if self.cfg.max_delivered_memory == 0 {
            return;
        }
        if self.delivered.insert(id, holders).is_none() {
            self.delivered_order.push_back(id);
            while self.delivered_order.len() > self.cfg.max_delivered_memory {
                if let Some(old) = self.delivered_order.pop_front() {
                    self.delivered.remove(&old);
                }
            }
        }
    }

    fn advert_digest(&self, advert: &Advert) -> u64 {
        self.hasher
            .hash_one((advert.kind, advert.size, &advert.attr[..]))
    }

    fn is_dropped(&self, advert: &Advert) -> bool {
        !self.dropped.is_empty()
            && self
                .dropped
                .get(&advert.id)
                .is_some_and(|d| *d == self.advert_digest(advert))
    }

    fn remember_dropped(&mut self, advert: &Advert) {
        if self.cfg.max_dropped_memory == 0 {
            return;
        }
        let (id, digest) = (advert.id, self.advert_digest(advert));
        if self.dropped.insert(id, digest).is_none() {
            self.dropped_order.push_back(id);
            while self.dropped_order.len() > self.cfg.max_dropped_memory {
                if let Some(old) = self.dropped_order.pop_front() {
                    self.dropped.remove(&old);
                }
            }
        }
    }

    // ---- downloads ----

    /// Ends a download: frees its per-peer advert records and its charge in the table, detaches
    /// its requests (their peers stay busy until they answer) and takes it out of the ready
    /// queues and back-off.
    fn end_download(&mut self, id: ArtifactId) {
        let Some(dl) = self.downloads.remove(&id) else {
            return;
        };
        if dl.queued {
            self.ready.remove(ready_key(&dl), &dl.listed);
        }
        if let Some(t) = dl.backoff_until {
            self.backoff.remove(&(t, id));
        }
        for req_id in &dl.active {
            self.uncount_request(*req_id);
        }
        if let Some(owner) = self.peers.get_mut(&self.slots[dl.owner as usize]) {
            self.table.give(owner.owned, 1);
            owner.owned -= 1;
        }
        for slot in dl.sources {
            self.untrack_advert(slot, dl.advert.kind);
        }
    }

    /// Starts another request for a download if it wants one now (at once when nothing waits
    /// ahead of it), or puts it in the ready queues.
    fn requeue(&mut self, id: ArtifactId) {
        let Some(dl) = self.downloads.get(&id) else {
            return;
        };
        if dl.priority.is_none() {
            return;
        }
        let parallel = self.parallelism(dl);
        if dl.queued || dl.backoff_until.is_some() || dl.active.len() >= parallel {
            return;
        }
        if self.ready.is_empty() {
            // Nothing waits ahead of it: starting now keeps the priority order.
            match self.attempt(id) {
                Attempt::Started if self.downloads[&id].active.len() >= parallel => return,
                Attempt::Exhausted => return self.start_backoff(id),
                Attempt::Started | Attempt::Busy => {}
            }
        }
        let dl = self.downloads.get_mut(&id).expect("exists");
        dl.queued = true;
        let key = ready_key(dl);
        self.ready.insert(key, id);
        self.sync_ready(id);
    }

    fn unqueue(&mut self, id: ArtifactId) {
        if let Some(dl) = self.downloads.get_mut(&id)
            && dl.queued
        {
            dl.queued = false;
            let listed = std::mem::take(&mut dl.listed);
            self.ready.remove(ready_key(dl), &listed);
        }
    }

    /// Lists a ready download under exactly the sources that may be asked for it now: not
    /// failed since the last back-off, not already asked.
    fn sync_ready(&mut self, id: ArtifactId) {
        let Some(dl) = self.downloads.get(&id) else {
            return;
        };
        if !dl.queued {
            return;
        }
        let eligible: SmallVec<[Slot; 4]> = dl
            .sources
            .iter()
            .copied()
            .filter(|s| !dl.failed.contains(s) && !self.asked(dl, *s))
            .collect();
        let key = ready_key(dl);
        for slot in dl.listed.iter().filter(|s| !eligible.contains(s)) {
            self.ready.unlist(key, *slot);
        }
        for slot in eligible.iter().filter(|s| !dl.listed.contains(s)) {
            self.ready.list(key, *slot);
        }
        self.downloads.get_mut(&id).expect("exists").listed = eligible;
    }

    /// Whether a request of `dl` to the peer in `slot` is awaiting its answer.
    fn asked(&self, dl: &Download, slot: Slot) -> bool {
        let peer = &self.slots[slot as usize];
        dl.active
            .iter()
            .any(|r| self.requests.get(r).is_some_and(|q| q.peer == *peer))
    }

    /// Concurrent requests allowed for a download.
    fn parallelism(&self, dl: &Download) -> usize {
        if dl.advert.size >= self.cfg.parallel_fetch_min_size {
            self.cfg.max_parallel_requests.max(1)
        } else {
            1
        }
    }

    /// Whether `peer` may be sent a request of `size` bytes now: within its own limits and
    /// within its fair share of the global ones.
    fn peer_available(&self, peer: &Peer, size: u64) -> bool {
        peer.in_flight < self.cfg.max_in_flight_per_peer
            && (peer.in_flight == 0
                || peer.in_flight_bytes + size <= self.cfg.max_in_flight_bytes_per_peer)
            && self.flight_n.admits(peer.counted, 1)
            && self.flight_bytes.admits(peer.counted_bytes, size)
    }

    /// Tries to start one request for a download within the global and per-peer limits.
    fn attempt(&mut self, id: ArtifactId) -> Attempt {
        match self.pick_source(id) {
            Ok(peer) => {
                self.start_request(id, peer);
                Attempt::Started
            }
            Err(NoSource::Busy) => Attempt::Busy,
            Err(NoSource::Exhausted) => Attempt::Exhausted,
        }
    }

    /// Starts requests for ready downloads within the limits.
    ///
    /// Each step takes the best head among the sources not found busy in this pass: a source
    /// whose head cannot be requested (it is at its own limits or its share of the global ones)
    /// is set aside for the pass, and the others go on. So a peer that never answers, or
    /// advertises thousands of artifacts, blocks only the downloads that it alone can serve:
    /// every step either starts a request or sets a source aside, and no peer's queue is
    /// scanned past its head.
    fn schedule(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let mut aside: SmallVec<[Slot; 16]> = SmallVec::new();
        let max_per_peer = self.cfg.max_in_flight_per_peer;
        while self.flight_n.used() < self.cfg.max_in_flight as u64 {
            // A source at its own request limit is skipped without a look at its head.
            let open = |s: Slot| {
                !aside.contains(&s)
                    && self
                        .peers
                        .get(&self.slots[s as usize])
                        .is_some_and(|p| p.in_flight < max_per_peer)
            };
            let Some((key, slot)) = self.ready.best_head(open) else {
                break;
            };
            let Some(id) = self.ready.id(&key) else {
                // Not reachable while the per-source sets mirror the ready set.
                self.ready.unlist(key, slot);
                continue;
            };
            match self.attempt(id) {
                Attempt::Started => {
                    let dl = &self.downloads[&id];
                    if dl.active.len() >= self.parallelism(dl) {
                        self.unqueue(id);
                    }
                }
                Attempt::Busy => aside.push(slot),
                Attempt::Exhausted => {
                    self.unqueue(id);
                    self.start_backoff(id);
                }
            }
        }
    }

    /// The source to ask next for a download, among those not failed since the last back-off
    /// and available now.
    ///
    /// A first request goes to the least loaded source, ties broken by a keyed hash of
    /// (artifact, peer) with this node's secret salt, so no peer can win them all. Once a source
    /// has failed, the retries ignore load and follow the keyed hash alone: a colluding source
    /// cannot make itself the next choice by keeping its load low, so each retry reaches an
    /// honest source with the probability of honest sources among those left.
    fn pick_source(&self, id: ArtifactId) -> Result<NodeId, NoSource> {
        let dl = &self.downloads[&id];
        let retrying = !dl.failed.is_empty();
        let mut best: Option<(usize, u64, NodeId)> = None;
        let mut any_untried = false;
        for slot in &dl.sources {
            if dl.failed.contains(slot) || self.asked(dl, *slot) {
                continue;
            }
            let peer = &self.slots[*slot as usize];
            any_untried = true;
            let Some(state) = self.peers.get(peer) else {
                continue;
            };
            if !self.members.contains(peer) {
                // Being disconnected by a membership change that is still in progress.
                continue;
            }
            if !self.peer_available(state, dl.advert.size) {
                continue;
            }
            let load = if retrying { 0 } else { state.in_flight };
            if best.is_some_and(|b| load > b.0) {
                continue;
            }
            // The keyed hash only matters between equally loaded sources.
            let key = (
                load,
                keyed_hash(&self.hasher, (&id, peer, dl.attempts)),
                *peer,
            );
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, peer)) => Ok(peer),
            None if any_untried || !dl.active.is_empty() => Err(NoSource::Busy),
            None => Err(NoSource::Exhausted),
        }
    }

    fn start_request(&mut self, id: ArtifactId, peer: NodeId) {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let dl = self.downloads.get_mut(&id).expect("queued download exists");
        let size = dl.advert.size;
        let priority = dl.priority.unwrap_or_default();
        dl.active.push(req_id);
        dl.attempts += 1;
        let deadline = self.now + self.cfg.request_timeout(size);
        let state = self.peers.get_mut(&peer).expect("source is connected");
        state.in_flight += 1;
        state.in_flight_bytes += size;
        self.flight_n.take(state.counted, 1);
        self.flight_bytes.take(state.counted_bytes, size);
        state.counted += 1;
        state.counted_bytes += size;
        self.requests.insert(
            req_id,
            Req {
                peer,
                id,
                size,
                counted: true,
                deadline: Some(deadline),
            },
        );
        self.deadlines.push(Reverse((deadline, req_id)));
        self.metrics.requests_sent += 1;
        self.outputs.push_back(Output::Send {
            to: peer,
            msg: Message::Request {
                req_id,
                id,
                priority,
            },
            class: Class::Control,
        });
        self.sync_ready(id);
    }

    /// Takes a request out of the global limits and its download (its peer stays busy).
    fn uncount_request(&mut self, req_id: RequestId) {
        if let Some(req) = self.requests.get_mut(&req_id) {
            if req.counted {
                req.counted = false;
                if let Some(state) = self.peers.get_mut(&req.peer) {
                    self.flight_n.give(state.counted, 1);
                    self.flight_bytes.give(state.counted_bytes, req.size);
                    state.counted -= 1;
                    state.counted_bytes -= req.size;
                }
            }
            // Its heap entry is skipped when it surfaces.
            req.deadline = None;
        }
    }

    /// Detaches a request from its download so that the download can go elsewhere.
    fn detach_request(&mut self, req_id: RequestId) {
        self.uncount_request(req_id);
        if let Some(req) = self.requests.get(&req_id) {
            let id = req.id;
            if let Some(dl) = self.downloads.get_mut(&id) {
                dl.active.retain(|r| *r != req_id);
            }
        }
    }

    /// Ends a request that was answered (or whose peer left), releasing every limit it held.
    fn finish_request(&mut self, req_id: RequestId) -> Option<Req> {
        self.detach_request(req_id);
        let req = self.requests.remove(&req_id)?;
        if let Some(state) = self.peers.get_mut(&req.peer) {
            state.in_flight -= 1;
            state.in_flight_bytes -= req.size;
        }
        Some(req)
    }

    fn on_request_timeout(&mut self, req_id: RequestId) {
        self.metrics.timeouts += 1;
        let Some(req) = self.requests.get_mut(&req_id) else {
            return;
        };
        req.deadline = None;
        let (id, peer) = (req.id, req.peer);
        self.detach_request(req_id);
        self.retry(id, peer, req_id, RetryReason::Timeout);
    }

    /// After a failed request: marks the source failed and queues the download again.
    fn retry(&mut self, id: ArtifactId, peer: NodeId, req_id: RequestId, reason: RetryReason) {
        let slot = self.peers.get(&peer).map(|p| p.slot);
        let Some(dl) = self.downloads.get_mut(&id) else {
            return;
        };
        if let Some(slot) = slot
            && dl.sources.contains(&slot)
            && !dl.failed.contains(&slot)
        {
            dl.failed.push(slot);
        }
        self.sync_ready(id);
        self.retry_event(id, peer, req_id, reason);
        self.requeue(id);
    }

    fn retry_event(
        &mut self,
        id: ArtifactId,
        peer: NodeId,
        req_id: RequestId,
        reason: RetryReason,
    ) {
        self.metrics.retries += 1;
        self.event(Event::Retry {
            id,
            peer,
            req_id,
            reason,
        });
    }

    /// Every source failed: wait, doubling the wait each round, then try them all again.
    fn start_backoff(&mut self, id: ArtifactId) {
        let (initial, max) = (self.cfg.retry_backoff_initial, self.cfg.retry_backoff_max);
        let now = self.now;
        let Some(dl) = self.downloads.get_mut(&id) else {
            return;
        };
        let rounds = (dl.attempts as usize / dl.sources.len().max(1)).saturating_sub(1);
        let wait = initial
            .checked_mul(1u32 << rounds.min(16))
            .unwrap_or(max)
            .min(max);
        let until = now + wait.max(Duration::from_nanos(1));
        dl.backoff_until = Some(until);
        self.backoff.insert((until, id));
    }

    // ---- priorities ----

    fn reevaluate(&mut self) {
        self.next_reevaluate = self.now + self.cfg.reevaluate_interval;
        self.dropped.clear();
        self.dropped_order.clear();
        let ids: Vec<ArtifactId> = self.downloads.iter().map(|d| d.advert.id).collect();
        for id in ids {
            let decision = self.priority_fn.0.decide(&self.downloads[&id].advert);
            match decision {
                Decision::Drop => {
                    let advert = self.downloads[&id].advert.clone();
                    self.end_download(id);
                    self.remember_dropped(&advert);
                }
                Decision::Later => {
                    self.unqueue(id);
                    self.downloads.get_mut(&id).expect("exists").priority = None;
                }
                Decision::Fetch(p) => {
                    let dl = &self.downloads[&id];
                    if dl.priority != Some(p) {
                        self.unqueue(id);
                        let dl = self.downloads.get_mut(&id).expect("exists");
                        dl.priority = Some(p);
                    }
                    self.requeue(id);
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// Sizes of the tables a peer can grow, from [`Node::table_sizes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// (peer, artifact) advert records.
    pub tracked_adverts: usize,
    /// The largest per-peer advert table.
    pub max_adverts_of_one_peer: usize,
    /// The largest per-peer queue of requests to serve.
    pub max_queued_requests_of_one_peer: usize,
    /// Artifacts tracked for download.
    pub pending_downloads: usize,
    /// Requests awaiting an answer (timed out ones included).
    pub requests: usize,
    /// Requests counted in the global in-flight limit.
    pub in_flight: usize,
    /// Bytes counted in the global in-flight limit.
    pub in_flight_bytes: u64,
    /// Delivered ids remembered.
    pub delivered_memory: usize,
    /// Dropped ids remembered.
    pub dropped_memory: usize,
    /// Outputs not yet drained.
    pub outputs: usize,
}

impl TableSizes {
    /// Every table past the bound that `cfg` sets for a node with `peers` connected peers, as
    /// (table, size, bound). Empty for a node that keeps its bounds, which it always should:
    /// the property tests, the fuzz target and the simulator all check it.
    pub fn exceeded(&self, cfg: &Config, peers: usize) -> Vec<(&'static str, u64, u64)> {
        // Bytes in flight may pass the limit by one artifact larger than the limit itself.
        let in_flight_bytes = if self.in_flight <= 1 {
            0
        } else {
            self.in_flight_bytes
        };
        let bounds = [
            (
                "adverts of one peer",
                self.max_adverts_of_one_peer,
                cfg.max_adverts_per_peer,
            ),
            (
                "tracked adverts",
                self.tracked_adverts,
                cfg.max_adverts_per_peer.saturating_mul(peers),
            ),
            (
                "pending downloads",
                self.pending_downloads,
                cfg.max_pending_downloads,
            ),
            (
                "queued requests of one peer",
                self.max_queued_requests_of_one_peer,
                cfg.max_queued_requests_per_peer,
            ),
            ("requests in flight", self.in_flight, cfg.max_in_flight),
            (
                "requests awaiting an answer",
                self.requests,
                cfg.max_in_flight_per_peer.saturating_mul(peers),
            ),
            (
                "delivered memory",
                self.delivered_memory,
                cfg.max_delivered_memory,
            ),
            (
                "dropped memory",
                self.dropped_memory,
                cfg.max_dropped_memory,
            ),
        ];
        let mut out: Vec<(&'static str, u64, u64)> = bounds
            .into_iter()
            .filter(|(_, size, bound)| size > bound)
            .map(|(what, size, bound)| (what, size as u64, bound as u64))
            .collect();
        if in_flight_bytes > cfg.max_in_flight_bytes {
            out.push(("bytes in flight", in_flight_bytes, cfg.max_in_flight_bytes));
        }
        out
    }
}

fn add_holder(holders: &mut Holders, peer: PeerKey) {
    if !holders.contains(&peer) {
        holders.push(peer);
    }
}

/// The keyed hasher of the tables of node `id` with seed `seed`: secret as long as the seed is.
pub(crate) fn table_hasher(seed: u64, id: NodeId) -> SaltedState {
    let salt = splitmix64(seed ^ u64::from_le_bytes(id.0[..8].try_into().unwrap_or_default()));
    SaltedState::new(splitmix64(salt))
}

/// A ready download's place in the ready queues.
fn ready_key(dl: &Download) -> ReadyKey {
    (Reverse(dl.priority.unwrap_or_default()), dl.seq)
}
