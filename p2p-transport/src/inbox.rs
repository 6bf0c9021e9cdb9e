//! The receiving node's fair inbox: messages read from every peer, waiting for the node to
//! handle them, served by lane and by peer so that no peer's traffic starves another's.
//!
//! # Lanes by message type
//!
//! A message's [`Lane`] follows from its type, not from the sender's claim: control messages
//! (`Adverts`, `Withdraw`, `Request`, `NotFound`, `ChunkRequest`, `Have`, `Cancel`, `Decline`,
//! `Fetching`) in
//! [`Lane::Control`], pushes in [`Lane::Push`], responses and chunks in [`Lane::Urgent`],
//! [`Lane::Normal`] or [`Lane::Bulk`] by the class they arrived in. The connection layer
//! already refused a class the type does not allow ([`crate::codec::allowed_classes`]), so a
//! peer can pick the lane of a response or chunk only among the response lanes. That choice cannot be checked against the priority of our request
//! before the core sees the response; what a spoofer gains is bounded by the per-peer queues: a
//! bulk response claimed urgent competes in the urgent lane only with the spoofer's own queue
//! there, once per round-robin turn, and never delays another peer's message by more than the
//! bound below.
//!
//! # Service order
//!
//! - Inside a lane, each peer has its own FIFO queue, and the peers with queued messages are
//!   served round-robin, one message per turn.
//! - Lanes are served by deficit round robin over bytes: on each visit a lane with queued
//!   messages earns `weights[lane] * quantum` bytes of credit and serves messages while the
//!   head's cost fits the credit; an empty lane keeps no credit. Every lane with queued
//!   messages is visited once per round, so no lane is starved, and a lane of higher weight
//!   gets more of a busy node.
//!
//! **Bound.** With `C` the largest message cost queued, `W = Σ weights` and `q = quantum`, a
//! round serves at most `W·q + 5·C` bytes, and a lane with queued messages is served at least
//! once every `ceil(C / (weights[lane]·q)) + 1` rounds. A message at the head of its peer's queue
//! waits behind at most one message of each other peer in its lane; so an honest peer's
//! message waits behind at most one message of each other peer with traffic in that lane, plus
//! the other lanes' shares of the rounds in between, however fast anyone sends.
//!
//! # Bounds
//!
//! Each peer's queue in each lane holds at most `lane_bytes` of message cost (a message that
//! alone exceeds it is admitted into an empty queue, and then fills it): a push past it is
//! refused with [`Full`], and the driver stops reading from that peer until the node took
//! enough (TCP back-pressure on that peer alone). A message costs its encoded length plus
//! [`MESSAGE_OVERHEAD`] ([`cost_of`]), so many tiny messages are bounded too.
//!
//! The inbox is sans-IO and generic over the peer key and the queued item, so a driver keeps
//! whatever it needs beside each message (a connection number, a wake-up handle).

use std::collections::{BTreeMap, VecDeque};

use p2p_core::{Class, Message};
use thiserror::Error;

use crate::codec;

/// Number of lanes.
pub const LANES: usize = 5;

/// Bytes charged per queued message on top of its encoded length: the memory of an entry.
pub const MESSAGE_OVERHEAD: usize = 64;

/// A lane of the inbox, chosen by message type (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Lane {
    /// `Adverts`, `Withdraw`, `Request`, `NotFound`, `ChunkRequest`, `Have`, `Cancel`,
    /// `Decline`, `Fetching`.
    Control = 0,
    /// `Push`.
    Push = 1,
    /// Responses and chunks that arrived in the urgent class.
    Urgent = 2,
    /// Responses and chunks that arrived in the normal class.
    Normal = 3,
    /// Responses and chunks that arrived in the bulk class.
    Bulk = 4,
}

impl Lane {
    /// All lanes, in service order.
    pub const ALL: [Lane; LANES] = [
        Lane::Control,
        Lane::Push,
        Lane::Urgent,
        Lane::Normal,
        Lane::Bulk,
    ];

    /// The index of this lane in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lane of `msg`, which arrived in `class`: by its type, and for a response or chunk
    /// by its class (one in the control class, which the connection layer refuses, counts as
    /// bulk).
    pub fn of(msg: &Message, class: Class) -> Lane {
        match msg {
            Message::Push { .. } => Lane::Push,
            Message::Response { .. } | Message::Chunk { .. } => match class {
                Class::Urgent => Lane::Urgent,
                Class::Normal => Lane::Normal,
                Class::Control | Class::Bulk => Lane::Bulk,
            },
            Message::Adverts(_)
            | Message::Withdraw(_)
            | Message::Request { .. }
            | Message::NotFound { .. }
            | Message::ChunkRequest { .. }
            | Message::Have { .. }
            | Message::Cancel { .. }
            | Message::Decline { .. }
            | Message::Fetching(_) => Lane::Control,
        }
    }
}

/// What `msg` costs in the inbox: its encoded length plus [`MESSAGE_OVERHEAD`].
pub fn cost_of(msg: &Message) -> usize {
    codec::encoded_len(msg).saturating_add(MESSAGE_OVERHEAD)
}

/// Settings of an [`Inbox`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxConfig {
    /// Cost one peer may have queued in one lane: its read-ahead budget (default 4 MiB).
    pub lane_bytes: usize,
    /// Credit in bytes a lane of weight 1 earns per round (default 64 KiB): smaller
    /// interleaves lanes more finely, larger serves more per visit.
    pub quantum: usize,
    /// Weight of each lane in [`Lane::ALL`] order (default 2, 2, 8, 4, 2; each at least 1).
    /// Control messages (chunk requests, `Have`, `Cancel` and `Decline` among them) and pushes are
    /// unsolicited, so a member can flood them; responses and chunks answer this node's own
    /// requests (an unrequested one cuts the peer off), so their volume is bounded by its
    /// in-flight limits, and they weigh more, by priority. A flooded control
    /// lane thus takes at most as many bytes as a busy bulk lane.
    pub weights: [u32; LANES],
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            lane_bytes: 4 << 20,
            quantum: 64 << 10,
            weights: [2, 2, 8, 4, 2],
        }
    }
}

/// An [`InboxConfig`] that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxConfigError {
    /// `lane_bytes` or `quantum` is zero.
    #[error("lane_bytes and quantum must be positive")]
    Zero,
    /// A lane's weight is zero.
    #[error("the weight of lane {0:?} is zero")]
    ZeroWeight(Lane),
}

impl InboxConfig {
    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), InboxConfigError> {
        if self.lane_bytes == 0 || self.quantum == 0 {
            return Err(InboxConfigError::Zero);
        }
        for lane in Lane::ALL {
            if self.weights[lane.index()] == 0 {
                return Err(InboxConfigError::ZeroWeight(lane));
            }
        }
        Ok(())
    }
}

/// A refused push: the peer's queue in that lane is full. Holds the item back.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the peer's queue in this lane is full")]
pub struct Full<T: std::fmt::Debug>(pub T);

struct Queue<T> {
    items: VecDeque<(usize, T)>,
    bytes: usize,
}

struct LaneState<K, T> {
    /// Nonempty queues only.
    queues: BTreeMap<K, Queue<T>>,
    /// The peers with queued messages, in service order.
    ring: VecDeque<K>,
    deficit: u64,
}

impl<K, T> LaneState<K, T> {
    fn new() -> Self {
        LaneState {
            queues: BTreeMap::new(),
            ring: VecDeque::new(),
            deficit: 0,
        }
    }
}

/// The fair inbox (see the module docs), keyed by peer `K`, holding items `T`.
pub struct Inbox<K, T> {
    cfg: InboxConfig,
    lanes: [LaneState<K, T>; LANES],
    /// The lane being visited, and whether it earned its credit for this visit.
    current: usize,
    credited: bool,
    len: usize,
    bytes: usize,
}

impl<K: Ord + Copy, T: std::fmt::Debug> Inbox<K, T> {
    /// An empty inbox.
    pub fn new(cfg: InboxConfig) -> Result<Self, InboxConfigError> {
        cfg.validate()?;
        Ok(Inbox {
            cfg,
            lanes: std::array::from_fn(|_| LaneState::new()),
            current: 0,
            credited: false,
            len: 0,
            bytes: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &InboxConfig {
        &self.cfg
    }

    /// Queues `item` of `cost` bytes (at least 1 is charged) from `peer` in `lane`, or gives it
    /// back when the peer's queue there holds something and `cost` more would pass
    /// `lane_bytes`.
    pub fn push(&mut self, peer: K, lane: Lane, cost: usize, item: T) -> Result<(), Full<T>> {
        let cost = cost.max(1);
        let limit = self.cfg.lane_bytes;
        let l = &mut self.lanes[lane.index()];
        match l.queues.get_mut(&peer) {
            Some(q) => {
                if q.bytes.saturating_add(cost) > limit {
                    return Err(Full(item));
                }
                q.bytes += cost;
                q.items.push_back((cost, item));
            }
            None => {
                l.queues.insert(
                    peer,
                    Queue {
                        items: VecDeque::from([(cost, item)]),
                        bytes: cost,
                    },
                );
                l.ring.push_back(peer);
            }
        }
        self.len += 1;
        self.bytes = self.bytes.saturating_add(cost);
        Ok(())
    }

    /// Whether `cost` more from `peer` fits in `lane` now.
    pub fn fits(&self, peer: K, lane: Lane, cost: usize) -> bool {
        let queued = self.queued(peer, lane);
        queued == 0 || queued.saturating_add(cost.max(1)) <= self.cfg.lane_bytes
    }

    /// The next message to handle: its peer, lane and item.
    pub fn pop(&mut self) -> Option<(K, Lane, T)> {
        if self.len == 0 {
            return None;
        }
        // Terminates: every full cycle of visits adds credit to each lane with messages.
        loop {
            let quantum = self.cfg.quantum as u64 * u64::from(self.cfg.weights[self.current]);
            let l = &mut self.lanes[self.current];
            let Some(&peer) = l.ring.front() else {
                l.deficit = 0;
                self.next_lane();
                continue;
            };
            if !self.credited {
                l.deficit = l.deficit.saturating_add(quantum);
                self.credited = true;
            }
            let Some(q) = l.queues.get_mut(&peer) else {
                // Unreachable: the ring names only peers with queues.
                l.ring.pop_front();
                continue;
            };
            let head = q.items.front().map_or(0, |(c, _)| *c);
            if head as u64 > l.deficit {
                self.next_lane();
                continue;
            }
            l.deficit -= head as u64;
            let (cost, item) = q.items.pop_front()?;
            q.bytes -= cost;
            l.ring.pop_front();
            if q.items.is_empty() {
                l.queues.remove(&peer);
            } else {
                l.ring.push_back(peer);
            }
            let lane = Lane::ALL[self.current];
            if l.ring.is_empty() {
                l.deficit = 0;
                self.next_lane();
            }
            self.len -= 1;
            self.bytes -= cost;
            return Some((peer, lane, item));
        }
    }

    fn next_lane(&mut self) {
        self.current = (self.current + 1) % LANES;
        self.credited = false;
    }

    /// Drops everything queued from `peer` (its connection ended); returns how many messages.
    pub fn remove(&mut self, peer: K) -> usize {
        let mut dropped = 0;
        for l in &mut self.lanes {
            if let Some(q) = l.queues.remove(&peer) {
                dropped += q.items.len();
                self.len -= q.items.len();
                self.bytes -= q.bytes;
                l.ring.retain(|p| *p != peer);
            }
        }
        dropped
    }

    /// Cost queued from `peer` in `lane`.
    pub fn queued(&self, peer: K, lane: Lane) -> usize {
        self.lanes[lane.index()]
            .queues
            .get(&peer)
            .map_or(0, |q| q.bytes)
    }

    /// Messages queued in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cost queued in all.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use p2p_core::ArtifactId;
    use quickcheck::{Arbitrary, Gen, QuickCheck};
    use std::collections::HashMap;

    fn cfg() -> InboxConfig {
        InboxConfig {
            lane_bytes: 1000,
            quantum: 100,
            weights: [2, 2, 8, 4, 2],
        }
    }

    #[test]
    fn lanes_follow_the_message_type_not_the_claimed_class() {
        let id = ArtifactId([1; 32]);
        let req = Message::Request {
            req_id: 1,
            id,
            priority: p2p_core::Priority::URGENT,
        };
        let resp = Message::Response {
            req_id: 1,
            id,
            data: Bytes::from_static(b"x"),
        };
        let chunk = Message::Chunk {
            req_id: 2,
            id,
            index: 3,
            data: Bytes::from_static(b"y"),
        };
        let control = [
            req,
            Message::Withdraw(id),
            Message::ChunkRequest {
                req_id: 2,
                id,
                index: 3,
                priority: p2p_core::Priority::URGENT,
            },
            Message::Have {
                id,
                ranges: vec![p2p_core::ChunkRange { start: 0, end: 4 }],
            },
            Message::Cancel { req_id: 2 },
        ];
        for class in Class::ALL {
            for msg in &control {
                assert_eq!(Lane::of(msg, class), Lane::Control, "{}", msg.name());
            }
        }
        for answer in [&resp, &chunk] {
            assert_eq!(Lane::of(answer, Class::Urgent), Lane::Urgent);
            assert_eq!(Lane::of(answer, Class::Normal), Lane::Normal);
            assert_eq!(Lane::of(answer, Class::Bulk), Lane::Bulk);
        }
        let req = &control[0];
        assert!(cost_of(req) > MESSAGE_OVERHEAD);
    }

    #[test]
    fn a_full_lane_refuses_and_gives_the_item_back_but_other_lanes_and_peers_take_more() {
        let mut inbox = Inbox::new(cfg()).unwrap();
        for i in 0..10 {
            inbox.push(1u64, Lane::Control, 100, i).unwrap();
        }
        assert_eq!(inbox.push(1, Lane::Control, 1, 99), Err(Full(99)));
        assert!(!inbox.fits(1, Lane::Control, 1));
        inbox.push(1, Lane::Bulk, 100, 10).unwrap();
        inbox.push(2, Lane::Control, 100, 11).unwrap();
        // A message larger than the budget enters an empty queue alone.
        inbox.push(3, Lane::Bulk, 5000, 12).unwrap();
        assert_eq!(inbox.push(3, Lane::Bulk, 1, 13), Err(Full(13)));
        assert_eq!(inbox.len(), 13);
        assert_eq!(inbox.remove(1), 11);
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.bytes(), 5100);
        let mut got: Vec<u32> = std::iter::from_fn(|| inbox.pop().map(|(_, _, i)| i)).collect();
        got.sort();
        assert_eq!(got, vec![11, 12]);
        assert!(inbox.is_empty());
        assert_eq!(inbox.bytes(), 0);
    }

    #[test]
    fn a_flooding_peer_delays_another_peers_message_in_its_lane_by_one_message() {
        let mut inbox = Inbox::new(InboxConfig {
            lane_bytes: 1 << 20,
            ..cfg()
        })
        .unwrap();
        for i in 0..1000 {
            inbox.push(1u64, Lane::Control, 50, i).unwrap();
        }
        inbox.pop().unwrap();
        inbox.push(2, Lane::Control, 50, 5000).unwrap();
        // Peer 1 is served once more, then peer 2.
        assert_eq!(inbox.pop().map(|(p, _, _)| p), Some(1));
        assert_eq!(inbox.pop(), Some((2, Lane::Control, 5000)));
    }

    #[test]
    fn a_control_flood_leaves_bulk_its_weighted_share() {
        let mut inbox = Inbox::new(InboxConfig {
            lane_bytes: 1 << 30,
            ..cfg()
        })
        .unwrap();
        for i in 0..100_000 {
            inbox.push(1u64, Lane::Control, 100, i).unwrap();
        }
        // A bulk message of 1,000 bytes: weight 2 earns 200 bytes a round, so it goes out
        // within 5 rounds, each serving at most 2 x 100 bytes of control.
        inbox.push(2, Lane::Bulk, 1000, u32::MAX).unwrap();
        let pops = std::iter::from_fn(|| inbox.pop())
            .position(|(p, _, _)| p == 2)
            .unwrap();
        assert!(pops <= 5 * 2, "{pops} control messages went first");
    }

    /// One step of an arrival sequence.
    #[derive(Clone, Debug)]
    enum Op {
        Push { peer: u8, lane: u8, cost: u16 },
        Pop,
        Remove(u8),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 10 {
                0..=5 => Op::Push {
                    peer: u8::arbitrary(g) % 4,
                    lane: u8::arbitrary(g) % LANES as u8,
                    cost: u16::arbitrary(g) % 1500,
                },
                6..=8 => Op::Pop,
                _ => Op::Remove(u8::arbitrary(g) % 4),
            }
        }
    }

    /// For arbitrary arrival sequences: each peer's queue per lane stays within its bound; each
    /// (peer, lane) is served in FIFO order, nothing is lost or duplicated; while a peer's
    /// message waits at the head of its queue, no other peer of its lane is served twice; while
    /// a lane has messages, the bytes served from other lanes between its services stay within
    /// the stated bound.
    fn fairness_holds(ops: Vec<Op>, quantum: u8) -> bool {
        let cfg = InboxConfig {
            lane_bytes: 2000,
            quantum: 1 + usize::from(quantum),
            weights: [2, 2, 8, 4, 2],
        };
        let max_cost = 1500u64;
        let w: u64 = cfg.weights.iter().map(|&x| u64::from(x)).sum();
        let round = w * cfg.quantum as u64 + LANES as u64 * max_cost;
        let mut inbox: Inbox<u8, (u8, u64, u64)> = Inbox::new(cfg.clone()).unwrap();
        let mut model: HashMap<(u8, usize), VecDeque<u64>> = HashMap::new();
        let mut seq = 0u64;
        // Per lane: bytes served from other lanes since this lane was last served (or became
        // nonempty); per (peer, lane): other peers served in the lane since its head waited.
        let mut starved = [0u64; LANES];
        let mut served_while_waiting: HashMap<(u8, usize), HashMap<u8, u32>> = HashMap::new();
        let all = ops.iter().chain(std::iter::repeat_n(&Op::Pop, 2000));
        for op in all {
            match *op {
                Op::Push { peer, lane, cost } => {
                    let lane_v = Lane::ALL[usize::from(lane)];
                    let was_empty = inbox.queued(peer, lane_v) == 0;
                    let lane_was_empty = (0..4).all(|p| inbox.queued(p, lane_v) == 0);
                    seq += 1;
                    let fits = inbox.fits(peer, lane_v, cost.into());
                    match inbox.push(
                        peer,
                        lane_v,
                        cost.into(),
                        (peer, seq, u64::from(cost.max(1))),
                    ) {
                        Ok(()) => {
                            if !fits {
                                return false;
                            }
                            model
                                .entry((peer, usize::from(lane)))
                                .or_default()
                                .push_back(seq);
                            if was_empty {
                                served_while_waiting
                                    .insert((peer, usize::from(lane)), HashMap::new());
                            }
                            if lane_was_empty {
                                starved[usize::from(lane)] = 0;
                            }
                        }
                        Err(Full((p, s, _))) => {
                            if fits || p != peer || s != seq {
                                return false;
                            }
                        }
                    }
                    if inbox.queued(peer, lane_v) > cfg.lane_bytes.max(usize::from(cost).max(1)) {
                        return false;
                    }
                }
                Op::Pop => {
                    let Some((peer, lane, (p, s, cost))) = inbox.pop() else {
                        if !model.values().all(VecDeque::is_empty) {
                            return false;
                        }
                        continue;
                    };
                    let l = lane.index();
                    // FIFO per (peer, lane), nothing lost or duplicated.
                    if p != peer
                        || model.get_mut(&(peer, l)).and_then(VecDeque::pop_front) != Some(s)
                    {
                        return false;
                    }
                    // Round-robin inside the lane.
                    for ((q, ql), counts) in served_while_waiting.iter_mut() {
                        if *ql == l && *q != peer {
                            let c = counts.entry(peer).or_default();
                            *c += 1;
                            if *c > 1 {
                                return false;
                            }
                        }
                    }
                    if inbox.queued(peer, lane) == 0 {
                        served_while_waiting.remove(&(peer, l));
                    } else {
                        served_while_waiting.insert((peer, l), HashMap::new());
                    }
                    // No lane starved.
                    starved[l] = 0;
                    for (m, st) in starved.iter_mut().enumerate() {
                        if m != l {
                            *st += cost;
                            let rounds = max_cost
                                .div_ceil(u64::from(cfg.weights[m]) * cfg.quantum as u64)
                                + 1;
                            let lane_busy = (0..4).any(|q| inbox.queued(q, Lane::ALL[m]) > 0);
                            if lane_busy && *st > rounds * round {
                                return false;
                            }
                        }
                    }
                }
                Op::Remove(peer) => {
                    inbox.remove(peer);
                    for l in 0..LANES {
                        model.remove(&(peer, l));
                        served_while_waiting.remove(&(peer, l));
                    }
                }
            }
        }
        inbox.is_empty() && inbox.bytes() == 0
    }

    #[test]
    fn prop_fairness_bounds_and_fifo_hold_for_arbitrary_arrivals() {
        QuickCheck::new()
            .tests(300)
            .quickcheck(fairness_holds as fn(Vec<Op>, u8) -> bool);
    }
}
