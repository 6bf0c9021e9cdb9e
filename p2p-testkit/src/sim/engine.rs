//! The event loop: nodes, network, faults and checks.

use super::byz::{Byz, ByzKind, Limits, Sends};
use super::report::{ArtifactFigure, Check, Cutoff, LatencyStats, RecordedTrace, Report};
use super::rng::{Rng, RunHash, derive};
use super::scenario::{Action, Fault, PublishSpec, Scenario, Topology, TraceSink};
use super::{FIRST_FRAME_HEADER, FRAME_HEADER, FRAME_PAYLOAD, URGENT, encoded_len, wire_len};
use crate::trace::{DecisionLog, Header, PriorityProfile, TraceWriteError, TraceWriter};
use hashbrown::HashMap;
use p2p_core::{
    Artifact, ArtifactId, Class, Config, Decision, Input, Message, Node, NodeId, Output,
    TableSizes, Time,
};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Violations kept in detail per check.
const DETAILS: usize = 5;
/// Smallest per-connection window (bytes sent and not yet through the receiver's downlink).
const MIN_WINDOW: u64 = 64 * 1024;
/// Messages of one class examined when looking for a connection whose window is open.
const SCAN: usize = 256;

struct Ev {
    t: u64,
    seq: u64,
    kind: EvKind,
}

impl PartialEq for Ev {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ev {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, seq) must compare greatest.
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

struct Delivery {
    from: u32,
    to: u32,
    epoch: u32,
    msg: Message,
}

enum EvKind {
    /// A frame finished leaving `node`'s uplink.
    UplinkDone {
        node: u32,
        inc: u32,
    },
    /// A frame reached `to`'s downlink; the last frame of a message carries it.
    Arrive {
        from: u32,
        to: u32,
        epoch: u32,
        bytes: u32,
        last: Option<Box<Delivery>>,
    },
    /// A frame is through the receiver's downlink: it leaves the connection's window, and the
    /// last frame hands its message to the receiver.
    Through {
        from: u32,
        to: u32,
        epoch: u32,
        bytes: u32,
        last: Option<Box<Delivery>>,
    },
    Timer {
        node: u32,
        inc: u32,
    },
    ByzTick {
        node: u32,
        inc: u32,
    },
    Action(usize),
    Connect(u32, u32),
    Sample,
}

enum Actor {
    Honest(Box<Node>),
    Byz(Box<Byz>),
    Down,
}

struct OutMsg {
    to: u32,
    epoch: u32,
    msg: Message,
    enc: usize,
    sent: usize,
}

struct Frame {
    to: u32,
    epoch: u32,
    bytes: u32,
    last: Option<Message>,
}

struct Slot {
    actor: Actor,
    byz: Option<ByzKind>,
    inc: u32,
    up_bps: u64,
    down_bps: u64,
    uplink: [VecDeque<OutMsg>; Class::COUNT],
    current: Option<Frame>,
    down_free: u64,
    timer_at: Option<u64>,
    delivered: HashMap<ArtifactId, u32>,
    ticking: bool,
    /// The trace of this incarnation, when the node is recorded.
    trace: Option<Box<ActiveTrace>>,
}

/// The writer of a recorded incarnation.
enum TraceOut {
    Memory(TraceWriter<Vec<u8>>),
    Stream(TraceWriter<Box<dyn Write + Send>>),
}

/// A recorded incarnation: its writer, its entry in `Sim::traces`, and the log of the wrapper
/// around its priority function when it is recorded by its decisions.
struct ActiveTrace {
    out: TraceOut,
    index: usize,
    decisions: Option<DecisionLog>,
}

impl ActiveTrace {
    /// Writes the decisions the priority function took during the input just fed.
    fn decisions(&mut self, now: Time) {
        let Some(log) = &self.decisions else {
            return;
        };
        let d = log.take();
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_decisions(now, &d),
            TraceOut::Stream(w) => w.record_decisions(now, &d),
        };
    }

    // Write errors are sticky in the writer and reported when the trace ends.
    fn input(&mut self, now: Time, input: &Input) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_input(now, input),
            TraceOut::Stream(w) => w.record_input(now, input),
        };
    }

    fn input_error(&mut self, now: Time, e: &p2p_core::InputError) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_input_error(now, e),
            TraceOut::Stream(w) => w.record_input_error(now, e),
        };
    }

    fn output(&mut self, now: Time, o: &Output) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_output(now, o),
            TraceOut::Stream(w) => w.record_output(now, o),
        };
    }

    /// Flushes and closes the writer: the records written, the in-memory trace and the error.
    fn finish(self) -> (u64, Option<Vec<u8>>, Option<TraceWriteError>) {
        match self.out {
            TraceOut::Memory(w) => {
                let n = w.records_written();
                match w.into_inner() {
                    Ok(data) => (n, Some(data), None),
                    Err(e) => (n, None, Some(e)),
                }
            }
            TraceOut::Stream(w) => {
                let n = w.records_written();
                (n, None, w.into_inner().err())
            }
        }
    }
}

struct Conn {
    up: bool,
    epoch: u32,
    latency: u64,
    queued: [u64; 2],
    congested: [bool; 2],
    last_arrival: [u64; 2],
    /// Bytes sent and not yet through the receiver's downlink (bounded by the window).
    inflight: [u64; 2],
}

struct ArtInfo {
    id: ArtifactId,
    kind: p2p_core::Kind,
    size: usize,
    origin: usize,
    at: u64,
    attr: p2p_core::Bytes,
    /// Per node: first delivery latency in nanoseconds plus one (0: never).
    first: Vec<u64>,
}

#[derive(Default)]
struct Violations {
    count: usize,
    details: Vec<String>,
}

impl Violations {
    fn add(&mut self, detail: impl FnOnce() -> String) {
        self.count += 1;
        if self.details.len() < DETAILS {
            self.details.push(detail());
        }
    }

    fn check(&self, name: &'static str, ok_detail: String) -> Check {
        Check {
            name,
            ok: self.count == 0,
            detail: if self.count == 0 {
                ok_detail
            } else {
                format!("{} violations: {}", self.count, self.details.join("; "))
            },
        }
    }
}

struct Sim<'a> {
    sc: &'a Scenario,
    cfg: Config,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Ev>,
    live: usize,
    rng: Rng,
    slots: Vec<Slot>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    adj: Vec<Vec<u32>>,
    conns: HashMap<(u32, u32), Conn>,
    members: Vec<bool>,
    version: u64,
    group: Option<Vec<u8>>,
    pending: VecDeque<(u32, Input)>,
    publishes: Vec<PublishSpec>,
    actions: Vec<Action>,
    arts: Vec<Option<ArtInfo>>,
    art_by_id: HashMap<ArtifactId, usize>,
    hash: RunHash,
    events: u64,
    inputs: u64,
    wire_bytes: u64,
    max_state: TableSizes,
    cutoffs: Vec<Cutoff>,
    v_once: Violations,
    v_integrity: Violations,
    v_bounds: Violations,
    v_timer: Violations,
    v_app: Violations,
    lost: u64,
    sends: Sends,
    /// The profile naming the honest nodes' priority function; `None` when the scenario's
    /// config replaced it with a function no profile names (recorded by its decisions then).
    profile: Option<PriorityProfile>,
    traces: Vec<RecordedTrace>,
    v_trace: Violations,
}

fn key(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

fn dir(from: u32, to: u32) -> usize {
    usize::from(from > to)
}

fn tx_nanos(bytes: u64, bps: u64) -> u64 {
    (bytes as u128 * 8_000_000_000 / bps.max(1) as u128) as u64
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `sc` and checks its properties.
pub(crate) fn run(sc: &Scenario) -> Report {
    let mut sim = Sim::new(sc);
    let until = sim.setup();
    sim.main_loop(until);
    sim.finish()
}

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
        let ids: Vec<NodeId> = (0..n)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&derive(sc.seed, 1 << 40 | i as u64).to_le_bytes());
                id[8..12].copy_from_slice(&(i as u32).to_le_bytes());
                NodeId(id)
            })
            .collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let bw = sc
                .bandwidth
                .iter()
                .rev()
                .find(|(j, _)| *j == i)
                .map_or(sc.link.bandwidth_bps, |(_, b)| *b);
            slots.push(Slot {
                actor: Actor::Down,
                byz: sc.byzantine.iter().find(|(j, _)| *j == i).map(|(_, k)| *k),
                inc: 0,
                up_bps: bw,
                down_bps: bw,
                uplink: Default::default(),
                current: None,
                down_free: 0,
                timer_at: None,
                delivered: HashMap::new(),
                ticking: false,
                trace: None,
            });
        }
        Sim {
            sc,
            cfg,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            live: 0,
            rng: Rng::new(derive(sc.seed, 1)),
            slots,
            ids,
            index,
            adj: vec![Vec::new(); n],
            conns: HashMap::new(),
            members: vec![false; n],
            version: 0,
            group: None,
            pending: VecDeque::new(),
            publishes: sc.publishes.clone(),
            actions: Vec::new(),
            arts: Vec::new(),
            art_by_id: HashMap::new(),
            hash: RunHash::default(),
            events: 0,
            inputs: 0,
            wire_bytes: 0,
            max_state: TableSizes::default(),
            cutoffs: Vec::new(),
            v_once: Violations::default(),
            v_integrity: Violations::default(),
            v_bounds: Violations::default(),
            v_timer: Violations::default(),
            v_app: Violations::default(),
            lost: 0,
            sends: Vec::new(),
            profile,
            traces: Vec::new(),
            v_trace: Violations::default(),
        }
    }

    fn push(&mut self, t: u64, kind: EvKind) {
        if !matches!(kind, EvKind::Sample) {
            self.live += 1;
        }
        self.seq += 1;
        self.heap.push(Ev {
            t,
            seq: self.seq,
            kind,
        });
    }

    fn honest(&self, i: usize) -> bool {
        self.slots[i].byz.is_none()
    }

    fn alive(&self, i: usize) -> bool {
        !matches!(self.slots[i].actor, Actor::Down)
    }

    fn add_link(&mut self, a: usize, b: usize) {
        if a == b || a >= self.ids.len() || b >= self.ids.len() {
            return;
        }
        let k = key(a as u32, b as u32);
        if self.conns.contains_key(&k) {
            return;
        }
        let latency = self
            .sc
            .link_latency
            .iter()
            .rev()
            .find(|(l, _)| *l == (k.0 as usize, k.1 as usize))
            .map_or(self.sc.link.latency, |(_, d)| *d);
        self.conns.insert(
            k,
            Conn {
                up: false,
                epoch: 0,
                latency: nanos(latency),
                queued: [0; 2],
                congested: [false; 2],
                last_arrival: [0; 2],
                inflight: [0; 2],
            },
        );
        self.adj[a].push(b as u32);
        self.adj[b].push(a as u32);
    }

    /// Builds the topology, the action list and the initial members; returns the end time.
    fn setup(&mut self) -> u64 {
        let sc = self.sc;
        let n = sc.nodes;
        let mut trng = Rng::new(derive(sc.seed, 2));
        match &sc.topology {
            Topology::FullMesh => {
                for a in 0..n {
                    for b in a + 1..n {
                        self.add_link(a, b);
                    }
                }
            }
            Topology::Random { degree } => {
                for a in 0..n {
                    self.add_link(a, (a + 1) % n);
                }
                let draws = degree.saturating_sub(2).div_ceil(2);
                for a in 0..n {
                    for _ in 0..draws {
                        let b = trng.below(n as u64) as usize;
                        self.add_link(a, b);
                    }
                }
            }
            Topology::Links(links) => {
                for &(a, b) in links {
                    self.add_link(a, b);
                }
            }
        }
        let mut actions: Vec<(Duration, Action)> = sc.actions.clone();
        let honest: Vec<usize> = (0..n)
            .filter(|&i| self.honest(i))
            .filter(|&i| sc.initial_members.as_ref().is_none_or(|m| m.contains(&i)))
            .collect();
        let mut wrng = Rng::new(derive(sc.seed, 3));
        if let Some(w) = &sc.workload {
            let window = nanos(w.window).max(1);
            let mut add = |node: usize, kind, size, rng: &mut Rng| {
                let at = w.start + Duration::from_nanos(rng.below(window));
                let i = self.publishes.len();
                self.publishes.push(PublishSpec { node, kind, size });
                actions.push((at, Action::Publish(i)));
            };
            for &node in &honest {
                for _ in 0..w.urgent_per_node {
                    add(node, URGENT, w.urgent_size, &mut wrng);
                }
            }
            for _ in 0..w.bulk_count {
                if honest.is_empty() {
                    break;
                }
                let node = honest[wrng.below(honest.len() as u64) as usize];
                add(node, super::BULK, w.bulk_size, &mut wrng);
            }
        }
        if let Some((count, start, window)) = sc.random_faults
            && honest.len() >= 2
        {
            let mut frng = Rng::new(derive(sc.seed, 4));
            let w = nanos(window).max(4);
            for _ in 0..count {
                let t = nanos(start) + frng.below(w / 2);
                let d = nanos(Duration::from_millis(100)) + frng.below(w / 2);
                let (t, d) = (Duration::from_nanos(t), Duration::from_nanos(t + d));
                let node = honest[frng.below(honest.len() as u64) as usize];
                let f = match frng.below(5) {
                    0 => {
                        let size = 1 + frng.below((honest.len() / 2).max(1) as u64) as usize;
                        let mut side = honest.clone();
                        for k in 0..side.len() {
                            let j = k + frng.below((side.len() - k) as u64) as usize;
                            side.swap(k, j);
                        }
                        side.truncate(size);
                        (Fault::Partition(side), Fault::Heal)
                    }
                    1 => (Fault::Crash(node), Fault::Restart(node)),
                    2 => {
                        let nb = &self.adj[node];
                        if nb.is_empty() {
                            continue;
                        }
                        let peer = nb[frng.below(nb.len() as u64) as usize] as usize;
                        actions.push((t, Action::Fault(Fault::DropConnection(node, peer))));
                        continue;
                    }
                    3 => (
                        Fault::Bandwidth(node, (sc.link.bandwidth_bps / 20).max(1)),
                        Fault::Bandwidth(node, sc.link.bandwidth_bps),
                    ),
                    _ => (Fault::RemoveMember(node), Fault::AddMember(node)),
                };
                actions.push((t, Action::Fault(f.0)));
                actions.push((d, Action::Fault(f.1)));
            }
        }
        actions.sort_by_key(|(t, _)| *t);
        let last = actions.last().map_or(0, |(t, _)| nanos(*t));
        for (t, a) in actions {
            let i = self.actions.len();
            self.actions.push(a);
            self.push(nanos(t), EvKind::Action(i));
        }
        self.arts = (0..self.publishes.len()).map(|_| None).collect();
        for i in 0..n {
            self.members[i] = sc.initial_members.as_ref().is_none_or(|m| m.contains(&i));
        }
        self.version = 1;
        for i in 0..n {
            if self.members[i] {
                self.start(i);
            }
        }
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        let mut keys = keys;
        keys.sort_unstable();
        for (a, b) in keys {
            self.connect(a, b);
        }
        self.push(nanos(sc.sample_interval).max(1), EvKind::Sample);
        sc.duration
            .map_or(last.saturating_add(nanos(sc.settle)), nanos)
    }

    fn member_ids(&self) -> Vec<NodeId> {
        (0..self.ids.len())
            .filter(|&i| self.members[i])
            .map(|i| self.ids[i])
            .collect()
    }

    /// Starts a fresh actor in slot `i` and tells it the membership.
    fn start(&mut self, i: usize) {
        let sc = self.sc;
        let slot = &mut self.slots[i];
        slot.inc += 1;
        let inc = slot.inc;
        let seed = derive(sc.seed, (i as u64) << 20 | inc as u64);
        match slot.byz {
            Some(kind) => {
                let limits = Limits {
                    max_attr_len: self.cfg.max_attr_len,
                    max_artifact_size: self.cfg.max_artifact_size,
                    max_adverts_per_message: self.cfg.max_adverts_per_message,
                    max_message_size: sc.max_message_size,
                    max_adverts_per_peer: self.cfg.max_adverts_per_peer,
                    max_adverts_per_peer_per_kind: self.cfg.max_adverts_per_peer_per_kind,
                    push_threshold: self.cfg.push_threshold,
                };
                slot.actor = Actor::Byz(Box::new(Byz::new(kind, seed, limits, sc.byz_budget)));
            }
            None => {
                let mut cfg = self.cfg.clone();
                cfg.seed = seed;
                slot.actor = Actor::Honest(Box::new(Node::new(self.ids[i], cfg.clone())));
                self.open_trace(i, cfg);
                let members = self.member_ids();
                self.pending.push_back((
                    i as u32,
                    Input::Membership {
                        version: self.version,
                        members,
                    },
                ));
            }
        }
    }

    /// Opens the trace of node `i`'s incarnation that just started with `cfg`, if `i` is
    /// recorded.
    fn open_trace(&mut self, i: usize, cfg: Config) {
        let sc = self.sc;
        let Some((_, sink)) = sc.records.iter().rev().find(|(n, _)| *n == i) else {
            return;
        };
        let incarnation = self.traces.iter().filter(|t| t.node == i).count() as u32 + 1;
        let now = Time::from_nanos(self.now);
        let mut rec = RecordedTrace {
            node: i,
            incarnation,
            started_at: now,
            ended_at: now,
            ended_by_crash: false,
            records: 0,
            path: None,
            data: None,
            error: None,
        };
        let index = self.traces.len();
        // A function no profile names is recorded by its decisions: the node runs it wrapped,
        // deciding exactly as it would unrecorded.
        let (header, decisions) = match self.profile.clone() {
            Some(profile) => (Header::new(self.ids[i], cfg, profile), None),
            None => (
                Header::with_decisions(self.ids[i], cfg, None),
                Some(DecisionLog::new()),
            ),
        };
        let out = match sink {
            TraceSink::Memory => TraceWriter::new(Vec::new(), &header)
                .map(TraceOut::Memory)
                .map_err(|e| e.to_string()),
            TraceSink::File(path) => {
                let path = TraceSink::incarnation_path(path, incarnation);
                let out = std::fs::File::create(&path)
                    .map_err(TraceWriteError::from)
                    .and_then(|f| TraceWriter::new(Box::new(f) as Box<dyn Write + Send>, &header))
                    .map(TraceOut::Stream)
                    .map_err(|e| format!("{}: {e}", path.display()));
                rec.path = Some(path);
                out
            }
            TraceSink::Writer(open) => open(i, incarnation)
                .map_err(TraceWriteError::from)
                .and_then(|w| TraceWriter::new(w, &header))
                .map(TraceOut::Stream)
                .map_err(|e| e.to_string()),
        };
        match out {
            Ok(out) => {
                if let (Some(log), Actor::Honest(node)) = (&decisions, &mut self.slots[i].actor) {
                    node.set_priority_fn(log.wrap(header.config.priority_fn.clone()));
                }
                self.slots[i].trace = Some(Box::new(ActiveTrace {
                    out,
                    index,
                    decisions,
                }));
            }
            Err(e) => {
                self.v_trace
                    .add(|| format!("node {i} incarnation {incarnation}: {e}"));
                rec.error = Some(e);
            }
        }
        self.traces.push(rec);
    }

    /// Closes a recorded incarnation's trace, at a crash or at the end of the run.
    fn end_trace(&mut self, t: ActiveTrace, crash: bool) {
        let index = t.index;
        let (records, data, error) = t.finish();
        let rec = &mut self.traces[index];
        rec.ended_at = Time::from_nanos(self.now);
        rec.ended_by_crash = crash;
        rec.records = records;
        rec.data = data;
        if let Some(e) = error {
            let e = match &rec.path {
                Some(p) => format!("{}: {e}", p.display()),
                None => e.to_string(),
            };
            let (node, inc) = (rec.node, rec.incarnation);
            self.v_trace
                .add(|| format!("node {node} incarnation {inc}: {e}"));
            rec.error = Some(e);
        }
    }

    fn broadcast_membership(&mut self) {
        self.version += 1;
        let members = self.member_ids();
        for i in 0..self.slots.len() {
            if self.honest(i) && self.alive(i) {
                self.pending.push_back((
                    i as u32,
                    Input::Membership {
                        version: self.version,
                        members: members.clone(),
                    },
                ));
            }
        }
    }

    fn partitioned(&self, a: u32, b: u32) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g[a as usize] != g[b as usize])
    }

    fn connect(&mut self, a: u32, b: u32) {
        let (ai, bi) = (a as usize, b as usize);
        if a == b
            || !self.alive(ai)
            || !self.alive(bi)
            || !self.members[ai]
            || !self.members[bi]
            || self.partitioned(a, b)
        {
            return;
        }
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&key(a, b)) else {
            return;
        };
        if conn.up {
            return;
        }
        conn.up = true;
        conn.epoch += 1;
        conn.queued = [0; 2];
        conn.congested = [false; 2];
        conn.last_arrival = [now; 2];
        conn.inflight = [0; 2];
        self.notify_connected(a, b);
        self.notify_connected(b, a);
    }

    fn notify_connected(&mut self, me: u32, peer: u32) {
        match &mut self.slots[me as usize].actor {
            Actor::Honest(_) => self
                .pending
                .push_back((me, Input::PeerConnected(self.ids[peer as usize]))),
            Actor::Byz(b) => {
                let mut sends = std::mem::take(&mut self.sends);
                b.on_connect(peer, &mut sends);
                self.send_all(me, &mut sends);
                self.sends = sends;
                self.arm_byz(me);
            }
            Actor::Down => {}
        }
    }

    fn arm_byz(&mut self, me: u32) {
        let slot = &mut self.slots[me as usize];
        if let Actor::Byz(b) = &slot.actor
            && !slot.ticking
            && b.wants_ticks()
        {
            slot.ticking = true;
            let inc = slot.inc;
            let t = self.now + nanos(self.sc.byz_period);
            self.push(t, EvKind::ByzTick { node: me, inc });
        }
    }

    fn close(&mut self, a: u32, b: u32, reconnect: Option<Duration>) {
        let Some(conn) = self.conns.get_mut(&key(a, b)) else {
            return;
        };
        if !conn.up {
            return;
        }
        conn.up = false;
        conn.inflight = [0; 2];
        conn.queued = [0; 2];
        conn.congested = [false; 2];
        for (me, peer) in [(a, b), (b, a)] {
            match &mut self.slots[me as usize].actor {
                Actor::Honest(_) => self
                    .pending
                    .push_back((me, Input::PeerDisconnected(self.ids[peer as usize]))),
                Actor::Byz(z) => z.on_disconnect(peer),
                Actor::Down => {}
            }
        }
        if let Some(d) = reconnect {
            let t = self.now + nanos(d);
            self.push(t, EvKind::Connect(a, b));
        }
    }

    fn send_all(&mut self, from: u32, sends: &mut Sends) {
        for (to, msg, class) in sends.drain(..) {
            self.enqueue(from, to, msg, class);
        }
    }

    fn enqueue(&mut self, from: u32, to: u32, msg: Message, class: Class) {
        let Some(conn) = self.conns.get_mut(&key(from, to)) else {
            return;
        };
        if !conn.up {
            self.lost += 1;
            return;
        }
        let enc = encoded_len(&msg);
        let len = wire_len(&msg) as u64;
        let d = dir(from, to);
        conn.queued[d] += len;
        let epoch = conn.epoch;
        if let Some((high, _)) = self.sc.congestion
            && conn.queued[d] > high
            && !conn.congested[d]
        {
            conn.congested[d] = true;
            if self.honest(from as usize) {
                self.pending.push_back((
                    from,
                    Input::Congestion {
                        peer: self.ids[to as usize],
                        congested: true,
                    },
                ));
            }
        }
        if self.honest(from as usize) {
            self.wire_bytes += len;
        }
        let slot = &mut self.slots[from as usize];
        slot.uplink[class.index()].push_back(OutMsg {
            to,
            epoch,
            msg,
            enc,
            sent: 0,
        });
        if slot.current.is_none() {
            self.start_frame(from);
        }
    }

    /// Picks the next frame of `node`'s uplink: the most urgent class first, FIFO within it.
    fn start_frame(&mut self, node: u32) {
        let Sim {
            slots,
            conns,
            pending,
            ids,
            sc,
            ..
        } = self;
        let slot = &mut slots[node as usize];
        for q in slot.uplink.iter_mut() {
            let mut idx = 0;
            while idx < q.len().min(SCAN) {
                let m = &mut q[idx];
                let Some(conn) = conns.get_mut(&key(node, m.to)) else {
                    q.remove(idx);
                    continue;
                };
                if !conn.up || conn.epoch != m.epoch {
                    q.remove(idx);
                    continue;
                }
                let chunk = FRAME_PAYLOAD.min(m.enc - m.sent);
                let header = if m.sent == 0 && chunk < m.enc {
                    FIRST_FRAME_HEADER
                } else {
                    FRAME_HEADER
                };
                let bytes = (chunk + header) as u64;
                let d = dir(node, m.to);
                let window = ((slot.up_bps as u128 * 2 * conn.latency as u128 / 8_000_000_000)
                    as u64)
                    .max(MIN_WINDOW);
                if conn.inflight[d] > 0 && conn.inflight[d] + bytes > window {
                    // This connection's window is full: serve another peer's message.
                    idx += 1;
                    continue;
                }
                conn.inflight[d] += bytes;
                m.sent += chunk;
                let (to, epoch) = (m.to, m.epoch);
                let last = if m.sent >= m.enc {
                    q.remove(idx).map(|m| m.msg)
                } else {
                    None
                };
                conn.queued[d] = conn.queued[d].saturating_sub(bytes);
                if let Some((_, low)) = sc.congestion
                    && conn.congested[d]
                    && conn.queued[d] < low
                {
                    conn.congested[d] = false;
                    if slot.byz.is_none() {
                        pending.push_back((
                            node,
                            Input::Congestion {
                                peer: ids[to as usize],
                                congested: false,
                            },
                        ));
                    }
                }
                slot.current = Some(Frame {
                    to,
                    epoch,
                    bytes: bytes as u32,
                    last,
                });
                let inc = slot.inc;
                let t = self.now + tx_nanos(bytes, slot.up_bps);
                self.push(t, EvKind::UplinkDone { node, inc });
                return;
            }
        }
    }

    fn uplink_done(&mut self, node: u32, inc: u32) {
        let slot = &mut self.slots[node as usize];
        if slot.inc != inc {
            return;
        }
        let Some(f) = slot.current.take() else {
            return;
        };
        let jitter = nanos(self.sc.link.jitter);
        let j = if jitter > 0 {
            self.rng.below(jitter + 1)
        } else {
            0
        };
        if let Some(conn) = self.conns.get_mut(&key(node, f.to))
            && conn.up
            && conn.epoch == f.epoch
        {
            let d = dir(node, f.to);
            let at = (self.now + conn.latency + j).max(conn.last_arrival[d]);
            conn.last_arrival[d] = at;
            let last = f.last.map(|msg| {
                Box::new(Delivery {
                    from: node,
                    to: f.to,
                    epoch: f.epoch,
                    msg,
                })
            });
            self.push(
                at,
                EvKind::Arrive {
                    from: node,
                    to: f.to,
                    epoch: f.epoch,
                    bytes: f.bytes,
                    last,
                },
            );
        }
        self.start_frame(node);
    }

    fn arrive(&mut self, from: u32, to: u32, epoch: u32, bytes: u32, last: Option<Box<Delivery>>) {
        let slot = &mut self.slots[to as usize];
        let start = self.now.max(slot.down_free);
        let done = start + tx_nanos(bytes as u64, slot.down_bps);
        slot.down_free = done;
        self.push(
            done,
            EvKind::Through {
                from,
                to,
                epoch,
                bytes,
                last,
            },
        );
    }

    fn through(&mut self, from: u32, to: u32, epoch: u32, bytes: u32, last: Option<Box<Delivery>>) {
        if let Some(conn) = self.conns.get_mut(&key(from, to))
            && conn.up
            && conn.epoch == epoch
        {
            let d = dir(from, to);
            conn.inflight[d] = conn.inflight[d].saturating_sub(bytes as u64);
            if self.slots[from as usize].current.is_none() {
                self.start_frame(from);
            }
        }
        if let Some(d) = last {
            self.receive(*d);
        }
    }

    fn receive(&mut self, d: Delivery) {
        let Delivery {
            from,
            to,
            epoch,
            msg,
        } = d;
        match self.conns.get(&key(from, to)) {
            Some(c) if c.up && c.epoch == epoch => {}
            _ => {
                self.lost += 1;
                return;
            }
        }
        let honest = self.honest(to as usize);
        if honest && encoded_len(&msg) > self.sc.max_message_size {
            self.cutoffs.push(Cutoff {
                at: Time::from_nanos(self.now),
                by: to as usize,
                peer: from as usize,
                reason: "transport: message above the size limit".into(),
            });
            self.close(to, from, self.sc.reconnect_cut_off);
            return;
        }
        match &mut self.slots[to as usize].actor {
            Actor::Honest(_) => self.pending.push_back((
                to,
                Input::Message {
                    from: self.ids[from as usize],
                    msg,
                },
            )),
            Actor::Byz(b) => {
                let mut sends = std::mem::take(&mut self.sends);
                b.on_message(from, msg, &mut sends);
                self.send_all(to, &mut sends);
                self.sends = sends;
            }
            Actor::Down => {}
        }
    }

    fn run_pending(&mut self) {
        let mut outs = Vec::new();
        while let Some((i, input)) = self.pending.pop_front() {
            let now = self.now;
            let slot = &mut self.slots[i as usize];
            let Actor::Honest(node) = &mut slot.actor else {
                continue;
            };
            self.inputs += 1;
            let was_timeout = matches!(input, Input::Timeout);
            let t = Time::from_nanos(now);
            if let Some(trace) = &mut slot.trace {
                trace.input(t, &input);
            }
            if let Err(e) = node.handle_input(t, input) {
                if let Some(trace) = &mut slot.trace {
                    trace.input_error(t, &e);
                }
                self.v_app
                    .add(|| format!("node {i} at {now}ns rejected an application input: {e}"));
            }
            if let Some(trace) = &mut slot.trace {
                trace.decisions(t);
            }
            while let Some(o) = node.poll_output() {
                if let Some(trace) = &mut slot.trace {
                    trace.output(t, &o);
                }
                outs.push(o);
            }
            let next = node.poll_timeout().map(|t| t.as_nanos());
            let inc = slot.inc;
            let mut schedule = None;
            match next {
                Some(t) if t <= now && was_timeout => {
                    self.v_timer.add(|| {
                        format!("node {i}: poll_timeout() = {t}ns does not advance past {now}ns after Input::Timeout")
                    });
                    schedule = Some(now + 1_000_000);
                }
                Some(t) => {
                    let t = t.max(now);
                    if slot.timer_at != Some(t) {
                        schedule = Some(t);
                    }
                }
                None => slot.timer_at = None,
            }
            if let Some(t) = schedule {
                slot.timer_at = Some(t);
                self.push(t, EvKind::Timer { node: i, inc });
            }
            for o in outs.drain(..) {
                self.output(i, o);
            }
        }
    }

    fn output(&mut self, i: u32, o: Output) {
        hash_output(&mut self.hash, self.now, i, &o);
        match o {
            Output::Send { to, msg, class } => {
                if let Some(&to) = self.index.get(&to) {
                    self.enqueue(i, to, msg, class);
                }
            }
            Output::Deliver { artifact, from } => self.deliver(i, artifact, from),
            Output::Disconnect { peer, reason } => {
                if let Some(&p) = self.index.get(&peer) {
                    self.cutoffs.push(Cutoff {
                        at: Time::from_nanos(self.now),
                        by: i as usize,
                        peer: p as usize,
                        reason: reason.to_string(),
                    });
                    self.close(i, p, self.sc.reconnect_cut_off);
                }
            }
            Output::Event(_) => {}
        }
    }

    fn deliver(&mut self, i: u32, artifact: Artifact, from: NodeId) {
        let now = self.now;
        let id = artifact.id;
        if ArtifactId::of(&artifact.data) != id {
            self.v_integrity.add(|| {
                format!("node {i} delivered {id:?} (from {from:?}) whose bytes hash elsewhere")
            });
        }
        let count = {
            let c = self.slots[i as usize].delivered.entry(id).or_insert(0);
            *c += 1;
            *c
        };
        if count > 1 {
            self.v_once
                .add(|| format!("node {i} got {id:?} delivered {count} times (at {now}ns)"));
        }
        if !self.art_by_id.contains_key(&id) {
            // Byzantine actors publish nothing: whatever they push or serve must not arrive.
            self.v_integrity.add(|| {
                format!("node {i} delivered {id:?} (from {from:?}), which no honest node published")
            });
        }
        if let Some(&k) = self.art_by_id.get(&id)
            && let Some(a) = &mut self.arts[k]
        {
            if a.size != artifact.data.len() || a.kind != artifact.kind {
                self.v_integrity
                    .add(|| format!("node {i} delivered {id:?} with another size or kind"));
            }
            let f = &mut a.first[i as usize];
            if *f == 0 {
                *f = now.saturating_sub(a.at) + 1;
            }
        }
    }

    fn action(&mut self, k: usize) {
        let action = self.actions[k].clone();
        match action {
            Action::Publish(p) => {
                let spec = self.publishes[p].clone();
                if spec.node >= self.slots.len() {
                    return;
                }
                let data = Rng::new(derive(self.sc.seed, 1_000_000 + p as u64)).bytes(spec.size);
                let artifact = Artifact::new(spec.kind, (p as u32).to_le_bytes().to_vec(), data);
                if !matches!(self.slots[spec.node].actor, Actor::Honest(_)) {
                    return;
                }
                self.art_by_id.insert(artifact.id, p);
                self.arts[p] = Some(ArtInfo {
                    id: artifact.id,
                    kind: spec.kind,
                    size: spec.size,
                    origin: spec.node,
                    at: self.now,
                    attr: artifact.attr.clone(),
                    first: vec![0; self.slots.len()],
                });
                self.pending
                    .push_back((spec.node as u32, Input::Publish(artifact)));
            }
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

    fn neighbours(&self, i: usize) -> Vec<u32> {
        self.adj[i].clone()
    }

    fn fault(&mut self, f: Fault) {
        let n = self.slots.len();
        match f {
            Fault::Partition(side) => {
                let mut g = vec![0u8; n];
                for i in side {
                    if i < n {
                        g[i] = 1;
                    }
                }
                self.group = Some(g);
                let mut cut: Vec<(u32, u32)> = self
                    .conns
                    .iter()
                    .filter(|(k, c)| c.up && self.partitioned(k.0, k.1))
                    .map(|(k, _)| *k)
                    .collect();
                cut.sort_unstable();
                for (a, b) in cut {
                    self.close(a, b, None);
                }
            }
            Fault::Heal => {
                self.group = None;
                let mut down: Vec<(u32, u32)> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| !c.up)
                    .map(|(k, _)| *k)
                    .collect();
                down.sort_unstable();
                for (a, b) in down {
                    self.connect(a, b);
                }
            }
            Fault::Crash(i) if i < n && self.alive(i) => {
                for j in self.neighbours(i) {
                    self.close(i as u32, j, None);
                }
                let slot = &mut self.slots[i];
                slot.actor = Actor::Down;
                slot.inc += 1;
                slot.uplink = Default::default();
                slot.current = None;
                slot.timer_at = None;
                slot.delivered.clear();
                slot.ticking = false;
                if let Some(t) = slot.trace.take() {
                    self.end_trace(*t, true);
                }
            }
            Fault::Restart(i) if i < n && !self.alive(i) && self.members[i] => {
                self.start(i);
                for j in self.neighbours(i) {
                    self.connect(i as u32, j);
                }
            }
            Fault::Bandwidth(i, bps) if i < n => {
                self.slots[i].up_bps = bps.max(1);
                self.slots[i].down_bps = bps.max(1);
            }
            Fault::DropConnection(a, b) if a < n && b < n => {
                self.close(a as u32, b as u32, Some(self.sc.reconnect_dropped));
            }
            Fault::AddMember(i) if i < n && !self.members[i] => {
                self.members[i] = true;
                if !self.alive(i) {
                    self.start(i);
                }
                self.broadcast_membership();
                for j in self.neighbours(i) {
                    self.connect(i as u32, j);
                }
            }
            Fault::RemoveMember(i) if i < n && self.members[i] => {
                self.members[i] = false;
                self.broadcast_membership();
                if !self.honest(i) {
                    for j in self.neighbours(i) {
                        self.close(i as u32, j, None);
                    }
                }
            }
            _ => {}
        }
    }

    fn sample(&mut self) {
        let c = &self.cfg;
        for (i, slot) in self.slots.iter().enumerate() {
            let Actor::Honest(node) = &slot.actor else {
                continue;
            };
            let t = node.table_sizes();
            let peers = node.connected_peers().count().max(1);
            let m = &mut self.max_state;
            m.tracked_adverts = m.tracked_adverts.max(t.tracked_adverts);
            m.max_adverts_of_one_peer = m.max_adverts_of_one_peer.max(t.max_adverts_of_one_peer);
            m.max_queued_requests_of_one_peer = m
                .max_queued_requests_of_one_peer
                .max(t.max_queued_requests_of_one_peer);
            m.pending_downloads = m.pending_downloads.max(t.pending_downloads);
            m.requests = m.requests.max(t.requests);
            m.in_flight = m.in_flight.max(t.in_flight);
            m.in_flight_bytes = m.in_flight_bytes.max(t.in_flight_bytes);
            m.delivered_memory = m.delivered_memory.max(t.delivered_memory);
            m.dropped_memory = m.dropped_memory.max(t.dropped_memory);
            m.outputs = m.outputs.max(t.outputs);
            let mut bounds = t.exceeded(c, peers);
            if t.outputs > 0 {
                bounds.push(("undrained outputs", t.outputs as u64, 0));
            }
            let now = self.now;
            for (what, value, bound) in bounds {
                self.v_bounds
                    .add(|| format!("node {i} at {now}ns: {what} = {value} > bound {bound}"));
            }
        }
    }

    fn main_loop(&mut self, until: u64) {
        self.run_pending();
        while let Some(ev) = self.heap.pop() {
            if ev.t > until {
                break;
            }
            self.now = ev.t;
            self.events += 1;
            let is_sample = matches!(ev.kind, EvKind::Sample);
            if !is_sample {
                self.live -= 1;
            }
            match ev.kind {
                EvKind::UplinkDone { node, inc } => self.uplink_done(node, inc),
                EvKind::Arrive {
                    from,
                    to,
                    epoch,
                    bytes,
                    last,
                } => self.arrive(from, to, epoch, bytes, last),
                EvKind::Through {
                    from,
                    to,
                    epoch,
                    bytes,
                    last,
                } => self.through(from, to, epoch, bytes, last),
                EvKind::Timer { node, inc } => {
                    let slot = &mut self.slots[node as usize];
                    if slot.inc == inc && slot.timer_at == Some(ev.t) {
                        slot.timer_at = None;
                        self.pending.push_back((node, Input::Timeout));
                    }
                }
                EvKind::ByzTick { node, inc } => {
                    let slot = &mut self.slots[node as usize];
                    if slot.inc == inc
                        && let Actor::Byz(b) = &mut slot.actor
                    {
                        slot.ticking = false;
                        let mut sends = std::mem::take(&mut self.sends);
                        b.on_tick(&mut sends);
                        self.send_all(node, &mut sends);
                        self.sends = sends;
                        self.arm_byz(node);
                    }
                }
                EvKind::Action(k) => self.action(k),
                EvKind::Connect(a, b) => self.connect(a, b),
                EvKind::Sample => {
                    self.sample();
                    if self.live > 0 {
                        let t = self.now + nanos(self.sc.sample_interval).max(1);
                        self.push(t, EvKind::Sample);
                    }
                }
            }
            self.run_pending();
            if self.live == 0 {
                break;
            }
        }
        self.sample();
    }

    fn finish(mut self) -> Report {
        let n = self.slots.len();
        let sc = self.sc;
        for i in 0..n {
            if let Some(t) = self.slots[i].trace.take() {
                self.end_trace(*t, false);
            }
        }
        let mut never_ran = Vec::new();
        for &(node, _) in &sc.records {
            if node >= n {
                self.v_trace
                    .add(|| format!("node {node} does not exist (the scenario has {n} nodes)"));
            } else if !self.honest(node) {
                self.v_trace
                    .add(|| format!("node {node} is a byzantine actor: it has no core to record"));
            } else if !self.traces.iter().any(|t| t.node == node) {
                never_ran.push(node);
            }
        }
        // Components of the final graph of up connections between live honest members.
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        let ok = |s: &Self, i: usize| s.honest(i) && s.alive(i) && s.members[i];
        for (k, c) in &self.conns {
            let (a, b) = (k.0 as usize, k.1 as usize);
            if c.up && ok(&self, a) && ok(&self, b) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
        let mut v_delivery = Violations::default();
        let (mut expected, mut delivered, mut ideal) = (0usize, 0usize, 0u64);
        let mut figures = Vec::new();
        let mut lat_all = Vec::new();
        let mut lat_kind: Vec<(p2p_core::Kind, Vec<Duration>)> = Vec::new();
        let pfn = self.cfg.priority_fn.clone();
        for (k, a) in self.arts.iter().enumerate() {
            let Some(a) = a else { continue };
            let holds = |s: &Self, i: usize| match &s.slots[i].actor {
                Actor::Honest(node) => node.has_artifact(&a.id),
                _ => false,
            };
            let mut roots: Vec<usize> = (0..n)
                .filter(|&i| ok(&self, i) && holds(&self, i))
                .map(|i| find(&mut parent, i))
                .collect();
            roots.sort_unstable();
            roots.dedup();
            let advert = p2p_core::Advert {
                id: a.id,
                kind: a.kind,
                size: a.size as u64,
                attr: a.attr.clone(),
            };
            let wanted = pfn.0.decide(&advert) != Decision::Drop;
            let (mut exp, mut got, mut complete) = (0usize, 0usize, Some(0u64));
            for i in 0..n {
                if i == a.origin || !ok(&self, i) || !wanted {
                    continue;
                }
                if !roots.contains(&find(&mut parent, i)) {
                    continue;
                }
                exp += 1;
                let has = self.slots[i].delivered.contains_key(&a.id) || holds(&self, i);
                if has {
                    got += 1;
                    complete = match (complete, a.first[i]) {
                        (Some(c), f) if f > 0 => Some(c.max(f - 1)),
                        _ => None,
                    };
                } else {
                    complete = None;
                    v_delivery.add(|| {
                        format!(
                            "artifact #{k} ({:?}, {} bytes from node {}) never reached node {i}",
                            a.id, a.size, a.origin
                        )
                    });
                }
            }
            expected += exp;
            delivered += got;
            ideal += a.size as u64 * exp as u64;
            for &f in &a.first {
                if f > 0 {
                    let d = Duration::from_nanos(f - 1);
                    lat_all.push(d);
                    match lat_kind.iter_mut().find(|(kk, _)| *kk == a.kind) {
                        Some((_, v)) => v.push(d),
                        None => lat_kind.push((a.kind, vec![d])),
                    }
                }
            }
            figures.push(ArtifactFigure {
                index: k,
                kind: a.kind,
                size: a.size,
                origin: a.origin,
                published_at: Time::from_nanos(a.at),
                expected: exp,
                holders: got,
                complete_after: complete.map(Duration::from_nanos),
            });
        }
        lat_kind.sort_by_key(|(k, _)| *k);
        let latency_by_kind: Vec<_> = lat_kind
            .into_iter()
            .map(|(k, mut v)| (k, LatencyStats::of(&mut v)))
            .collect();
        let mut checks = vec![
            v_delivery.check(
                "eventual-delivery",
                format!("{delivered}/{expected} expected deliveries"),
            ),
            self.v_once
                .check("exactly-once", "no artifact delivered twice".into()),
            self.v_integrity.check(
                "integrity",
                "every delivery hashes to its id and was published by an honest node".into(),
            ),
            self.v_bounds.check(
                "bounded-state",
                "every sampled table within its configured bound".into(),
            ),
            self.v_timer
                .check("timer-progress", "every timer advanced".into()),
            self.v_app
                .check("application-inputs", "every publish accepted".into()),
        ];
        if !sc.records.is_empty() {
            let records: u64 = self.traces.iter().map(|t| t.records).sum();
            let mut ok = format!("{} traces, {records} records", self.traces.len());
            if !never_ran.is_empty() {
                ok.push_str(&format!("; never started: nodes {never_ran:?}"));
            }
            checks.push(self.v_trace.check("trace-recording", ok));
        }
        if let Some(max) = sc.urgent_p99_max {
            let s = latency_by_kind
                .iter()
                .find(|(k, _)| *k == URGENT)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            checks.push(Check {
                name: "urgent-latency",
                ok: s.count > 0 && s.p99 <= max,
                detail: format!("urgent {s}, bound p99 <= {:.1}ms", max.as_secs_f64() * 1e3),
            });
        }
        Report {
            name: sc.name.clone(),
            seed: sc.seed,
            repro: sc.repro_command(),
            nodes: n,
            checks,
            artifacts: figures,
            expected,
            delivered,
            latency: LatencyStats::of(&mut lat_all),
            latency_by_kind,
            wire_bytes: self.wire_bytes,
            ideal_bytes: ideal,
            max_state: self.max_state,
            cutoffs: std::mem::take(&mut self.cutoffs),
            events: self.events,
            inputs: self.inputs,
            end: Time::from_nanos(self.now),
            output_hash: self.hash.value(),
            traces: std::mem::take(&mut self.traces),
        }
    }
}

fn id8(b: &[u8; 32]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

fn hash_output(h: &mut RunHash, now: u64, node: u32, o: &Output) {
    h.u64(now);
    h.u64(node as u64);
    match o {
        Output::Send { to, msg, class } => {
            h.u64(1);
            h.u64(id8(&to.0));
            h.u64(*class as u64);
            match msg {
                Message::Push { advert, data } => {
                    h.u64(11);
                    h.u64(id8(&advert.id.0));
                    h.u64(data.len() as u64);
                }
                Message::Adverts(v) => {
                    h.u64(12);
                    h.u64(v.len() as u64);
                    for a in v {
                        h.u64(id8(&a.id.0) ^ a.size);
                    }
                }
                Message::Withdraw(id) => {
                    h.u64(13);
                    h.u64(id8(&id.0));
                }
                Message::Request {
                    req_id,
                    id,
                    priority,
                } => {
                    h.u64(14);
                    h.u64(*req_id);
                    h.u64(id8(&id.0));
                    h.u64(priority.0 as u64);
                }
                Message::Response { req_id, id, data } => {
                    h.u64(15);
                    h.u64(*req_id);
                    h.u64(id8(&id.0));
                    h.u64(data.len() as u64);
                }
                Message::NotFound { req_id, id } => {
                    h.u64(16);
                    h.u64(*req_id);
                    h.u64(id8(&id.0));
                }
            }
        }
        Output::Deliver { artifact, from } => {
            h.u64(2);
            h.u64(id8(&artifact.id.0));
            h.u64(id8(&from.0));
        }
        Output::Disconnect { peer, reason } => {
            h.u64(3);
            h.u64(id8(&peer.0));
            h.bytes(reason.to_string().as_bytes());
        }
        Output::Event(e) => {
            h.u64(4);
            h.bytes(format!("{e:?}").as_bytes());
        }
    }
}
