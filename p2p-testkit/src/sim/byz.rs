//! Scripted byzantine actors: members of the subnet that are not cores and break the protocol on
//! purpose, so the checks can see the honest nodes bound their state and cut them off.

use super::rng::Rng;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use p2p_core::{Advert, ArtifactId, Class, Kind, Message};
use std::collections::VecDeque;

/// The misbehaviour of a byzantine actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByzKind {
    /// Advertises artifacts and answers requests with bytes that do not match the advert, and
    /// pushes artifacts whose bytes do not hash to their id. Honest nodes must penalize it and
    /// cut it off.
    BadData,
    /// Re-advertises everything it hears (so it looks like a source of every artifact) and never
    /// answers a request. Honest nodes must time out and fetch elsewhere.
    Silent,
    /// Advertises artifacts it does not have and answers `NotFound`.
    Phantom,
    /// Floods adverts of one kind past every per-peer limit. Honest nodes must cut it off.
    Flood,
    /// Advertises batches of artifacts it does not have and withdraws them again, over and over.
    Churn,
    /// Sends malformed messages: an attr above the limit, an advert above the size limit, too
    /// many adverts in one message, an answer to a request never made, or a message above the
    /// transport's size limit (one per connection, in turn). Honest nodes must cut it off.
    Malformed,
}

impl ByzKind {
    /// Every kind.
    pub const ALL: [ByzKind; 6] = [
        ByzKind::BadData,
        ByzKind::Silent,
        ByzKind::Phantom,
        ByzKind::Flood,
        ByzKind::Churn,
        ByzKind::Malformed,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            ByzKind::BadData => "bad-data",
            ByzKind::Silent => "silent",
            ByzKind::Phantom => "phantom",
            ByzKind::Flood => "flood",
            ByzKind::Churn => "churn",
            ByzKind::Malformed => "malformed",
        }
    }
}

/// The honest nodes' limits, which the actor aims just past.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_attr_len: usize,
    pub max_artifact_size: u64,
    pub max_adverts_per_message: usize,
    pub max_message_size: usize,
}

/// Remembered adverts, bounded.
const MEMORY: usize = 4096;
/// Fake adverts sent per batch.
const BATCH: usize = 16;

pub(crate) type Sends = Vec<(u32, Message, Class)>;

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
        }
    }

    /// Whether it acts on a timer (and has budget left).
    pub fn wants_ticks(&self) -> bool {
        self.budget > 0
            && !self.peers.is_empty()
            && matches!(
                self.kind,
                ByzKind::Phantom | ByzKind::Flood | ByzKind::Churn
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

    pub fn on_connect(&mut self, peer: u32, out: &mut Sends) {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
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
                out.push((peer, msg, Class::Control));
            }
            ByzKind::Phantom | ByzKind::Flood | ByzKind::Churn => {}
        }
    }

    pub fn on_disconnect(&mut self, peer: u32) {
        self.peers.retain(|p| *p != peer);
    }

    pub fn on_message(&mut self, from: u32, msg: Message, out: &mut Sends) {
        match (self.kind, msg) {
            (ByzKind::Silent, Message::Adverts(adverts)) => self.echo(from, adverts, out),
            (ByzKind::Silent, Message::Push { advert, .. }) => self.echo(from, vec![advert], out),
            (ByzKind::BadData, Message::Request { req_id, id, .. }) => {
                let size = self.fake.get(&id).copied().unwrap_or(64).min(1 << 20);
                let data = Bytes::from(self.rng.bytes(size as usize));
                out.push((from, Message::Response { req_id, id, data }, Class::Normal));
            }
            (
                ByzKind::Phantom | ByzKind::Churn | ByzKind::Malformed,
                Message::Request { req_id, id, .. },
            ) => {
                out.push((from, Message::NotFound { req_id, id }, Class::Control));
            }
            _ => {}
        }
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
            ByzKind::BadData | ByzKind::Silent | ByzKind::Malformed => {}
        }
    }
}
