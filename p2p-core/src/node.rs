//! The per-node state machine: a thin composition of its parts, which it routes inputs to.
//!
//! - `Peers` (`peers.rs`): membership, connections, per-peer counters and the fair shares;
//! - `Pool` (`pool.rs`): the local pool, the auto-relay's bounds, who holds what;
//! - `Downloads` (`downloads.rs`, with `requests.rs`): adverts, the download table, ready
//!   queues, requests, timeouts, retries and back-off;
//! - `Swarms` (`swarm.rs`): chunked artifacts fetched chunk by chunk from every holder;
//! - `serving.rs`: answers to peers' requests, held while a peer is congested;
//! - `Sink` (`sink.rs`): the outputs and counters that they all write to.

use crate::chunks::{Manifest, chunk_size_for, is_manifest};
use crate::config::{Config, Decision, PriorityFnRef};
use crate::downloads::{Answer, Cx, Downloads};
use crate::event::{DisconnectReason, DropReason, Event, Input, InputError, Output};
use crate::hash::{FastState, SaltedState};
use crate::message::{ChunkRange, Message, PUSHED_CHUNK, RequestId};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::pool::{Holders, Pool};
use crate::rng::splitmix64;
use crate::serving::{self, Offer, Pending};
use crate::sink::Sink;
use crate::swarm::{CHUNK_REQ_BIT, ChunkAnswer, SwarmCx, Swarms};
use crate::types::{Advert, Artifact, ArtifactId, NodeId, Time};
use bytes::Bytes;

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
    peers: Peers,
    pool: Pool,
    downloads: Downloads,
    swarms: Swarms,
    /// The current members, sorted (the swarms' stripes follow this order).
    members: Vec<NodeId>,
    sink: Sink,
    now: Time,
}

impl Node {
    /// A node with identity `id` and configuration `cfg`.
    pub fn new(id: NodeId, cfg: Config) -> Self {
        let hs = table_hasher(cfg.seed, id);
        let fast = FastState(splitmix64(cfg.seed ^ 0x243f_6a88_85a3_08d3));
        Node {
            id,
            peers: Peers::new(fast, &cfg),
            pool: Pool::new(hs),
            downloads: Downloads::new(hs, fast, &cfg),
            swarms: Swarms::new(hs, fast),
            members: Vec::new(),
            sink: Sink::default(),
            now: Time::ZERO,
            cfg,
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
        self.downloads.set_priority_fn(f);
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.sink.metrics;
        m.tracked_adverts = self.peers.tracked_adverts() as u64;
        m.pending_downloads = self.downloads.len() as u64;
        m.in_flight = self.peers.in_flight();
        m.in_flight_bytes = self.peers.in_flight_bytes();
        m.pool_artifacts = self.pool.len() as u64;
        m.pool_bytes = self.pool.bytes();
        m.connected_peers = self.peers.len() as u64;
        m.swarms = self.swarms.len() as u64;
        m.incomplete_bytes = self.swarms.reserved();
        m.chunks_in_flight = self.swarms.in_flight() as u64;
        m
    }

    /// Whether the local pool holds `id`.
    pub fn has_artifact(&self, id: &ArtifactId) -> bool {
        self.pool.contains(id)
    }

    /// Whether this node holds chunk `index` of the chunked artifact `id`, in its pool or in
    /// the swarm fetching it.
    pub fn has_chunk(&self, id: &ArtifactId, index: u32) -> bool {
        self.pool.chunk(id, index).is_some() || self.swarms.holds(id, index)
    }

    /// The artifact `id` from the local pool.
    pub fn artifact(&self, id: &ArtifactId) -> Option<&Artifact> {
        self.pool.get(id)
    }

    /// The pooled artifacts in the order they were pooled, from position `from` on, each with
    /// its position (a cursor: pass the last position seen plus one to go on where a previous
    /// walk stopped). Positions only grow; a removed artifact leaves a gap.
    pub fn pooled_from(&self, from: u64) -> impl Iterator<Item = (u64, &Artifact)> {
        self.pool.iter_from(from)
    }

    /// The connected peers.
    pub fn connected_peers(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.ids()
    }

    /// Whether the swarms' indexes agree with the state they index (for the invariant checks
    /// of the property tests and the fuzz target).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn indexes_agree(&self) -> bool {
        self.swarms.ready_is_exact()
    }

    /// Sizes of every table a peer can grow, for bound checks.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            tracked_adverts: self.peers.tracked_adverts(),
            max_adverts_of_one_peer: self.peers.max_adverts_of_one_peer(),
            max_queued_requests_of_one_peer: self.peers.max_held_requests_of_one_peer(),
            pending_downloads: self.downloads.len(),
            requests: self.downloads.requests_len(),
            in_flight: self.peers.in_flight() as usize,
            in_flight_bytes: self.peers.in_flight_bytes(),
            swarms: self.swarms.len(),
            chunk_requests: self.swarms.requests_len(),
            incomplete_bytes: self.swarms.reserved(),
            incomplete_held_bytes: self.swarms.held_bytes(),
            delivered_memory: self.pool.delivered_len(),
            dropped_memory: self.downloads.dropped_len(),
            outputs: self.sink.len(),
        }
    }

    /// Feeds one input at time `now`. Time must not go backwards (an earlier `now` is treated as
    /// the latest seen). Only the application's inputs can fail; a faulty peer is disconnected.
    pub fn handle_input(&mut self, now: Time, input: Input) -> Result<(), InputError> {
        self.now = self.now.max(now);
        let (downloads, mut cx) = self.split();
        downloads.advance(&mut cx);
        self.swarms.advance(self.now, &self.cfg, &mut self.sink);
        let result = self.route(input);
        self.release_serving();
        let (downloads, mut cx) = self.split();
        downloads.schedule(&mut cx);
        let asked = self.downloads.take_manifest_asked();
        if !asked.is_empty() {
            let (swarms, mut scx) = self.split_swarms();
            for a in asked {
                swarms.prefetch(a, &mut scx);
            }
        }
        if self.swarms.len() > 0 {
            let (swarms, mut scx) = self.split_swarms();
            swarms.schedule(&mut scx);
            swarms.flush(&mut scx);
        }
        let pool = &self.pool;
        self.peers
            .feed_resync(self.cfg.advert_batch_size.max(1), |from, end, max, out| {
                pool.adverts_from(from, end, max, out)
            });
        self.peers.flush_adverts(&mut self.sink, &self.cfg);
        self.downloads.prune_deadlines();
        result
    }

    /// Hands an input to the part it concerns.
    fn route(&mut self, input: Input) -> Result<(), InputError> {
        match input {
            Input::Membership { version, members } => self.on_membership(version, members),
            Input::PeerConnected(peer) => self.on_connected(peer),
            Input::PeerDisconnected(peer) => self.drop_peer(peer),
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::Publish(artifact) => return self.publish(artifact, None),
            Input::PublishChunked { artifact, manifest } => {
                return self.publish(artifact, Some(manifest));
            }
            Input::Remove(id) => self.pool.remove(id, &self.peers, &mut self.sink),
            Input::Reevaluate => {
                let (downloads, mut cx) = self.split();
                downloads.reevaluate(&mut cx);
                self.reevaluate_swarms();
            }
            Input::Congestion { peer, congested } => self.on_congestion(peer, congested),
            Input::Timeout => {}
            Input::ChunkHashed { id, index, digest } => self.on_chunk_hashed(id, index, &digest),
        }
        Ok(())
    }

    /// The next action for the driver, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.sink.pop()
    }

    /// When to feed [`Input::Timeout`] next, if anything waits on time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let resync = self
            .peers
            .resync_pending()
            .then(|| self.now + self.cfg.resync_interval);
        let size = |r: &Pending| {
            serving::answer_bytes(&self.pool, &self.swarms, r).map(|b| b.len() as u64)
        };
        let serving = self
            .peers
            .iter()
            .filter_map(|(_, p)| p.serving.next_release(&self.cfg, size))
            .min();
        let swarms = self.swarms.next_wakeup(self.now, &self.cfg);
        [self.downloads.next_wakeup(), resync, serving, swarms]
            .into_iter()
            .flatten()
            .min()
    }

    /// The downloads, and what they work with.
    fn split(&mut self) -> (&mut Downloads, Cx<'_>) {
        let cx = Cx {
            cfg: &self.cfg,
            peers: &mut self.peers,
            sink: &mut self.sink,
            now: self.now,
        };
        (&mut self.downloads, cx)
    }

    /// The swarms, and what they work with.
    fn split_swarms(&mut self) -> (&mut Swarms, SwarmCx<'_>) {
        let (peers, cfg, now) = (&self.peers, &self.cfg, self.now);
        let cx = SwarmCx {
            cfg: &self.cfg,
            sink: &mut self.sink,
            now: self.now,
            members: &self.members,
            me: self.id,
            connected: Box::new(move |p: &NodeId| peers.contains(p)),
            pushable: Box::new(move |p: &NodeId, size: u64| {
                peers
                    .get(p)
                    .is_some_and(|state| state.serving.take_push(size, now, cfg))
            }),
        };
        (&mut self.swarms, cx)
    }

    /// Asks the priority function again about every swarm; dropped ones are remembered.
    fn reevaluate_swarms(&mut self) {
        if self.swarms.len() == 0 {
            return;
        }
        let downloads = &self.downloads;
        let (peers, cfg, now) = (&self.peers, &self.cfg, self.now);
        let mut cx = SwarmCx {
            cfg: &self.cfg,
            sink: &mut self.sink,
            now: self.now,
            members: &self.members,
            me: self.id,
            connected: Box::new(move |p: &NodeId| peers.contains(p)),
            pushable: Box::new(move |p: &NodeId, size: u64| {
                peers
                    .get(p)
                    .is_some_and(|state| state.serving.take_push(size, now, cfg))
            }),
        };
        let dropped = self.swarms.reevaluate(|a| downloads.decide(a), &mut cx);
        for advert in dropped {
            self.downloads.remember_dropped(&advert, &self.cfg);
        }
    }

    // ---- membership and connections ----

    fn on_membership(&mut self, version: u64, mut members: Vec<NodeId>) {
        members.sort_unstable();
        members.dedup();
        self.members.clone_from(&members);
        self.peers.set_members(members);
        for peer in self.peers.non_members() {
            self.disconnect(peer, DisconnectReason::NotMember);
        }
        self.peers.reshare(&self.cfg, self.id);
        self.sink.event(Event::MembershipChanged {
            version,
            members: self.peers.members_len(),
        });
    }

    fn on_connected(&mut self, peer: NodeId) {
        if peer == self.id || !self.peers.is_member(&peer) {
            self.sink.push(Output::Disconnect {
                peer,
                reason: DisconnectReason::NotMember,
            });
            self.sink.metrics.peers_disconnected += 1;
            return;
        }
        if self.peers.contains(&peer) {
            // A reconnect: the old connection's state is gone with it.
            self.drop_peer(peer);
        }
        // Resync: advertise the whole pool (the peer may have lost what we sent before), a
        // batch per input from a cursor, so a connection costs no copy of the pool.
        self.peers.connect(peer, self.pool.seq_end());
        self.peers.reshare(&self.cfg, self.id);
    }

    /// Cuts `peer` off: tells the driver and forgets the peer.
    fn disconnect(&mut self, peer: NodeId, reason: DisconnectReason) {
        if !self.peers.contains(&peer) {
            return;
        }
        self.drop_peer(peer);
        self.sink.metrics.peers_disconnected += 1;
        self.sink.push(Output::Disconnect {
            peer,
            reason: reason.clone(),
        });
        self.sink.event(Event::PeerDisconnected { peer, reason });
    }

    /// Forgets everything about `peer`: its adverts, its requests, its queued work.
    fn drop_peer(&mut self, peer: NodeId) {
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        let (slot, had_adverts) = (state.slot, state.tracks_adverts());
        let (downloads, mut cx) = self.split();
        // Give back the peer's share of the in-flight limits while it is still known.
        let reqs = downloads.release_peer(peer, slot, had_adverts, &mut cx);
        cx.peers.remove(&peer);
        downloads.retry_after_departure(peer, slot, reqs, &mut cx);
        self.swarms.on_disconnect(peer, &mut self.sink);
        self.peers.reshare(&self.cfg, self.id);
    }

    fn on_congestion(&mut self, peer: NodeId, congested: bool) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.serving.set_congested(congested);
        }
    }

    /// Answers the held requests that the peers' congestion and byte budgets let through.
    fn release_serving(&mut self) {
        let (pool, swarms, sink, cfg, now) = (
            &self.pool,
            &self.swarms,
            &mut self.sink,
            &self.cfg,
            self.now,
        );
        let size = |r: &Pending| serving::answer_bytes(pool, swarms, r).map(|b| b.len() as u64);
        for (peer, state) in self.peers.iter_mut() {
            if state.serving.len() == 0 {
                continue;
            }
            for request in state.serving.release(now, cfg, size) {
                serving::respond(pool, swarms, sink, *peer, request);
            }
        }
    }

    // ---- messages ----

    fn on_message(&mut self, from: NodeId, msg: Message) {
        if !self.peers.contains(&from) {
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
                    if !self.peers.contains(&from) {
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
            } => self.on_request(from, (req_id, id, priority, None)),
            Message::Response { req_id, id, data } => {
                self.on_response(from, req_id, id, Some(data))
            }
            Message::NotFound { req_id, .. } if req_id & CHUNK_REQ_BIT != 0 => {
                self.sink.metrics.responses_received += 1;
                if !self.swarms.on_not_found(from, req_id) {
                    self.violation(from, "answer to a request never made");
                }
            }
            Message::NotFound { req_id, id } => self.on_response(from, req_id, id, None),
            Message::ChunkRequest {
                req_id,
                id,
                index,
                priority,
            } => self.on_request(from, (req_id, id, priority, Some(index))),
            Message::Chunk {
                req_id,
                id,
                index,
                data,
            } => self.on_chunk(from, req_id, id, index, data),
            Message::Have { id, ranges } => self.on_have(from, id, &ranges),
            Message::Cancel { req_id } => self.on_cancel(from, req_id),
            Message::Decline { id, ranges } => self.on_decline(from, id, &ranges),
            Message::Fetching(advert) => self.on_fetching(from, advert),
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
        self.sink.metrics.adverts_received += 1;
        if let Err(what) = self.check_advert(&advert) {
            return self.violation(from, what);
        }
        let state = self.peers.get(&from).expect("peer is connected");
        let (key, slot) = (state.key, state.slot);
        if let Some(new) = self.pool.note_holder(&advert.id, key) {
            if new && self.pool.pushed(&advert.id) {
                // It got the artifact elsewhere first (a relay was faster than this node's
                // pushes): a push to it still queued would arrive as a duplicate.
                self.sink.push(Output::CancelPushes {
                    to: from,
                    id: advert.id,
                    ranges: vec![ChunkRange { start: 0, end: 1 }],
                });
            }
            return;
        }
        if self.swarms.contains(&advert.id) {
            return self.swarms.add_full(&advert.id, from);
        }
        let (downloads, mut cx) = self.split();
        if let Err(reason) = downloads.on_advert(from, slot, advert, &mut cx) {
            self.disconnect(from, reason);
        }
    }

    /// A `Have`: the sender is fetching `id` and holds its manifest and these chunks. A swarm
    /// learns its chunks; a download still waiting for the manifest takes the sender as a
    /// source of the manifest, as if it had advertised the artifact, so a node that missed the
    /// origin still gets the manifest from the partial holders.
    fn on_have(&mut self, from: NodeId, id: ArtifactId, ranges: &[ChunkRange]) {
        if let Err(what) = self
            .swarms
            .on_have(from, id, ranges, (&self.cfg, self.now, self.id))
        {
            return self.violation(from, what);
        }
        // The peer holds these chunks now: pushes of them still queued for it are dropped.
        self.revoke_pushes(from, id, ranges);
        let slot = self.peers.get(&from).expect("peer is connected").slot;
        let (downloads, mut cx) = self.split();
        if let Err(reason) = downloads.on_have(from, slot, id, &mut cx) {
            self.disconnect(from, reason);
        }
    }

    /// A `Fetching`: the sender started fetching the artifact and serves what it announces. A
    /// node that did not know the artifact tracks its advert with the sender as a partial
    /// holder (it serves the manifest and the chunks it announces, not the whole); then it is
    /// taken as an empty `Have`.
    fn on_fetching(&mut self, from: NodeId, advert: Advert) {
        self.sink.metrics.adverts_received += 1;
        if let Err(what) = self.check_advert(&advert) {
            return self.violation(from, what);
        }
        let id = advert.id;
        if self.pool.knows(&id) {
            return;
        }
        if !self.swarms.contains(&id) {
            let slot = self.peers.get(&from).expect("peer is connected").slot;
            let (downloads, mut cx) = self.split();
            if let Err(reason) = downloads.on_advert_as(from, slot, advert, true, &mut cx) {
                return self.disconnect(from, reason);
            }
        }
        self.on_have(from, id, &[]);
    }

    /// A `Decline`: the sender asked others for these chunks of `id`; this node pushes it none
    /// of them, and its pushes of them still queued are dropped.
    fn on_decline(&mut self, from: NodeId, id: ArtifactId, ranges: &[ChunkRange]) {
        match self.swarms.on_decline(from, id, ranges, &self.cfg) {
            Err(what) => return self.violation(from, what),
            // Its swarm may start later: the download keeps the decline for it.
            Ok(false) => self.downloads.on_decline(from, id, ranges, &self.cfg),
            Ok(true) => {}
        }
        self.revoke_pushes(from, id, ranges);
    }

    /// Drops the pushes of `id`'s chunks in `ranges` still queued for `peer`, if this node
    /// pushed it any (after the swarm ended, the chunks of a pooled artifact may still be).
    fn revoke_pushes(&mut self, peer: NodeId, id: ArtifactId, ranges: &[ChunkRange]) {
        if self.cfg.push_chunks
            && !ranges.is_empty()
            && self
                .swarms
                .pushed_to(&id, &peer)
                .unwrap_or_else(|| self.pool.contains(&id))
        {
            self.sink.push(Output::CancelPushes {
                to: peer,
                id,
                ranges: ranges.to_vec(),
            });
        }
    }

    fn on_withdraw(&mut self, from: NodeId, id: ArtifactId) {
        let key = self.peers.get(&from).expect("peer is connected").key;
        self.pool.forget_holder(&id, key);
        self.swarms.on_withdraw(&id, from);
        let (downloads, mut cx) = self.split();
        downloads.on_withdraw(from, id, &mut cx);
    }

    fn on_push(&mut self, from: NodeId, advert: Advert, data: Bytes) {
        self.sink.metrics.pushes_received += 1;
        self.sink.metrics.bytes_received += data.len() as u64;
        if let Err(what) = self.check_advert(&advert) {
            return self.violation(from, what);
        }
        // Only small artifacts may be pushed: a larger one would bypass every in-flight limit
        // and cost its full size before any check.
        let threshold = self.cfg.push_threshold;
        if data.len() as u64 > threshold || advert.size > threshold {
            return self.violation(from, "push above the push threshold");
        }
        // Integrity first: nothing about the artifact is trusted before its hash is checked.
        if data.len() as u64 != advert.size
            || is_manifest(&data)
            || ArtifactId::of(&data) != advert.id
        {
            return self.penalize(from);
        }
        let id = advert.id;
        let key = self.peers.get(&from).expect("peer is connected").key;
        if self.pool.note_holder(&id, key).is_some() {
            self.sink.metrics.duplicates += 1;
            return;
        }
        self.peers.record_served(&from);
        if self.downloads.is_dropped(&advert) {
            return self.sink.dropped_advert(id, from, DropReason::Unwanted);
        }
        if self.downloads.decide(&advert) == Decision::Drop {
            self.downloads.remember_dropped(&advert, &self.cfg);
            return self.sink.dropped_advert(id, from, DropReason::Unwanted);
        }
        let artifact = Artifact {
            id,
            kind: advert.kind,
            attr: advert.attr,
            data,
        };
        self.deliver(artifact, None, from);
    }

    fn on_request(&mut self, from: NodeId, request: Pending) {
        let (req_id, id, ..) = request;
        let size =
            serving::answer_bytes(&self.pool, &self.swarms, &request).map(|b| b.len() as u64);
        let state = self.peers.get_mut(&from).expect("peer is connected");
        let offer = state.serving.offer(request, size, self.now, &self.cfg);
        match offer {
            Offer::Serve => {
                serving::respond(&self.pool, &self.swarms, &mut self.sink, from, request)
            }
            Offer::Held => {}
            Offer::NotFound => {
                self.sink.metrics.requests_refused += 1;
                serving::not_found(&mut self.sink, from, req_id, id);
            }
            Offer::Full => {
                let limit = self.cfg.max_queued_requests_per_peer;
                self.disconnect(from, DisconnectReason::TooManyRequests { limit })
            }
            Offer::Repeated => {
                let limit = self.cfg.max_early_repeats;
                self.disconnect(from, DisconnectReason::RepeatedRequests { limit })
            }
        }
    }

    fn on_response(
        &mut self,
        from: NodeId,
        req_id: RequestId,
        id: ArtifactId,
        data: Option<Bytes>,
    ) {
        self.sink.metrics.responses_received += 1;
        let (downloads, mut cx) = self.split();
        match downloads.on_answer(from, req_id, id, data, &mut cx) {
            Answer::Unsolicited => self.violation(from, "answer to a request never made"),
            Answer::BadData => self.penalize(from),
            Answer::NotFound | Answer::Late => {}
            Answer::Fetched(artifact) => self.deliver(artifact, None, from),
            Answer::Manifest(start) => {
                if self.swarms.len() < self.cfg.max_pending_downloads {
                    let (swarms, mut cx) = self.split_swarms();
                    swarms.start(*start, &mut cx);
                } else {
                    self.sink
                        .dropped_advert(start.advert.id, from, DropReason::TableFull);
                }
            }
        }
    }

    fn on_chunk(
        &mut self,
        from: NodeId,
        req_id: RequestId,
        id: ArtifactId,
        index: u32,
        data: Bytes,
    ) {
        let offload = self.cfg.offload_chunk_hashing;
        if req_id == PUSHED_CHUNK {
            let answer = self.swarms.on_pushed(
                from,
                (id, index, data),
                (offload, self.now),
                &self.cfg,
                &mut self.sink,
            );
            return self.judged(from, id, answer);
        }
        let answer = self.swarms.on_chunk(
            from,
            (req_id, id, index, data),
            (offload, self.now),
            &mut self.sink,
        );
        self.judged(from, id, answer);
    }

    /// The driver's hash of a chunk it was asked to hash.
    fn on_chunk_hashed(&mut self, id: ArtifactId, index: u32, digest: &[u8; 32]) {
        if let Some((from, answer)) = self.swarms.on_hashed(id, index, digest, self.now) {
            self.judged(from, id, answer);
        }
    }

    /// Carries out what became of a chunk of `id` from `from`.
    fn judged(&mut self, from: NodeId, id: ArtifactId, answer: ChunkAnswer) {
        match answer {
            ChunkAnswer::Unsolicited => self.violation(from, "answer to a request never made"),
            ChunkAnswer::Unwanted => {}
            ChunkAnswer::TooManyUnwanted => {
                let limit = self.cfg.max_unwanted_pushes;
                self.disconnect(from, DisconnectReason::UnwantedPushes { limit });
            }
            ChunkAnswer::BadData => self.penalize(from),
            ChunkAnswer::Checking => {}
            ChunkAnswer::Kept => self.peers.record_served(&from),
            ChunkAnswer::Complete(artifact) => {
                self.peers.record_served(&from);
                let pooled = self
                    .pool
                    .admits_relay(artifact.data.len() as u64, &self.cfg);
                let ended = {
                    let (swarms, mut cx) = self.split_swarms();
                    swarms.finish(&id, &artifact.data, pooled, &mut cx)
                };
                if let Some((manifest, full)) = ended {
                    self.deliver_swarmed(artifact, manifest, full, from);
                }
            }
        }
    }

    /// The peer no longer wants the answer to `req_id`: a held request is forgotten, and the
    /// driver drops a queued answer that has not started on the wire.
    fn on_cancel(&mut self, from: NodeId, req_id: RequestId) {
        let state = self.peers.get_mut(&from).expect("peer is connected");
        state.serving.cancel(req_id);
        self.sink.metrics.cancels_received += 1;
        self.sink.push(Output::Cancel { to: from, req_id });
    }

    fn penalize(&mut self, peer: NodeId) {
        self.sink.metrics.bad_data += 1;
        let Some(count) = self.peers.penalize(&peer) else {
            return;
        };
        self.sink.event(Event::Penalized { peer, count });
        if count > self.cfg.max_bad_data_per_peer {
            self.disconnect(peer, DisconnectReason::BadData { count });
        }
    }

    // ---- delivery and the pool ----

    /// Hands a verified artifact to the application, once, and ends its download.
    fn deliver(&mut self, artifact: Artifact, manifest: Option<Manifest>, from: NodeId) {
        let id = artifact.id;
        let mut holders = Holders::new();
        if let Some(state) = self.peers.get(&from) {
            holders.push(state.key);
        }
        let (downloads, mut cx) = self.split();
        downloads.end_with_holders(id, &mut holders, &mut cx);
        self.pool.remember_delivered(id, holders, &self.cfg);
        self.sink.metrics.delivered += 1;
        self.sink.push(Output::Deliver {
            artifact: artifact.clone(),
            from,
        });
        if self
            .pool
            .admits_relay(artifact.data.len() as u64, &self.cfg)
        {
            self.pool.add(
                artifact,
                manifest,
                &mut self.peers,
                &mut self.sink,
                &self.cfg,
            );
        }
    }

    /// Delivers a chunked artifact whose swarm completed; its full holders are known holders.
    fn deliver_swarmed(
        &mut self,
        artifact: Artifact,
        manifest: Manifest,
        full: smallvec::SmallVec<[NodeId; 4]>,
        from: NodeId,
    ) {
        let id = artifact.id;
        self.deliver(artifact, Some(manifest), from);
        for peer in full {
            if let Some(state) = self.peers.get(&peer) {
                self.pool.note_holder(&id, state.key);
            }
        }
    }

    fn publish(&mut self, artifact: Artifact, given: Option<Manifest>) -> Result<(), InputError> {
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
        let manifest = match given {
            Some(m) => {
                if m.id() != artifact.id
                    || m.size() != artifact.data.len() as u64
                    || m.chunk_size() != chunk_size_for(m.size(), self.cfg.chunk_size)
                {
                    return Err(InputError::ManifestMismatch);
                }
                Some(m)
            }
            None => Manifest::build(&artifact.data, self.cfg.chunk_size),
        };
        let root_id = match &manifest {
            Some(m) => m.id(),
            None if is_manifest(&artifact.data) => return Err(InputError::ManifestTagged),
            None => ArtifactId::of(&artifact.data),
        };
        if root_id != artifact.id {
            return Err(if manifest.is_some() {
                InputError::ManifestMismatch
            } else {
                InputError::IdMismatch
            });
        }
        if self.pool.contains(&artifact.id) {
            return Ok(());
        }
        if self.swarms.contains(&artifact.id) {
            let (swarms, mut cx) = self.split_swarms();
            swarms.end(&artifact.id, &mut cx);
        }
        // The application got it elsewhere: stop fetching, and remember who holds it.
        let mut holders = Holders::new();
        let (downloads, mut cx) = self.split();
        if downloads.end_with_holders(artifact.id, &mut holders, &mut cx) {
            self.pool
                .remember_delivered(artifact.id, holders, &self.cfg);
        }
        self.pool.add(
            artifact,
            manifest,
            &mut self.peers,
            &mut self.sink,
            &self.cfg,
        );
        Ok(())
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
    /// Chunked artifacts being fetched (active or waiting).
    pub swarms: usize,
    /// Chunk requests awaiting an answer (timed out ones included).
    pub chunk_requests: usize,
    /// Bytes reserved by active swarms.
    pub incomplete_bytes: u64,
    /// Bytes of chunks held by incomplete artifacts.
    pub incomplete_held_bytes: u64,
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
            ("swarms", self.swarms, cfg.max_pending_downloads),
            (
                "chunk requests awaiting an answer",
                self.chunk_requests,
                cfg.max_chunks_in_flight_per_peer
                    .saturating_mul(peers)
                    .saturating_mul(cfg.max_chunk_window_scale()),
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
        // One swarm larger than the budget may run alone.
        if self.incomplete_bytes > cfg.max_incomplete_bytes
            && self.incomplete_held_bytes > cfg.max_incomplete_bytes
        {
            out.push((
                "incomplete bytes",
                self.incomplete_held_bytes,
                cfg.max_incomplete_bytes,
            ));
        }
        if self.incomplete_held_bytes > self.incomplete_bytes {
            out.push((
                "incomplete bytes held beyond the reservation",
                self.incomplete_held_bytes,
                self.incomplete_bytes,
            ));
        }
        if in_flight_bytes > cfg.max_in_flight_bytes {
            out.push(("bytes in flight", in_flight_bytes, cfg.max_in_flight_bytes));
        }
        out
    }
}

/// The keyed hasher of the tables of node `id` with seed `seed`: secret as long as the seed is.
pub(crate) fn table_hasher(seed: u64, id: NodeId) -> SaltedState {
    let salt = splitmix64(seed ^ u64::from_le_bytes(id.0[..8].try_into().unwrap_or_default()));
    SaltedState::new(splitmix64(salt))
}
