//! The scenario builder: the subnet, its network, its workload, its faults and its expectations.

use super::byz::ByzKind;
use super::report::Report;
use super::{BULK, URGENT};
use crate::trace::PriorityProfile;
use p2p_core::{Config, Decision, Kind, Priority, PriorityFnRef};
use p2p_transport::conn::ConnConfig;
use p2p_transport::mux::MuxConfig;
use p2p_transport::peers::PolicyConfig;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One-way latency, jitter and bandwidth of links and nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    /// One-way latency of a link.
    pub latency: Duration,
    /// Uniform extra latency drawn per frame in `0..=jitter` (frames on one connection keep
    /// their order).
    pub jitter: Duration,
    /// Upload and download bandwidth of every node, in bits per second.
    pub bandwidth_bps: u64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(1),
            bandwidth_bps: 1_000_000_000,
        }
    }
}

/// Which pairs of nodes have a link (and so a connection when both are members).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every pair.
    FullMesh,
    /// Each node links to `degree` random others (links are symmetric, so degrees vary a bit);
    /// a ring is added first so the graph is connected.
    Random {
        /// Links drawn per node.
        degree: usize,
    },
    /// Exactly these links (node indices).
    Links(Vec<(usize, usize)>),
    /// The degree-`k` graph of p2p-transport's [`Topology::Degree`](p2p_transport::topology::Topology::Degree)
    /// over the current members, the one the real nodes derive: honest nodes run it in their
    /// policies (they dial and admit their neighbours only, and on a membership change prune the
    /// connections to members that are no longer neighbours and dial the new ones).
    Degree(usize),
}

/// A scripted fault or change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cuts every connection between `side` and the other nodes and refuses new ones until a
    /// [`Fault::Heal`].
    Partition(Vec<usize>),
    /// Ends the partition and reconnects the links it cut.
    Heal,
    /// The node crashes: its state is lost and its connections close.
    Crash(usize),
    /// A crashed node restarts as a fresh core and reconnects.
    Restart(usize),
    /// Sets a node's upload and download bandwidth (bits per second).
    Bandwidth(usize, u64),
    /// Closes the connection between two nodes; it comes back after the scenario's
    /// reconnect delay for dropped connections.
    DropConnection(usize, usize),
    /// Adds a node to the membership (starting it if it never ran).
    AddMember(usize),
    /// Removes a node from the membership.
    RemoveMember(usize),
}

/// A generated workload, drawn from the seed at the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Small urgent artifacts published by every honest initial member.
    pub urgent_per_node: usize,
    /// Size of each urgent artifact.
    pub urgent_size: usize,
    /// Large bulk artifacts published by random honest members.
    pub bulk_count: usize,
    /// Size of each bulk artifact.
    pub bulk_size: usize,
    /// Publish times are uniform in `start..start + window`.
    pub start: Duration,
    /// Length of the publishing window.
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct PublishSpec {
    pub node: usize,
    pub kind: Kind,
    pub size: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    Publish(usize),
    Remove { node: usize, publish: usize },
    Fault(Fault),
}

type ConfigFn = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Opens the writer of one recorded incarnation: called with the node's index and its
/// incarnation (1 for its first start, 2 after its first restart, ...).
pub type WriterFn = Arc<dyn Fn(usize, u32) -> io::Result<Box<dyn Write + Send>> + Send + Sync>;

/// Where [`Scenario::record`] writes a node's trace.
///
/// Each incarnation of the node (its first start, then each restart after a crash) is a trace of
/// its own, because a restarted node is a fresh core with a fresh seed: a trace describes one
/// core from its creation. A crash ends the current incarnation's trace; the restart opens the
/// next one.
#[derive(Clone)]
pub enum TraceSink {
    /// Kept in memory and returned in [`Report::traces`](super::Report::traces).
    Memory,
    /// Written to this file (created or truncated when the node starts); later incarnations
    /// go to [`TraceSink::incarnation_path`] of it.
    File(PathBuf),
    /// Written to the writer this function opens for each incarnation.
    Writer(WriterFn),
}

impl TraceSink {
    /// A sink that opens its writers with `open(node, incarnation)`.
    pub fn writer(
        open: impl Fn(usize, u32) -> io::Result<Box<dyn Write + Send>> + Send + Sync + 'static,
    ) -> Self {
        TraceSink::Writer(Arc::new(open))
    }

    /// The file of incarnation `incarnation` for a [`TraceSink::File`] of `path`: `path` itself
    /// for the first; `<stem>-restart<k>.<ext>` for the `k`-th restart (incarnation `k + 1`).
    pub fn incarnation_path(path: &Path, incarnation: u32) -> PathBuf {
        if incarnation <= 1 {
            return path.to_path_buf();
        }
        let stem = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let name = match path.extension() {
            Some(ext) => format!(
                "{stem}-restart{}.{}",
                incarnation - 1,
                ext.to_string_lossy()
            ),
            None => format!("{stem}-restart{}", incarnation - 1),
        };
        path.with_file_name(name)
    }
}

impl fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceSink::Memory => f.write_str("Memory"),
            TraceSink::File(p) => f.debug_tuple("File").field(p).finish(),
            TraceSink::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

impl From<PathBuf> for TraceSink {
    fn from(path: PathBuf) -> Self {
        TraceSink::File(path)
    }
}

impl From<&Path> for TraceSink {
    fn from(path: &Path) -> Self {
        TraceSink::File(path.to_path_buf())
    }
}

/// A simulated run, built step by step; [`Scenario::run`] executes it.
#[derive(Clone)]
pub struct Scenario {
    pub(crate) seed: u64,
    pub(crate) name: String,
    pub(crate) repro: Option<String>,
    pub(crate) nodes: usize,
    pub(crate) initial_members: Option<Vec<usize>>,
    pub(crate) link: LinkSpec,
    pub(crate) link_latency: Vec<((usize, usize), Duration)>,
    pub(crate) bandwidth: Vec<(usize, u64)>,
    pub(crate) topology: Topology,
    pub(crate) config_fn: Option<ConfigFn>,
    pub(crate) priorities: Vec<(Kind, Priority)>,
    pub(crate) default_decision: Decision,
    pub(crate) auto_relay: Option<bool>,
    pub(crate) publishes: Vec<PublishSpec>,
    pub(crate) actions: Vec<(Duration, Action)>,
    pub(crate) workload: Option<Workload>,
    pub(crate) random_faults: Option<(usize, Duration, Duration)>,
    pub(crate) byzantine: Vec<(usize, ByzKind)>,
    pub(crate) reconnect_dropped: Duration,
    pub(crate) reconnect_cut_off: Option<Duration>,
    /// The honest nodes' connection policy (p2p-transport's `PeerPolicy`): back-off of redials
    /// and bans of peers they cut off.
    pub(crate) policy: PolicyConfig,
    pub(crate) congestion: Option<(u64, u64)>,
    /// The machine the nodes share, if modelled (see [`Scenario::cpu`]).
    pub(crate) cpu: Option<CpuModel>,
    /// The downlinks' queue limit and loss recovery, if modelled (see
    /// [`Scenario::tail_drop`]).
    pub(crate) tail_drop: Option<(Duration, u64, Duration)>,
    pub(crate) max_message_size: usize,
    /// The honest receivers' reassembly bounds (`max_partial_messages`, `max_buffered_bytes`)
    /// and stall timeout (`partial_timeout`: no frame of a message under reassembly for it).
    pub(crate) mux: MuxConfig,
    /// The node-wide reassembly cap (`None`: twice the core's `max_in_flight_bytes`, the
    /// drivers' default).
    pub(crate) reassembly_cap: Option<usize>,
    /// The honest senders' write stall timeout.
    pub(crate) write_stall_timeout: Duration,
    /// The connection layer's keepalive interval, idle timeout and hello timeout.
    pub(crate) keepalive_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) hello_timeout: Duration,
    pub(crate) duration: Option<Duration>,
    pub(crate) settle: Duration,
    pub(crate) sample_interval: Duration,
    pub(crate) urgent_p99_max: Option<Duration>,
    pub(crate) expect_complete: bool,
    pub(crate) spread_by: Option<Duration>,
    pub(crate) check_determinism: bool,
    pub(crate) byz_period: Duration,
    pub(crate) byz_budget: u32,
    pub(crate) records: Vec<(usize, TraceSink)>,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("seed", &self.seed)
            .field("nodes", &self.nodes)
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// A scenario of 4 fully meshed honest nodes, 10 ms links at 1 Gbit/s and no workload.
    pub fn new(seed: u64) -> Self {
        let conn = ConnConfig::default();
        Scenario {
            seed,
            name: "custom".into(),
            repro: None,
            nodes: 4,
            initial_members: None,
            link: LinkSpec::default(),
            link_latency: Vec::new(),
            bandwidth: Vec::new(),
            topology: Topology::FullMesh,
            config_fn: None,
            priorities: vec![(URGENT, Priority::URGENT), (BULK, Priority::BULK)],
            default_decision: Decision::Fetch(Priority::NORMAL),
            auto_relay: None,
            publishes: Vec::new(),
            actions: Vec::new(),
            workload: None,
            random_faults: None,
            byzantine: Vec::new(),
            reconnect_dropped: Duration::from_millis(500),
            reconnect_cut_off: None,
            policy: PolicyConfig {
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
                ban_base: Duration::from_millis(500),
                ban_max: Duration::from_secs(60),
                forgive_after: Duration::from_secs(60),
                ..PolicyConfig::default()
            },
            congestion: None,
            cpu: None,
            tail_drop: None,
            max_message_size: (16 << 20) + (1 << 16),
            mux: MuxConfig::default(),
            reassembly_cap: None,
            write_stall_timeout: Duration::from_secs(10),
            keepalive_interval: conn.keepalive_interval,
            idle_timeout: conn.idle_timeout,
            hello_timeout: conn.hello_timeout,
            duration: None,
            settle: Duration::from_secs(30),
            sample_interval: Duration::from_millis(100),
            urgent_p99_max: None,
            expect_complete: false,
            spread_by: None,
            check_determinism: false,
            byz_period: Duration::from_millis(20),
            byz_budget: 2_000,
            records: Vec::new(),
        }
    }

    /// The scenario's name (shown in reports).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// The command that reproduces this run, printed when a check fails.
    pub fn repro(mut self, command: &str) -> Self {
        self.repro = Some(command.into());
        self
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of node slots (members, byzantine actors and nodes added later).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// The number of node slots.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Whether `node` is a slot of this scenario run by an honest core (not a byzantine actor):
    /// the nodes that [`Scenario::record`] can record.
    pub fn is_honest_node(&self, node: usize) -> bool {
        node < self.nodes && !self.byzantine.iter().any(|(n, _)| *n == node)
    }

    /// Only these nodes are members at the start (the others can join with
    /// [`Scenario::add_member`]); by default every node is.
    pub fn initial_members(mut self, members: Vec<usize>) -> Self {
        self.initial_members = Some(members);
        self
    }

    /// Latency of every link and bandwidth of every node (bits per second).
    pub fn link(mut self, latency: Duration, bandwidth_bps: u64) -> Self {
        self.link.latency = latency;
        self.link.bandwidth_bps = bandwidth_bps;
        self
    }

    /// Jitter of every link.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.link.jitter = jitter;
        self
    }

    /// Latency of one link.
    pub fn link_latency(mut self, a: usize, b: usize, latency: Duration) -> Self {
        self.link_latency.push(((a.min(b), a.max(b)), latency));
        self
    }

    /// Upload and download bandwidth of one node (a slow node).
    pub fn node_bandwidth(mut self, node: usize, bandwidth_bps: u64) -> Self {
        self.bandwidth.push((node, bandwidth_bps));
        self
    }

    /// The topology.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Adjusts every honest node's [`Config`] (its seed is set afterwards, per node), after
    /// the adjustments already given.
    pub fn config(mut self, f: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.config_fn = Some(match self.config_fn.take() {
            Some(before) => Arc::new(move |c: &mut Config| {
                before(c);
                f(c)
            }),
            None => Arc::new(f),
        });
        self
    }

    /// The priority table by kind (default: [`URGENT`] urgent, [`BULK`] bulk) and the decision
    /// for other kinds (default: fetch at normal priority).
    pub fn priorities(mut self, table: Vec<(Kind, Priority)>, default: Decision) -> Self {
        self.priorities = table;
        self.default_decision = default;
        self
    }

    /// Whether honest nodes relay what they receive (default: on unless the topology is a full
    /// mesh).
    pub fn auto_relay(mut self, on: bool) -> Self {
        self.auto_relay = Some(on);
        self
    }

    /// `node` publishes an artifact of `kind` and `size` random bytes at `at`.
    pub fn publish(mut self, at: Duration, node: usize, kind: Kind, size: usize) -> Self {
        let i = self.publishes.len();
        self.publishes.push(PublishSpec { node, kind, size });
        self.actions.push((at, Action::Publish(i)));
        self
    }

    /// `node` removes the artifact of the `publish`-th publish call from its pool at `at`.
    pub fn remove(mut self, at: Duration, node: usize, publish: usize) -> Self {
        self.actions.push((at, Action::Remove { node, publish }));
        self
    }

    /// A generated workload, added to the scripted publishes.
    pub fn workload(mut self, w: Workload) -> Self {
        self.workload = Some(w);
        self
    }

    /// A fault at `at`.
    pub fn fault(mut self, at: Duration, fault: Fault) -> Self {
        self.actions.push((at, Action::Fault(fault)));
        self
    }

    /// Partitions `side` from the rest at `at`.
    pub fn partition(self, at: Duration, side: Vec<usize>) -> Self {
        self.fault(at, Fault::Partition(side))
    }

    /// Heals the partition at `at`.
    pub fn heal(self, at: Duration) -> Self {
        self.fault(at, Fault::Heal)
    }

    /// Crashes `node` at `at`.
    pub fn crash(self, at: Duration, node: usize) -> Self {
        self.fault(at, Fault::Crash(node))
    }

    /// Restarts `node` (fresh state) at `at`.
    pub fn restart(self, at: Duration, node: usize) -> Self {
        self.fault(at, Fault::Restart(node))
    }

    /// Sets `node`'s bandwidth at `at`.
    pub fn slow(self, at: Duration, node: usize, bandwidth_bps: u64) -> Self {
        self.fault(at, Fault::Bandwidth(node, bandwidth_bps))
    }

    /// Drops the connection between `a` and `b` at `at`.
    pub fn drop_connection(self, at: Duration, a: usize, b: usize) -> Self {
        self.fault(at, Fault::DropConnection(a, b))
    }

    /// Adds `node` to the membership at `at`.
    pub fn add_member(self, at: Duration, node: usize) -> Self {
        self.fault(at, Fault::AddMember(node))
    }

    /// Removes `node` from the membership at `at`.
    pub fn remove_member(self, at: Duration, node: usize) -> Self {
        self.fault(at, Fault::RemoveMember(node))
    }

    /// `count` random faults (partitions, crashes with restarts, dropped connections, slow
    /// periods, membership leaves and re-joins) starting in `start..start + window`, each undone
    /// within the window.
    pub fn random_faults(mut self, count: usize, start: Duration, window: Duration) -> Self {
        self.random_faults = Some((count, start, window));
        self
    }

    /// Makes `node` a scripted byzantine actor of `kind` instead of an honest core.
    pub fn byzantine(mut self, node: usize, kind: ByzKind) -> Self {
        self.byzantine.push((node, kind));
        self
    }

    /// Period of byzantine actors' actions and their budget of actions.
    pub fn byzantine_pace(mut self, period: Duration, budget: u32) -> Self {
        self.byz_period = period;
        self.byz_budget = budget;
        self
    }

    /// Delay before a connection dropped by a fault comes back (default 500 ms).
    pub fn reconnect_dropped(mut self, delay: Duration) -> Self {
        self.reconnect_dropped = delay;
        self
    }

    /// Whether (and after what delay) a connection that a core cut off is re-established while
    /// both ends are members (default: never).
    pub fn reconnect_cut_off(mut self, delay: Option<Duration>) -> Self {
        self.reconnect_cut_off = delay;
        self
    }

    /// Feeds [`p2p_core::Input::Congestion`] when a node's queued bytes to one peer pass `high`
    /// and again when they fall under `low`.
    pub fn congestion(mut self, high: u64, low: u64) -> Self {
        self.congestion = Some((high, low));
        self
    }

    /// Models the processors the nodes share (default: none, every node's work is free):
    /// each frame, once through its receiver's downlink, takes its `cost` on one of `cores`
    /// cores shared by all nodes, the earliest free, and reaches the receiver when done; a
    /// receiver's frames stay in order, and until then they count in the sender's window.
    /// `cost` stands for all the work a frame causes at both ends (TLS, the kernel's TCP,
    /// copies, hashing, wake-ups): the model of a testbed whose node processes share one
    /// machine.
    pub fn cpu(mut self, cores: usize, cost: CpuCost) -> Self {
        self.cpu = Some(CpuModel { cores, cost });
        self
    }

    /// Bounds every downlink's queue (default: unbounded, nothing is lost): a frame that finds
    /// more than `queue` worth of bytes at the downlink's rate plus `extra` bytes waiting is
    /// dropped, and its connection recovers it as TCP does, `recovery` later, holding back the
    /// frames it sent after it until then (they arrive again in order). The model of a link
    /// shaped by a tail-drop queue (tbf's `limit`) shared by several TCP connections.
    pub fn tail_drop(mut self, queue: Duration, extra: u64, recovery: Duration) -> Self {
        self.tail_drop = Some((queue, extra, recovery));
        self
    }

    /// The transport's largest accepted message (default 16 MiB + 64 KiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The honest receivers' stall timeout: a message under reassembly that had no frame for
    /// `timeout` ends the connection as misbehaviour (the multiplexer's `partial_timeout`;
    /// default 30 s).
    pub fn partial_timeout(mut self, timeout: Duration) -> Self {
        self.mux.partial_timeout = timeout;
        self
    }

    /// The honest nodes' node-wide reassembly cap (default: twice the core's
    /// `max_in_flight_bytes`, as the drivers set it).
    pub fn reassembly_cap(mut self, bytes: usize) -> Self {
        self.reassembly_cap = Some(bytes);
        self
    }

    /// How long an honest sender waits with bytes queued for a peer whose window accepts none
    /// before it closes the connection (the connection layer's `write_stall_timeout`; default
    /// 10 s).
    pub fn write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    /// The connection layer's timers on every link (`p2p_transport::conn::ConnConfig`'s, with
    /// its defaults 5 s, 30 s and 5 s): a sender with nothing sent for `keepalive_interval`
    /// sends a keepalive; an honest receiver ends a connection that brought nothing for
    /// `idle_timeout`, or no hello within `hello_timeout` of its start. `idle_timeout` must
    /// exceed `keepalive_interval`, and both be positive.
    pub fn conn_timers(
        mut self,
        keepalive_interval: Duration,
        idle_timeout: Duration,
        hello_timeout: Duration,
    ) -> Self {
        self.keepalive_interval = keepalive_interval;
        self.idle_timeout = idle_timeout;
        self.hello_timeout = hello_timeout;
        self
    }

    /// The connection layer's settings of the simulated links: its timers
    /// ([`Scenario::conn_timers`]) and the multiplexer's bounds.
    pub(crate) fn conn_config(&self) -> ConnConfig {
        ConnConfig {
            keepalive_interval: self.keepalive_interval,
            idle_timeout: self.idle_timeout,
            hello_timeout: self.hello_timeout,
            ..ConnConfig::with_mux(self.mux.clone())
        }
    }

    /// Stops the run at this virtual time (default: last scripted action + settle time).
    pub fn run_for(mut self, d: Duration) -> Self {
        self.duration = Some(d);
        self
    }

    /// Time left after the last scripted action for the subnet to settle (default 30 s).
    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = d;
        self
    }

    /// Period of the bounded-state sampling of every honest node (default 100 ms).
    pub fn sample_interval(mut self, d: Duration) -> Self {
        self.sample_interval = d;
        self
    }

    /// Fails the run if the p99 delivery latency of [`URGENT`] artifacts exceeds `max`.
    pub fn expect_urgent_p99(mut self, max: Duration) -> Self {
        self.urgent_p99_max = Some(max);
        self
    }

    /// Fails the run unless every artifact reached every honest member that runs at the end
    /// (other than its origin): the `complete` check. Without it, delivery is only expected
    /// where a final connection path joins a node to a holder, so an artifact that no
    /// survivor got would pass.
    pub fn expect_complete(mut self) -> Self {
        self.expect_complete = true;
        self
    }

    /// Fails the run unless every chunk of every chunked artifact published before `at` had
    /// gone through from its origin to some peer by `at` (the `origin-spread` check): a crash
    /// of the origin at `at` then leaves every chunk with a holder.
    pub fn expect_origin_spread_by(mut self, at: Duration) -> Self {
        self.spread_by = Some(at);
        self
    }

    /// Runs the scenario twice and checks that both runs hash every output identically.
    pub fn check_determinism(mut self) -> Self {
        self.check_determinism = true;
        self
    }

    /// Records honest node `node`'s core to a trace: every input the simulator feeds it, at its
    /// virtual time, and every output drained from it, under a [`crate::trace::Header`] with its
    /// id, config, seed and [`Scenario::priority_profile`], or with the decisions of a priority
    /// function that [`Scenario::config`] installed and no profile names. A crash ends the
    /// trace; a restart
    /// starts the next incarnation's (see [`TraceSink`]). Call once per node to record several;
    /// a second call for the same node replaces the first. The report lists what was written in
    /// [`Report::traces`](super::Report::traces) and fails its `trace-recording` check if a trace
    /// could not be written or `node` is not an honest node.
    ///
    /// With [`Scenario::check_determinism`], only the first of the two runs records.
    pub fn record(mut self, node: usize, sink: impl Into<TraceSink>) -> Self {
        self.records.retain(|(n, _)| *n != node);
        self.records.push((node, sink.into()));
        self
    }

    /// The priority function that honest nodes use.
    pub fn priority_fn(&self) -> PriorityFnRef {
        PriorityFnRef::by_kind(self.priorities.clone(), self.default_decision)
    }

    /// The [`PriorityProfile`] naming [`Scenario::priority_fn`]: `FetchAll` for an empty table
    /// with the default decision `Fetch(NORMAL)`, otherwise `ByKind` with the table (a kind listed
    /// twice keeps its first entry, the one the function uses) and the default decision.
    pub fn priority_profile(&self) -> PriorityProfile {
        let mut table: Vec<(Kind, Priority)> = Vec::new();
        for &(k, p) in &self.priorities {
            if !table.iter().any(|(seen, _)| *seen == k) {
                table.push((k, p));
            }
        }
        if table.is_empty() && self.default_decision == Decision::Fetch(Priority::NORMAL) {
            PriorityProfile::FetchAll
        } else {
            PriorityProfile::ByKind {
                table,
                default: self.default_decision,
            }
        }
    }

    /// Whether honest nodes auto-relay in this scenario.
    /// Whether node `i` is a member from the start.
    pub(crate) fn is_initial_member(&self, i: usize) -> bool {
        self.initial_members.as_ref().is_none_or(|m| m.contains(&i))
    }

    pub(crate) fn relays(&self) -> bool {
        self.auto_relay
            .unwrap_or(!matches!(self.topology, Topology::FullMesh))
    }

    /// The command that reproduces this run.
    pub fn repro_command(&self) -> String {
        self.repro.clone().unwrap_or_else(|| {
            format!(
                "cargo run -p p2p-testkit --bin p2p-sim -- run {} --seeds {}..{}",
                self.name,
                self.seed,
                self.seed + 1
            )
        })
    }

    /// Runs the scenario to its end and checks every property.
    pub fn run(self) -> Report {
        if self.check_determinism {
            let first = super::engine::run(&self);
            let mut again = self.clone();
            again.records.clear();
            let second = super::engine::run(&again);
            let mut report = first;
            report.add_determinism(second.output_hash, second.events);
            report
        } else {
            super::engine::run(&self)
        }
    }
}

/// What a frame costs in [`Scenario::cpu`], in time of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCost {
    /// Picoseconds per byte of the frame.
    pub ps_per_byte: u64,
    /// Nanoseconds per frame, whatever its size (system calls, wake-ups, records).
    pub ns_per_frame: u64,
}

impl CpuCost {
    /// A cost of `per_byte` nanoseconds per byte (rounded to the picosecond) and
    /// `per_frame` microseconds per frame (rounded to the nanosecond).
    pub fn new(per_byte_ns: f64, per_frame_us: f64) -> Self {
        CpuCost {
            ps_per_byte: (per_byte_ns.max(0.0) * 1e3).round() as u64,
            ns_per_frame: (per_frame_us.max(0.0) * 1e3).round() as u64,
        }
    }

    /// Nanoseconds of one core for a frame of `bytes`.
    pub(crate) fn of(&self, bytes: u64) -> u64 {
        (u128::from(bytes) * u128::from(self.ps_per_byte) / 1_000) as u64 + self.ns_per_frame
    }
}

/// The shared processors of [`Scenario::cpu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuModel {
    pub(crate) cores: usize,
    pub(crate) cost: CpuCost,
}
