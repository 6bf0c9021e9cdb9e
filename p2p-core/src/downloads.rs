//! Downloads: the adverts tracked for download, the download table, the ready queues, request
//! scheduling, and timeouts, retries and back-off.

use crate::chunks::{MANIFEST_HEADER_LEN, Manifest, chunk_size_for, is_manifest};
use crate::config::{Config, Decision, PriorityFnRef};
use crate::event::{DisconnectReason, DropReason, Event, RetryReason};
use crate::hash::{FastState, KeyedTable, SaltedState, keyed_hash};
use crate::message::{ChunkRange, Message, RequestId};
use crate::peers::Peers;
use crate::pool::{Holders, add_holder};
use crate::ready::{Ready, ReadyKey, Slot};
use crate::recent::Recent;
use crate::requests::{Req, Requests};
use crate::sink::Sink;
use crate::types::{Advert, Artifact, ArtifactId, Class, NodeId, Priority, Time};
use bytes::Bytes;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::Duration;

/// What the download logic works with besides its own state: the configuration, the peers (their
/// slots, counters and budgets), where outputs go, and the current time.
pub(crate) struct Cx<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) peers: &'a mut Peers,
    pub(crate) sink: &'a mut Sink,
    pub(crate) now: Time,
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
    /// Sources that only hold part of a chunked artifact (they sent `Have`): they serve its
    /// manifest, and its swarm does not count them as full holders.
    partial: SmallVec<[Slot; 2]>,
    /// Chunks peers declined (`Decline`) before its swarm started, at most `max_have_ranges`
    /// ranges: the swarm does not push them to those peers.
    declined: Vec<(NodeId, ChunkRange)>,
    /// `None` while the priority function says `Later`.
    priority: Option<Priority>,
    seq: u64,
    queued: bool,
    backoff_until: Option<Time>,
    attempts: u32,
    active: SmallVec<[RequestId; 1]>,
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

/// What became of an answer (a response or a not-found) to a request.
pub(crate) enum Answer {
    /// No such request to that peer for that artifact, and no such request ever made: a
    /// protocol violation.
    Unsolicited,
    /// Not found: the source is forgotten and the download retried elsewhere.
    NotFound,
    /// The bytes do not hash to the id: the source is forgotten, the download retried, and the
    /// peer is to be penalized.
    BadData,
    /// Right bytes for a download that no longer exists (delivered already, or unwanted), or
    /// an answer to a request that ended (cancelled when the artifact arrived from elsewhere,
    /// or answered already), dropped unread.
    Late,
    /// The artifact, verified, to deliver.
    Fetched(Artifact),
    /// A chunked artifact's manifest, verified: its download ended, and a swarm is to fetch
    /// its chunks.
    Manifest(Box<SwarmStart>),
}

/// What a swarm starts from: the manifest, the download's advert and priority, and who holds
/// the artifact.
pub(crate) struct SwarmStart {
    /// The manifest.
    pub(crate) manifest: Manifest,
    /// The download's advert.
    pub(crate) advert: Advert,
    /// The download's priority.
    pub(crate) priority: Option<Priority>,
    /// Its sources that advertised it (full holders).
    pub(crate) full: SmallVec<[NodeId; 4]>,
    /// Its sources that sent `Have` (they fetch it too).
    pub(crate) partial: SmallVec<[NodeId; 4]>,
    /// Chunks peers declined before it started.
    pub(crate) declined: Vec<(NodeId, ChunkRange)>,
}

/// A manifest request just sent to a full holder of a chunked artifact: the node may ask the
/// same holder for its own stripe of the chunks in the same round trip (`Swarms::prefetch`).
pub(crate) struct ManifestAsked {
    /// The download's advert (its id and claimed size).
    pub(crate) advert: Advert,
    /// The full holder asked.
    pub(crate) peer: NodeId,
    /// The download's priority.
    pub(crate) priority: Priority,
    /// The download's sources that advertised it (full holders).
    pub(crate) full: SmallVec<[NodeId; 4]>,
}

/// The downloads and the requests that serve them.
///
/// Invariants:
/// - every tracked download has at least one source, each a connected peer whose advert of it is
///   counted in [`Peers`]; its `owner` is one of its sources and is charged one download in the
///   table's fair share;
/// - a download is `queued` exactly when it is in the ready queues, and then it is listed under
///   exactly its sources that may be asked now (not failed since the last back-off, not asked
///   already); it is queued only with a priority, outside back-off and below its parallelism;
/// - a download waits in back-off exactly when `backoff_until` is set, with the same entry in
///   `backoff`;
/// - `active` holds the download's requests counted in the in-flight limits (a timed-out or
///   detached request leaves it, its peer staying busy until it answers);
/// - `dropped` holds the ids and metadata digests of adverts the priority function dropped since
///   the last re-evaluation, at most `max_dropped_memory`.
pub(crate) struct Downloads {
    table: KeyedTable<ArtifactId, Download>,
    /// Downloads ready for another request, in priority order, per source.
    ready: Ready,
    /// Downloads waiting out a back-off.
    backoff: BTreeSet<(Time, ArtifactId)>,
    requests: Requests,
    /// Adverts the priority function dropped: id -> digest of the advert's metadata, so that an
    /// advert of the same id with other metadata (a peer lying first) is still evaluated.
    dropped: Recent<u64>,
    hasher: SaltedState,
    next_seq: u64,
    next_reevaluate: Time,
    priority_fn: PriorityFnRef,
    /// First manifest requests to full holders since the node last took them (at most one per
    /// request started in an input).
    manifest_asked: Vec<ManifestAsked>,
}

impl Downloads {
    /// No downloads; tables keyed by artifact id hash with `hasher`, the others with `fast`.
    pub(crate) fn new(hasher: SaltedState, fast: FastState, cfg: &Config) -> Self {
        Downloads {
            table: KeyedTable::new(hasher, |d: &Download| &d.advert.id),
            ready: Ready::default(),
            backoff: BTreeSet::new(),
            requests: Requests::new(fast),
            dropped: Recent::new(hasher),
            hasher,
            next_seq: 0,
            next_reevaluate: Time::ZERO + cfg.reevaluate_interval,
            priority_fn: cfg.priority_fn.clone(),
            manifest_asked: Vec::new(),
        }
    }

    /// Takes the first manifest requests sent to full holders since the last call.
    pub(crate) fn take_manifest_asked(&mut self) -> Vec<ManifestAsked> {
        std::mem::take(&mut self.manifest_asked)
    }

    /// Replaces the priority function.
    pub(crate) fn set_priority_fn(&mut self, f: PriorityFnRef) {
        self.priority_fn = f;
    }

    /// Downloads tracked.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Requests awaiting an answer.
    pub(crate) fn requests_len(&self) -> usize {
        self.requests.len()
    }

    /// Dropped ids remembered.
    pub(crate) fn dropped_len(&self) -> usize {
        self.dropped.len()
    }

    /// When something waits on time: a request deadline, a back-off's end, or the next
    /// re-evaluation (if anything would be re-evaluated).
    pub(crate) fn next_wakeup(&self) -> Option<Time> {
        let deadline = self.requests.next_deadline();
        let backoff = self.backoff.first().map(|(t, _)| *t);
        let reevaluate =
            (!self.table.is_empty() || !self.dropped.is_empty()).then_some(self.next_reevaluate);
        [deadline, backoff, reevaluate].into_iter().flatten().min()
    }

    /// Keeps the next deadline exact and the heap of deadlines small (at the end of an input).
    pub(crate) fn prune_deadlines(&mut self) {
        self.requests.prune();
    }

    /// Acts on what is due at `cx.now`: request timeouts, ends of back-off, re-evaluation.
    pub(crate) fn advance(&mut self, cx: &mut Cx) {
        while let Some(req_id) = self.requests.pop_expired(cx.now) {
            self.on_request_timeout(req_id, cx);
        }
        while let Some(&(t, id)) = self.backoff.first() {
            if t > cx.now {
                break;
            }
            self.backoff.pop_first();
            if let Some(dl) = self.table.get_mut(&id) {
                dl.backoff_until = None;
                dl.failed.clear();
            }
            self.requeue(id, cx);
        }
        if cx.now >= self.next_reevaluate {
            self.reevaluate(cx);
        }
    }

    // ---- adverts ----

    /// The priority function's decision on `advert`.
    pub(crate) fn decide(&self, advert: &Advert) -> Decision {
        self.priority_fn.0.decide(advert)
    }

    fn advert_digest(&self, advert: &Advert) -> u64 {
        self.hasher
            .hash_one((advert.kind, advert.size, &advert.attr[..]))
    }

    /// Whether the priority function dropped an advert with this id and metadata since the
    /// last re-evaluation.
    pub(crate) fn is_dropped(&self, advert: &Advert) -> bool {
        !self.dropped.is_empty()
            && self
                .dropped
                .get(&advert.id)
                .is_some_and(|d| *d == self.advert_digest(advert))
    }

    /// Remembers that the priority function dropped `advert`.
    pub(crate) fn remember_dropped(&mut self, advert: &Advert, cfg: &Config) {
        let digest = self.advert_digest(advert);
        self.dropped
            .remember(advert.id, digest, cfg.max_dropped_memory);
    }

    /// An advert from the connected peer `from` (in `slot`) of an artifact this node neither
    /// pools nor delivered: adds a source to its download, or starts tracking one if the table
    /// has room and the priority function wants it. An error is the reason to disconnect the
    /// peer (past its advert limits).
    /// A `Have` of `id` from `from`: a tracked download of it takes the sender as a source of
    /// its manifest (a partial holder).
    pub(crate) fn on_have(
        &mut self,
        from: NodeId,
        slot: Slot,
        id: ArtifactId,
        cx: &mut Cx,
    ) -> Result<(), DisconnectReason> {
        let Some(dl) = self.table.get(&id) else {
            return Ok(());
        };
        if dl.sources.contains(&slot) {
            return Ok(());
        }
        let advert = dl.advert.clone();
        self.on_advert_as(from, slot, advert, true, cx)
    }

    pub(crate) fn on_advert(
        &mut self,
        from: NodeId,
        slot: Slot,
        advert: Advert,
        cx: &mut Cx,
    ) -> Result<(), DisconnectReason> {
        self.on_advert_as(from, slot, advert, false, cx)
    }

    /// An advert from `from`, a partial holder if `partial` (it serves the manifest and the
    /// chunks it announces, not the whole artifact: a `Have` or `Fetching` sender).
    pub(crate) fn on_advert_as(
        &mut self,
        from: NodeId,
        slot: Slot,
        advert: Advert,
        partial: bool,
        cx: &mut Cx,
    ) -> Result<(), DisconnectReason> {
        let id = advert.id;
        if self.is_dropped(&advert) {
            cx.sink.dropped_advert(id, from, DropReason::Unwanted);
            return Ok(());
        }
        if let Some(dl) = self.table.get_mut(&id) {
            if dl.sources.contains(&slot) {
                // A partial source that advertises the artifact now holds it whole; its advert
                // is weighed as a new source's would be.
                if !partial && let Some(i) = dl.partial.iter().position(|s| *s == slot) {
                    dl.partial.swap_remove(i);
                    if dl.advert != advert {
                        self.adopt_if_better(advert, cx);
                    }
                    self.sync_ready(id, cx);
                    self.requeue(id, cx);
                }
                return Ok(());
            }
            // Metadata that differs from the first advert's is not grounds to ignore a source:
            // the first advertiser may be the liar, and the hash decides what is delivered. The
            // advert counts against the download's kind, so that it is uncounted the same way.
            let (kind, differs) = (dl.advert.kind, dl.advert != advert);
            cx.peers.track_advert(&from, kind, cx.cfg)?;
            self.add_source(slot, advert, (differs, partial), cx);
            return Ok(());
        }
        // Each member has a reserved share of the table: others filling theirs cannot keep
        // this peer's adverts out.
        if !cx.peers.admits_download(&from) {
            cx.sink.dropped_advert(id, from, DropReason::TableFull);
            return Ok(());
        }
        let priority = match self.decide(&advert) {
            Decision::Drop => {
                self.remember_dropped(&advert, cx.cfg);
                cx.sink.dropped_advert(id, from, DropReason::Unwanted);
                return Ok(());
            }
            Decision::Later => None,
            Decision::Fetch(p) => Some(p),
        };
        cx.peers.track_advert(&from, advert.kind, cx.cfg)?;
        cx.peers.charge_download(&from);
        self.track(slot, advert, (priority, partial), cx);
        Ok(())
    }

    /// Adds the peer in `slot` (its advert counted) as a source of a tracked download, a
    /// partial one if `partial`.
    fn add_source(
        &mut self,
        slot: Slot,
        advert: Advert,
        (differs, partial): (bool, bool),
        cx: &mut Cx,
    ) {
        let id = advert.id;
        let dl = self.table.get_mut(&id).expect("checked by the caller");
        dl.sources.push(slot);
        if partial && !dl.partial.contains(&slot) {
            dl.partial.push(slot);
        }
        // A new source need not wait out a back-off earned by the others.
        if let Some(t) = dl.backoff_until.take() {
            self.backoff.remove(&(t, id));
        }
        if differs {
            self.adopt_if_better(advert, cx);
        }
        self.sync_ready(id, cx);
        self.requeue(id, cx);
    }

    /// Starts tracking a download of `advert`, first advertised by the peer in `slot` (its
    /// advert counted, the download charged to it), a partial holder if `partial`.
    fn track(
        &mut self,
        slot: Slot,
        advert: Advert,
        (priority, partial): (Option<Priority>, bool),
        cx: &mut Cx,
    ) {
        let id = advert.id;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut sources = SmallVec::new();
        sources.push(slot);
        self.table.insert_new(Download {
            advert,
            sources,
            owner: slot,
            listed: SmallVec::new(),
            failed: SmallVec::new(),
            partial: if partial {
                SmallVec::from_slice(&[slot])
            } else {
                SmallVec::new()
            },
            declined: Vec::new(),
            priority,
            seq,
            queued: false,
            backoff_until: None,
            attempts: 0,
            active: SmallVec::new(),
        });
        self.requeue(id, cx);
    }

    /// Another source's advert of a download, with other metadata: the download takes it if the
    /// priority function wants it more (fetch rather than later, or at a higher priority). So a
    /// peer that advertises an artifact first with metadata the application does not want cannot
    /// hold back the honest adverts of it; the hash still decides what is delivered.
    fn adopt_if_better(&mut self, advert: Advert, cx: &mut Cx) {
        let id = advert.id;
        let current = self.table[&id].priority;
        let p = match self.decide(&advert) {
            Decision::Fetch(p) if current.is_none_or(|c| p > c) => p,
            _ => return,
        };
        self.unqueue(id);
        let dl = self.table.get_mut(&id).expect("exists");
        let (old_kind, new_kind) = (dl.advert.kind, advert.kind);
        dl.advert = advert;
        dl.priority = Some(p);
        if old_kind != new_kind {
            // Every source's advert counts against the download's kind: move the counts.
            for slot in dl.sources.clone() {
                cx.peers.move_kind(slot, old_kind, new_kind);
            }
        }
    }

    /// Removes `peer` as a source of `id`; the download ends when no source is left.
    fn remove_source(&mut self, id: ArtifactId, peer: NodeId, cx: &mut Cx) {
        let Some(slot) = cx.peers.get(&peer).map(|p| p.slot) else {
            return;
        };
        let Some(dl) = self.table.get_mut(&id) else {
            return;
        };
        let Some(i) = dl.sources.iter().position(|s| *s == slot) else {
            return;
        };
        dl.sources.remove(i);
        dl.failed.retain(|s| *s != slot);
        let (kind, empty) = (dl.advert.kind, dl.sources.is_empty());
        if empty {
            self.end_download(id, cx);
        } else if dl.owner == slot {
            dl.owner = dl.sources[0];
            let to = dl.owner;
            cx.peers.charge_owner(slot, to);
        }
        cx.peers.untrack_advert(slot, kind);
        self.sync_ready(id, cx);
    }

    /// Keeps a `Decline` from `from` of chunks of `id`, whose swarm has not started, for the
    /// swarm (at most `max_have_ranges` ranges per download; more are forgotten: the swarm
    /// then pushes those chunks, a duplicate at worst).
    pub(crate) fn on_decline(
        &mut self,
        from: NodeId,
        id: ArtifactId,
        ranges: &[ChunkRange],
        cfg: &Config,
    ) {
        let Some(dl) = self.table.get_mut(&id) else {
            return;
        };
        let room = cfg.max_have_ranges.saturating_sub(dl.declined.len());
        dl.declined
            .extend(ranges.iter().take(room).map(|r| (from, *r)));
    }

    /// The connected peer `from` withdrew its advert of `id`: its requests for it are retried
    /// elsewhere and it is no longer a source.
    pub(crate) fn on_withdraw(&mut self, from: NodeId, id: ArtifactId, cx: &mut Cx) {
        let Some(dl) = self.table.get(&id) else {
            return;
        };
        let aborted: SmallVec<[RequestId; 1]> = dl
            .active
            .iter()
            .copied()
            .filter(|r| self.requests.get(r).is_some_and(|q| q.peer == from))
            .collect();
        for req_id in aborted {
            self.detach_request(req_id, cx);
            self.retry_event(id, from, req_id, RetryReason::Withdrawn, cx);
        }
        self.remove_source(id, from, cx);
        self.requeue(id, cx);
    }

    // ---- peers leaving ----

    /// The first half of the departure of `peer` (in `slot`, still connected): gives back its
    /// share of the in-flight limits and, if it advertised anything, takes it off every download
    /// (ending those it alone could serve). Returns its requests, for
    /// [`retry_after_departure`](Downloads::retry_after_departure).
    pub(crate) fn release_peer(
        &mut self,
        peer: NodeId,
        slot: Slot,
        had_adverts: bool,
        cx: &mut Cx,
    ) -> Vec<RequestId> {
        // A peer awaiting no answer (a member that connects and leaves) costs no scan.
        let awaited = cx.peers.get(&peer).is_some_and(|p| p.in_flight > 0);
        let reqs = if awaited {
            self.requests.of_peer(peer)
        } else {
            Vec::new()
        };
        for req_id in &reqs {
            self.uncount_request(*req_id, cx);
        }
        if had_adverts {
            self.forget_source(slot, cx);
        }
        reqs
    }

    /// Takes the peer in `slot` off every download: disconnects are rare, so a scan of the
    /// download table beats a per-peer index.
    fn forget_source(&mut self, slot: Slot, cx: &mut Cx) {
        let mut orphaned = Vec::new();
        let mut handed_over = Vec::new();
        for dl in self.table.iter_mut() {
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
            self.end_download(id, cx);
        }
        for new_owner in handed_over {
            cx.peers.charge_owner(slot, new_owner);
        }
    }

    /// The second half, once `peer` is gone: forgets its ready queue and ends its requests,
    /// retrying their downloads elsewhere.
    pub(crate) fn retry_after_departure(
        &mut self,
        peer: NodeId,
        slot: Slot,
        reqs: Vec<RequestId>,
        cx: &mut Cx,
    ) {
        self.ready.clear_slot(slot);
        for req_id in reqs {
            if let Some(req) = self.finish_request(req_id, cx) {
                if self.table.get(&req.id).is_some() {
                    self.retry(req.id, peer, req_id, RetryReason::Disconnected, cx);
                } else {
                    // Its only source left: the download waits for a new advert.
                    self.retry_event(req.id, peer, req_id, RetryReason::Disconnected, cx);
                }
            }
        }
    }

    // ---- answers ----

    /// A response (`Some(data)`) or not-found (`None`) from the connected peer `from`.
    pub(crate) fn on_answer(
        &mut self,
        from: NodeId,
        req_id: RequestId,
        id: ArtifactId,
        data: Option<Bytes>,
        cx: &mut Cx,
    ) -> Answer {
        match self.requests.get(&req_id) {
            Some(req) if req.peer == from && req.id == id => {}
            // Ended: most often cancelled when the artifact arrived from elsewhere after the
            // answer had started. It is dropped unread, as a late chunk is.
            None if self.requests.issued(req_id) => {
                if data.is_some() {
                    cx.sink.metrics.duplicates += 1;
                }
                return Answer::Late;
            }
            _ => return Answer::Unsolicited,
        }
        self.finish_request(req_id, cx);
        let Some(data) = data else {
            // Not found: the peer no longer has it; forget its advert and try elsewhere.
            cx.peers.record_failed(&from);
            self.remove_source(id, from, cx);
            self.retry(id, from, req_id, RetryReason::NotFound, cx);
            return Answer::NotFound;
        };
        cx.sink.metrics.bytes_received += data.len() as u64;
        // Integrity first. The hash alone decides: an advert's size is a hint, and the first
        // advertiser may have lied about it.
        // A root that begins with the manifest tag is a manifest (see `chunks`); it must be
        // well formed, in this subnet's chunk size and within the size limit.
        let manifest = if is_manifest(&data) {
            Manifest::parse(data.clone()).ok().filter(|m| {
                m.chunk_size() == chunk_size_for(m.size(), cx.cfg.chunk_size)
                    && m.size() <= cx.cfg.max_artifact_size
            })
        } else {
            None
        };
        if ArtifactId::of(&data) != id || (is_manifest(&data) && manifest.is_none()) {
            cx.peers.record_failed(&from);
            self.remove_source(id, from, cx);
            self.retry(id, from, req_id, RetryReason::BadData, cx);
            return Answer::BadData;
        }
        cx.peers.record_served(&from);
        let Some(dl) = self.table.get(&id) else {
            // Delivered already (a parallel or late request), or no longer wanted.
            cx.sink.metrics.duplicates += 1;
            return Answer::Late;
        };
        if let Some(manifest) = manifest {
            let advert = Advert {
                size: manifest.size(),
                ..dl.advert.clone()
            };
            let priority = dl.priority;
            let full = full_holders(dl, cx.peers);
            let partial = dl
                .partial
                .iter()
                .filter(|s| dl.sources.contains(s))
                .map(|s| cx.peers.id_of_slot(*s))
                .collect();
            let declined = std::mem::take(&mut self.table.get_mut(&id).expect("download").declined);
            self.end_download(id, cx);
            return Answer::Manifest(Box::new(SwarmStart {
                manifest,
                advert,
                priority,
                full,
                partial,
                declined,
            }));
        }
        Answer::Fetched(Artifact {
            id,
            kind: dl.advert.kind,
            attr: dl.advert.attr.clone(),
            data,
        })
    }

    /// Ends the download of `id` if there is one (the artifact arrived or was published), adding
    /// its sources to `holders`; returns whether there was one. Its requests still awaiting
    /// an answer end and are cancelled on the wire: the peer drops the answer if it has not
    /// started (a small artifact pushed by its origin often arrives while a relay's answer
    /// waits in the relay's uplink).
    pub(crate) fn end_with_holders(
        &mut self,
        id: ArtifactId,
        holders: &mut Holders,
        cx: &mut Cx,
    ) -> bool {
        let Some(dl) = self.table.get(&id) else {
            return false;
        };
        for s in &dl.sources {
            add_holder(holders, cx.peers.key_of_slot(*s));
        }
        let active = dl.active.clone();
        for req_id in active {
            if let Some(req) = self.finish_request(req_id, cx) {
                cx.sink
                    .send(req.peer, Message::Cancel { req_id }, Class::Control);
                cx.sink.metrics.requests_cancelled += 1;
            }
        }
        self.end_download(id, cx);
        true
    }

    /// Ends a download: frees its per-peer advert records and its charge in the table, detaches
    /// its requests (their peers stay busy until they answer) and takes it out of the ready
    /// queues and back-off.
    fn end_download(&mut self, id: ArtifactId, cx: &mut Cx) {
        let Some(dl) = self.table.remove(&id) else {
            return;
        };
        if dl.queued {
            self.ready.remove(ready_key(&dl), &dl.listed);
        }
        if let Some(t) = dl.backoff_until {
            self.backoff.remove(&(t, id));
        }
        for req_id in &dl.active {
            self.uncount_request(*req_id, cx);
        }
        cx.peers.discharge_download(dl.owner);
        for slot in dl.sources {
            cx.peers.untrack_advert(slot, dl.advert.kind);
        }
    }

    // ---- the ready queues ----

    /// Starts another request for a download if it wants one now (at once when nothing waits
    /// ahead of it), or puts it in the ready queues.
    fn requeue(&mut self, id: ArtifactId, cx: &mut Cx) {
        let Some(dl) = self.table.get(&id) else {
            return;
        };
        if dl.priority.is_none() {
            return;
        }
        let parallel = parallelism(dl, cx.cfg);
        if dl.queued || dl.backoff_until.is_some() || dl.active.len() >= parallel {
            return;
        }
        if self.ready.is_empty() {
            // Nothing waits ahead of it: starting now keeps the priority order.
            match self.attempt(id, cx) {
                Attempt::Started if self.table[&id].active.len() >= parallel => return,
                Attempt::Exhausted => return self.start_backoff(id, cx),
                Attempt::Started | Attempt::Busy => {}
            }
        }
        let dl = self.table.get_mut(&id).expect("exists");
        dl.queued = true;
        let key = ready_key(dl);
        self.ready.insert(key, id);
        self.sync_ready(id, cx);
    }

    fn unqueue(&mut self, id: ArtifactId) {
        if let Some(dl) = self.table.get_mut(&id)
            && dl.queued
        {
            dl.queued = false;
            let listed = std::mem::take(&mut dl.listed);
            self.ready.remove(ready_key(dl), &listed);
        }
    }

    /// Lists a ready download under exactly the sources that may be asked for it now: not
    /// failed since the last back-off, not already asked.
    fn sync_ready(&mut self, id: ArtifactId, cx: &Cx) {
        let Some(dl) = self.table.get(&id) else {
            return;
        };
        if !dl.queued {
            return;
        }
        let eligible: SmallVec<[Slot; 4]> = dl
            .sources
            .iter()
            .copied()
            .filter(|s| !dl.failed.contains(s) && !self.asked(dl, *s, cx.peers))
            .collect();
        let key = ready_key(dl);
        for slot in dl.listed.iter().filter(|s| !eligible.contains(s)) {
            self.ready.unlist(key, *slot);
        }
        for slot in eligible.iter().filter(|s| !dl.listed.contains(s)) {
            self.ready.list(key, *slot);
        }
        self.table.get_mut(&id).expect("exists").listed = eligible;
    }

    /// Whether a request of `dl` to the peer in `slot` is awaiting its answer.
    fn asked(&self, dl: &Download, slot: Slot, peers: &Peers) -> bool {
        self.requests.any_to(&dl.active, peers.id_of_slot(slot))
    }

    // ---- scheduling ----

    /// Tries to start one request for a download within the global and per-peer limits.
    fn attempt(&mut self, id: ArtifactId, cx: &mut Cx) -> Attempt {
        match self.pick_source(id, cx) {
            Ok(peer) => {
                self.start_request(id, peer, cx);
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
    pub(crate) fn schedule(&mut self, cx: &mut Cx) {
        if self.ready.is_empty() {
            return;
        }
        let mut aside: SmallVec<[Slot; 16]> = SmallVec::new();
        while cx.peers.in_flight() < cx.cfg.max_in_flight as u64 {
            // A source at its own request limit is skipped without a look at its head.
            let open = |s: Slot| !aside.contains(&s) && cx.peers.below_request_limit(s, cx.cfg);
            let Some((key, slot)) = self.ready.best_head(open) else {
                break;
            };
            let Some(id) = self.ready.id(&key) else {
                // Not reachable while the per-source sets mirror the ready set.
                self.ready.unlist(key, slot);
                continue;
            };
            match self.attempt(id, cx) {
                Attempt::Started => {
                    let dl = &self.table[&id];
                    if dl.active.len() >= parallelism(dl, cx.cfg) {
                        self.unqueue(id);
                    }
                }
                Attempt::Busy => aside.push(slot),
                Attempt::Exhausted => {
                    self.unqueue(id);
                    self.start_backoff(id, cx);
                }
            }
        }
    }

    /// The source to ask next for a download, among those not failed since the last back-off
    /// and available now.
    ///
    /// Proven sources (peers that gave us more artifacts than they failed requests) come
    /// first, then new ones, then suspects (more failed than given): a peer that advertises and
    /// never serves is never preferred to one that serves, however idle it keeps itself. Within
    /// a rank, a first request goes to the least loaded source, ties broken by a
    /// keyed hash of (artifact, peer) with this node's secret salt, so no peer can win them all.
    /// Once a source has failed, the retries ignore load and follow the keyed hash alone: a
    /// colluding source cannot make itself the next choice by keeping its load low, so each
    /// retry reaches an honest source with the probability of honest sources among those left.
    fn pick_source(&self, id: ArtifactId, cx: &Cx) -> Result<NodeId, NoSource> {
        let dl = &self.table[&id];
        let retrying = !dl.failed.is_empty();
        let mut best: Option<(u8, usize, u64, NodeId)> = None;
        let mut any_untried = false;
        for slot in &dl.sources {
            if dl.failed.contains(slot) || self.asked(dl, *slot, cx.peers) {
                continue;
            }
            let peer = cx.peers.id_of_slot(*slot);
            any_untried = true;
            let Some(state) = cx.peers.get(&peer) else {
                continue;
            };
            if !cx.peers.is_member(&peer) {
                // Being disconnected by a membership change that is still in progress.
                continue;
            }
            if !cx
                .peers
                .available(state, fetch_size(&dl.advert, cx.cfg), cx.cfg)
            {
                continue;
            }
            let rank = state.source_rank();
            let load = if retrying { 0 } else { state.in_flight };
            if best.is_some_and(|b| (rank, load) > (b.0, b.1)) {
                continue;
            }
            // The keyed hash only matters between equally proven and loaded sources.
            let key = (
                rank,
                load,
                keyed_hash(&self.hasher, (&id, &peer, dl.attempts)),
                peer,
            );
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, _, peer)) => Ok(peer),
            None if any_untried || !dl.active.is_empty() => Err(NoSource::Busy),
            None => Err(NoSource::Exhausted),
        }
    }

    // ---- requests ----

    fn start_request(&mut self, id: ArtifactId, peer: NodeId, cx: &mut Cx) {
        let dl = self.table.get_mut(&id).expect("queued download exists");
        let size = fetch_size(&dl.advert, cx.cfg);
        let priority = dl.priority.unwrap_or_default();
        let deadline = cx.now + cx.cfg.request_timeout(size);
        let req_id = self.requests.start(peer, id, size, deadline);
        dl.active.push(req_id);
        dl.attempts += 1;
        cx.peers.start_request(&peer, size);
        cx.sink.metrics.requests_sent += 1;
        // The first request for a chunked artifact's manifest, to a peer that advertised it
        // whole: the swarm may ask it for this node's stripe right away.
        let full_holder = cx
            .peers
            .get(&peer)
            .is_some_and(|state| !dl.partial.contains(&state.slot));
        if dl.attempts == 1 && dl.advert.size > u64::from(cx.cfg.chunk_size) && full_holder {
            let full = full_holders(dl, cx.peers);
            self.manifest_asked.push(ManifestAsked {
                advert: dl.advert.clone(),
                peer,
                priority,
                full,
            });
        }
        let msg = Message::Request {
            req_id,
            id,
            priority,
        };
        cx.sink.send(peer, msg, Class::Control);
        self.sync_ready(id, cx);
    }

    /// Takes a request out of the global limits and its download (its peer stays busy).
    fn uncount_request(&mut self, req_id: RequestId, cx: &mut Cx) {
        if let Some(req) = self.requests.get_mut(&req_id) {
            if req.counted {
                req.counted = false;
                cx.peers.uncount_request(&req.peer, req.size);
            }
            // Its heap entry is skipped when it surfaces.
            req.deadline = None;
        }
    }

    /// Detaches a request from its download so that the download can go elsewhere.
    fn detach_request(&mut self, req_id: RequestId, cx: &mut Cx) {
        self.uncount_request(req_id, cx);
        if let Some(req) = self.requests.get(&req_id)
            && let Some(dl) = self.table.get_mut(&req.id)
        {
            dl.active.retain(|r| *r != req_id);
        }
    }

    /// Ends a request that was answered (or whose peer left), releasing every limit it held.
    fn finish_request(&mut self, req_id: RequestId, cx: &mut Cx) -> Option<Req> {
        self.detach_request(req_id, cx);
        let req = self.requests.remove(&req_id)?;
        cx.peers.end_request(&req.peer, req.size);
        Some(req)
    }

    fn on_request_timeout(&mut self, req_id: RequestId, cx: &mut Cx) {
        cx.sink.metrics.timeouts += 1;
        let Some(req) = self.requests.get_mut(&req_id) else {
            return;
        };
        req.deadline = None;
        let (id, peer) = (req.id, req.peer);
        cx.peers.record_failed(&peer);
        self.detach_request(req_id, cx);
        self.retry(id, peer, req_id, RetryReason::Timeout, cx);
    }

    /// After a failed request: marks the source failed and queues the download again.
    fn retry(
        &mut self,
        id: ArtifactId,
        peer: NodeId,
        req_id: RequestId,
        reason: RetryReason,
        cx: &mut Cx,
    ) {
        let slot = cx.peers.get(&peer).map(|p| p.slot);
        let Some(dl) = self.table.get_mut(&id) else {
            return;
        };
        if let Some(slot) = slot
            && dl.sources.contains(&slot)
            && !dl.failed.contains(&slot)
        {
            dl.failed.push(slot);
        }
        self.sync_ready(id, cx);
        self.retry_event(id, peer, req_id, reason, cx);
        self.requeue(id, cx);
    }

    fn retry_event(
        &mut self,
        id: ArtifactId,
        peer: NodeId,
        req_id: RequestId,
        reason: RetryReason,
        cx: &mut Cx,
    ) {
        cx.sink.metrics.retries += 1;
        cx.sink.event(Event::Retry {
            id,
            peer,
            req_id,
            reason,
        });
    }

    /// Every source failed: wait, doubling the wait each round, then try them all again.
    fn start_backoff(&mut self, id: ArtifactId, cx: &Cx) {
        let (initial, max) = (cx.cfg.retry_backoff_initial, cx.cfg.retry_backoff_max);
        let Some(dl) = self.table.get_mut(&id) else {
            return;
        };
        let rounds = (dl.attempts as usize / dl.sources.len().max(1)).saturating_sub(1);
        let wait = initial
            .checked_mul(1u32 << rounds.min(16))
            .unwrap_or(max)
            .min(max);
        let until = cx.now + wait.max(Duration::from_nanos(1));
        dl.backoff_until = Some(until);
        self.backoff.insert((until, id));
    }

    // ---- priorities ----

    /// Asks the priority function again about every tracked download, and forgets the dropped
    /// adverts (they are evaluated again when they come back).
    pub(crate) fn reevaluate(&mut self, cx: &mut Cx) {
        self.next_reevaluate = cx.now + cx.cfg.reevaluate_interval;
        self.dropped.clear();
        let ids: Vec<ArtifactId> = self.table.iter().map(|d| d.advert.id).collect();
        for id in ids {
            match self.decide(&self.table[&id].advert) {
                Decision::Drop => {
                    let advert = self.table[&id].advert.clone();
                    self.end_download(id, cx);
                    self.remember_dropped(&advert, cx.cfg);
                }
                Decision::Later => {
                    self.unqueue(id);
                    self.table.get_mut(&id).expect("exists").priority = None;
                }
                Decision::Fetch(p) => {
                    if self.table[&id].priority != Some(p) {
                        self.unqueue(id);
                        self.table.get_mut(&id).expect("exists").priority = Some(p);
                    }
                    self.requeue(id, cx);
                }
            }
        }
    }
}

/// Concurrent requests allowed for a download.
/// The bytes a request for `advert` fetches: the artifact, or its manifest if it is chunked.
/// The sources of `dl` that advertised the whole artifact (not only some of its chunks).
fn full_holders(dl: &Download, peers: &Peers) -> SmallVec<[NodeId; 4]> {
    dl.sources
        .iter()
        .filter(|s| !dl.partial.contains(s))
        .map(|s| peers.id_of_slot(*s))
        .collect()
}

fn fetch_size(advert: &Advert, cfg: &Config) -> u64 {
    if advert.size > cfg.chunk_size as u64 {
        let count = advert
            .size
            .div_ceil(u64::from(chunk_size_for(advert.size, cfg.chunk_size)));
        MANIFEST_HEADER_LEN as u64 + 32 * count
    } else {
        advert.size
    }
}

fn parallelism(dl: &Download, cfg: &Config) -> usize {
    if dl.advert.size >= cfg.parallel_fetch_min_size && dl.advert.size <= cfg.chunk_size as u64 {
        cfg.max_parallel_requests.max(1)
    } else {
        1
    }
}

/// A ready download's place in the ready queues.
fn ready_key(dl: &Download) -> ReadyKey {
    (Reverse(dl.priority.unwrap_or_default()), dl.seq)
}

#[cfg(test)]
impl Downloads {
    /// Checks the invariants above, which hold between inputs (tests only).
    fn check(&self, peers: &Peers) {
        peers.check();
        for dl in self.table.iter() {
            assert!(!dl.sources.is_empty(), "a download has a source");
            assert!(dl.sources.contains(&dl.owner), "its owner is a source");
            assert_eq!(
                dl.backoff_until
                    .is_some_and(|t| self.backoff.contains(&(t, dl.advert.id))),
                dl.backoff_until.is_some()
            );
            assert!(dl.queued || dl.listed.is_empty());
            for r in &dl.active {
                assert!(self.requests.get(r).is_some_and(|q| q.counted));
            }
        }
        assert_eq!(
            self.backoff.len(),
            self.table
                .iter()
                .filter(|d| d.backoff_until.is_some())
                .count()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, Cx, Downloads};
    use crate::config::{Config, Decision, PriorityFnRef};
    use crate::event::{DropReason, Event, Output, RetryReason};
    use crate::hash::{FastState, SaltedState};
    use crate::message::{Message, RequestId};
    use crate::peers::Peers;
    use crate::sink::Sink;
    use crate::types::{Advert, Artifact, Kind, NodeId, Time};
    use std::time::Duration;

    /// A download part with peers 1..=n connected, and what it works with.
    struct Bench {
        cfg: Config,
        peers: Peers,
        sink: Sink,
        dl: Downloads,
        now: Time,
    }

    impl Bench {
        fn new(cfg: Config, n: u8) -> Self {
            let mut peers = Peers::new(FastState(5), &cfg);
            peers.set_members((0..=n).map(node));
            for i in 1..=n {
                peers.connect(node(i), 0);
            }
            peers.reshare(&cfg, node(0));
            let dl = Downloads::new(SaltedState::new(9), FastState(5), &cfg);
            Bench {
                cfg,
                peers,
                sink: Sink::default(),
                dl,
                now: Time::ZERO,
            }
        }

        /// Runs `f` and checks the invariants, as at the end of an input.
        fn run<R>(&mut self, f: impl FnOnce(&mut Downloads, &mut Cx) -> R) -> R {
            let r = self.step(f);
            self.dl.check(&self.peers);
            r
        }

        /// Runs `f`, a step within an input (the invariants may not hold after it).
        fn step<R>(&mut self, f: impl FnOnce(&mut Downloads, &mut Cx) -> R) -> R {
            let mut cx = Cx {
                cfg: &self.cfg,
                peers: &mut self.peers,
                sink: &mut self.sink,
                now: self.now,
            };
            f(&mut self.dl, &mut cx)
        }

        fn advert(&mut self, from: u8, advert: &Advert) {
            let slot = self.peers.get(&node(from)).expect("connected").slot;
            let advert = advert.clone();
            self.run(|d, cx| d.on_advert(node(from), slot, advert, cx))
                .expect("within the limits");
        }

        /// The requests sent since the last call: (peer, request id).
        fn requests(&mut self) -> Vec<(NodeId, RequestId)> {
            std::iter::from_fn(|| self.sink.pop())
                .filter_map(|o| match o {
                    Output::Send {
                        to,
                        msg: Message::Request { req_id, .. },
                        ..
                    } => Some((to, req_id)),
                    _ => None,
                })
                .collect()
        }
    }

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn artifact(n: u8) -> Artifact {
        Artifact::new(Kind(0), &b""[..], vec![n; 2000])
    }

    #[test]
    fn an_advert_leads_to_a_request_and_the_answer_to_a_delivery() {
        let mut b = Bench::new(Config::default(), 2);
        let art = artifact(1);
        b.advert(1, &art.advert());
        b.advert(2, &art.advert());
        let sent = b.requests();
        assert_eq!(sent.len(), 1, "one request for a small artifact");
        let (to, req_id) = sent[0];
        assert_eq!((b.dl.len(), b.dl.requests_len()), (1, 1));
        let data = art.data.clone();
        let answer = b.run(|d, cx| d.on_answer(to, req_id, art.id, Some(data), cx));
        assert!(matches!(answer, Answer::Fetched(a) if a == art));
        let mut holders = crate::pool::Holders::new();
        assert!(b.run(|d, cx| d.end_with_holders(art.id, &mut holders, cx)));
        assert_eq!(holders.len(), 2, "both sources hold it");
        assert_eq!(
            (b.dl.len(), b.dl.requests_len(), b.peers.tracked_adverts()),
            (0, 0, 0)
        );
        // An answer to a request that ended is dropped unread; one never made is a violation.
        let again = b.run(|d, cx| d.on_answer(to, req_id, art.id, None, cx));
        assert!(matches!(again, Answer::Late));
        let never = b.run(|d, cx| d.on_answer(to, req_id + 1, art.id, None, cx));
        assert!(matches!(never, Answer::Unsolicited));
    }

    #[test]
    fn a_timeout_retries_another_source_then_backs_off() {
        let cfg = Config {
            reevaluate_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let mut b = Bench::new(cfg, 2);
        let art = artifact(2);
        b.advert(1, &art.advert());
        b.advert(2, &art.advert());
        let first = b.requests()[0].0;
        b.now = b.dl.next_wakeup().expect("a deadline");
        b.run(|d, cx| d.advance(cx));
        let events: Vec<Output> = std::iter::from_fn(|| b.sink.pop()).collect();
        assert!(events.iter().any(|o| matches!(
            o,
            Output::Event(Event::Retry { reason: RetryReason::Timeout, peer, .. }) if *peer == first
        )));
        let second: Vec<NodeId> = events
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    msg: Message::Request { .. },
                    ..
                } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0], first, "the retry goes to the other source");
        // The second times out too: every source failed, so the download backs off.
        b.now = b.dl.next_wakeup().expect("a deadline");
        b.run(|d, cx| d.advance(cx));
        assert!(b.requests().is_empty());
        let until = b.dl.next_wakeup().expect("the back-off's end");
        assert!(until > b.now);
        b.now = until;
        b.run(|d, cx| d.advance(cx));
        assert_eq!(b.requests().len(), 1, "tried again after the back-off");
        assert_eq!(b.sink.metrics.timeouts, 2);
    }

    #[test]
    fn unwanted_adverts_are_remembered_until_the_next_reevaluation() {
        let cfg = Config {
            priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Drop),
            ..Config::default()
        };
        let mut b = Bench::new(cfg, 1);
        let art = artifact(3);
        b.advert(1, &art.advert());
        assert_eq!((b.dl.len(), b.dl.dropped_len()), (0, 1));
        assert!(b.dl.is_dropped(&art.advert()));
        let other_meta = Advert {
            size: 1,
            ..art.advert()
        };
        assert!(
            !b.dl.is_dropped(&other_meta),
            "other metadata is evaluated again"
        );
        b.run(|d, cx| d.reevaluate(cx));
        assert_eq!(b.dl.dropped_len(), 0);
        assert_eq!(b.sink.metrics.adverts_dropped, 1);
    }

    #[test]
    fn a_member_past_its_share_of_a_full_table_is_refused() {
        let cfg = Config {
            max_pending_downloads: 4,
            ..Config::default()
        };
        let mut b = Bench::new(cfg, 2);
        // Peer 1 takes its share (1) and the shared half (2); peer 2's share stays free.
        for n in 0..4 {
            b.advert(1, &artifact(n).advert());
        }
        assert_eq!(b.dl.len(), 3);
        let dropped: Vec<Output> = std::iter::from_fn(|| b.sink.pop()).collect();
        assert!(dropped.iter().any(|o| matches!(
            o,
            Output::Event(Event::Dropped {
                reason: DropReason::TableFull,
                ..
            })
        )));
        b.advert(2, &artifact(9).advert());
        assert_eq!(b.dl.len(), 4);
    }

    #[test]
    fn a_departing_peer_is_taken_off_its_downloads_and_its_requests_retried() {
        let mut b = Bench::new(Config::default(), 2);
        let (shared, alone) = (artifact(4), artifact(5));
        b.advert(1, &shared.advert());
        b.advert(2, &shared.advert());
        b.advert(1, &alone.advert());
        let asked = b.requests();
        assert_eq!(asked.len(), 2);
        let slot = b.peers.get(&node(1)).expect("connected").slot;
        let reqs = b.step(|d, cx| d.release_peer(node(1), slot, true, cx));
        assert_eq!(
            reqs.len(),
            asked.iter().filter(|(p, _)| *p == node(1)).count()
        );
        b.peers.remove(&node(1));
        b.run(|d, cx| d.retry_after_departure(node(1), slot, reqs, cx));
        assert_eq!(b.dl.len(), 1, "the download only peer 1 could serve ended");
        assert_eq!(b.peers.tracked_adverts(), 1);
    }

    #[test]
    fn a_busy_source_does_not_hold_back_another_sources_downloads() {
        let cfg = Config {
            max_in_flight_per_peer: 1,
            ..Config::default()
        };
        let mut b = Bench::new(cfg, 2);
        b.advert(1, &artifact(6).advert());
        b.advert(1, &artifact(7).advert());
        b.advert(2, &artifact(8).advert());
        b.run(|d, cx| d.schedule(cx));
        let mut to: Vec<NodeId> = b.requests().into_iter().map(|(p, _)| p).collect();
        to.sort();
        assert_eq!(to, [node(1), node(2)]);
    }
}
