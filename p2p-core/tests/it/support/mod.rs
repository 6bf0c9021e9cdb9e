//! Test support: single-node helpers and a tiny in-process network of cores.
#![allow(dead_code)]

use p2p_core::rng::Rng;
use p2p_core::{Artifact, ArtifactId, Class, Config, Input, Message, Node, NodeId, Output, Time};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The id of test node `i`.
pub fn id(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 32])
}

/// A node (id 0) that is connected to `peers` members (ids 1..=peers).
pub fn connected_node(cfg: Config, peers: usize) -> Node {
    connected_among(cfg, peers + 1, peers)
}

/// A node (id 0) of `members` members (ids 0..members) that is connected to `peers` of them
/// (ids 1..=peers).
pub fn connected_among(cfg: Config, members: usize, peers: usize) -> Node {
    let mut node = Node::new(id(0), cfg);
    node.handle_input(
        Time::ZERO,
        Input::Membership {
            version: 1,
            members: (0..members).map(id).collect(),
        },
    )
    .unwrap();
    for p in 1..=peers {
        node.handle_input(Time::ZERO, Input::PeerConnected(id(p)))
            .unwrap();
    }
    drain(&mut node);
    node
}

/// Every output the node has ready.
pub fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Feeds one input and returns the outputs.
pub fn step(node: &mut Node, now: Time, input: Input) -> Vec<Output> {
    node.handle_input(now, input).unwrap();
    drain(node)
}

/// Feeds a message from `from`.
pub fn recv(node: &mut Node, now: Time, from: NodeId, msg: Message) -> Vec<Output> {
    step(node, now, Input::Message { from, msg })
}

/// The `Send`s among `outs`.
pub fn sends(outs: &[Output]) -> Vec<(NodeId, Message, Class)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg, class } => Some((*to, msg.clone(), *class)),
            _ => None,
        })
        .collect()
}

/// The requests among `outs`: (peer, req_id, artifact).
pub fn requests(outs: &[Output]) -> Vec<(NodeId, u64, ArtifactId)> {
    sends(outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::Request { req_id, id, .. } => Some((to, req_id, id)),
            _ => None,
        })
        .collect()
}

/// The artifacts delivered among `outs`.
pub fn delivered(outs: &[Output]) -> Vec<Artifact> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Deliver { artifact, .. } => Some(artifact.clone()),
            _ => None,
        })
        .collect()
}

/// A tiny network: every Send goes into a per-link FIFO; links are served in a seeded random
/// order, so messages of different links interleave arbitrarily ([`Net::run_until`]), or each
/// node sends one message at a time as over one uplink ([`Net::run_uplinks_until_quiet`]).
pub struct Net {
    pub nodes: Vec<Node>,
    pub now: Time,
    /// Per link, its queued messages.
    links: BTreeMap<(usize, usize), VecDeque<Queued>>,
    sent: u64,
    connected: BTreeMap<(usize, usize), bool>,
    pub deliveries: Vec<Vec<Artifact>>,
    transcript: std::collections::hash_map::DefaultHasher,
    index: HashMap<NodeId, usize>,
    /// Nodes whose chunks are tampered with on the way out.
    pub faulty: BTreeMap<usize, ChunkFault>,
    /// Nodes that advertise what they hold but never answer a request with it: their
    /// responses are dropped on the way out.
    pub withholding: std::collections::BTreeSet<usize>,
}

/// A queued message with its place in the order of sends and its class.
type Queued = (u64, Class, Message);

/// How a faulty node's chunks go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkFault {
    /// Every chunk it sends has its bytes flipped.
    Corrupt,
    /// It never answers a chunk request.
    Silent,
}

impl Net {
    pub fn new(n: usize, seed: u64, tweak: impl Fn(&mut Config)) -> Self {
        let members: Vec<NodeId> = (0..n).map(id).collect();
        let nodes = (0..n)
            .map(|i| {
                let mut cfg = Config {
                    seed: seed ^ i as u64,
                    ..Config::default()
                };
                tweak(&mut cfg);
                let mut node = Node::new(id(i), cfg);
                node.handle_input(
                    Time::ZERO,
                    Input::Membership {
                        version: 1,
                        members: members.clone(),
                    },
                )
                .unwrap();
                node
            })
            .collect();
        Net {
            nodes,
            now: Time::ZERO,
            links: BTreeMap::new(),
            sent: 0,
            connected: BTreeMap::new(),
            deliveries: vec![Vec::new(); n],
            transcript: Default::default(),
            index: (0..n).map(|i| (id(i), i)).collect(),
            faulty: BTreeMap::new(),
            withholding: Default::default(),
        }
    }

    pub fn connect(&mut self, a: usize, b: usize) {
        self.connected.insert((a, b), true);
        self.connected.insert((b, a), true);
        self.input(a, Input::PeerConnected(id(b)));
        self.input(b, Input::PeerConnected(id(a)));
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            self.connected.insert((x, y), false);
            self.links.remove(&(x, y));
            self.input(x, Input::PeerDisconnected(id(y)));
        }
    }

    pub fn connect_all(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                self.connect(a, b);
            }
        }
    }

    pub fn publish(&mut self, node: usize, artifact: Artifact) {
        self.input(node, Input::Publish(artifact));
    }

    pub fn input(&mut self, node: usize, input: Input) {
        self.nodes[node].handle_input(self.now, input).unwrap();
        let mut hashes = Vec::new();
        while let Some(out) = self.nodes[node].poll_output() {
            format!("{node} {out:?}").hash(&mut self.transcript);
            match out {
                Output::Send { to, mut msg, class } => {
                    let to = self.index[&to];
                    if matches!(msg, Message::Response { .. }) && self.withholding.contains(&node) {
                        continue;
                    }
                    if let Message::Chunk { data, .. } = &mut msg {
                        match self.faulty.get(&node) {
                            Some(ChunkFault::Silent) => continue,
                            Some(ChunkFault::Corrupt) => {
                                *data = data.iter().map(|b| !b).collect::<Vec<u8>>().into();
                            }
                            None => {}
                        }
                    }
                    if self.connected.get(&(node, to)).copied().unwrap_or(false) {
                        self.sent += 1;
                        let q = self.links.entry((node, to)).or_default();
                        q.push_back((self.sent, class, msg));
                    }
                }
                Output::Deliver { artifact, .. } => self.deliveries[node].push(artifact),
                Output::Disconnect { peer, .. } => {
                    let peer = self.index[&peer];
                    self.disconnect(node, peer);
                }
                Output::Cancel { to, req_id } => {
                    // The answer is dropped if it is still queued on the link.
                    if let Some(q) = self.links.get_mut(&(node, self.index[&to])) {
                        q.retain(|(_, _, m)| m.answers() != Some(req_id));
                    }
                }
                Output::CancelPushes { to, id, ranges } => {
                    // The pushes are dropped if they are still queued on the link.
                    if let Some(q) = self.links.get_mut(&(node, self.index[&to])) {
                        q.retain(|(_, _, m)| {
                            !m.revocable().is_some_and(|r| r.is_push_in(&id, &ranges))
                        });
                    }
                }
                Output::HashChunk { id, index, data } => {
                    let digest = sha2::Sha256::digest(&data).into();
                    hashes.push(Input::ChunkHashed { id, index, digest });
                }
                Output::Event(_) => {}
            }
        }
        for input in hashes {
            self.input(node, input);
        }
    }

    /// Carries messages until none is in flight and no timer is due within a minute.
    pub fn run_until_quiet(&mut self, seed: u64) {
        assert!(!self.run_until(seed, |_| false), "network did not go quiet");
    }

    /// Carries messages until `stop` holds (checked before each step: returns true) or the
    /// network is quiet (returns false).
    pub fn run_until(&mut self, seed: u64, mut stop: impl FnMut(&Net) -> bool) -> bool {
        let mut rng = Rng::new(seed);
        for _ in 0..1_000_000 {
            if stop(self) {
                return true;
            }
            let busy: Vec<(usize, usize)> = self
                .links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, _)| *k)
                .collect();
            if busy.is_empty() {
                if self.fire_next_timers() {
                    continue;
                }
                return false;
            }
            let (from, to) = busy[rng.below(busy.len() as u64) as usize];
            self.deliver(from, to);
        }
        panic!("network did not go quiet");
    }

    /// Carries messages until none is in flight and no timer is due within a minute, each node
    /// sending one message at a time as over one uplink: a seeded random node with messages
    /// queued sends the first of them in the best class (the oldest among equals), so a
    /// node's sends wait behind its earlier ones while other nodes send theirs.
    pub fn run_uplinks_until_quiet(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        for _ in 0..1_000_000 {
            let mut busy: Vec<usize> = self
                .links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|((from, _), _)| *from)
                .collect();
            busy.dedup();
            if busy.is_empty() {
                if self.fire_next_timers() {
                    continue;
                }
                return;
            }
            let from = busy[rng.below(busy.len() as u64) as usize];
            let (&(_, to), _) = self
                .links
                .range((from, 0)..(from + 1, 0))
                .filter_map(|(k, q)| q.front().map(|(seq, class, _)| (k, (*class, *seq))))
                .min_by_key(|(_, order)| *order)
                .expect("a busy node has a queued message");
            self.deliver(from, to);
        }
        panic!("network did not go quiet");
    }

    /// Advances to the earliest timer if one is due within a minute and fires every timer due
    /// then; returns whether it did.
    fn fire_next_timers(&mut self) -> bool {
        let next = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
        match next {
            Some(t) if t <= self.now + Duration::from_secs(60) => {
                self.now = t.max(self.now);
                for i in 0..self.nodes.len() {
                    if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                        self.input(i, Input::Timeout);
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Delivers the first message queued from node `from` to node `to`, 100 µs on.
    fn deliver(&mut self, from: usize, to: usize) {
        let (_, _, msg) = self
            .links
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        self.now = self.now + Duration::from_micros(100);
        self.input(
            to,
            Input::Message {
                from: id(from),
                msg,
            },
        );
    }

    /// Whether node `a` may send to node `b`.
    pub fn is_connected(&self, a: usize, b: usize) -> bool {
        self.connected.get(&(a, b)).copied().unwrap_or(false)
    }

    pub fn delivered_count(&self, node: usize, id: &ArtifactId) -> usize {
        self.deliveries[node].iter().filter(|a| a.id == *id).count()
    }

    pub fn check_integrity(&self) -> Result<(), String> {
        for (n, list) in self.deliveries.iter().enumerate() {
            for a in list {
                let chunk_size = self.nodes[n].config().chunk_size;
                if p2p_core::chunks::content_id(&a.data, chunk_size) != a.id {
                    return Err(format!("node {n} got corrupt {:?}", a.id));
                }
            }
        }
        Ok(())
    }

    pub fn transcript_hash(&self) -> u64 {
        self.transcript.finish()
    }
}

/// A chunk size no test artifact reaches: artifacts stay whole (for tests of whole-artifact
/// requests).
pub const WHOLE: u32 = u32::MAX;

/// `ms` milliseconds after the epoch.
pub fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

/// The disconnects among `outs`: (peer, reason).
pub fn disconnects(outs: &[Output]) -> Vec<(NodeId, p2p_core::DisconnectReason)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Disconnect { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}
