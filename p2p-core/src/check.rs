//! An input-sequence driver with invariant checks, shared by the property tests and the fuzz
//! target: arbitrary bytes become a sequence of inputs from a handful of peers (honest, confused
//! and malicious), and every step is checked against the node's invariants.
//!
//! After the sequence, a progress oracle runs: every peer turns honest (answers each request with
//! the artifact's bytes, or not-found) and time moves on past every timeout, back-off and
//! re-evaluation. Then every advert the node accepted from a peer that is still connected must
//! have led to a request to that peer or to the artifact's delivery, unless the priority
//! function no longer wants it. This is the model check of the scheduler: no source that stays
//! reachable is passed over for ever, whatever was sent before.
//!
//! Not part of the stable API.

use crate::chunks::content_id;
use crate::{
    Advert, Artifact, ArtifactId, Bytes, ChunkRange, Config, Decision, Event, Input, Kind, Message,
    Node, NodeId, Output, Priority, PriorityFnRef, RequestId, Time,
};
use hashbrown::{HashMap, HashSet};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The hash that node `id` with seed `seed` gives `artifact` in its tables. With the seed known,
/// ids can be crafted to collide; a benchmark uses it to show what a secret seed prevents.
pub fn table_hash(seed: u64, id: NodeId, artifact: &ArtifactId) -> u64 {
    crate::hash::keyed_hash(&crate::node::table_hasher(seed, id), artifact)
}

/// Reads the fuzz input a byte at a time; runs out into zeros.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The configuration the driver uses: small limits so that they are reached.
fn small_config(seed: u64) -> Config {
    Config {
        seed,
        push_threshold: 64,
        max_attr_len: 8,
        max_artifact_size: 16384,
        chunk_size: CHUNK,
        max_chunks_in_flight: 4,
        max_chunks_in_flight_per_peer: 2,
        max_have_ranges: 3,
        max_incomplete_bytes: 20_000,
        offload_chunk_hashing: seed % 2 == 1,
        push_chunks: seed % 4 < 2,
        max_pushes_in_flight_per_peer: 1 + (seed % 3) as usize,
        max_adverts_per_peer: 6,
        max_adverts_per_peer_per_kind: 4,
        max_pending_downloads: 5,
        advert_batch_size: 2,
        max_adverts_per_message: 5,
        max_in_flight: 3,
        max_in_flight_per_peer: 2,
        max_in_flight_bytes: 6000,
        max_in_flight_bytes_per_peer: 4000,
        parallel_fetch_min_size: 4000,
        max_parallel_requests: 2,
        max_bad_data_per_peer: 2,
        max_queued_requests_per_peer: 3,
        max_delivered_memory: 1 << 20,
        max_dropped_memory: 4,
        ..Config::default()
    }
}

const PEERS: usize = 5;
/// The chunk size: artifacts of 5,000 and 12,000 bytes are chunked (2 and 3 chunks).
const CHUNK: u32 = crate::chunks::MIN_CHUNK_SIZE;
const SIZES: [usize; 7] = [0, 10, 64, 65, 3000, 5000, 12_000];

fn peer(i: u8) -> NodeId {
    NodeId([i % PEERS as u8 + 1; 32])
}

fn payload(i: u8) -> Bytes {
    let i = i % 14;
    let len = SIZES[i as usize % SIZES.len()];
    Bytes::from((0..len).map(|k| i ^ (k / 1000) as u8).collect::<Vec<u8>>())
}

fn artifact(i: u8) -> Artifact {
    Artifact::with_chunk_size(
        Kind((i % 3) as u16),
        vec![i; (i % 4) as usize],
        payload(i),
        CHUNK,
    )
}

/// What an honest holder answers a request for `id` with: its root (its bytes, or its
/// manifest), or chunk `index`.
fn answer_of(id: &ArtifactId, index: Option<u32>) -> Option<Bytes> {
    let a = known_artifact(id)?;
    let manifest = crate::chunks::Manifest::build(&a.data, CHUNK);
    match (index, manifest) {
        (None, None) => Some(a.data),
        (None, Some(m)) => Some(m.root().clone()),
        (Some(i), Some(m)) => m.slice(&a.data, i),
        (Some(_), None) => None,
    }
}

/// Runs the input sequence encoded by `data` against a fresh node, checking the invariants after
/// every step. Returns a description of the first violated invariant.
pub fn run(data: &[u8]) -> Result<(), String> {
    let mut r = Reader { data };
    let seed = r.byte() as u64;
    let cfg = small_config(seed);
    let local = NodeId([0; 32]);
    let mut h = Harness {
        node: Node::new(local, cfg.clone()),
        priority: cfg.priority_fn.clone(),
        cfg,
        now: Time::ZERO,
        connected: HashSet::new(),
        members: HashSet::new(),
        sent_requests: HashMap::new(),
        delivered: HashSet::new(),
        pooled: HashSet::new(),
        offers: HashMap::new(),
        asked: HashSet::new(),
        variants: HashMap::new(),
        steps: 0,
        hashes: Vec::new(),
    };
    let all: Vec<NodeId> = (0..PEERS as u8).map(peer).chain([local]).collect();
    h.input(Input::Membership {
        version: 1,
        members: all,
    })?;
    while !r.is_empty() && h.steps < 2000 {
        let op = r.byte();
        let p = peer(r.byte());
        let x = r.byte();
        let input = match op % 21 {
            0 => Input::Membership {
                version: x as u64,
                members: (0..PEERS as u8)
                    .filter(|i| x & (1 << i) != 0)
                    .map(peer)
                    .collect(),
            },
            1 => Input::PeerConnected(p),
            2 => Input::PeerDisconnected(p),
            3 | 4 => {
                let n = (x % 7) as usize;
                let adverts = (0..n)
                    .map(|k| {
                        let mut a = artifact(x.wrapping_add(k as u8)).advert();
                        match r.byte() % 8 {
                            0 => a.id = ArtifactId([r.byte(); 32]),
                            1 => a.size += 1,
                            2 => a.attr = Bytes::from(vec![0; 9]),
                            3 => a.size = u64::MAX,
                            4 => a.kind = Kind(7),
                            _ => {}
                        }
                        a
                    })
                    .collect();
                msg(p, Message::Adverts(adverts))
            }
            5 => {
                let a = artifact(x);
                let mut data = a.data.clone();
                if r.byte().is_multiple_of(4) {
                    data = Bytes::from(vec![0xee; data.len()]);
                }
                msg(
                    p,
                    Message::Push {
                        advert: a.advert(),
                        data,
                    },
                )
            }
            6 => msg(p, Message::Withdraw(artifact(x).id)),
            7 => msg(
                p,
                Message::Request {
                    req_id: x as u64,
                    id: artifact(x).id,
                    priority: Priority(r.byte()),
                },
            ),
            8 | 9 => match h.pick_request(x) {
                Some((req_id, to, id, index)) => {
                    let data = match r.byte() % 4 {
                        0 => Bytes::from_static(b"bad"),
                        _ => answer_of(&id, index).unwrap_or_default(),
                    };
                    match index {
                        None => msg(to, Message::Response { req_id, id, data }),
                        Some(index) => msg(
                            to,
                            Message::Chunk {
                                req_id,
                                id,
                                index,
                                data,
                            },
                        ),
                    }
                }
                None if x.is_multiple_of(3) => {
                    // A pushed chunk: good, bad, or of an artifact not chunked.
                    let id = artifact(x).id;
                    let index = u32::from(r.byte() % 4);
                    let data = match r.byte() % 4 {
                        0 => Bytes::from_static(b"bad"),
                        _ => answer_of(&id, Some(index)).unwrap_or_else(|| payload(x)),
                    };
                    msg(
                        p,
                        Message::Chunk {
                            req_id: crate::message::PUSHED_CHUNK,
                            id,
                            index,
                            data,
                        },
                    )
                }
                None => msg(
                    p,
                    Message::Response {
                        req_id: x as u64,
                        id: artifact(x).id,
                        data: payload(x),
                    },
                ),
            },
            10 => match h.pick_request(x) {
                Some((req_id, to, id, _)) => msg(to, Message::NotFound { req_id, id }),
                None => msg(
                    p,
                    Message::NotFound {
                        req_id: x as u64,
                        id: artifact(x).id,
                    },
                ),
            },
            11 => Input::Publish(artifact(x)),
            12 => Input::Remove(artifact(x).id),
            16 => msg(
                p,
                Message::ChunkRequest {
                    req_id: 1 << 63 | x as u64,
                    id: artifact(x).id,
                    index: u32::from(r.byte() % 4),
                    priority: Priority(r.byte()),
                },
            ),
            17 => {
                let start = u32::from(r.byte() % 4);
                let ranges = match r.byte() % 3 {
                    0 => Vec::new(),
                    1 => vec![ChunkRange {
                        start,
                        end: start + 1,
                    }],
                    _ => vec![ChunkRange { start: 0, end: 3 }],
                };
                msg(
                    p,
                    Message::Have {
                        id: artifact(x).id,
                        ranges,
                    },
                )
            }
            18 => msg(
                p,
                Message::Cancel {
                    req_id: 1 << 63 | x as u64,
                },
            ),
            20 => msg(p, Message::Fetching(artifact(x).advert())),
            19 => {
                let start = u32::from(r.byte() % 4);
                msg(
                    p,
                    Message::Decline {
                        id: artifact(x).id,
                        ranges: vec![ChunkRange {
                            start,
                            end: start + 1 + u32::from(x % 2),
                        }],
                    },
                )
            }
            13 => {
                h.set_priority_fn(match x % 4 {
                    0 => PriorityFnRef::fetch_all(),
                    1 => PriorityFnRef::new(|a: &Advert| {
                        if a.id.0[0].is_multiple_of(2) {
                            Decision::Drop
                        } else {
                            Decision::Fetch(Priority(a.id.0[1]))
                        }
                    }),
                    2 => PriorityFnRef::new(|_: &Advert| Decision::Later),
                    _ => PriorityFnRef::by_kind(vec![(Kind(0), Priority::URGENT)], Decision::Later),
                });
                Input::Reevaluate
            }
            14 => Input::Congestion {
                peer: p,
                congested: x.is_multiple_of(2),
            },
            15 => {
                let next = h.node.poll_timeout().unwrap_or(h.now);
                h.now = if x.is_multiple_of(2) {
                    next.max(h.now)
                } else {
                    h.now + Duration::from_millis(x as u64 * 50)
                };
                Input::Timeout
            }
            _ => unreachable!("op is below 19"),
        };
        h.input(input)?;
    }
    h.settle()?;
    h.check_progress()
}

fn msg(from: NodeId, msg: Message) -> Input {
    Input::Message { from, msg }
}

struct Harness {
    node: Node,
    cfg: Config,
    /// The priority function in effect (mirrors the node's).
    priority: PriorityFnRef,
    now: Time,
    connected: HashSet<NodeId>,
    members: HashSet<NodeId>,
    /// Requests the node sent and awaits: peer, artifact, and chunk index for chunk requests.
    sent_requests: HashMap<RequestId, (NodeId, ArtifactId, Option<u32>)>,
    delivered: HashSet<ArtifactId>,
    /// Artifacts the application published (removed or not).
    pooled: HashSet<ArtifactId>,
    /// Adverts the node accepted and may still act on: (peer, artifact) -> the advert as sent.
    offers: HashMap<(NodeId, ArtifactId), Advert>,
    /// (peer, artifact) pairs the node has sent a request for.
    asked: HashSet<(NodeId, ArtifactId)>,
    /// Every advert of an artifact the node accepted, whichever peer sent it.
    variants: HashMap<ArtifactId, Vec<Advert>>,
    steps: usize,
    /// Hashes the node asked for, to feed back.
    hashes: Vec<(ArtifactId, u32, [u8; 32])>,
}

/// The artifacts whose bytes the harness knows (every id `artifact(x)` can have).
fn known_artifact(id: &ArtifactId) -> Option<Artifact> {
    (0..14u8).map(artifact).find(|a| a.id == *id)
}

impl Harness {
    fn pick_request(&self, x: u8) -> Option<(RequestId, NodeId, ArtifactId, Option<u32>)> {
        if self.sent_requests.is_empty() {
            return None;
        }
        let mut ids: Vec<_> = self.sent_requests.keys().copied().collect();
        ids.sort_unstable();
        let req_id = ids[x as usize % ids.len()];
        let (to, id, index) = self.sent_requests[&req_id];
        Some((req_id, to, id, index))
    }

    fn set_priority_fn(&mut self, f: PriorityFnRef) {
        // A `Drop` at re-evaluation ends the download for every source without an event: the
        // oracle forgets those offers too.
        let dropped: HashSet<ArtifactId> = self
            .offers
            .values()
            .filter(|a| f.0.decide(a) == Decision::Drop)
            .map(|a| a.id)
            .collect();
        self.offers.retain(|(_, id), _| !dropped.contains(id));
        self.node.set_priority_fn(f.clone());
        self.priority = f;
    }

    fn forget_peer(&mut self, p: &NodeId) {
        self.offers.retain(|(q, _), _| q != p);
        self.asked.retain(|(q, _)| q != p);
        self.sent_requests.retain(|_, (to, _, _)| to != p);
    }

    fn forget_artifact(&mut self, id: &ArtifactId) {
        self.offers.retain(|(_, a), _| a != id);
    }

    /// Records the adverts of an input before the node sees it (the node's events then say
    /// which it did not keep).
    fn note_offers(&mut self, input: &Input) {
        if let Input::Message {
            from,
            msg: Message::Fetching(a),
        } = input
        {
            // A partial holder's advert: a variant the node may keep, not an offer of the whole.
            if self.connected.contains(from) {
                let seen = self.variants.entry(a.id).or_default();
                if !seen.contains(a) {
                    seen.push(a.clone());
                }
            }
            return;
        }
        let Input::Message {
            from,
            msg: Message::Adverts(adverts),
        } = input
        else {
            return;
        };
        if !self.connected.contains(from) {
            return;
        }
        for a in adverts {
            if self.delivered.contains(&a.id) || self.pooled.contains(&a.id) {
                continue;
            }
            self.offers
                .entry((*from, a.id))
                .or_insert_with(|| a.clone());
            let seen = self.variants.entry(a.id).or_default();
            if !seen.contains(a) {
                seen.push(a.clone());
            }
        }
    }

    fn input(&mut self, input: Input) -> Result<(), String> {
        self.steps += 1;
        self.note_offers(&input);
        match &input {
            Input::Membership { members, .. } => {
                self.members = members.iter().copied().collect();
            }
            Input::PeerConnected(p) => {
                self.forget_peer(p);
                self.connected.insert(*p);
            }
            Input::PeerDisconnected(p) => {
                self.connected.remove(p);
                self.forget_peer(p);
            }
            Input::Publish(a) => {
                self.pooled.insert(a.id);
                self.forget_artifact(&a.id);
            }
            Input::Remove(_) => {
                // Still known: a node that held an artifact remembers it as delivered and
                // ignores later adverts of it.
            }
            Input::Message {
                from,
                msg: Message::Withdraw(id),
            } => {
                self.offers.remove(&(*from, *id));
            }
            Input::Message {
                from,
                msg:
                    Message::Response { req_id, .. }
                    | Message::NotFound { req_id, .. }
                    | Message::Chunk { req_id, .. },
            } if self.connected.contains(from) => {
                self.sent_requests.remove(req_id);
            }
            _ => {}
        }
        let from_unconnected =
            matches!(&input, Input::Message { from, .. } if !self.connected.contains(from));
        if from_unconnected {
            // The driver would never pass a message from a peer without a connection.
            return Ok(());
        }
        let _ = self.node.handle_input(self.now, input);
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { to, msg, .. } => {
                    if !self.connected.contains(&to) || !self.members.contains(&to) {
                        return Err(format!(
                            "sent {} to {to:?}, not a connected member",
                            msg.name()
                        ));
                    }
                    match msg {
                        Message::Request { req_id, id, .. } => {
                            self.sent_requests.insert(req_id, (to, id, None));
                            self.asked.insert((to, id));
                        }
                        Message::ChunkRequest {
                            req_id, id, index, ..
                        } => {
                            self.sent_requests.insert(req_id, (to, id, Some(index)));
                            self.asked.insert((to, id));
                        }
                        Message::Cancel { req_id } => {
                            self.sent_requests.remove(&req_id);
                        }
                        _ => {}
                    }
                }
                Output::Deliver { artifact, .. } => {
                    if content_id(&artifact.data, self.node.config().chunk_size) != artifact.id {
                        return Err(format!(
                            "delivered {:?} with bytes of another hash",
                            artifact.id
                        ));
                    }
                    if !self.delivered.insert(artifact.id) {
                        return Err(format!("delivered {:?} twice", artifact.id));
                    }
                    self.forget_artifact(&artifact.id);
                }
                Output::Disconnect { peer, .. } => {
                    self.connected.remove(&peer);
                    self.forget_peer(&peer);
                }
                Output::Event(Event::Dropped { id, from, .. }) => {
                    self.offers.remove(&(from, id));
                }
                Output::HashChunk { id, index, data } => {
                    let digest: [u8; 32] = Sha256::digest(&data).into();
                    self.hashes.push((id, index, digest));
                }
                Output::CancelPushes { to, ranges, .. } => {
                    if !self.connected.contains(&to) || ranges.is_empty() {
                        return Err(format!(
                            "cancelled pushes to {to:?} (not connected, or of no chunk)"
                        ));
                    }
                }
                Output::Event(_) | Output::Cancel { .. } => {}
            }
        }
        self.check_bounds()?;
        // The driver's hashes come back as inputs of their own.
        while let Some((id, index, digest)) = self.hashes.pop() {
            self.input(Input::ChunkHashed { id, index, digest })?;
        }
        Ok(())
    }

    /// Every peer turns honest and time moves on: each request is answered with the artifact's
    /// bytes (or not-found), and the timer fires until nothing is left to do or ten minutes of
    /// virtual time have passed (past every back-off).
    fn settle(&mut self) -> Result<(), String> {
        let end = self.now + Duration::from_secs(600);
        for _ in 0..400 {
            let mut pending: Vec<_> = self.sent_requests.iter().map(|(r, v)| (*r, *v)).collect();
            pending.sort_unstable();
            for (req_id, (to, id, index)) in pending {
                if !self.connected.contains(&to) {
                    continue;
                }
                let msg = match (answer_of(&id, index), index) {
                    (Some(data), None) => Message::Response { req_id, id, data },
                    (Some(data), Some(index)) => Message::Chunk {
                        req_id,
                        id,
                        index,
                        data,
                    },
                    (None, _) => Message::NotFound { req_id, id },
                };
                self.input(Input::Message { from: to, msg })?;
            }
            if !self.sent_requests.is_empty() {
                continue;
            }
            match self.node.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.input(Input::Timeout)?;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// The progress oracle: an accepted advert from a peer still connected was acted on.
    fn check_progress(&self) -> Result<(), String> {
        let mut missed: Vec<_> = self
            .offers
            .iter()
            .filter(|((peer, id), _)| {
                self.connected.contains(peer)
                    && self.members.contains(peer)
                    && !self.asked.contains(&(*peer, *id))
                    && !self.delivered.contains(id)
                    && !self.pooled.contains(id)
            })
            .filter(|((_, id), _)| {
                // Wanted now by every advert of it ever accepted: the node keeps one of them.
                self.variants
                    .get(id)
                    .into_iter()
                    .flatten()
                    .all(|a| matches!(self.priority.0.decide(a), Decision::Fetch(_)))
            })
            .map(|((peer, id), _)| (*peer, *id))
            .collect();
        missed.sort_unstable();
        match missed.first() {
            None => Ok(()),
            Some((peer, id)) => Err(format!(
                "progress: {peer:?} advertised {id:?}, stayed connected and was never asked \
                 ({} such offers): {:?}",
                missed.len(),
                self.node.table_sizes()
            )),
        }
    }

    fn check_bounds(&self) -> Result<(), String> {
        if !self.node.indexes_agree() {
            return Err("a swarm's index of ready chunks disagrees with their state".into());
        }
        let t = self.node.table_sizes();
        match t.exceeded(&self.cfg, PEERS).first() {
            None => Ok(()),
            Some((what, size, bound)) => {
                Err(format!("bound exceeded: {what} = {size} > {bound}: {t:?}"))
            }
        }
    }
}
