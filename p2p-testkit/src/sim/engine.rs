//! The event loop: it runs the nodes (honest cores and byzantine actors) over the [`Network`],
//! plays the scenario's actions and [`Faults`], and feeds the [`Checks`]; at the end it assesses
//! delivery and assembles the [`Report`].
//!
//! Invariants:
//! - every input to an honest core goes through `pending`, in order, and is fed by
//!   `run_pending` after the event that caused it, so a core never runs inside another's step;
//! - a slot's incarnation `inc` grows at every start and crash; events of an older incarnation
//!   (timers, ticks, frames leaving its uplink) are ignored;
//! - an honest core's timer event is scheduled for the time its `poll_timeout` asked for, once.

use super::byz::{Byz, ByzKind, Limits, Sends};
use super::checks::{Checks, Components, Deliveries, Outcome, urgent_latency};
use super::faults::{Faults, RandomFaults};
use super::network::{Cpu, Due, Enqueued, Layer, Network, TailDrop, nanos};
use super::queue::{Delivery, EvKind, FrameEv, Queue};
use super::record::{ActiveTrace, Recorder};
use super::report::{ArtifactFigure, Check, Cutoff, Report};
use super::rng::{Rng, derive};
use super::scenario::{Action, Fault, PublishSpec, Scenario, Topology};
use super::{BULK, URGENT, encoded_len};
use hashbrown::HashMap;
use p2p_core::{
    Advert, Artifact, ArtifactId, Class, Config, Decision, Input, InputError, Message, Node,
    NodeId, Output, Revocable, Time,
};
use p2p_transport::codec::class_allowed;
use p2p_transport::peers::{CloseCause, PeerPolicy, PolicyAction, Refusal};
use p2p_transport::reassembly::{BudgetSlot, ReassemblyBudget};
use sha2::Digest;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// What runs in a node's slot.
enum Actor {
    Honest(Box<Node>),
    Byz(Box<Byz>),
    Down,
}

/// One node: its actor and the state of its current incarnation.
struct Slot {
    actor: Actor,
    byz: Option<ByzKind>,
    inc: u32,
    timer_at: Option<u64>,
    /// An honest node's connection policy (p2p-transport's `PeerPolicy`) over its links, and
    /// the time its timer is armed for.
    policy: Option<Box<PeerPolicy>>,
    policy_at: Option<u64>,
    delivered: HashMap<ArtifactId, u32>,
    /// The trace of this incarnation, when the node is recorded.
    trace: Option<Box<ActiveTrace>>,
    /// An honest node's node-wide reassembly budget (p2p-transport's `ReassemblyBudget`).
    budget: Option<ReassemblyBudget>,
}

/// What an honest receiver holds of one connection's messages under reassembly: its account
/// in the node's budget and, per message, its stream number, announced total and the time
/// its last frame was through.
struct Reassembly {
    epoch: u32,
    slot: BudgetSlot,
    partials: Vec<(u32, usize, u64)>,
}

/// A published artifact.
struct ArtInfo {
    id: ArtifactId,
    kind: p2p_core::Kind,
    size: usize,
    origin: usize,
    at: u64,
    attr: p2p_core::Bytes,
    /// Per node: first delivery latency in nanoseconds plus one (0: never).
    first: Vec<u64>,
    /// Its chunks leaving the origin (empty when it is not chunked).
    spread: Spread,
}

/// How the chunks of a chunked artifact left its origin: which went through to a peer (a
/// `Chunk` from the origin handed to the peer), and when the first and the last did.
#[derive(Default)]
struct Spread {
    out: Vec<bool>,
    count: u32,
    /// Times (nanoseconds plus one, 0: not yet) the first chunk and every chunk were out.
    first_at: u64,
    all_at: u64,
    /// `Chunk` messages of it the origin queued (answers it cancelled before they started too).
    sends: u64,
}

struct Sim<'a> {
    sc: &'a Scenario,
    cfg: Config,
    q: Queue,
    net: Network,
    faults: Faults,
    checks: Checks,
    recorder: Recorder,
    slots: Vec<Slot>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    pending: VecDeque<(u32, Input)>,
    publishes: Vec<PublishSpec>,
    actions: Vec<Action>,
    arts: Vec<Option<ArtInfo>>,
    art_by_id: HashMap<ArtifactId, usize>,
    inputs: u64,
    cutoffs: Vec<Cutoff>,
    /// Scratch buffer of a byzantine actor's sends.
    sends: Sends,
    /// With [`Topology::Degree`]: each node's neighbours in the graph over the current members.
    derived: Option<Vec<Vec<u32>>>,
    /// Per direction (sender, honest receiver) of an up connection: its reassembly state.
    rx: HashMap<(u32, u32), Reassembly>,
    /// The largest node-wide reassembly reservation seen at an honest node, and the cap.
    reassembly_peak: (usize, usize),
}

/// Chunks of an artifact of `size` bytes: 0 if it fits one chunk (it is not chunked).
fn chunk_count(size: usize, chunk_size: u32) -> u32 {
    if size <= chunk_size.max(1) as usize {
        0
    } else {
        let chunk = p2p_core::chunks::chunk_size_for(size as u64, chunk_size).max(1) as usize;
        u32::try_from(size.div_ceil(chunk)).unwrap_or(u32::MAX)
    }
}

/// The `origin-spread` check: every chunk of every chunked artifact published before `by`
/// went through from its origin to some peer by `by`.
fn spread_check(figures: &[ArtifactFigure], by: Duration) -> Check {
    let by_ns = nanos(by);
    let mut late = Vec::new();
    let mut last = Duration::ZERO;
    for f in figures {
        let published = f.published_at.as_nanos();
        if f.chunks == 0 || published >= by_ns {
            continue;
        }
        match f.all_chunks_out {
            Some(d) if published + nanos(d) <= by_ns => {
                last = last.max(Duration::from_nanos(published) + d);
            }
            Some(d) => late.push(format!(
                "artifact #{}: its {} chunks were out of the origin at {:.1} ms, after {:.1} ms",
                f.index,
                f.chunks,
                (Duration::from_nanos(published) + d).as_secs_f64() * 1e3,
                by.as_secs_f64() * 1e3
            )),
            None => late.push(format!(
                "artifact #{}: not all of its {} chunks ever left the origin",
                f.index, f.chunks
            )),
        }
    }
    Check {
        name: "origin-spread",
        ok: late.is_empty(),
        detail: if late.is_empty() {
            format!(
                "every chunk out of its origin by {:.1} ms (the last at {:.1} ms)",
                by.as_secs_f64() * 1e3,
                last.as_secs_f64() * 1e3
            )
        } else {
            late.join("; ")
        },
    }
}

/// Runs `sc` and checks its properties.
pub(crate) fn run(sc: &Scenario) -> Report {
    let mut sim = Sim::new(sc);
    let until = sim.setup();
    sim.main_loop(until);
    sim.finish()
}

/// The id of node `i` in a run of `seed`.
fn node_id(seed: u64, i: usize) -> NodeId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&derive(seed, 1 << 40 | i as u64).to_le_bytes());
    id[8..12].copy_from_slice(&(i as u32).to_le_bytes());
    NodeId(id)
}

/// Feeds `input` to `node` at `t`, recording it in `trace`, and drains its outputs into `outs`.
fn step(
    node: &mut Node,
    mut trace: Option<&mut ActiveTrace>,
    t: Time,
    input: Input,
    outs: &mut Vec<Output>,
) -> Result<(), InputError> {
    if let Some(trace) = trace.as_deref_mut() {
        trace.input(t, &input);
    }
    let result = node.handle_input(t, input);
    if let (Err(e), Some(trace)) = (&result, trace.as_deref_mut()) {
        trace.input_error(t, e);
    }
    if let Some(trace) = trace.as_deref_mut() {
        trace.decisions(t);
    }
    while let Some(o) = node.poll_output() {
        if let Some(trace) = trace.as_deref_mut() {
            trace.output(t, &o);
        }
        outs.push(o);
    }
    result
}

/// Setting up a run: nodes, topology, actions.
impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario) -> Self {
        let pfn = sc.priority_fn();
        let mut cfg = Config {
            priority_fn: pfn.clone(),
            auto_relay: sc.relays(),
            ..Config::default()
        };
        if let Some(f) = &sc.config_fn {
            f(&mut cfg);
        }
        let profile = Arc::ptr_eq(&cfg.priority_fn.0, &pfn.0).then(|| sc.priority_profile());
        let n = sc.nodes;
        let ids: Vec<NodeId> = (0..n).map(|i| node_id(sc.seed, i)).collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let slots = (0..n)
            .map(|i| Slot {
                actor: Actor::Down,
                byz: sc.byzantine.iter().find(|(j, _)| *j == i).map(|(_, k)| *k),
                inc: 0,
                timer_at: None,
                policy: None,
                policy_at: None,
                delivered: HashMap::new(),
                trace: None,
                budget: None,
            })
            .collect();
        let bandwidths = (0..n).map(|i| {
            sc.bandwidth
                .iter()
                .rev()
                .find(|(j, _)| *j == i)
                .map_or(sc.link.bandwidth_bps, |(_, b)| *b)
        });
        let rng = Rng::new(derive(sc.seed, 1));
        let members = (0..n).map(|i| sc.is_initial_member(i)).collect();
        let watched = (0..n).map(|i| !sc.byzantine.iter().any(|(j, _)| *j == i));
        let write_stall = Some((sc.write_stall_timeout, watched.collect()));
        let conn = sc.conn_config();
        conn.validate()
            .expect("the scenario's connection settings are valid");
        let layers = (0..n)
            .map(|i| match sc.byzantine.iter().find(|(j, _)| *j == i) {
                None => Layer::Honest,
                Some((_, ByzKind::Mute)) => Layer::Bare,
                Some(_) => Layer::Sender,
            })
            .collect();
        let timers = Some((conn, layers));
        Sim {
            sc,
            cfg,
            q: Queue::default(),
            net: {
                let mut net = Network::new(
                    bandwidths,
                    sc.link.jitter,
                    sc.congestion,
                    write_stall,
                    timers,
                    rng,
                );
                if let Some(cpu) = sc.cpu {
                    net.set_cpu(Cpu::new(cpu.cores, cpu.cost));
                }
                if let Some((queue, extra, recovery)) = sc.tail_drop {
                    net.set_tail_drop(TailDrop {
                        queue: nanos(queue),
                        extra,
                        recovery: nanos(recovery).max(1),
                    });
                }
                net
            },
            faults: Faults::new(members, sc.byz_period),
            checks: Checks::default(),
            recorder: Recorder::new(profile),
            slots,
            ids,
            index,
            pending: VecDeque::new(),
            publishes: sc.publishes.clone(),
            actions: Vec::new(),
            arts: Vec::new(),
            art_by_id: HashMap::new(),
            inputs: 0,
            cutoffs: Vec::new(),
            sends: Vec::new(),
            derived: None,
            rx: HashMap::new(),
            reassembly_peak: (0, 0),
        }
    }

    /// Builds the topology, the action list and the initial members; returns the end time.
    fn setup(&mut self) -> u64 {
        let sc = self.sc;
        self.build_topology();
        let honest: Vec<usize> = (0..sc.nodes)
            .filter(|&i| self.honest(i) && sc.is_initial_member(i))
            .collect();
        let mut actions: Vec<(Duration, Action)> = sc.actions.clone();
        actions.extend(self.workload_actions(&honest));
        if let Some((count, start, window)) = sc.random_faults {
            let plan = RandomFaults {
                count,
                start,
                window,
                honest: &honest,
                bandwidth_bps: sc.link.bandwidth_bps,
            };
            actions.extend(plan.plan(&self.net, &mut Rng::new(derive(sc.seed, 4))));
        }
        actions.sort_by_key(|(t, _)| *t);
        let last = actions.last().map_or(0, |(t, _)| nanos(*t));
        for (t, a) in actions {
            let i = self.actions.len();
            self.actions.push(a);
            self.q.push(nanos(t), EvKind::Action(i));
        }
        self.arts = (0..self.publishes.len()).map(|_| None).collect();
        for i in 0..sc.nodes {
            if self.faults.is_member(i) {
                self.start(i);
            }
        }
        for (a, b) in self.net.links_where(|_, _| true) {
            if self.linked(a, b) {
                self.connect(a, b);
            }
        }
        self.q
            .push(nanos(sc.sample_interval).max(1), EvKind::Sample);
        sc.duration
            .map_or(last.saturating_add(nanos(sc.settle)), nanos)
    }

    fn build_topology(&mut self) {
        let sc = self.sc;
        let n = sc.nodes;
        let latency = |k: (usize, usize)| {
            sc.link_latency
                .iter()
                .rev()
                .find(|(l, _)| *l == k)
                .map_or(sc.link.latency, |(_, d)| *d)
        };
        match &sc.topology {
            Topology::FullMesh => {
                for a in 0..n {
                    for b in a + 1..n {
                        self.net.add_link(a, b, latency);
                    }
                }
            }
            Topology::Random { degree } => {
                let mut rng = Rng::new(derive(sc.seed, 2));
                for a in 0..n {
                    self.net.add_link(a, (a + 1) % n, latency);
                }
                let draws = degree.saturating_sub(2).div_ceil(2);
                for a in 0..n {
                    for _ in 0..draws {
                        let b = rng.below(n as u64) as usize;
                        self.net.add_link(a, b, latency);
                    }
                }
            }
            Topology::Links(links) => {
                for &(a, b) in links {
                    self.net.add_link(a, b, latency);
                }
            }
            Topology::Degree(_) => self.derive_graph(),
        }
    }

    /// With [`Topology::Degree`]: derives the graph over the current members as the nodes do,
    /// and adds the links it needs.
    fn derive_graph(&mut self) {
        let sc = self.sc;
        let Topology::Degree(k) = sc.topology else {
            return;
        };
        let members = self.faults.member_ids(&self.ids);
        let graph = p2p_transport::topology::Topology::Degree(k)
            .graph(&members)
            .unwrap_or_default();
        let mut adj = vec![Vec::new(); sc.nodes];
        for (a, nbrs) in &graph {
            let ai = self.index[a];
            adj[ai as usize] = nbrs.iter().map(|b| self.index[b]).collect();
            adj[ai as usize].sort_unstable();
        }
        let latency = |k: (usize, usize)| {
            sc.link_latency
                .iter()
                .rev()
                .find(|(l, _)| *l == k)
                .map_or(sc.link.latency, |(_, d)| *d)
        };
        for (a, nbrs) in adj.iter().enumerate() {
            for &b in nbrs {
                self.net.add_link(a, b as usize, latency);
            }
        }
        self.derived = Some(adj);
    }

    /// Whether `a` and `b` may connect: a link of the topology (for a derived one, an edge of
    /// the current graph, not a link left from an earlier membership).
    fn linked(&self, a: u32, b: u32) -> bool {
        self.derived
            .as_ref()
            .is_none_or(|d| d[a as usize].binary_search(&b).is_ok())
    }

    /// Adds the scenario's generated workload, published by the `honest` nodes, to the
    /// publishes; returns its actions.
    fn workload_actions(&mut self, honest: &[usize]) -> Vec<(Duration, Action)> {
        let Some(w) = &self.sc.workload else {
            return Vec::new();
        };
        let mut rng = Rng::new(derive(self.sc.seed, 3));
        let window = nanos(w.window).max(1);
        let mut actions = Vec::new();
        let publishes = &mut self.publishes;
        let mut add = |node: usize, kind, size, rng: &mut Rng| {
            let at = w.start + Duration::from_nanos(rng.below(window));
            actions.push((at, Action::Publish(publishes.len())));
            publishes.push(PublishSpec { node, kind, size });
        };
        for &node in honest {
            for _ in 0..w.urgent_per_node {
                add(node, URGENT, w.urgent_size, &mut rng);
            }
        }
        if !honest.is_empty() {
            for _ in 0..w.bulk_count {
                let node = honest[rng.below(honest.len() as u64) as usize];
                add(node, BULK, w.bulk_size, &mut rng);
            }
        }
        actions
    }
}

/// Nodes: starting them, connecting them, feeding them.
impl Sim<'_> {
    fn honest(&self, i: usize) -> bool {
        self.slots[i].byz.is_none()
    }

    fn alive(&self, i: usize) -> bool {
        !matches!(self.slots[i].actor, Actor::Down)
    }

    fn runs_core(&self, i: u32) -> bool {
        matches!(self.slots[i as usize].actor, Actor::Honest(_))
    }

    /// `i`'s neighbours in the topology: its links, or for a derived topology its neighbours
    /// in the current graph.
    fn neighbours(&self, i: usize) -> Vec<u32> {
        match &self.derived {
            Some(d) => d[i].clone(),
            None => self.net.neighbours(i).to_vec(),
        }
    }

    /// What a byzantine actor may send without being cut off for size alone.
    fn limits(&self) -> Limits {
        let c = &self.cfg;
        Limits {
            max_attr_len: c.max_attr_len,
            max_artifact_size: c.max_artifact_size,
            max_adverts_per_message: c.max_adverts_per_message,
            max_message_size: self.sc.max_message_size,
            max_adverts_per_peer: c.max_adverts_per_peer,
            max_adverts_per_peer_per_kind: c.max_adverts_per_peer_per_kind,
            push_threshold: c.push_threshold,
            max_buffered_bytes: self.sc.mux.max_buffered_bytes,
            max_partial_messages: self.sc.mux.max_partial_messages,
            chunk_size: c.chunk_size,
        }
    }

    /// Starts a fresh actor in slot `i` and tells it the membership.
    fn start(&mut self, i: usize) {
        let limits = self.limits();
        let slot = &mut self.slots[i];
        slot.inc += 1;
        let seed = derive(self.sc.seed, (i as u64) << 20 | slot.inc as u64);
        match slot.byz {
            Some(kind) => {
                let byz = Byz::new(kind, seed, limits, self.sc.byz_budget);
                slot.actor = Actor::Byz(Box::new(byz));
            }
            None => self.start_core(i, seed),
        }
    }

    /// Starts a fresh core with `seed` in slot `i`, recorded if the scenario says so.
    fn start_core(&mut self, i: usize, seed: u64) {
        let mut cfg = self.cfg.clone();
        cfg.seed = seed;
        let mut node = Box::new(Node::new(self.ids[i], cfg.clone()));
        if let Some((_, sink)) = self.sc.records.iter().rev().find(|(n, _)| *n == i) {
            let now = Time::from_nanos(self.q.now());
            let trace = &mut self.checks.trace;
            let active = self
                .recorder
                .open(i, self.ids[i], &mut node, cfg, now, sink, trace);
            self.slots[i].trace = active;
        }
        self.slots[i].actor = Actor::Honest(node);
        let members = self.faults.member_ids(&self.ids);
        let version = self.faults.version();
        self.pending
            .push_back((i as u32, Input::Membership { version, members }));
        let mut policy_cfg = self.sc.policy.clone();
        if let Topology::Degree(k) = self.sc.topology {
            policy_cfg.topology = p2p_transport::topology::Topology::Degree(k);
        }
        let policy = PeerPolicy::new(self.ids[i], policy_cfg, derive(seed, 7))
            .expect("the scenario's policy settings are valid");
        self.slots[i].policy = Some(Box::new(policy));
        self.slots[i].policy_at = None;
        let cap = self.sc.reassembly_cap.unwrap_or_else(|| {
            usize::try_from(self.cfg.max_in_flight_bytes)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
        });
        self.slots[i].budget = Some(ReassemblyBudget::new(cap));
        self.install_peers(i);
    }

    /// Gives honest node `i`'s policy its peers: the members it has a link to, or with a
    /// derived topology every member (its policy derives the graph itself).
    fn install_peers(&mut self, i: usize) {
        let now = Time::from_nanos(self.q.now());
        let version = self.faults.version();
        let peers: Vec<NodeId> = if self.derived.is_some() {
            self.faults.member_ids(&self.ids)
        } else {
            self.neighbours(i)
                .into_iter()
                .filter(|j| self.faults.is_member(*j as usize))
                .map(|j| self.ids[j as usize])
                .collect()
        };
        if let Some(p) = &mut self.slots[i].policy {
            p.set_members(now, version, peers);
        }
        self.run_policy(i as u32);
    }

    /// The ends of the link between `a` and `b`, the one that dials first: the lower node id,
    /// the policy's dial rule.
    fn dial_order(&self, a: u32, b: u32) -> (u32, u32) {
        if self.ids[a as usize] < self.ids[b as usize] {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// Carries out node `i`'s policy actions and arms its timer.
    fn run_policy(&mut self, i: u32) {
        while let Some(action) = self.slots[i as usize]
            .policy
            .as_mut()
            .and_then(|p| p.poll_action())
        {
            match action {
                PolicyAction::Dial(peer) => {
                    if let Some(&j) = self.index.get(&peer) {
                        self.connect(i, j);
                    }
                }
                PolicyAction::Close(peer) => {
                    if let Some(&j) = self.index.get(&peer) {
                        self.close(i, j, None);
                    }
                }
                PolicyAction::Prune(peer) => {
                    // The policy counts the connection closed already; its core hears of it.
                    if let Some(&j) = self.index.get(&peer) {
                        self.pending.push_back((i, Input::PeerDisconnected(peer)));
                        self.close_for(i, j, None, None, Some(i));
                    }
                }
            }
        }
        let now = self.q.now();
        let slot = &mut self.slots[i as usize];
        let due = slot
            .policy
            .as_ref()
            .and_then(|p| p.poll_timeout())
            .map(|t| t.as_nanos().max(now));
        if due.is_some() && due != slot.policy_at {
            slot.policy_at = due;
            let inc = slot.inc;
            if let Some(t) = due {
                self.q.push(t, EvKind::Policy { node: i, inc });
            }
        }
    }

    fn policy_timer(&mut self, node: u32, inc: u32) {
        let now = self.q.now();
        let slot = &mut self.slots[node as usize];
        if slot.inc != inc || slot.policy_at != Some(now) {
            return;
        }
        slot.policy_at = None;
        if let Some(p) = &mut slot.policy {
            p.handle_timeout(Time::from_nanos(now));
        }
        self.run_policy(node);
    }

    /// Tells every running core the next membership.
    fn broadcast_membership(&mut self) {
        let version = self.faults.next_version();
        let members = self.faults.member_ids(&self.ids);
        self.derive_graph();
        for i in 0..self.slots.len() {
            if self.honest(i) && self.alive(i) {
                let members = members.clone();
                self.pending
                    .push_back((i as u32, Input::Membership { version, members }));
                self.install_peers(i);
            }
        }
        // New edges whose dialing end runs no policy (a byzantine actor) come up here; the
        // honest dialers dialed theirs.
        if let Some(d) = &self.derived {
            let mut edges = Vec::new();
            for (a, nbrs) in d.iter().enumerate() {
                for &b in nbrs {
                    let (lo, _) = self.dial_order(a as u32, b);
                    if lo == a as u32 && self.slots[a].policy.is_none() {
                        edges.push((a as u32, b));
                    }
                }
            }
            for (a, b) in edges {
                self.connect(a, b);
            }
        }
    }

    /// Brings the link between `a` and `b` up if both run, are members and are not
    /// partitioned, and tells both.
    /// Honest ends admit the connection by their policies (a banned peer is refused); the
    /// lower id is the one that dials, and a failed dial is reported to its policy.
    fn connect(&mut self, a: u32, b: u32) {
        let (ai, bi) = (a as usize, b as usize);
        let (lo, hi) = self.dial_order(a, b);
        let now = Time::from_nanos(self.q.now());
        let refused = |s: &Self, me: u32, peer: u32| {
            s.slots[me as usize]
                .policy
                .as_ref()
                .is_some_and(|p| !p.may_connect(now, &s.ids[peer as usize]))
        };
        if a == b
            || !self.alive(ai)
            || !self.alive(bi)
            || !self.faults.is_member(ai)
            || !self.faults.is_member(bi)
            || self.faults.partitioned(a, b)
            || refused(self, a, b)
            || refused(self, b, a)
        {
            if let Some(p) = &mut self.slots[lo as usize].policy {
                p.dial_failed(now, self.ids[hi as usize]);
            }
            if a != b {
                self.run_policy(lo);
            }
            return;
        }
        // Each end that runs the connection layer sends its hello first; an honest end admits
        // the connection by its policy once the peer's hello arrived (`hello_arrived`).
        if self.net.connect(a, b, self.q.now()) {
            self.opened(a, b);
            self.opened(b, a);
            self.net.arm_timer(a, b, &mut self.q);
            for end in [a, b] {
                if self.alive(end as usize) && self.net.idle(end) {
                    self.start_frame(end);
                }
            }
        }
    }

    /// `peer`'s hello went through to `me`: an honest `me` admits the connection by its
    /// policy, as the drivers do once the hello exchange completed, and tells its core; or
    /// refuses it (a churning peer is banned) and closes it.
    fn hello_arrived(&mut self, peer: u32, me: u32) {
        let now = Time::from_nanos(self.q.now());
        let (lo, _) = self.dial_order(me, peer);
        let id = self.ids[peer as usize];
        let Some(p) = &mut self.slots[me as usize].policy else {
            return;
        };
        match p.admit(now, id, me == lo) {
            Ok(_) => self.pending.push_back((me, Input::PeerConnected(id))),
            Err(refusal) => {
                // A churning peer that dialed us is banned; our own dial that raced the limit
                // only waits for the next token.
                if let Refusal::Churning { .. } = refusal {
                    self.cutoffs.push(Cutoff {
                        at: now,
                        by: me as usize,
                        peer: peer as usize,
                        reason: format!("policy: {refusal}"),
                        banned: me != lo,
                    });
                }
                self.close_for(me, peer, None, None, Some(me));
            }
        }
    }

    /// The connection between `me` and `peer` came up: an honest `me` gives it a slot in its
    /// reassembly budget (its core hears of it with the peer's hello); a byzantine `me` acts.
    fn opened(&mut self, me: u32, peer: u32) {
        if let (Some(budget), Some(epoch)) =
            (&self.slots[me as usize].budget, self.net.epoch(me, peer))
        {
            let slot = budget.register();
            let rx = Reassembly {
                epoch,
                slot,
                partials: Vec::new(),
            };
            self.rx.insert((peer, me), rx);
        }
        if self.byz_react(me, |b, sends| b.on_connect(peer, sends)) {
            self.start_partials(me, peer);
            self.arm_byz(me);
        }
    }

    /// Sends the first frames that the byzantine actor `me` starts on its connection to `peer`.
    fn start_partials(&mut self, me: u32, peer: u32) {
        let Actor::Byz(b) = &self.slots[me as usize].actor else {
            return;
        };
        let mut partials = Vec::new();
        b.partials_on_connect(peer, &mut partials);
        for (to, class, total) in partials {
            self.net.enqueue_partial(me, to, class, total);
        }
        if self.net.idle(me) {
            self.start_frame(me);
        }
    }

    /// Lets the byzantine actor `me` react with `f` and sends what it wants to send; false
    /// when `me` is not a byzantine actor that runs.
    fn byz_react(&mut self, me: u32, f: impl FnOnce(&mut Byz, &mut Sends)) -> bool {
        let Actor::Byz(b) = &mut self.slots[me as usize].actor else {
            return false;
        };
        let mut sends = std::mem::take(&mut self.sends);
        f(b, &mut sends);
        for (to, msg, class) in sends.drain(..) {
            self.enqueue(me, to, msg, class);
        }
        self.sends = sends;
        true
    }

    /// Schedules the next tick of the byzantine actor `me`, if it wants ticks.
    fn arm_byz(&mut self, me: u32) {
        let slot = &self.slots[me as usize];
        if let Actor::Byz(b) = &slot.actor
            && b.wants_ticks()
        {
            self.faults.arm(me, slot.inc, &mut self.q);
        }
    }

    /// Takes the link between `a` and `b` down, tells both, and brings it back after
    /// `reconnect` if given.
    fn close(&mut self, a: u32, b: u32, reconnect: Option<Duration>) {
        self.close_for(a, b, reconnect, None, None);
    }

    /// [`close`](Self::close), where `by` (if any) cut the other end off for misbehaviour and
    /// `informed` (if any) is an end whose policy already knows (it refused the connection).
    /// An honest end that admitted the connection tells its policy and core that it ended;
    /// one still waiting for the peer's hello never admitted it: its policy hears of a failed
    /// dial if it dialed (and of the misbehaviour, if any), as the drivers' handshakes report.
    fn close_for(
        &mut self,
        a: u32,
        b: u32,
        reconnect: Option<Duration>,
        by: Option<u32>,
        informed: Option<u32>,
    ) {
        if !self.net.close(a, b) {
            return;
        }
        self.rx.remove(&(a, b));
        self.rx.remove(&(b, a));
        let now = Time::from_nanos(self.q.now());
        let (lo, _) = self.dial_order(a, b);
        let mut admitted = [false; 2];
        for (k, (me, peer)) in [(a, b), (b, a)].into_iter().enumerate() {
            let cause = if by == Some(me) {
                CloseCause::Misbehaviour
            } else {
                CloseCause::Lost
            };
            let id = self.ids[peer as usize];
            let Some(p) = &mut self.slots[me as usize].policy else {
                continue;
            };
            if p.is_connected(&id) {
                admitted[k] = true;
                p.closed(now, id, cause);
            } else if informed != Some(me) {
                if cause == CloseCause::Misbehaviour {
                    p.misbehaved(now, id);
                }
                if me == lo {
                    p.dial_failed(now, id);
                }
            }
        }
        let dialer_has_policy = self.slots[lo as usize].policy.is_some();
        let reconnect = if dialer_has_policy { None } else { reconnect };
        for (k, (me, peer)) in [(a, b), (b, a)].into_iter().enumerate() {
            match &mut self.slots[me as usize].actor {
                Actor::Honest(_) if admitted[k] => self
                    .pending
                    .push_back((me, Input::PeerDisconnected(self.ids[peer as usize]))),
                Actor::Honest(_) | Actor::Down => {}
                Actor::Byz(z) => z.on_disconnect(peer),
            }
        }
        if let Some(d) = reconnect {
            let t = self.q.now() + nanos(d);
            self.q.push(t, EvKind::Connect(a, b));
        }
        self.run_policy(a);
        self.run_policy(b);
    }

    /// Honest node `by` closes its connection to `peer` for `reason`, a misbehaviour.
    fn cut_off(&mut self, by: u32, peer: u32, reason: String) {
        self.end_connection(by, peer, reason, true);
    }

    /// Honest node `by` closes its connection to `peer` for `reason`: a misbehaviour (the
    /// policy bans the peer) or not (a connection failure).
    fn end_connection(&mut self, by: u32, peer: u32, reason: String, misbehaviour: bool) {
        self.cutoffs.push(Cutoff {
            at: Time::from_nanos(self.q.now()),
            by: by as usize,
            peer: peer as usize,
            reason,
            banned: misbehaviour,
        });
        let cause = misbehaviour.then_some(by);
        self.close_for(by, peer, self.sc.reconnect_cut_off, cause, None);
    }

    /// Feeds the queued inputs to their cores, and acts on their outputs, until none is left.
    fn run_pending(&mut self) {
        let mut outs = Vec::new();
        while let Some((i, input)) = self.pending.pop_front() {
            if self.feed(i, input, &mut outs) {
                for o in outs.drain(..) {
                    self.output(i, o);
                }
            }
        }
    }

    /// Feeds `input` to node `i`'s core, drains its outputs into `outs` and re-arms its timer;
    /// false when `i` runs no core.
    fn feed(&mut self, i: u32, input: Input, outs: &mut Vec<Output>) -> bool {
        let now = self.q.now();
        let slot = &mut self.slots[i as usize];
        let Actor::Honest(node) = &mut slot.actor else {
            return false;
        };
        self.inputs += 1;
        let was_timeout = matches!(input, Input::Timeout);
        let t = Time::from_nanos(now);
        if let Err(e) = step(node, slot.trace.as_deref_mut(), t, input, outs) {
            self.checks
                .app
                .add(|| format!("node {i} at {now}ns rejected an application input: {e}"));
        }
        let next = node.poll_timeout().map(|t| t.as_nanos());
        self.rearm_timer(i, next, was_timeout);
        true
    }

    /// Schedules node `i`'s timer for `next`, the time its core asked for (checking that a
    /// timeout moved it forward).
    fn rearm_timer(&mut self, i: u32, next: Option<u64>, was_timeout: bool) {
        let now = self.q.now();
        let slot = &mut self.slots[i as usize];
        let schedule = match next {
            Some(t) if t <= now && was_timeout => {
                self.checks.timer.add(|| {
                    format!("node {i}: poll_timeout() = {t}ns does not advance past {now}ns after Input::Timeout")
                });
                Some(now + 1_000_000)
            }
            Some(t) => Some(t.max(now)).filter(|&t| slot.timer_at != Some(t)),
            None => {
                slot.timer_at = None;
                None
            }
        };
        if let Some(t) = schedule {
            slot.timer_at = Some(t);
            let inc = slot.inc;
            self.q.push(t, EvKind::Timer { node: i, inc });
        }
    }

    fn output(&mut self, i: u32, o: Output) {
        self.checks.output(self.q.now(), i, &o);
        match o {
            Output::Send { to, msg, class } => {
                if let Some(&to) = self.index.get(&to) {
                    self.enqueue(i, to, msg, class);
                }
            }
            Output::Deliver { artifact, from } => self.deliver(i, artifact, from),
            Output::Disconnect { peer, reason } => {
                if let Some(&p) = self.index.get(&peer) {
                    self.cut_off(i, p, reason.to_string());
                }
            }
            Output::Cancel { to, req_id } => {
                self.cancel(i, to, |r| r == Revocable::Answer(req_id));
            }
            Output::CancelPushes { to, id, ranges } => {
                self.cancel(i, to, |r| r.is_push_in(&id, &ranges));
            }
            Output::HashChunk { id, index, data } => {
                // The simulated driver hashes at once, as part of the same step.
                let digest = sha2::Sha256::digest(&data).into();
                self.pending
                    .push_back((i, Input::ChunkHashed { id, index, digest }));
            }
            Output::Event(_) => {}
        }
    }

    /// Carries out node `i`'s cancel of its queued answers or pushes to `to` that `drop` picks.
    fn cancel(&mut self, i: u32, to: NodeId, drop: impl Fn(Revocable) -> bool) {
        let Some(&to) = self.index.get(&to) else {
            return;
        };
        let honest = self.honest(i as usize);
        let (_, cleared) = self.net.cancel((i, to), drop, honest);
        if cleared && honest {
            self.congestion(i, to, false);
        }
    }

    /// Checks a delivery to node `i`: integrity, exactly once; notes its latency.
    fn deliver(&mut self, i: u32, artifact: Artifact, from: NodeId) {
        let now = self.q.now();
        let id = artifact.id;
        let v = &mut self.checks;
        if p2p_core::chunks::content_id(&artifact.data, self.cfg.chunk_size) != id {
            v.integrity.add(|| {
                format!("node {i} delivered {id:?} (from {from:?}) whose bytes hash elsewhere")
            });
        }
        let count = {
            let c = self.slots[i as usize].delivered.entry(id).or_insert(0);
            *c += 1;
            *c
        };
        if count > 1 {
            v.once
                .add(|| format!("node {i} got {id:?} delivered {count} times (at {now}ns)"));
        }
        let Some(&k) = self.art_by_id.get(&id) else {
            // Byzantine actors publish nothing: whatever they push or serve must not arrive.
            v.integrity.add(|| {
                format!("node {i} delivered {id:?} (from {from:?}), which no honest node published")
            });
            return;
        };
        if let Some(a) = &mut self.arts[k] {
            if a.size != artifact.data.len() || a.kind != artifact.kind {
                v.integrity
                    .add(|| format!("node {i} delivered {id:?} with another size or kind"));
            }
            let f = &mut a.first[i as usize];
            if *f == 0 {
                *f = now.saturating_sub(a.at) + 1;
            }
        }
    }
}

/// The network seen from the nodes: sending, frames, receiving.
impl Sim<'_> {
    fn enqueue(&mut self, from: u32, to: u32, msg: Message, class: Class) {
        let honest = self.honest(from as usize);
        let now = self.q.now();
        if let Message::Chunk { id, .. } = &msg
            && let Some(a) = self.origin_art(from, id)
        {
            a.spread.sends += 1;
        }
        match self.net.enqueue(from, to, msg, class, honest, now) {
            Enqueued::NoLink => return,
            Enqueued::Lost => {
                self.checks.lost += 1;
                return;
            }
            Enqueued::Waiting { congested } => {
                if congested && honest {
                    self.congestion(from, to, true);
                }
            }
        }
        if self.net.idle(from) {
            self.start_frame(from);
        }
    }

    /// Tells core `me` that its connection to `peer` is congested or not.
    fn congestion(&mut self, me: u32, peer: u32, congested: bool) {
        let peer = self.ids[peer as usize];
        self.pending
            .push_back((me, Input::Congestion { peer, congested }));
    }

    fn start_frame(&mut self, node: u32) {
        let inc = self.slots[node as usize].inc;
        if let Some(peer) = self.net.start_frame(node, inc, &mut self.q)
            && self.honest(node as usize)
        {
            self.congestion(node, peer, false);
        }
    }

    /// A frame reaches its receiver's downlink; a [`ByzKind::StalledReader`] never drains it
    /// (so it stays in the window) and only peeks at the messages.
    fn arrive(&mut self, f: FrameEv) {
        if self.slots[f.to as usize].byz == Some(ByzKind::StalledReader)
            && self.alive(f.to as usize)
        {
            if let Some(d) = f.last {
                self.receive(*d, f.class);
            }
            return;
        }
        self.net.arrive(f, &mut self.q);
    }

    fn uplink_done(&mut self, node: u32, inc: u32) {
        if self.slots[node as usize].inc == inc && self.net.frame_sent(node, &mut self.q) {
            self.start_frame(node);
        }
    }

    fn through(&mut self, f: FrameEv) {
        let now = self.q.now();
        if f.hello {
            let carried = self.net.carries(f.from, f.to, f.epoch);
            if self.net.through(&f, now) {
                self.start_frame(f.from);
            }
            if carried {
                self.hello_arrived(f.from, f.to);
            }
            return;
        }
        if !self.reassemble(&f) {
            return;
        }
        if self.net.through(&f, now) {
            self.start_frame(f.from);
        }
        if let Some(d) = f.last {
            self.receive(*d, f.class);
        }
    }

    /// An honest receiver's accounting of a frame of a message of several frames, as its
    /// multiplexer does: the first reserves the announced total (within `max_partial_messages`,
    /// `max_buffered_bytes` and the node's [`ReassemblyBudget`]) and arms the stall check, every
    /// frame records progress (the stall rule: no frame for `partial_timeout`), the last gives
    /// the reservation back. False when the frame ended the connection.
    fn reassemble(&mut self, f: &FrameEv) -> bool {
        let (from, to) = (f.from, f.to);
        let now = self.q.now();
        let mux = &self.sc.mux;
        let Some(rx) = self.rx.get_mut(&(from, to)).filter(|r| r.epoch == f.epoch) else {
            return true;
        };
        if f.ends_partial {
            if let Some(k) = rx.partials.iter().position(|(s, ..)| *s == f.stream) {
                let (_, total, _) = rx.partials.swap_remove(k);
                rx.slot.give(total);
            }
            return true;
        }
        let Some(total) = f.first_of.map(|t| t as usize) else {
            if let Some(p) = rx.partials.iter_mut().find(|(s, ..)| *s == f.stream) {
                p.2 = now;
            }
            return true;
        };
        let failure = if rx.partials.len() >= mux.max_partial_messages {
            Some(("transport: too many partial messages", true))
        } else if rx.slot.usage() + total > mux.max_buffered_bytes {
            Some(("transport: partial messages above max_buffered_bytes", true))
        } else if rx.slot.try_take(total).is_err() {
            Some(("transport: node reassembly budget refused a message", false))
        } else {
            None
        };
        if let Some((reason, misbehaviour)) = failure {
            self.end_connection(to, from, reason.into(), misbehaviour);
            return false;
        }
        rx.partials.push((f.stream, total, now));
        let budget = rx.slot.budget();
        let peak = budget.peak();
        if peak > self.reassembly_peak.0 {
            self.reassembly_peak = (peak, budget.cap());
        }
        let at = now + nanos(mux.partial_timeout);
        let ev = EvKind::PartialDeadline {
            node: to,
            peer: from,
            epoch: f.epoch,
            stream: f.stream,
        };
        self.q.push(at, ev);
        true
    }

    /// The stall check of a message `peer` started sending to `node`: if it is still
    /// incomplete and had no frame for `partial_timeout`, `node` cuts `peer` off; if it had
    /// one since, the check moves to that frame's time plus the timeout.
    fn partial_deadline(&mut self, node: u32, peer: u32, epoch: u32, stream: u32) {
        let last = self
            .rx
            .get(&(peer, node))
            .filter(|r| r.epoch == epoch)
            .and_then(|r| r.partials.iter().find(|(s, ..)| *s == stream))
            .map(|p| p.2);
        let Some(last) = last else {
            return;
        };
        let due = last + nanos(self.sc.mux.partial_timeout);
        if due > self.q.now() {
            let ev = EvKind::PartialDeadline {
                node,
                peer,
                epoch,
                stream,
            };
            self.q.push(due, ev);
        } else {
            let reason = "transport: partial message past its stall deadline".into();
            self.cut_off(node, peer, reason);
        }
    }

    /// Honest `from`'s write stall check of its connection to `to`.
    fn write_stall(&mut self, from: u32, to: u32, epoch: u32) {
        if self.net.write_stalled(from, to, epoch, &mut self.q) {
            let reason = "transport: write stall (the peer accepted no bytes)".into();
            self.end_connection(from, to, reason, false);
        }
    }

    /// The connection layer's timer check of the connection between `a` and `b`: a receiver
    /// whose hello or idle deadline passed ends it (`ConnError::HelloTimeout` or `Idle`, not a
    /// misbehaviour, as in the drivers); a sender with nothing sent for the keepalive interval
    /// queues a keepalive (an empty `Adverts` batch in the control class, real wire bytes).
    fn conn_timer(&mut self, a: u32, b: u32, epoch: u32) {
        match self.net.timers_due(a, b, epoch, self.q.now()) {
            Due::Stale => {}
            Due::Expired { by, peer, error } => {
                let reason = format!("transport: {error}");
                self.end_connection(by, peer, reason, error.is_misbehaviour());
            }
            Due::Check(keepalives) => {
                for (from, to) in keepalives.into_iter().flatten() {
                    self.enqueue(from, to, Message::Adverts(Vec::new()), Class::Control);
                }
                self.net.arm_timer(a, b, &mut self.q);
            }
        }
    }

    /// Hands a message that is through the receiver's downlink, in `class`, to the receiver.
    fn receive(&mut self, d: Delivery, class: Class) {
        let Delivery {
            from,
            to,
            epoch,
            msg,
        } = d;
        if !self.net.carries(from, to, epoch) {
            self.checks.lost += 1;
            return;
        }
        // A keepalive: the receiver's connection layer drops it.
        if class == Class::Control && matches!(&msg, Message::Adverts(a) if a.is_empty()) {
            return;
        }
        if self.honest(to as usize) && encoded_len(&msg) > self.sc.max_message_size {
            let reason = "transport: message above the size limit".into();
            self.cut_off(to, from, reason);
            return;
        }
        if self.honest(to as usize) && !class_allowed(&msg, class) {
            let reason = format!("transport: {} in the {class:?} class", msg.name());
            self.cut_off(to, from, reason);
            return;
        }
        if let Message::Chunk { id, index, .. } = &msg
            && self.runs_core(to)
        {
            let now = self.q.now();
            if let Some(a) = self.origin_art(from, id) {
                a.spread.note(*index as usize, now.saturating_sub(a.at) + 1);
            }
        }
        if self.runs_core(to) {
            let from = self.ids[from as usize];
            self.pending.push_back((to, Input::Message { from, msg }));
        } else {
            self.byz_react(to, |b, sends| b.on_message(from, msg, sends));
        }
    }
}

impl Spread {
    /// Chunk `index` went through from the origin at `t` (nanoseconds after the publish, plus
    /// one).
    fn note(&mut self, index: usize, t: u64) {
        let Some(out) = self.out.get_mut(index) else {
            return;
        };
        if *out {
            return;
        }
        *out = true;
        self.count += 1;
        if self.first_at == 0 {
            self.first_at = t;
        }
        if self.count as usize == self.out.len() {
            self.all_at = t;
        }
    }
}

/// Actions and faults.
impl Sim<'_> {
    /// The chunked artifact `id` if honest node `node` published it.
    fn origin_art(&mut self, node: u32, id: &ArtifactId) -> Option<&mut ArtInfo> {
        let &k = self.art_by_id.get(id)?;
        self.arts[k]
            .as_mut()
            .filter(|a| a.origin == node as usize && !a.spread.out.is_empty())
    }

    fn action(&mut self, k: usize) {
        match self.actions[k].clone() {
            Action::Publish(p) => self.publish(p),
            Action::Remove { node, publish } => {
                if let Some(Some(a)) = self.arts.get(publish)
                    && node < self.slots.len()
                {
                    self.pending.push_back((node as u32, Input::Remove(a.id)));
                }
            }
            Action::Fault(f) => self.fault(f),
        }
    }

    fn publish(&mut self, p: usize) {
        let spec = self.publishes[p].clone();
        if spec.node >= self.slots.len() {
            return;
        }
        let data = Rng::new(derive(self.sc.seed, 1_000_000 + p as u64)).bytes(spec.size);
        let attr = (p as u32).to_le_bytes().to_vec();
        let artifact = Artifact::with_chunk_size(spec.kind, attr, data, self.cfg.chunk_size);
        if !self.runs_core(spec.node as u32) {
            return;
        }
        self.art_by_id.insert(artifact.id, p);
        self.arts[p] = Some(ArtInfo {
            id: artifact.id,
            kind: spec.kind,
            size: spec.size,
            origin: spec.node,
            at: self.q.now(),
            attr: artifact.attr.clone(),
            first: vec![0; self.slots.len()],
            spread: Spread {
                out: vec![false; chunk_count(spec.size, self.cfg.chunk_size) as usize],
                ..Spread::default()
            },
        });
        self.pending
            .push_back((spec.node as u32, Input::Publish(artifact)));
    }

    fn fault(&mut self, f: Fault) {
        let n = self.slots.len();
        match f {
            Fault::Partition(side) => self.partition(&side),
            Fault::Heal => self.heal(),
            Fault::Crash(i) if i < n && self.alive(i) => self.crash(i),
            Fault::Restart(i) if i < n && !self.alive(i) && self.faults.is_member(i) => {
                self.start(i);
                self.connect_neighbours(i);
            }
            Fault::Bandwidth(i, bps) if i < n => self.net.set_bandwidth(i, bps),
            Fault::DropConnection(a, b) if a < n && b < n => {
                self.close(a as u32, b as u32, Some(self.sc.reconnect_dropped));
            }
            Fault::AddMember(i) if i < n && !self.faults.is_member(i) => self.add_member(i),
            Fault::RemoveMember(i) if i < n && self.faults.is_member(i) => self.remove_member(i),
            _ => {}
        }
    }

    /// Cuts the links across the partition without closing them: their bytes wait, and each
    /// connection ends only when a receiver's idle timeout notices the silence (or a sender's
    /// write stall timeout its full window), as over TCP.
    fn partition(&mut self, side: &[usize]) {
        self.faults.partition(side);
        let faults = &self.faults;
        let cut = self
            .net
            .links_where(|(a, b), up| up && faults.partitioned(a, b));
        for (a, b) in cut {
            self.net.set_cut(a, b, true, &mut self.q);
        }
    }

    /// Lets the waiting bytes of the connections that survived the partition through, and
    /// brings the links that are down back up.
    fn heal(&mut self) {
        self.faults.heal();
        for (a, b) in self.net.links_where(|_, up| up) {
            self.net.set_cut(a, b, false, &mut self.q);
        }
        for (a, b) in self.net.links_where(|_, up| !up) {
            if self.linked(a, b) {
                self.connect(a, b);
            }
        }
    }

    fn connect_neighbours(&mut self, i: usize) {
        for j in self.neighbours(i) {
            self.connect(i as u32, j);
        }
    }

    /// Closes every connection of `i` (with a derived topology, links to former neighbours
    /// included).
    fn close_neighbours(&mut self, i: usize) {
        for j in self.net.neighbours(i).to_vec() {
            self.close(i as u32, j, None);
        }
    }

    /// Node `i` loses its connections, its state and what its uplink held.
    fn crash(&mut self, i: usize) {
        self.close_neighbours(i);
        self.net.clear_uplink(i);
        self.faults.disarm(i);
        let slot = &mut self.slots[i];
        slot.actor = Actor::Down;
        slot.inc += 1;
        slot.timer_at = None;
        slot.policy = None;
        slot.policy_at = None;
        slot.delivered.clear();
        slot.budget = None;
        if let Some(t) = slot.trace.take() {
            let now = Time::from_nanos(self.q.now());
            self.recorder.close(*t, now, true, &mut self.checks.trace);
        }
    }

    fn add_member(&mut self, i: usize) {
        self.faults.set_member(i, true);
        if !self.alive(i) {
            self.start(i);
        }
        self.broadcast_membership();
        self.connect_neighbours(i);
    }

    fn remove_member(&mut self, i: usize) {
        self.faults.set_member(i, false);
        self.broadcast_membership();
        if !self.honest(i) {
            self.close_neighbours(i);
        }
    }
}

/// The main loop.
impl Sim<'_> {
    fn main_loop(&mut self, until: u64) {
        self.run_pending();
        while let Some(ev) = self.q.pop(until) {
            self.dispatch(ev);
            self.run_pending();
            if self.q.live() == 0 && !self.watching() {
                break;
            }
        }
        self.sample();
    }

    /// Whether a connection deadline still has something to watch: a message under
    /// reassembly, or bytes waiting on a full window.
    fn watching(&self) -> bool {
        self.rx.values().any(|r| !r.partials.is_empty())
            || self.net.write_watched()
            || self.net.timers_watched()
    }

    fn dispatch(&mut self, ev: EvKind) {
        match ev {
            EvKind::UplinkDone { node, inc } => self.uplink_done(node, inc),
            EvKind::Arrive(f) => self.arrive(f),
            EvKind::Through(f) => self.through(f),
            EvKind::Timer { node, inc } => self.timer(node, inc),
            EvKind::Policy { node, inc } => self.policy_timer(node, inc),
            EvKind::ByzTick { node, inc } => self.byz_tick(node, inc),
            EvKind::Action(k) => self.action(k),
            EvKind::Connect(a, b) => self.connect(a, b),
            EvKind::PartialDeadline {
                node,
                peer,
                epoch,
                stream,
            } => self.partial_deadline(node, peer, epoch, stream),
            EvKind::WriteStall { from, to, epoch } => self.write_stall(from, to, epoch),
            EvKind::ConnTimer { a, b, epoch } => self.conn_timer(a, b, epoch),
            EvKind::Sample => {
                self.sample();
                if self.q.live() > 0 {
                    let t = self.q.now() + nanos(self.sc.sample_interval).max(1);
                    self.q.push(t, EvKind::Sample);
                }
            }
        }
    }

    fn timer(&mut self, node: u32, inc: u32) {
        let now = self.q.now();
        let slot = &mut self.slots[node as usize];
        if slot.inc == inc && slot.timer_at == Some(now) {
            slot.timer_at = None;
            self.pending.push_back((node, Input::Timeout));
        }
    }

    fn byz_tick(&mut self, node: u32, inc: u32) {
        let slot = &self.slots[node as usize];
        if slot.inc != inc || !matches!(slot.actor, Actor::Byz(_)) {
            return;
        }
        self.faults.disarm(node as usize);
        if slot.byz == Some(ByzKind::Churner) {
            self.churn(node);
        }
        self.byz_react(node, |b, sends| b.on_tick(sends));
        self.arm_byz(node);
    }

    /// The churner `node` leaves every connection it has and dials again those it dials.
    fn churn(&mut self, node: u32) {
        let links = self
            .net
            .links_where(|(a, b), up| up && (a == node || b == node));
        for (a, b) in links {
            self.close(a, b, None);
        }
        for peer in self.neighbours(node as usize) {
            if self.dial_order(node, peer).0 == node {
                self.connect(node, peer);
            }
        }
    }

    fn sample(&mut self) {
        let now = self.q.now();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Actor::Honest(node) = &slot.actor {
                self.checks.sample(i, node, &self.cfg, now);
            }
        }
    }
}

/// The end of a run: the assessment and the report.
impl Sim<'_> {
    fn finish(mut self) -> Report {
        let sc = self.sc;
        self.end_traces();
        let never_ran = self.check_recorded_nodes();
        let mut deliveries = self.assess_deliveries();
        let latency_by_kind = deliveries.latency_by_kind();
        let mut checks = self.checks.results(deliveries.check());
        if !sc.records.is_empty() {
            checks.push(self.trace_check(&never_ran));
        }
        if let Some(max) = sc.urgent_p99_max {
            let urgent = latency_by_kind
                .iter()
                .find(|(k, _)| *k == URGENT)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            checks.push(urgent_latency(urgent, max));
        }
        if sc.expect_complete {
            checks.push(self.complete_check(&deliveries.figures));
        }
        if let Some(by) = sc.spread_by {
            checks.push(spread_check(&deliveries.figures, by));
        }
        Report {
            name: sc.name.clone(),
            seed: sc.seed,
            repro: sc.repro_command(),
            nodes: self.slots.len(),
            checks,
            expected: deliveries.expected,
            delivered: deliveries.delivered,
            latency: deliveries.latency(),
            artifacts: deliveries.figures,
            latency_by_kind,
            wire_bytes: self.net.wire_bytes(),
            wire_by_message: self.net.wire_by_message(),
            frames_dropped: self.net.frames_dropped(),
            ideal_bytes: deliveries.ideal,
            counters: self.counters(),
            max_state: self.checks.max_state,
            cutoffs: self.cutoffs,
            reassembly_peak: self.reassembly_peak,
            events: self.q.popped(),
            inputs: self.inputs,
            end: Time::from_nanos(self.q.now()),
            output_hash: self.checks.hash.value(),
            traces: self.recorder.into_traces(),
        }
    }

    /// The `complete` check: every artifact reached every honest member that runs, other
    /// than its origin.
    fn complete_check(&self, figures: &[ArtifactFigure]) -> Check {
        let running = |i: usize| self.honest(i) && self.alive(i) && self.faults.is_member(i);
        let live = (0..self.slots.len()).filter(|&i| running(i)).count();
        let mut missing = Vec::new();
        for f in figures {
            let want = live - usize::from(running(f.origin));
            if f.expected != want || f.holders != want {
                missing.push(format!(
                    "artifact #{} reached {} of the {want} running honest members",
                    f.index, f.holders
                ));
            }
        }
        Check {
            name: "complete",
            ok: missing.is_empty(),
            detail: if missing.is_empty() {
                format!(
                    "{} artifacts, each at all {live} running honest members",
                    figures.len()
                )
            } else {
                missing.truncate(5);
                missing.join("; ")
            },
        }
    }

    /// Every counter summed over the honest cores running now.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut sums: Vec<(&'static str, u64)> = p2p_core::Metrics::INFO
            .iter()
            .filter(|m| m.kind == p2p_core::MetricKind::Counter)
            .map(|m| (m.name, 0))
            .collect();
        for slot in &self.slots {
            if let Actor::Honest(node) = &slot.actor {
                for (info, v) in node.metrics().values() {
                    if let Some(s) = sums.iter_mut().find(|(n, _)| *n == info.name) {
                        s.1 += v;
                    }
                }
            }
        }
        sums
    }

    /// Ends the traces of the incarnations still running.
    fn end_traces(&mut self) {
        let now = Time::from_nanos(self.q.now());
        for slot in &mut self.slots {
            if let Some(t) = slot.trace.take() {
                self.recorder.close(*t, now, false, &mut self.checks.trace);
            }
        }
    }

    /// Checks that the nodes to record could be; returns those that never started.
    fn check_recorded_nodes(&mut self) -> Vec<usize> {
        let n = self.slots.len();
        let mut never_ran = Vec::new();
        for &(node, _) in &self.sc.records {
            let v = &mut self.checks.trace;
            if node >= n {
                v.add(|| format!("node {node} does not exist (the scenario has {n} nodes)"));
            } else if self.slots[node].byz.is_some() {
                v.add(|| format!("node {node} is a byzantine actor: it has no core to record"));
            } else if !self.recorder.traces().iter().any(|t| t.node == node) {
                never_ran.push(node);
            }
        }
        never_ran
    }

    fn trace_check(&self, never_ran: &[usize]) -> Check {
        let traces = self.recorder.traces();
        let records: u64 = traces.iter().map(|t| t.records).sum();
        let mut ok = format!("{} traces, {records} records", traces.len());
        if !never_ran.is_empty() {
            ok.push_str(&format!("; never started: nodes {never_ran:?}"));
        }
        self.checks.trace.check("trace-recording", ok)
    }

    /// Which artifacts reached which nodes: every live honest member that a final connection
    /// path joins to a holder must have every artifact the priority function wants.
    fn assess_deliveries(&self) -> Deliveries {
        let n = self.slots.len();
        let eligible: Vec<bool> = (0..n)
            .map(|i| self.honest(i) && self.alive(i) && self.faults.is_member(i))
            .collect();
        let net = &self.net;
        let up = net.links_where(|(a, b), up| {
            up && eligible[a as usize] && eligible[b as usize] && net.established(a, b)
        });
        let reach = Components::of(n, up.iter().map(|&(a, b)| (a as usize, b as usize)));
        let mut out = Deliveries::default();
        for (k, a) in self.arts.iter().enumerate() {
            if let Some(a) = a {
                let outcome = self.outcome(k, a, &reach, &eligible, &mut out);
                out.add(outcome);
            }
        }
        out
    }

    /// Artifact `k`'s outcome; notes the deliveries it missed in `out`.
    fn outcome<'b>(
        &self,
        k: usize,
        a: &'b ArtInfo,
        reach: &Components,
        eligible: &[bool],
        out: &mut Deliveries,
    ) -> Outcome<'b> {
        let holds = |i: usize| match &self.slots[i].actor {
            Actor::Honest(node) => node.has_artifact(&a.id),
            _ => false,
        };
        let n = self.slots.len();
        let mut roots: Vec<usize> = (0..n)
            .filter(|&i| eligible[i] && holds(i))
            .map(|i| reach.root(i))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        let advert = Advert {
            id: a.id,
            kind: a.kind,
            size: a.size as u64,
            attr: a.attr.clone(),
        };
        let wanted = self.cfg.priority_fn.0.decide(&advert) != Decision::Drop;
        let (mut exp, mut got, mut complete) = (0usize, 0usize, Some(0u64));
        for (i, &ok) in eligible.iter().enumerate() {
            if i == a.origin || !ok || !wanted || !roots.contains(&reach.root(i)) {
                continue;
            }
            exp += 1;
            if self.slots[i].delivered.contains_key(&a.id) || holds(i) {
                got += 1;
                complete = match (complete, a.first[i]) {
                    (Some(c), f) if f > 0 => Some(c.max(f - 1)),
                    _ => None,
                };
            } else {
                complete = None;
                out.missed.add(|| {
                    format!(
                        "artifact #{k} ({:?}, {} bytes from node {}) never reached node {i}",
                        a.id, a.size, a.origin
                    )
                });
            }
        }
        Outcome {
            figure: ArtifactFigure {
                index: k,
                kind: a.kind,
                size: a.size,
                origin: a.origin,
                published_at: Time::from_nanos(a.at),
                expected: exp,
                holders: got,
                complete_after: complete.map(Duration::from_nanos),
                delivered_after: a
                    .first
                    .iter()
                    .map(|&f| (f > 0).then(|| Duration::from_nanos(f - 1)))
                    .collect(),
                chunks: a.spread.out.len() as u32,
                origin_chunk_sends: a.spread.sends,
                first_chunk_out: (a.spread.first_at > 0)
                    .then(|| Duration::from_nanos(a.spread.first_at - 1)),
                all_chunks_out: (a.spread.all_at > 0)
                    .then(|| Duration::from_nanos(a.spread.all_at - 1)),
            },
            first: &a.first,
        }
    }
}
