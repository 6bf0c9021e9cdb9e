//! Progress under hostile members: while members advertise what they never serve, fill the
//! shared tables, answer slowly or push what nobody asked for, an honest artifact is still
//! requested from an honest advertiser within a stated bound, tables stay bounded and nothing
//! honest is lost.
//!
//! The bound: an honest artifact advertised by an honest peer is requested from it within one
//! request timeout of the attackers' largest advertised artifact (the time their requests can
//! hold the global in-flight limits), at every priority, whatever one or f = floor((n-1)/3)
//! members advertise. When attackers advertise the honest artifact too, each retry goes to a
//! keyed-random source, so the number of timeouts before an honest source is asked averages
//! under two.

use crate::support::id;
use p2p_core::{
    Advert, Artifact, ArtifactId, Bytes, Config, Decision, DisconnectReason, Input, Kind, Message,
    Node, NodeId, Output, Priority, PriorityFnRef, Time,
};
use quickcheck::{QuickCheck, TestResult};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How an attacking member behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Advertises artifacts it never serves and never answers a request.
    Silent,
    /// Advertises artifacts it never serves and answers each request with not-found just before
    /// its deadline, then advertises the id again: it keeps its requests counted as long as it
    /// can.
    Slow,
    /// Advertises artifacts it never serves and answers not-found after 200 ms, then advertises
    /// the id again.
    Phantom,
}

/// The priority function of these tests: the advert's first attr byte is its priority.
fn by_attr() -> PriorityFnRef {
    PriorityFnRef::new(|a: &Advert| Decision::Fetch(Priority(a.attr.first().copied().unwrap_or(0))))
}

fn fake_advert(attacker: usize, i: usize, priority: Priority, size: u64) -> Advert {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    id[8..16].copy_from_slice(&(attacker as u64).to_le_bytes());
    id[31] = 0xaa;
    Advert {
        id: ArtifactId(id),
        kind: Kind((i % 3) as u16),
        size,
        attr: Bytes::from(vec![priority.0]),
    }
}

fn honest_artifact(n: u8, priority: Priority) -> Artifact {
    Artifact::new(Kind(0), vec![priority.0], vec![n; 3000])
}

/// One node under test (id 0), its peers 1..n, of which `attackers` are hostile. Honest peers
/// answer every request at once from what they advertised.
struct Bench {
    node: Node,
    cfg: Config,
    now: Time,
    attackers: HashMap<NodeId, Attack>,
    honest_store: HashMap<ArtifactId, Artifact>,
    /// Messages to deliver to the node later: (time, order) -> (from, message).
    later: BTreeMap<(Time, u64), (NodeId, Message)>,
    order: u64,
    /// Requests the node sent: (time, peer, artifact).
    requests: Vec<(Time, NodeId, ArtifactId)>,
    delivered: Vec<ArtifactId>,
    disconnected: Vec<(NodeId, DisconnectReason)>,
    max_tables: p2p_core::TableSizes,
}

impl Bench {
    fn new(cfg: Config, n: usize, attackers: &[(usize, Attack)]) -> Self {
        let mut node = Node::new(id(0), cfg.clone());
        node.handle_input(
            Time::ZERO,
            Input::Membership {
                version: 1,
                members: (0..n).map(id).collect(),
            },
        )
        .unwrap();
        let mut b = Bench {
            node,
            cfg,
            now: Time::ZERO,
            attackers: attackers.iter().map(|(i, a)| (id(*i), *a)).collect(),
            honest_store: HashMap::new(),
            later: BTreeMap::new(),
            order: 0,
            requests: Vec::new(),
            delivered: Vec::new(),
            disconnected: Vec::new(),
            max_tables: Default::default(),
        };
        for p in 1..n {
            b.input(Input::PeerConnected(id(p)));
        }
        b
    }

    fn input(&mut self, input: Input) {
        self.node.handle_input(self.now, input).unwrap();
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send {
                    to,
                    msg: Message::Request { req_id, id, .. },
                    ..
                } => {
                    self.requests.push((self.now, to, id));
                    self.answer(to, req_id, id);
                }
                Output::Deliver { artifact, .. } => self.delivered.push(artifact.id),
                Output::Disconnect { peer, reason } => self.disconnected.push((peer, reason)),
                _ => {}
            }
        }
        let t = self.node.table_sizes();
        let peers = self.node.connected_peers().count();
        assert_eq!(t.exceeded(&self.cfg, peers), vec![], "tables within bounds");
        self.max_tables.pending_downloads =
            self.max_tables.pending_downloads.max(t.pending_downloads);
        self.max_tables.in_flight = self.max_tables.in_flight.max(t.in_flight);
    }

    fn send_later(&mut self, at: Time, from: NodeId, msg: Message) {
        self.order += 1;
        self.later.insert((at, self.order), (from, msg));
    }

    fn answer(&mut self, to: NodeId, req_id: u64, id: ArtifactId) {
        let soon = self.now + Duration::from_millis(1);
        match self.attackers.get(&to) {
            None => {
                let msg = match self.honest_store.get(&id) {
                    Some(a) => Message::Response {
                        req_id,
                        id,
                        data: a.data.clone(),
                    },
                    None => Message::NotFound { req_id, id },
                };
                self.send_later(soon, to, msg);
            }
            Some(Attack::Silent) => {}
            Some(attack) => {
                let size = 2000;
                let at = match attack {
                    Attack::Slow => {
                        self.now + (self.cfg.request_timeout(size) - Duration::from_millis(1))
                    }
                    _ => self.now + Duration::from_millis(200),
                };
                self.send_later(at, to, Message::NotFound { req_id, id });
                // Advertise it again at once after, to keep the slot busy.
                let mut advert = fake_advert(0, 0, Priority::URGENT, size);
                advert.id = id;
                self.send_later(at, to, Message::Adverts(vec![advert]));
            }
        }
    }

    /// Runs until `until`, delivering scheduled messages and firing the node's timer.
    fn run_until(&mut self, until: Time) {
        loop {
            let next_msg = self.later.keys().next().map(|k| k.0);
            let next_timer = self.node.poll_timeout();
            let next = [next_msg, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    if next_msg == Some(t) {
                        let key = *self.later.keys().next().unwrap();
                        let (from, msg) = self.later.remove(&key).unwrap();
                        if self.node.connected_peers().any(|p| *p == from) {
                            self.input(Input::Message { from, msg });
                        }
                    } else {
                        self.input(Input::Timeout);
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// `from` advertises `adverts` in messages of at most 1,000.
    fn advertise(&mut self, from: NodeId, adverts: Vec<Advert>) {
        for chunk in adverts.chunks(1000) {
            self.input(Input::Message {
                from,
                msg: Message::Adverts(chunk.to_vec()),
            });
        }
    }

    /// An honest peer advertises `a`; returns when it was advertised.
    fn honest_advert(&mut self, from: NodeId, a: &Artifact) -> Time {
        self.honest_store.insert(a.id, a.clone());
        self.advertise(from, vec![a.advert()]);
        self.now
    }

    /// When `id` was first requested from a peer that is not an attacker.
    fn first_honest_request(&self, id: &ArtifactId) -> Option<Time> {
        self.requests
            .iter()
            .find(|(_, p, a)| a == id && !self.attackers.contains_key(p))
            .map(|(t, _, _)| *t)
    }

    fn timeouts_before_honest(&self, id: &ArtifactId) -> usize {
        self.requests
            .iter()
            .take_while(|(_, p, _)| self.attackers.contains_key(p))
            .filter(|(_, _, a)| a == id)
            .count()
    }
}

fn config() -> Config {
    Config {
        priority_fn: by_attr(),
        seed: 0x5eed,
        ..Config::default()
    }
}

const PRIORITIES: [Priority; 3] = [Priority::BULK, Priority::NORMAL, Priority::URGENT];

/// Runs one attack: `attackers` of `n` members each advertise `per_attacker` never-served
/// artifacts at `attack_priority` and keep at it for five seconds; then an honest peer
/// advertises an artifact at `honest_priority`. Returns the delay until it is requested from
/// the honest peer, and the bench.
fn attack_then_honest(
    n: usize,
    attackers: &[(usize, Attack)],
    per_attacker: usize,
    attack_priority: Priority,
    honest_priority: Priority,
) -> (Option<Duration>, Bench) {
    let mut b = Bench::new(config(), n, attackers);
    for (i, _) in attackers {
        let adverts = (0..per_attacker)
            .map(|k| fake_advert(*i, k, attack_priority, 2000))
            .collect();
        b.advertise(id(*i), adverts);
    }
    b.run_until(Time::from_millis(5_000));
    let honest = (1..n)
        .find(|p| attackers.iter().all(|(a, _)| a != p))
        .unwrap();
    let x = honest_artifact(1, honest_priority);
    let t0 = b.honest_advert(id(honest), &x);
    // Past the bound, and long enough for the honest answer to arrive.
    b.run_until(t0 + b.cfg.request_timeout(2000) + Duration::from_millis(100));
    let delay = b
        .first_honest_request(&x.id)
        .map(|t| t.saturating_since(t0));
    assert!(b.delivered.contains(&x.id), "the honest artifact arrives");
    (delay, b)
}

#[test]
fn a_member_advertising_thousands_it_never_serves_holds_no_honest_download_back() {
    for ap in PRIORITIES {
        for hp in PRIORITIES {
            let (delay, b) = attack_then_honest(3, &[(1, Attack::Silent)], 5000, ap, hp);
            let bound = b.cfg.request_timeout(2000);
            assert!(
                delay.is_some_and(|d| d <= bound),
                "attack at {ap:?}, honest at {hp:?}: requested after {delay:?}, bound {bound:?}"
            );
        }
    }
}

#[test]
fn f_colluding_members_holding_every_slot_delay_an_honest_request_at_most_one_timeout() {
    // n = 31, f = 10: ten attackers at their per-peer in-flight limit would hold 1,280 of the
    // 1,024 global slots without fair shares.
    let n = 31;
    for attack in [Attack::Silent, Attack::Slow, Attack::Phantom] {
        let attackers: Vec<(usize, Attack)> = (1..=10).map(|i| (i, attack)).collect();
        for ap in PRIORITIES {
            for hp in [Priority::BULK, Priority::URGENT] {
                let (delay, b) = attack_then_honest(n, &attackers, 2000, ap, hp);
                let bound = b.cfg.request_timeout(2000);
                assert!(
                    delay.is_some_and(|d| d <= bound),
                    "{attack:?} at {ap:?}, honest at {hp:?}: requested after {delay:?}, bound {bound:?}"
                );
            }
        }
    }
}

#[test]
fn squatters_filling_the_download_table_cannot_keep_honest_adverts_out() {
    // Two members just under their per-peer limit would fill a shared table of 1,000; each
    // member is owed a share of it.
    let cfg = Config {
        max_pending_downloads: 1000,
        max_adverts_per_peer: 600,
        max_adverts_per_peer_per_kind: 600,
        ..config()
    };
    let mut b = Bench::new(cfg, 4, &[(1, Attack::Silent), (2, Attack::Silent)]);
    for i in [1, 2] {
        let adverts = (0..599)
            .map(|k| fake_advert(i, k, Priority::URGENT, 2000))
            .collect();
        b.advertise(id(i), adverts);
    }
    assert!(
        b.disconnected.is_empty(),
        "the squatters kept within their limits"
    );
    let squatted = b.node.table_sizes().pending_downloads;
    assert!(squatted < 1000, "squatters hold {squatted} of 1,000");
    let honest: Vec<Artifact> = (0..100)
        .map(|i| honest_artifact(i, Priority::BULK))
        .collect();
    let t0 = b.now;
    for a in &honest {
        b.honest_store.insert(a.id, a.clone());
    }
    b.advertise(id(3), honest.iter().map(Artifact::advert).collect());
    b.run_until(t0 + Duration::from_secs(30));
    for a in &honest {
        assert!(b.delivered.contains(&a.id), "honest artifact lost");
    }
    assert!(b.max_tables.pending_downloads <= 1000);
}

#[test]
fn unsolicited_large_pushes_are_violations_and_never_delivered() {
    let mut b = Bench::new(config(), 3, &[]);
    let mut delivered_bytes = 0;
    for i in 0..20u8 {
        let a = Artifact::new(Kind(0), vec![0], vec![i; 4 << 20]);
        b.input(Input::Message {
            from: id(1),
            msg: Message::Push {
                advert: a.advert(),
                data: a.data.clone(),
            },
        });
        delivered_bytes = b.delivered.len() * (4 << 20);
    }
    assert_eq!(delivered_bytes, 0, "80 MiB of unsolicited pushes");
    assert!(matches!(
        b.disconnected[..],
        [(p, DisconnectReason::ProtocolViolation(_))] if p == id(1)
    ));
    // The other peer's small pushes still arrive.
    let small = Artifact::new(Kind(0), vec![0], vec![9; 500]);
    b.input(Input::Message {
        from: id(2),
        msg: Message::Push {
            advert: small.advert(),
            data: small.data.clone(),
        },
    });
    assert_eq!(b.delivered, vec![small.id]);
}

#[test]
fn relay_pool_is_bounded_in_bytes() {
    let cfg = Config {
        auto_relay: true,
        max_auto_relay_pool_bytes: 10_000,
        ..config()
    };
    let mut b = Bench::new(cfg, 2, &[]);
    let arts: Vec<Artifact> = (0..10)
        .map(|i| honest_artifact(i, Priority::NORMAL))
        .collect();
    for a in &arts {
        b.honest_advert(id(1), a);
    }
    b.run_until(Time::from_millis(1000));
    assert_eq!(b.delivered.len(), 10, "every artifact is delivered");
    let pooled = arts.iter().filter(|a| b.node.has_artifact(&a.id)).count();
    assert_eq!(pooled, 3, "3,000-byte artifacts: three fit in 10,000 bytes");
    assert!(b.node.metrics().pool_bytes <= 10_000);
}

#[test]
fn colluders_advertising_the_honest_artifact_too_cost_under_two_timeouts_on_average() {
    // n = 13, f = 4 silent attackers that also advertise the honest artifact, first. Retries go
    // to keyed-random sources, so the expected number of attackers asked before an honest
    // source is about f / (n - 1 - f + 1) < 1.
    let n = 13;
    let attackers: Vec<(usize, Attack)> = (1..=4).map(|i| (i, Attack::Silent)).collect();
    let (mut total, mut worst, runs) = (0, 0, 200);
    for seed in 0..runs {
        let cfg = Config { seed, ..config() };
        let mut b = Bench::new(cfg, n, &attackers);
        let x = honest_artifact(7, Priority::NORMAL);
        b.honest_store.insert(x.id, x.clone());
        for (i, _) in &attackers {
            b.advertise(id(*i), vec![x.advert()]);
        }
        for p in 5..n {
            b.advertise(id(p), vec![x.advert()]);
        }
        b.run_until(Time::from_millis(60_000));
        assert!(b.delivered.contains(&x.id), "seed {seed}: not delivered");
        let k = b.timeouts_before_honest(&x.id);
        total += k;
        worst = worst.max(k);
    }
    let mean = total as f64 / runs as f64;
    assert!(mean < 2.0, "mean timeouts before an honest source: {mean}");
    assert!(worst <= 4, "at most one per attacker: {worst}");
}

#[test]
fn honest_delivery_bound_holds_for_arbitrary_attacks() {
    fn prop(n: u8, f: u8, kinds: Vec<u8>, per: u16, ap: u8, hp: u8) -> TestResult {
        let n = (n % 10) as usize + 4;
        let max_f = (n - 1) / 3;
        let f = (f as usize % max_f) + 1;
        let attackers: Vec<(usize, Attack)> = (1..=f)
            .map(|i| {
                let k = kinds.get(i).copied().unwrap_or(0);
                let a = [Attack::Silent, Attack::Slow, Attack::Phantom][k as usize % 3];
                (i, a)
            })
            .collect();
        let per = per as usize % 3000 + 1;
        let (delay, b) = attack_then_honest(n, &attackers, per, Priority(ap), Priority(hp));
        let bound = b.cfg.request_timeout(2000);
        TestResult::from_bool(delay.is_some_and(|d| d <= bound))
    }
    QuickCheck::new()
        .tests(20)
        .quickcheck(prop as fn(u8, u8, Vec<u8>, u16, u8, u8) -> TestResult);
}

#[test]
fn a_first_advert_with_unwanted_metadata_does_not_hold_back_the_honest_one() {
    // The liar advertises the honest artifact first with a priority byte the application says
    // `Later` to; the honest advert of the same id is wanted now.
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|a: &Advert| match a.attr.first() {
            Some(0) => Decision::Later,
            _ => Decision::Fetch(Priority::NORMAL),
        }),
        ..config()
    };
    let mut b = Bench::new(cfg, 3, &[(1, Attack::Silent)]);
    let x = honest_artifact(3, Priority::NORMAL);
    let mut lie = x.advert();
    lie.attr = Bytes::from_static(&[0]);
    b.advertise(id(1), vec![lie]);
    let t0 = b.honest_advert(id(2), &x);
    // The liar is a source too: it may be asked first and time out once.
    let bound = b.cfg.request_timeout(x.data.len() as u64);
    b.run_until(t0 + bound + Duration::from_millis(100));
    let asked = b
        .first_honest_request(&x.id)
        .map(|t| t.saturating_since(t0));
    assert!(asked.is_some_and(|d| d <= bound), "asked after {asked:?}");
    assert!(b.delivered.contains(&x.id));
}
