//! Scripted byzantine actors: members of the subnet that are not cores and break the protocol on
//! purpose, so the checks can see the honest nodes bound their state and cut them off.

use super::rng::Rng;
use super::{BULK, NORMAL, URGENT};
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use p2p_core::{Advert, ArtifactId, Class, Kind, Message};
use std::collections::VecDeque;

/// The misbehaviour of a byzantine actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByzKind {
    /// Advertises artifacts and answers requests (and chunk requests) with bytes that do not
    /// match the advert (the manifest), and pushes artifacts whose bytes do not hash to their
    /// id; to a swarm's empty `Have` it answers that it holds every chunk of the artifact (a
    /// partial holder, asked before full holders). Honest nodes must penalize it and cut it
    /// off.
    BadData,
    /// Misbehaves in swarms only: advertises nothing and pushes nothing, answers a swarm's
    /// empty `Have` with every chunk of the artifact (a partial holder, asked before full
    /// holders) and every chunk request with random bytes. Honest nodes must penalize it at
    /// its first chunk, as bad data, and cut it off.
    BadChunks,
    /// Re-advertises everything it hears (so it looks like a source of every artifact), answers
    /// a swarm's empty `Have` with every chunk, and never answers a request or a chunk
    /// request. Honest nodes must time out and fetch elsewhere.
    Silent,
    /// Advertises artifacts it does not have and answers `NotFound` (to chunk requests too).
    Phantom,
    /// Floods adverts of one kind past every per-peer limit. Honest nodes must cut it off.
    Flood,
    /// Advertises batches of artifacts it does not have and withdraws them again, over and over.
    Churn,
    /// Sends malformed messages: an attr above the limit, an advert above the size limit, too
    /// many adverts in one message, an answer to a request never made, or a message above the
    /// transport's size limit (one per connection, in turn). Honest nodes must cut it off.
    Malformed,
    /// Advertises fresh fake ids of the [`URGENT`] kind (the highest priority the honest priority
    /// function gives) at a steady pace, keeping count of what each peer holds from it and
    /// stopping just under the per-peer and per-kind advert limits, and never answers a request
    /// (not even `NotFound`). The attack: adverts for ids that will never be served hold honest
    /// downloads back. Honest nodes must keep fetching everything else at full speed.
    NeverServe,
    /// Advertises as many distinct fake ids as the per-peer limits allow (just under
    /// `max_adverts_per_peer`, spread over kinds so each stays just under
    /// `max_adverts_per_peer_per_kind`) as soon as it connects, to fill the shared download table,
    /// and never answers a request. Honest nodes must keep room for the other members' adverts.
    Squatter,
    /// Pushes artifacts whose bytes do hash to their id but are larger than the push threshold
    /// (one byte over it, or 64 KiB; sometimes with an advert claiming a size under it), never
    /// advertised nor requested. Honest nodes must cut it off as a protocol violation and never
    /// deliver them.
    Pusher,
    /// Advertises many random ids of the [`URGENT`] kind up to just under the per-kind limit,
    /// then, at every tick, withdraws its oldest ones and advertises as many fresh ones: a churn
    /// inside the limits that costs the honest nodes hash-table work. Never answers a request.
    HashFlood,
    /// Re-advertises what it hears (in the control class, as it must) and answers requests with
    /// random bytes in the urgent class (allowed for a response or chunk, so a bulk response
    /// claimed urgent: it only reorders the attacker's own uplink), chunk requests likewise; at each tick sends every peer one
    /// message in a class its type does not allow (adverts as urgent, a withdraw as bulk, a
    /// push as control, a request as normal, in turn). Honest nodes must cut it off and ban it
    /// at its first wrong-class message.
    ClassSpoofer,
    /// At each tick, leaves every connection it has and dials again at once those it may dial
    /// (connect, handshake, leave, again and again). Honest nodes must refuse it past the
    /// policy's churn limit and ban it.
    Churner,
    /// On each connection, starts messages of 1 MiB (the first frame of each, announcing its
    /// total) and never sends the rest: on every other connection as many as fit under the
    /// receiver's `max_buffered_bytes` (past its share of the node's budget), on the others two
    /// (within it). Honest nodes must keep their reassembly reservations within their
    /// node-wide cap (ending a connection past its share, without a ban) and cut it off once
    /// a message had no frame for the stall timeout.
    PartialFrames,
    /// Never drains its downlink: frames sent to it stay in the connection's window, so the
    /// honest senders' bytes are never accepted (it peeks at what arrived, as `MSG_PEEK` would,
    /// and requests everything advertised to it, to keep them sending). Honest nodes must end
    /// the connection after their write stall timeout, without a ban.
    StalledReader,
    /// Completes the handshake and then sends nothing at all, not even the connection's hello
    /// (a peer that hangs or is not ours). Honest nodes must end the connection at the hello
    /// deadline without a ban (as their connection layer does, `ConnError::HelloTimeout`).
    Mute,
}

impl ByzKind {
    /// Every kind.
    pub const ALL: [ByzKind; 16] = [
        ByzKind::BadData,
        ByzKind::BadChunks,
        ByzKind::Silent,
        ByzKind::Phantom,
        ByzKind::Flood,
        ByzKind::Churn,
        ByzKind::Malformed,
        ByzKind::NeverServe,
        ByzKind::Squatter,
        ByzKind::Pusher,
        ByzKind::HashFlood,
        ByzKind::ClassSpoofer,
        ByzKind::Churner,
        ByzKind::PartialFrames,
        ByzKind::StalledReader,
        ByzKind::Mute,
    ];

    /// The kinds that break the protocol above the connection layer (what the core sees).
    pub const CORE: [ByzKind; 10] = [
        ByzKind::BadData,
        ByzKind::Silent,
        ByzKind::Phantom,
        ByzKind::Flood,
        ByzKind::Churn,
        ByzKind::Malformed,
        ByzKind::NeverServe,
        ByzKind::Squatter,
        ByzKind::Pusher,
        ByzKind::HashFlood,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            ByzKind::BadData => "bad-data",
            ByzKind::BadChunks => "bad-chunks",
            ByzKind::Silent => "silent",
            ByzKind::Phantom => "phantom",
            ByzKind::Flood => "flood",
            ByzKind::Churn => "churn",
            ByzKind::Malformed => "malformed",
            ByzKind::NeverServe => "never-serve",
            ByzKind::Squatter => "squatter",
            ByzKind::Pusher => "pusher",
            ByzKind::HashFlood => "hash-flood",
            ByzKind::ClassSpoofer => "class-spoofer",
            ByzKind::Churner => "churner",
            ByzKind::PartialFrames => "partial-frames",
            ByzKind::StalledReader => "stalled-reader",
            ByzKind::Mute => "mute",
        }
    }
}

/// The honest nodes' limits, which the actor aims just past (or just under).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_attr_len: usize,
    pub max_artifact_size: u64,
    pub max_adverts_per_message: usize,
    pub max_message_size: usize,
    /// Adverts an honest node tracks from one peer before cutting it off.
    pub max_adverts_per_peer: usize,
    /// Adverts of one kind an honest node tracks from one peer before cutting it off.
    pub max_adverts_per_peer_per_kind: usize,
    /// Largest artifact an honest node accepts in a push.
    pub push_threshold: u64,
    /// Bytes an honest receiver reserves for one connection's messages under reassembly.
    pub max_buffered_bytes: usize,
    /// Messages an honest receiver reassembles at once on one connection.
    pub max_partial_messages: usize,
    /// The subnet's chunk size: artifacts larger than it are chunked.
    pub chunk_size: u32,
}

impl Limits {
    /// Adverts in all that a peer may hold from us while staying just under the limit.
    fn advert_cap(&self) -> usize {
        self.max_adverts_per_peer.saturating_sub(1)
    }

    /// Adverts of one kind that a peer may hold from us while staying just under the limit.
    fn kind_cap(&self) -> usize {
        self.max_adverts_per_peer_per_kind.saturating_sub(1)
    }
}

/// Remembered adverts, bounded.
const MEMORY: usize = 4096;
/// Fake adverts sent per batch.
const BATCH: usize = 16;
/// Ids withdrawn and advertised afresh per tick by a [`ByzKind::HashFlood`] actor.
const HASH_FLOOD_BATCH: usize = 16;
/// Ticks before a [`ByzKind::HashFlood`] actor withdraws an id it advertised. A withdraw is
/// small and may overtake a large advert batch still waiting for its connection's window; if it
/// did, the peer would keep an advert we no longer count. Withdrawing only ids advertised long
/// before (the uplink drains far faster) keeps the count an upper bound.
const HASH_FLOOD_MIN_AGE: u64 = 10;
/// Size of the largest oversized push of a [`ByzKind::Pusher`].
const BIG_PUSH: usize = 64 * 1024;
/// Messages a [`ByzKind::PartialFrames`] actor starts on a connection where it stays within
/// its share of the receiver's reassembly budget.
const PARTIAL_MODEST: usize = 2;

/// Ticks between a [`ByzKind::StalledReader`]'s rounds of repeated requests.
const STALL_REPEAT: u64 = 20;

/// Announced total of each message a [`ByzKind::PartialFrames`] actor starts.
pub(crate) const PARTIAL_TOTAL: u32 = 1 << 20;

/// Size advertised for fake urgent ids: over the push threshold (a real artifact of that size
/// would be advertised too), small enough to be urgent.
const URGENT_FAKE_SIZE: u64 = 2_000;

/// What one peer holds from us: adverts we sent on the current connection and did not withdraw.
/// An honest node counts at most these (it skips ids it already has, and adverts it drops for a
/// full table), so staying under its limits here keeps us under them there.
#[derive(Default)]
struct Held {
    total: usize,
    per_kind: Vec<(Kind, usize)>,
    /// For [`ByzKind::HashFlood`]: the ids the peer holds with the tick they were advertised
    /// at, oldest first.
    ids: VecDeque<(ArtifactId, u64)>,
}

impl Held {
    fn of_kind(&self, kind: Kind) -> usize {
        self.per_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// How many more adverts of `kind` the peer can take under `limits`.
    fn room(&self, kind: Kind, limits: &Limits) -> usize {
        let all = limits.advert_cap().saturating_sub(self.total);
        let of_kind = limits.kind_cap().saturating_sub(self.of_kind(kind));
        all.min(of_kind)
    }

    fn add(&mut self, kind: Kind, n: usize) {
        self.total += n;
        match self.per_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += n,
            None => self.per_kind.push((kind, n)),
        }
    }

    fn remove(&mut self, kind: Kind, n: usize) {
        self.total = self.total.saturating_sub(n);
        if let Some((_, c)) = self.per_kind.iter_mut().find(|(k, _)| *k == kind) {
            *c = c.saturating_sub(n);
        }
    }
}

pub(crate) type Sends = Vec<(u32, Message, Class)>;
/// First frames to send with nothing after them: (peer, class, announced total).
pub(crate) type Partials = Vec<(u32, Class, u32)>;

pub(crate) struct Byz {
    pub kind: ByzKind,
    rng: Rng,
    limits: Limits,
    peers: Vec<u32>,
    heard: VecDeque<Advert>,
    heard_set: HashSet<ArtifactId>,
    fake: HashMap<ArtifactId, u64>,
    fake_order: VecDeque<ArtifactId>,
    churn: Vec<ArtifactId>,
    budget: u32,
    connections: u64,
    /// Ticks acted on so far.
    ticks: u64,
    /// Per connected peer, what it holds from us (for the kinds that stay under the limits).
    held: HashMap<u32, Held>,
    /// A [`ByzKind::Squatter`]'s ids: drawn once, advertised to every peer on every connection.
    squat: Vec<Advert>,
    /// A [`ByzKind::StalledReader`]'s requests to repeat: (peer, artifact), bounded.
    wanted: VecDeque<(u32, ArtifactId)>,
}

impl Byz {
    pub fn new(kind: ByzKind, seed: u64, limits: Limits, budget: u32) -> Self {
        Byz {
            kind,
            rng: Rng::new(seed),
            limits,
            peers: Vec::new(),
            heard: VecDeque::new(),
            heard_set: HashSet::new(),
            fake: HashMap::new(),
            fake_order: VecDeque::new(),
            churn: Vec::new(),
            budget,
            connections: 0,
            ticks: 0,
            held: HashMap::new(),
            squat: Vec::new(),
            wanted: VecDeque::new(),
        }
    }

    /// Whether it acts on a timer (and has budget left).
    pub fn wants_ticks(&self) -> bool {
        self.budget > 0
            && !self.peers.is_empty()
            && matches!(
                self.kind,
                ByzKind::Phantom
                    | ByzKind::Flood
                    | ByzKind::Churn
                    | ByzKind::NeverServe
                    | ByzKind::Pusher
                    | ByzKind::HashFlood
                    | ByzKind::ClassSpoofer
                    | ByzKind::Churner
                    | ByzKind::StalledReader
            )
    }

    fn random_id(&mut self) -> ArtifactId {
        let mut id = [0u8; 32];
        self.rng.fill(&mut id);
        ArtifactId(id)
    }

    fn fake_advert(&mut self, kind: Kind, size: u64) -> Advert {
        let id = self.random_id();
        if self.fake.insert(id, size).is_none() {
            self.fake_order.push_back(id);
            if self.fake_order.len() > MEMORY
                && let Some(old) = self.fake_order.pop_front()
            {
                self.fake.remove(&old);
            }
        }
        Advert {
            id,
            kind,
            size,
            attr: Bytes::new(),
        }
    }

    /// An advert of a random id that nothing will ever serve (not remembered).
    fn unserved_advert(&mut self, kind: Kind, size: u64) -> Advert {
        Advert {
            id: self.random_id(),
            kind,
            size,
            attr: Bytes::new(),
        }
    }

    /// A push of an artifact over the push threshold whose bytes hash to its id. `variant`
    /// picks one byte over the threshold, [`BIG_PUSH`] bytes, or [`BIG_PUSH`] bytes under an
    /// advert that claims the threshold as its size.
    fn oversized_push(&mut self, variant: u64) -> Message {
        let threshold = usize::try_from(self.limits.push_threshold).unwrap_or(usize::MAX - 1);
        let size = match variant % 3 {
            0 => threshold + 1,
            _ => BIG_PUSH.max(threshold + 1),
        };
        // Random head, constant tail: distinct ids without drawing every byte.
        let mut data = vec![0xa5u8; size];
        self.rng.fill(&mut data[..size.min(32)]);
        let data = Bytes::from(data);
        let claimed = match variant % 3 {
            2 => self.limits.push_threshold,
            _ => size as u64,
        };
        Message::Push {
            advert: Advert {
                id: ArtifactId::of(&data),
                kind: URGENT,
                size: claimed,
                attr: Bytes::new(),
            },
            data,
        }
    }

    /// Sends `adverts` (all of `kind`) to `peer`, as many as its room under the limits allows,
    /// in messages of at most `max_adverts_per_message`; returns how many were sent.
    fn advertise_within(
        &mut self,
        peer: u32,
        kind: Kind,
        adverts: &[Advert],
        out: &mut Sends,
    ) -> usize {
        let limits = self.limits;
        let held = self.held.entry(peer).or_default();
        let n = held.room(kind, &limits).min(adverts.len());
        if n == 0 {
            return 0;
        }
        held.add(kind, n);
        if self.kind == ByzKind::HashFlood {
            let tick = self.ticks;
            held.ids.extend(adverts[..n].iter().map(|a| (a.id, tick)));
        }
        for chunk in adverts[..n].chunks(limits.max_adverts_per_message.max(1)) {
            out.push((peer, Message::Adverts(chunk.to_vec()), Class::Control));
        }
        n
    }

    pub fn on_connect(&mut self, peer: u32, out: &mut Sends) {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
        // A new connection: the peer forgot every advert of the last one.
        self.held.remove(&peer);
        let variant = self.connections.wrapping_add(peer as u64);
        self.connections += 1;
        match self.kind {
            ByzKind::BadData => {
                let adverts = (0..8)
                    .map(|_| self.fake_advert(Kind(3), 4096))
                    .collect::<Vec<_>>();
                out.push((peer, Message::Adverts(adverts), Class::Control));
                for _ in 0..2 {
                    let mut advert = self.fake_advert(Kind(1), 200);
                    advert.attr = Bytes::new();
                    let data = Bytes::from(self.rng.bytes(200));
                    out.push((peer, Message::Push { advert, data }, Class::Urgent));
                }
            }
            ByzKind::Silent => {
                let all: Vec<Advert> = self.heard.iter().cloned().collect();
                for chunk in all.chunks(256) {
                    out.push((peer, Message::Adverts(chunk.to_vec()), Class::Control));
                }
            }
            ByzKind::Malformed => {
                let msg = match variant % 5 {
                    0 => {
                        let mut a = self.fake_advert(Kind(3), 4096);
                        a.attr = Bytes::from(vec![7u8; self.limits.max_attr_len + 1]);
                        Message::Adverts(vec![a])
                    }
                    1 => {
                        let a = self.fake_advert(Kind(3), self.limits.max_artifact_size + 1);
                        Message::Adverts(vec![a])
                    }
                    2 => {
                        let n = self.limits.max_adverts_per_message + 1;
                        Message::Adverts((0..n).map(|_| self.fake_advert(Kind(3), 4096)).collect())
                    }
                    3 => Message::Response {
                        req_id: self.rng.next_u64(),
                        id: self.random_id(),
                        data: Bytes::from_static(b"unsolicited"),
                    },
                    _ => {
                        let data = Bytes::from(vec![0u8; self.limits.max_message_size + 1]);
                        let id = ArtifactId::of(&data);
                        Message::Push {
                            advert: Advert {
                                id,
                                kind: Kind(3),
                                size: data.len() as u64,
                                attr: Bytes::new(),
                            },
                            data,
                        }
                    }
                };
                // In a class its type allows: the transport passes it, the core must refuse it.
                let class = p2p_transport::codec::allowed_classes(&msg)[0];
                out.push((peer, msg, class));
            }
            ByzKind::Squatter => {
                if self.squat.is_empty() {
                    self.squat = self.squat_set();
                }
                let squat = std::mem::take(&mut self.squat);
                for kind in [URGENT, NORMAL, BULK] {
                    let of_kind: Vec<Advert> =
                        squat.iter().filter(|a| a.kind == kind).cloned().collect();
                    self.advertise_within(peer, kind, &of_kind, out);
                }
                self.squat = squat;
            }
            ByzKind::Pusher => {
                let msg = self.oversized_push(variant);
                out.push((peer, msg, Class::Urgent));
            }
            ByzKind::ClassSpoofer => {
                let all: Vec<Advert> = self.heard.iter().cloned().collect();
                for chunk in all.chunks(256) {
                    out.push((peer, Message::Adverts(chunk.to_vec()), Class::Control));
                }
            }
            ByzKind::Phantom
            | ByzKind::Flood
            | ByzKind::Churn
            | ByzKind::NeverServe
            | ByzKind::HashFlood
            | ByzKind::Churner
            | ByzKind::PartialFrames
            | ByzKind::StalledReader
            | ByzKind::BadChunks
            | ByzKind::Mute => {}
        }
    }

    /// The messages a [`ByzKind::PartialFrames`] actor starts on a new connection to `peer`
    /// and never finishes, of [`PARTIAL_TOTAL`] bytes each, in the classes a response may use:
    /// on every other connection as many as the receiver's per-connection bounds take (past
    /// its fair share of the node's budget), on the others [`PARTIAL_MODEST`] (within it).
    pub fn partials_on_connect(&self, peer: u32, out: &mut Partials) {
        if self.kind != ByzKind::PartialFrames {
            return;
        }
        let greedy = (self.limits.max_buffered_bytes / PARTIAL_TOTAL as usize)
            .min(self.limits.max_partial_messages);
        let n = if self.connections.wrapping_add(peer as u64).is_multiple_of(2) {
            greedy
        } else {
            PARTIAL_MODEST.min(greedy)
        };
        let classes = [Class::Urgent, Class::Normal, Class::Bulk];
        for i in 0..n {
            out.push((peer, classes[i % classes.len()], PARTIAL_TOTAL));
        }
    }

    /// A message in a class its type does not allow, the `variant`-th of four.
    fn wrong_class(&mut self, variant: u64) -> (Message, Class) {
        match variant % 4 {
            0 => {
                let a = self.fake_advert(Kind(3), 4096);
                (Message::Adverts(vec![a]), Class::Urgent)
            }
            1 => (Message::Withdraw(self.random_id()), Class::Bulk),
            2 => {
                let data = Bytes::from(self.rng.bytes(200));
                let advert = Advert {
                    id: ArtifactId::of(&data),
                    kind: URGENT,
                    size: data.len() as u64,
                    attr: Bytes::new(),
                };
                (Message::Push { advert, data }, Class::Control)
            }
            _ => {
                let msg = Message::Request {
                    req_id: self.rng.next_u64(),
                    id: self.random_id(),
                    priority: p2p_core::Priority::URGENT,
                };
                (msg, Class::Normal)
            }
        }
    }

    /// A [`ByzKind::Squatter`]'s ids: just under the per-peer limit in all, spread evenly over
    /// the urgent, normal and bulk kinds (each just under the per-kind limit), all fetched by the
    /// honest priority function.
    fn squat_set(&mut self) -> Vec<Advert> {
        let kinds = [
            (URGENT, URGENT_FAKE_SIZE),
            (NORMAL, 10_000),
            (BULK, 200_000),
        ];
        let total = self
            .limits
            .advert_cap()
            .min(self.limits.kind_cap() * kinds.len());
        (0..total)
            .map(|i| {
                let (kind, size) = kinds[i % kinds.len()];
                self.unserved_advert(kind, size)
            })
            .collect()
    }

    pub fn on_disconnect(&mut self, peer: u32) {
        self.peers.retain(|p| *p != peer);
        self.held.remove(&peer);
    }

    pub fn on_message(&mut self, from: u32, msg: Message, out: &mut Sends) {
        match (self.kind, msg) {
            (ByzKind::Silent, Message::Adverts(adverts)) => self.echo(from, adverts, out),
            (ByzKind::Silent, Message::Push { advert, .. }) => self.echo(from, vec![advert], out),
            (ByzKind::BadData | ByzKind::BadChunks, Message::Adverts(adverts)) => {
                self.remember(adverts)
            }
            (
                ByzKind::BadData | ByzKind::BadChunks | ByzKind::Silent,
                Message::Have { id, ranges },
            ) if ranges.is_empty() => {
                self.claim_all_chunks(from, id, out);
            }
            (ByzKind::BadData, Message::Request { req_id, id, .. }) => {
                let size = self.fake.get(&id).copied().unwrap_or(64).min(1 << 20);
                let data = Bytes::from(self.rng.bytes(size as usize));
                out.push((from, Message::Response { req_id, id, data }, Class::Normal));
            }
            (ByzKind::ClassSpoofer, Message::Adverts(adverts)) => self.remember(adverts),
            (ByzKind::ClassSpoofer, Message::Request { req_id, id, .. }) => {
                let size = self.heard_size(&id).min(1 << 20);
                let data = Bytes::from(self.rng.bytes(size as usize));
                out.push((from, Message::Response { req_id, id, data }, Class::Urgent));
            }
            (ByzKind::StalledReader, Message::Adverts(adverts)) => {
                for a in adverts {
                    self.request(from, a.id, out);
                    self.wanted.push_back((from, a.id));
                    if self.wanted.len() > MEMORY {
                        self.wanted.pop_front();
                    }
                }
            }
            (
                ByzKind::Phantom | ByzKind::Churn | ByzKind::Malformed | ByzKind::Churner,
                Message::Request { req_id, id, .. } | Message::ChunkRequest { req_id, id, .. },
            ) => {
                out.push((from, Message::NotFound { req_id, id }, Class::Control));
            }
            // A chunk of random bytes: it fails the manifest's hash of that chunk.
            (
                ByzKind::BadData | ByzKind::BadChunks | ByzKind::ClassSpoofer,
                Message::ChunkRequest {
                    req_id, id, index, ..
                },
            ) => {
                let data = Bytes::from(self.rng.bytes(p2p_core::chunks::MIN_CHUNK_SIZE as usize));
                let class = if self.kind == ByzKind::ClassSpoofer {
                    Class::Urgent
                } else {
                    Class::Normal
                };
                let chunk = Message::Chunk {
                    req_id,
                    id,
                    index,
                    data,
                };
                out.push((from, chunk, class));
            }
            _ => {}
        }
    }

    /// Requests `id` from `peer`.
    fn request(&mut self, peer: u32, id: ArtifactId, out: &mut Sends) {
        let req_id = self.rng.next_u64();
        let priority = p2p_core::Priority::BULK;
        out.push((
            peer,
            Message::Request {
                req_id,
                id,
                priority,
            },
            Class::Control,
        ));
    }

    /// Remembers `adverts` (bounded), to advertise them on later connections.
    fn remember(&mut self, adverts: Vec<Advert>) {
        for a in adverts {
            if self.heard_set.insert(a.id) {
                self.heard.push_back(a);
                if self.heard.len() > MEMORY
                    && let Some(old) = self.heard.pop_front()
                {
                    self.heard_set.remove(&old.id);
                }
            }
        }
    }

    /// Answers `peer`'s empty `Have` of `id` (it started a swarm) with a `Have` of every chunk,
    /// if `id` was advertised to us as an artifact larger than one chunk.
    fn claim_all_chunks(&mut self, peer: u32, id: ArtifactId, out: &mut Sends) {
        let chunk = u64::from(self.limits.chunk_size.max(1));
        let Some(size) = self.heard.iter().find(|a| a.id == id).map(|a| a.size) else {
            return;
        };
        if size <= chunk {
            return;
        }
        let end = u32::try_from(size.div_ceil(chunk)).unwrap_or(u32::MAX);
        let ranges = vec![p2p_core::ChunkRange { start: 0, end }];
        out.push((peer, Message::Have { id, ranges }, Class::Control));
    }

    /// The size of a remembered advert of `id` (64 if none).
    fn heard_size(&self, id: &ArtifactId) -> u64 {
        self.heard
            .iter()
            .find(|a| a.id == *id)
            .map_or(64, |a| a.size)
    }

    /// Re-advertises what it heard to every other peer, as if it held it.
    fn echo(&mut self, from: u32, adverts: Vec<Advert>, out: &mut Sends) {
        let mut fresh = Vec::new();
        for a in adverts {
            if self.heard_set.insert(a.id) {
                self.heard.push_back(a.clone());
                fresh.push(a);
                if self.heard.len() > MEMORY
                    && let Some(old) = self.heard.pop_front()
                {
                    self.heard_set.remove(&old.id);
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        for &p in &self.peers {
            if p != from {
                out.push((p, Message::Adverts(fresh.clone()), Class::Control));
            }
        }
    }

    pub fn on_tick(&mut self, out: &mut Sends) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        self.ticks += 1;
        let peers = self.peers.clone();
        match self.kind {
            ByzKind::Phantom => {
                let adverts: Vec<Advert> = (0..BATCH)
                    .map(|_| self.fake_advert(Kind(3), 10_000))
                    .collect();
                for p in peers {
                    out.push((p, Message::Adverts(adverts.clone()), Class::Control));
                }
            }
            ByzKind::Flood => {
                let n = self.limits.max_adverts_per_message;
                let adverts: Vec<Advert> = (0..n)
                    .map(|_| {
                        let id = self.random_id();
                        Advert {
                            id,
                            kind: Kind(3),
                            size: 2048,
                            attr: Bytes::new(),
                        }
                    })
                    .collect();
                for p in peers {
                    out.push((p, Message::Adverts(adverts.clone()), Class::Control));
                }
            }
            ByzKind::Churn => {
                let old = std::mem::take(&mut self.churn);
                for p in &peers {
                    for id in &old {
                        out.push((*p, Message::Withdraw(*id), Class::Control));
                    }
                }
                let adverts: Vec<Advert> = (0..4 * BATCH)
                    .map(|_| self.fake_advert(Kind(3), 8_000))
                    .collect();
                self.churn = adverts.iter().map(|a| a.id).collect();
                for p in peers {
                    out.push((p, Message::Adverts(adverts.clone()), Class::Control));
                }
            }
            ByzKind::NeverServe => {
                let adverts: Vec<Advert> = (0..BATCH)
                    .map(|_| self.unserved_advert(URGENT, URGENT_FAKE_SIZE))
                    .collect();
                for p in peers {
                    self.advertise_within(p, URGENT, &adverts, out);
                }
            }
            ByzKind::Pusher => {
                let variant = self.connections.wrapping_add(self.budget as u64);
                let msg = self.oversized_push(variant);
                for p in peers {
                    out.push((p, msg.clone(), Class::Urgent));
                }
            }
            ByzKind::HashFlood => {
                // A new connection is filled to just under the per-kind limit at once; from then
                // on, each tick withdraws the oldest ids and advertises as many fresh ones.
                let cap = self.limits.advert_cap().min(self.limits.kind_cap());
                let fill = peers
                    .iter()
                    .map(|p| {
                        let held = self.held.get(p).map_or(0, |h| h.ids.len());
                        cap.saturating_sub(held)
                    })
                    .max()
                    .unwrap_or(0);
                let adverts: Vec<Advert> = (0..fill.max(HASH_FLOOD_BATCH))
                    .map(|_| self.unserved_advert(URGENT, URGENT_FAKE_SIZE))
                    .collect();
                for p in peers {
                    // Withdraw the oldest ids to make room for the fresh ones (only ids old
                    // enough: see HASH_FLOOD_MIN_AGE); a withdraw goes before the adverts it
                    // makes room for, in the same class.
                    let held = self.held.entry(p).or_default();
                    let over = (held.ids.len() + HASH_FLOOD_BATCH).saturating_sub(cap);
                    let old = held
                        .ids
                        .iter()
                        .take(over)
                        .take_while(|(_, t)| t + HASH_FLOOD_MIN_AGE <= self.ticks)
                        .count();
                    let gone: Vec<(ArtifactId, u64)> = held.ids.drain(..old).collect();
                    held.remove(URGENT, gone.len());
                    for (id, _) in gone {
                        out.push((p, Message::Withdraw(id), Class::Control));
                    }
                    self.advertise_within(p, URGENT, &adverts, out);
                }
            }
            ByzKind::StalledReader => {
                // Every STALL_REPEAT ticks, asks again for everything it was offered: later than
                // an early repeat, so the honest nodes serve it again.
                if self.ticks.is_multiple_of(STALL_REPEAT) {
                    let wanted: Vec<(u32, ArtifactId)> = self.wanted.iter().copied().collect();
                    for (p, id) in wanted {
                        if self.peers.contains(&p) {
                            self.request(p, id, out);
                        }
                    }
                }
            }
            ByzKind::ClassSpoofer => {
                for p in peers {
                    let variant = self.ticks.wrapping_add(p as u64);
                    let (msg, class) = self.wrong_class(variant);
                    out.push((p, msg, class));
                }
            }
            ByzKind::BadData
            | ByzKind::BadChunks
            | ByzKind::Silent
            | ByzKind::Malformed
            | ByzKind::Squatter
            | ByzKind::Churner
            | ByzKind::PartialFrames
            | ByzKind::Mute => {}
        }
    }
}
