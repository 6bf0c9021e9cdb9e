//! `cargo xtask testbed`: link-bound benchmarks. Every node is its own `p2p-bench node`
//! process in a network namespace of its own, with its own address on a Linux bridge (in a
//! namespace of its own too), and each node's link is shaped by `tc tbf` in both directions
//! (egress of the node's veth end and of the bridge's end), so links, not the two shared
//! cores, are the bottleneck. Real TLS, as every p2p-bench run.
//!
//! Everything it creates lives in namespaces named `p2ptb<pid>r<run>-<node>` and
//! `p2ptb<pid>r<run>-br` (the veths and the bridge are created directly inside them, so
//! nothing is added to the root namespace, and deleting the namespaces deletes every link).
//! A guard deletes them when a run ends, fails or is interrupted (SIGINT, SIGTERM and SIGHUP
//! only set a flag, which the waits check; the node processes are killed first), and a
//! global deadline bounds the whole task. `cargo xtask testbed --cleanup` removes leftovers
//! of testbeds whose process is gone.
//!
//! Needs root and `ip`/`tc` (iproute2). netem and fq are not available on every kernel (not
//! on the one these figures come from), so the links have bandwidth and a bounded queue but
//! no added delay; delay is covered by the simulator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TaskError, bench, shell};

/// The prefix of every namespace a testbed creates.
pub const PREFIX: &str = "p2ptb";

/// TCP payload per Ethernet frame on a 1500-byte MTU with timestamps (1448 of 1514 bytes):
/// the share of a link's shaped rate that carries TCP payload.
pub const PAYLOAD_SHARE: f64 = 1448.0 / 1514.0;

// ---------------------------------------------------------------- signals and the deadline

/// The last SIGINT/SIGTERM/SIGHUP received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set [`SIGNAL`] instead of ending the process, so that the
/// guards' cleanup runs.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe, and it
        // stays valid for the life of the process.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// Puts the default actions of SIGINT, SIGTERM and SIGHUP back when dropped.
struct SignalGuard;

impl SignalGuard {
    fn install() -> Self {
        install_signal_handlers();
        SignalGuard
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restores the default action; no handler code is involved.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// When the task must stop: a signal or the global deadline.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    deadline: Instant,
}

impl Stop {
    fn check(&self) -> Result<(), TaskError> {
        match SIGNAL.load(Ordering::SeqCst) {
            0 if Instant::now() >= self.deadline => Err(TaskError::Failed(
                "the testbed's global deadline passed".into(),
            )),
            0 => Ok(()),
            sig => Err(TaskError::Failed(format!("interrupted by signal {sig}"))),
        }
    }
}

// ---------------------------------------------------------------- ip and tc

/// Runs `program args`, capturing its output; fails with its stderr.
fn exec(program: &str, args: &[&str]) -> Result<String, TaskError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TaskError::Failed(format!("cannot run `{program}`: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TaskError::Failed(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// [`exec`] with the arguments split at whitespace (the testbed's names and numbers have none).
fn run_words(program: &str, args: &str) -> Result<String, TaskError> {
    let args: Vec<&str> = args.split_whitespace().collect();
    exec(program, &args)
}

/// Why the testbed cannot run here, if it cannot: not root, or no `ip`/`tc`.
pub fn unavailable() -> Option<String> {
    let uid = exec("id", &["-u"]).ok().map(|s| s.trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces and tc need root)".into());
    }
    for tool in ["ip", "tc"] {
        if exec(tool, &["-V"]).is_err() {
            return Some(format!("`{tool}` (iproute2) is missing"));
        }
    }
    None
}

/// One node's place in a testbed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeNet {
    /// Its namespace.
    pub netns: String,
    /// Its address on the bridge.
    pub addr: String,
    /// Its link's rate in both directions, bits per second.
    pub rate_bps: u64,
}

/// How a link is shaped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shaping {
    /// How long the tbf queue is at the link's rate: its `limit` is rate x this plus one
    /// 64 KiB GSO packet.
    pub queue: Duration,
    /// tbf's bucket, bytes (`None`: [`DEFAULT_BURST`], or 1 ms at the rate if more).
    pub burst: Option<u64>,
    /// The nodes' TCP congestion control (`net.ipv4.tcp_congestion_control` in each node's
    /// namespace; `None`: what a new namespace gets, the root namespace's).
    pub congestion: Option<&'static str>,
    /// Links that serve DSCP EF first (the nodes' express lanes): each direction is an `htb`
    /// of the same rate and bucket with two classes, EF packets (a `u32` filter on the TOS
    /// byte) at priority 0 and the rest at priority 1, each class a byte FIFO of the same
    /// limit as the single FIFO's; either class may take the whole rate when the other is
    /// idle. Without it, one tbf and one FIFO, as a link that ignores DSCP.
    pub prio: bool,
}

/// The default tbf bucket: larger than a 64 KiB GSO packet, so tbf passes the kernel's
/// segmentation-offload packets whole. A smaller bucket makes tbf split each one into MTU
/// packets in software: one 286 Mbit/s TCP stream then took 3.2 s of softirq CPU in 4 s
/// instead of 0.2 s here, and a testbed of 13 nodes became CPU-bound in the kernel.
pub const DEFAULT_BURST: u64 = 128 << 10;

/// The largest packet the kernel's segmentation offload hands a qdisc, with headers.
const GSO_PACKET: u64 = (64 << 10) + 256;

/// The TOS byte of DSCP EF, which the nodes' express lanes carry.
const EF_TOS: u8 = 0xb8;

/// The bytes an `htb` class sends per round when classes of one priority share the link.
const HTB_QUANTUM: u64 = 64 << 10;

impl Shaping {
    fn burst_for(&self, rate_bps: u64) -> u64 {
        self.burst
            .unwrap_or((rate_bps / 8 / 1000).max(DEFAULT_BURST))
    }
}

/// The address of node `i` on the bridge.
pub fn node_addr(i: usize) -> String {
    format!("10.99.{}.{}", i / 250, i % 250 + 1)
}

/// Counters of a testbed's links (see [`Testbed::link_counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCounters {
    /// TCP segments the nodes sent.
    pub segments: u64,
    /// TCP segments the nodes retransmitted.
    pub retransmitted: u64,
    /// Packets the links' queues dropped.
    pub dropped: u64,
    /// How TCP recovered its losses (`TcpExt` of `/proc/net/netstat`): fast retransmits
    /// (a round trip after the loss), tail loss probes (about two) and retransmission
    /// timeouts (at least 200 ms).
    pub recoveries: Recoveries,
    /// Whether every figure could be read.
    pub complete: bool,
}

impl Default for LinkCounters {
    fn default() -> Self {
        LinkCounters {
            segments: 0,
            retransmitted: 0,
            dropped: 0,
            recoveries: Recoveries::default(),
            complete: true,
        }
    }
}

/// Loss recoveries of TCP, summed over namespaces (see [`LinkCounters::recoveries`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recoveries {
    /// `TCPFastRetrans`: segments sent again by fast retransmit.
    pub fast: u64,
    /// `TCPLossProbes`: tail loss probes sent.
    pub probes: u64,
    /// `TCPTimeouts`: retransmission timeouts.
    pub timeouts: u64,
}

/// The named fields of a pair of `<prefix>` lines (names, then values) of a /proc/net file.
fn proc_net_fields<const N: usize>(text: &str, prefix: &str, names: [&str; N]) -> Option<[u64; N]> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut out = [0; N];
    for (o, name) in out.iter_mut().zip(names) {
        let i = header.iter().position(|n| *n == name)?;
        *o = values.get(i)?.parse().ok()?;
    }
    Some(out)
}

/// `OutSegs` and `RetransSegs` of the `Tcp:` lines of a `/proc/net/snmp`.
fn tcp_segments(snmp: &str) -> Option<(u64, u64)> {
    let [out, re] = proc_net_fields(snmp, "Tcp:", ["OutSegs", "RetransSegs"])?;
    Some((out, re))
}

/// The loss recoveries of the `TcpExt:` lines of a `/proc/net/netstat`.
fn tcp_recoveries(netstat: &str) -> Option<Recoveries> {
    let [fast, probes, timeouts] = proc_net_fields(
        netstat,
        "TcpExt:",
        ["TCPFastRetrans", "TCPLossProbes", "TCPTimeouts"],
    )?;
    Some(Recoveries {
        fast,
        probes,
        timeouts,
    })
}

/// Packets dropped by every qdisc of a `tc -s qdisc show` (the `dropped N` of each `Sent`
/// line).
fn qdisc_drops(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| {
            let rest = l.split("dropped ").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A testbed: namespaces, a bridge, shaped veth pairs. Dropping it deletes them all (killing
/// any process still inside).
pub struct Testbed {
    /// Every namespace created, in creation order (the bridge's first).
    namespaces: Vec<String>,
    /// The nodes' places, in node order.
    pub nodes: Vec<NodeNet>,
}

impl Testbed {
    /// Creates a testbed of `rates.len()` nodes, node `i`'s link at `rates[i]` bits per second.
    pub fn create(
        id: &str,
        rates: &[u64],
        shaping: Shaping,
        stop: Stop,
    ) -> Result<Self, TaskError> {
        let mut tb = Testbed {
            namespaces: Vec::new(),
            nodes: Vec::new(),
        };
        let br = format!("{id}-br");
        exec("ip", &["netns", "add", &br])?;
        tb.namespaces.push(br.clone());
        run_words("ip", &format!("-n {br} link add br0 type bridge"))?;
        run_words("ip", &format!("-n {br} link set br0 up"))?;
        for (i, &rate) in rates.iter().enumerate() {
            stop.check()?;
            let ns = format!("{id}-{i}");
            exec("ip", &["netns", "add", &ns])?;
            tb.namespaces.push(ns.clone());
            let addr = node_addr(i);
            for cmd in [
                format!("link add eth0 netns {ns} type veth peer name v{i} netns {br}"),
                format!("-n {br} link set v{i} master br0 up"),
                format!("-n {ns} addr add {addr}/16 dev eth0"),
                format!("-n {ns} link set eth0 up"),
                format!("-n {ns} link set lo up"),
            ] {
                run_words("ip", &cmd)?;
            }
            if let Some(cc) = shaping.congestion {
                run_words(
                    "ip",
                    &format!("netns exec {ns} sysctl -qw net.ipv4.tcp_congestion_control={cc}"),
                )?;
            }
            let burst = shaping.burst_for(rate);
            let limit = (rate as f64 / 8.0 * shaping.queue.as_secs_f64()) as u64 + GSO_PACKET;
            for (where_, dev) in [(&ns, "eth0".to_owned()), (&br, format!("v{i}"))] {
                let tc = |cmd: String| run_words("tc", &format!("-n {where_} {cmd}"));
                if !shaping.prio {
                    tc(format!(
                        "qdisc add dev {dev} root tbf rate {rate}bit burst {burst} limit {limit}"
                    ))?;
                    continue;
                }
                let class = |id: &str, parent: &str, share: u64, prio: u8| {
                    tc(format!(
                        "class add dev {dev} parent {parent} classid {id} htb rate {share}bit ceil {rate}bit burst {burst} cburst {burst} quantum {HTB_QUANTUM} prio {prio}"
                    ))
                };
                tc(format!("qdisc add dev {dev} root handle 1: htb default 20"))?;
                tc(format!(
                    "class add dev {dev} parent 1: classid 1:1 htb rate {rate}bit ceil {rate}bit burst {burst} cburst {burst} quantum {HTB_QUANTUM}"
                ))?;
                class("1:10", "1:1", rate / 2, 0)?;
                class("1:20", "1:1", rate / 2, 1)?;
                for leaf in ["1:10", "1:20"] {
                    tc(format!(
                        "qdisc add dev {dev} parent {leaf} bfifo limit {limit}"
                    ))?;
                }
                tc(format!(
                    "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip tos {EF_TOS:#x} 0xfc flowid 1:10"
                ))?;
            }
            tb.nodes.push(NodeNet {
                netns: ns,
                addr,
                rate_bps: rate,
            });
        }
        Ok(tb)
    }

    /// What the links saw so far, summed over the nodes: TCP segments sent and retransmitted
    /// (each namespace's `/proc/net/snmp`) and packets the shaping queues dropped (both ends
    /// of every link, `tc -s`). `None` where a figure could not be read.
    pub fn link_counters(&self) -> LinkCounters {
        let mut c = LinkCounters::default();
        let br = self.namespaces.first().cloned().unwrap_or_default();
        for (i, n) in self.nodes.iter().enumerate() {
            let snmp = exec("ip", &["netns", "exec", &n.netns, "cat", "/proc/net/snmp"]).ok();
            match snmp.as_deref().and_then(tcp_segments) {
                Some((out, re)) => {
                    c.segments += out;
                    c.retransmitted += re;
                }
                None => c.complete = false,
            }
            let netstat = exec(
                "ip",
                &["netns", "exec", &n.netns, "cat", "/proc/net/netstat"],
            )
            .ok();
            match netstat.as_deref().and_then(tcp_recoveries) {
                Some(r) => {
                    c.recoveries.fast += r.fast;
                    c.recoveries.probes += r.probes;
                    c.recoveries.timeouts += r.timeouts;
                }
                None => c.complete = false,
            }
            for (ns, dev) in [
                (n.netns.clone(), "eth0".to_owned()),
                (br.clone(), format!("v{i}")),
            ] {
                let stats = exec("tc", &["-s", "-n", &ns, "qdisc", "show", "dev", &dev]).ok();
                match stats.as_deref().map(qdisc_drops) {
                    Some(d) => c.dropped += d,
                    None => c.complete = false,
                }
            }
        }
        c
    }

    /// p2p-bench's `--netns` value: `ns=addr` per node.
    pub fn placement(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.netns, n.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether netem (added delay) works here: tried on the bridge namespace's loopback.
    pub fn netem_available(&self) -> bool {
        let Some(br) = self.namespaces.first() else {
            return false;
        };
        exec(
            "tc",
            &[
                "-n", br, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            ],
        )
        .is_ok()
    }

    /// Kills every process in the testbed's namespaces and deletes them (nodes first).
    fn destroy(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            delete_namespace(&ns);
        }
        self.nodes.clear();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Kills the processes in `ns` and deletes it; reports failures without stopping.
fn delete_namespace(ns: &str) {
    if let Ok(pids) = exec("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid read from `ip netns pids`; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    if let Err(e) = exec("ip", &["netns", "del", ns]) {
        eprintln!("testbed: cannot delete namespace {ns}: {e}");
    }
}

/// The testbed namespaces that exist, with the pid in their names.
fn leftovers() -> Result<Vec<(String, Option<u32>)>, TaskError> {
    let list = exec("ip", &["netns", "list"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(PREFIX))
        .map(|name| (name.to_owned(), owner_pid(name)))
        .collect())
}

/// The pid in `p2ptb<pid>r<run>-<node>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `--cleanup`: deletes every testbed namespace whose creating process is gone (all of them
/// with `force`).
fn cleanup(force: bool) -> Result<(), TaskError> {
    let mut removed = 0;
    for (ns, pid) in leftovers()? {
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive && !force && pid != Some(std::process::id()) {
            println!(
                "keeping {ns}: its testbed (pid {}) is running",
                pid.unwrap_or(0)
            );
            continue;
        }
        delete_namespace(&ns);
        removed += 1;
    }
    println!("removed {removed} testbed namespace(s)");
    Ok(())
}

// ---------------------------------------------------------------- workloads

/// What a run publishes (p2p-bench's `--custom` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Nodes.
    pub nodes: usize,
    /// Small (urgent) artifacts, round-robin over every node.
    pub small: usize,
    /// Their size, bytes.
    pub small_size: usize,
    /// Large (bulk) artifacts, from t=0, `large_every_ms` apart, round-robin over the first
    /// `origins` nodes.
    pub large: usize,
    /// Their size, bytes.
    pub large_size: usize,
    /// Nodes publishing the large ones.
    pub origins: usize,
    /// The small ones are published evenly over this many ms.
    pub spread_ms: u64,
    /// Milliseconds between two large ones (0: all at t=0).
    pub large_every_ms: u64,
}

impl Shape {
    /// p2p-bench's `--custom` text.
    pub fn custom(&self, name: &str, timeout_s: u64) -> String {
        format!(
            "name={name},nodes={},small={},small_size={},large={},large_size={},origins={},spread_ms={},large_every_ms={},timeout_s={timeout_s}",
            self.nodes,
            self.small,
            self.small_size,
            self.large,
            self.large_size,
            self.origins,
            self.spread_ms,
            self.large_every_ms
        )
    }

    /// Bytes node `i` publishes.
    fn own_bytes(&self, i: usize) -> u64 {
        let large = (0..self.large)
            .filter(|j| j % self.origins.max(1) == i)
            .count();
        let small = (0..self.small).filter(|j| j % self.nodes == i).count();
        (large * self.large_size + small * self.small_size) as u64
    }

    /// Every artifact's bytes.
    fn total_bytes(&self) -> u64 {
        (self.large * self.large_size + self.small * self.small_size) as u64
    }

    /// The physical bound of the time until every node holds every artifact, seconds: each
    /// node must receive every byte it did not publish and send each byte it published at
    /// least once, through its link at `rate x PAYLOAD_SHARE`; the small ones take at least
    /// their spread, and the last large one cannot arrive before its publish plus its own bytes
    /// through the slowest receiver's link.
    /// `max(spread, max over nodes of max(received, published) / payload rate, last publish +
    /// one large artifact / the lowest payload rate)`.
    pub fn bound_s(&self, rates_bps: &[u64]) -> f64 {
        let link = (0..self.nodes)
            .map(|i| {
                let own = self.own_bytes(i);
                let recv = self.total_bytes() - own;
                let rate = rates_bps.get(i).copied().unwrap_or(1) as f64 * PAYLOAD_SHARE / 8.0;
                recv.max(own) as f64 / rate
            })
            .fold(0.0, f64::max);
        let slowest = (0..self.nodes)
            .map(|i| rates_bps.get(i).copied().unwrap_or(1) as f64 * PAYLOAD_SHARE / 8.0)
            .fold(f64::INFINITY, f64::min);
        let last = (self.large.saturating_sub(1) as u64 * self.large_every_ms) as f64 / 1e3
            + self.large_size as f64 / slowest;
        let last = if self.large > 0 { last } else { 0.0 };
        link.max(self.spread_ms as f64 / 1e3).max(last)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.large > 0 {
            parts.push(format!(
                "{} x {} bulk from {}{}",
                self.large,
                size(self.large_size as u64),
                if self.origins == 1 {
                    "one node".to_owned()
                } else {
                    format!("{} nodes", self.origins)
                },
                if self.large_every_ms > 0 {
                    format!(", {:.1} s apart", self.large_every_ms as f64 / 1e3)
                } else {
                    String::new()
                }
            ));
        }
        if self.small > 0 {
            parts.push(format!(
                "{} x {} urgent over {:.1} s",
                self.small,
                size(self.small_size as u64),
                self.spread_ms as f64 / 1e3
            ));
        }
        parts.join(" + ")
    }
}

fn size(b: u64) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

/// One testbed run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// Its name (and p2p-bench's workload name).
    pub name: String,
    /// What is published.
    pub shape: Shape,
    /// Every link's rate, bits per second.
    pub rate_bps: u64,
    /// How many nodes (the last ones, never node 0, the first origin) get a tenth of it.
    pub slow: usize,
    /// The topology's degree: each node connects to about this many others and relays
    /// (p2p-bench's and the simulator's `--peers`; `None`: a full mesh).
    pub peers: Option<usize>,
    /// Links that serve DSCP EF first ([`Shaping::prio`]), whatever `--prio-links` says.
    pub prio: bool,
}

impl RunSpec {
    /// Its `k`th making (from 1): the same run, named `<name>-r<k>` from the second on.
    fn repetition(&self, k: usize) -> RunSpec {
        let mut r = self.clone();
        if k > 1 {
            r.name = format!("{}-r{k}", self.name);
        }
        r
    }

    /// The name of the run this is a repetition of.
    fn base_name(&self) -> &str {
        match self.name.rsplit_once("-r") {
            Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => &self.name,
        }
    }

    /// Each node's rate.
    pub fn rates(&self) -> Vec<u64> {
        let n = self.shape.nodes;
        (0..n)
            .map(|i| {
                if i >= n - self.slow.min(n - 1) {
                    self.rate_bps / 10
                } else {
                    self.rate_bps
                }
            })
            .collect()
    }

    /// `--peers K` for a partial mesh (p2p-bench and the simulator take the same), else nothing.
    pub fn peers_args(&self) -> Vec<String> {
        self.peers
            .map_or_else(Vec::new, |k| vec!["--peers".into(), k.to_string()])
    }

    /// The topology, for the report.
    fn mesh(&self) -> String {
        let mesh = self.peers.map_or("full mesh".into(), |k| {
            format!("partial mesh of degree {k}, relaying")
        });
        if self.prio {
            format!("{mesh}; links serve DSCP EF first")
        } else {
            mesh
        }
    }

    /// The slow nodes' indices.
    pub fn slow_nodes(&self) -> Vec<usize> {
        let n = self.shape.nodes;
        (n - self.slow.min(n - 1)..n).collect()
    }

    /// p2p-bench's arguments for the run's pictures: written to `dir`, with the physical bound
    /// ([`Shape::bound_s`] at the run's rates) drawn on its delivery progress.
    pub fn picture_args(&self, dir: &Path) -> Vec<String> {
        vec![
            "--report".into(),
            dir.display().to_string(),
            "--bound".into(),
            format!("{}={:.6}", self.name, self.shape.bound_s(&self.rates())),
        ]
    }
}

const MIB: usize = 1 << 20;
const MBIT: u64 = 1_000_000;

/// The full set of runs. `rate` (Mbit/s) replaces every run's own rate, `slow_fraction` every
/// run's share of slow nodes (rounded up).
pub fn full_runs(rate: Option<u64>, slow_fraction: Option<f64>) -> Vec<RunSpec> {
    let blocks = |large: usize, large_size: usize| Shape {
        nodes: 13,
        small: 0,
        small_size: 256,
        large,
        large_size,
        origins: 1,
        spread_ms: 0,
        large_every_ms: 0,
    };
    let urgent_n = |nodes: usize, bulk_per_node: usize| Shape {
        nodes,
        small: 400,
        small_size: 256,
        large: nodes * bulk_per_node,
        large_size: MIB,
        origins: nodes,
        spread_ms: 4_000,
        large_every_ms: 0,
    };
    let urgent = |bulk_per_node: usize| urgent_n(13, bulk_per_node);
    let run = |name: &str, shape: Shape, mbit: u64, slow: usize| RunSpec {
        name: name.into(),
        shape,
        rate_bps: mbit * MBIT,
        slow,
        peers: None,
        prio: false,
    };
    let scale = |nodes: usize| Shape {
        nodes,
        small: 4_000,
        small_size: 1 << 10,
        large: nodes,
        large_size: MIB,
        origins: nodes,
        spread_ms: 4_000,
        large_every_ms: 0,
    };
    let prio = |r: RunSpec| RunSpec { prio: true, ..r };
    let partial = |name: &str, shape: Shape, mbit: u64, k: usize| RunSpec {
        peers: Some(k),
        ..run(name, shape, mbit, 0)
    };
    let mut runs = vec![
        run("W2-1MiB", blocks(50, MIB), 300, 0),
        run("W2-4MiB", blocks(12, 4 * MIB), 300, 0),
        run("W2-hetero", blocks(1, 4 * MIB), 300, 4),
        // Six 4 MiB blocks 1.5 s apart, four nodes at a tenth of the rate: from the second block
        // on, the slow owners' stripes pass on and the fast nodes no longer wait for them.
        run(
            "W2-hetero-stream",
            Shape {
                large_every_ms: 1_500,
                ..blocks(6, 4 * MIB)
            },
            300,
            4,
        ),
        run("W4-idle-300", urgent(0), 300, 0),
        // 12 MiB from each node: every link carries bulk for about the 4 s of the urgent stream.
        run("W4-bulk-300", urgent(12), 300, 0),
        run("W4-idle-100", urgent(0), 100, 0),
        run("W4-bulk-100", urgent(4), 100, 0),
        // Five nodes, each link as loaded as above (4 peers x 12 MiB), a third of the CPU.
        run("W4-idle-100-n5", urgent_n(5, 0), 100, 0),
        run("W4-bulk-100-n5", urgent_n(5, 12), 100, 0),
        // The same on links that serve the express lanes' DSCP EF first.
        prio(run("W4-idle-100-prio", urgent(0), 100, 0)),
        prio(run("W4-bulk-100-prio", urgent(4), 100, 0)),
        prio(run("W4-idle-100-n5-prio", urgent_n(5, 0), 100, 0)),
        prio(run("W4-bulk-100-n5-prio", urgent_n(5, 12), 100, 0)),
        run("W3-scale-16", scale(16), 50, 0),
        // The partial mesh: every node connected to about 4 others, relaying.
        partial("mesh4-W2-1MiB", blocks(50, MIB), 300, 4),
        partial("mesh4-W3-16", scale(16), 50, 4),
    ];
    for r in &mut runs {
        if let Some(mbit) = rate {
            r.rate_bps = mbit * MBIT;
        }
        if let Some(f) = slow_fraction {
            r.slow = (f * r.shape.nodes as f64).ceil() as usize;
        }
    }
    runs
}

/// The CI smoke run: 4 nodes, a few small and two 1 MiB artifacts.
pub fn smoke_run() -> RunSpec {
    RunSpec {
        name: "smoke".into(),
        shape: Shape {
            nodes: 4,
            small: 20,
            small_size: 256,
            large: 2,
            large_size: MIB,
            origins: 2,
            spread_ms: 200,
            large_every_ms: 0,
        },
        rate_bps: 300 * MBIT,
        slow: 1,
        peers: None,
        prio: false,
    }
}

// ---------------------------------------------------------------- arguments

#[derive(Debug, Default)]
struct Args {
    cleanup: bool,
    force: bool,
    smoke: bool,
    only: Vec<String>,
    rate: Option<u64>,
    slow_fraction: Option<f64>,
    queue: Option<Duration>,
    burst: Option<u64>,
    congestion: Option<&'static str>,
    prio: bool,
    deadline: Option<Duration>,
    /// How many times each run is made (`--repeat K`, at least 1).
    repeat: usize,
    sim: bool,
    /// The CPU the simulator models (`None`: none).
    sim_cpu: Option<SimCpu>,
    /// The loss recovery the simulator models at the links' bounded queues (`None`: no loss).
    sim_loss: Option<Duration>,
    bench_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, TaskError> {
    let mut a = Args {
        repeat: 1,
        sim: true,
        sim_cpu: Some(SIM_CPU),
        sim_loss: Some(SIM_LOSS_RECOVERY),
        ..Args::default()
    };
    let mut it = args.iter();
    let usage = |m: String| TaskError::Usage(m);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("`{name}` needs a value")))
        };
        let num = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| usage(format!("`{name}` needs a number, got `{v}`")))
        };
        match arg.as_str() {
            "--cleanup" => a.cleanup = true,
            "--force" => a.force = true,
            "--smoke" => a.smoke = true,
            "--no-sim" => a.sim = false,
            "--sim-loss" => {
                let v = value("--sim-loss")?;
                a.sim_loss = if v == "off" {
                    None
                } else {
                    Some(Duration::from_secs_f64(num("--sim-loss", v)? / 1e3))
                };
            }
            "--sim-cpu" => {
                let v = value("--sim-cpu")?;
                a.sim_cpu = if v == "off" {
                    None
                } else {
                    let (b, f) = v.split_once(',').ok_or_else(|| {
                        usage(format!(
                            "`--sim-cpu` takes NS_PER_BYTE,US_PER_FRAME or off, not `{v}`"
                        ))
                    })?;
                    Some(SimCpu {
                        ns_per_byte: num("--sim-cpu", b.to_owned())?,
                        us_per_frame: num("--sim-cpu", f.to_owned())?,
                        cores: SIM_CPU.cores,
                    })
                };
            }
            "--only" => a.only = value("--only")?.split(',').map(str::to_owned).collect(),
            "--rate" => a.rate = Some(num("--rate", value("--rate")?)? as u64),
            "--slow-fraction" => {
                let f = num("--slow-fraction", value("--slow-fraction")?)?;
                if f > 1.0 {
                    return Err(usage("`--slow-fraction` is at most 1".into()));
                }
                a.slow_fraction = Some(f);
            }
            "--queue-ms" => {
                a.queue = Some(Duration::from_secs_f64(
                    num("--queue-ms", value("--queue-ms")?)? / 1e3,
                ))
            }
            "--burst" => a.burst = Some(num("--burst", value("--burst")?)? as u64),
            "--prio-links" => a.prio = true,
            "--cc" => {
                let cc = value("--cc")?;
                a.congestion = Some(match cc.as_str() {
                    "bbr" => "bbr",
                    "cubic" => "cubic",
                    "reno" => "reno",
                    _ => {
                        return Err(usage(format!(
                            "`--cc` takes bbr, cubic or reno, not `{cc}`"
                        )));
                    }
                });
            }
            "--repeat" => {
                let k = num("--repeat", value("--repeat")?)?;
                if !(1.0..=20.0).contains(&k) || k.fract() != 0.0 {
                    return Err(usage("`--repeat` takes a whole number from 1 to 20".into()));
                }
                a.repeat = k as usize;
            }
            "--deadline" => {
                a.deadline = Some(Duration::from_secs_f64(num(
                    "--deadline",
                    value("--deadline")?,
                )?))
            }
            "--" => {
                a.bench_args = it.by_ref().cloned().collect();
            }
            other => return Err(usage(format!("unknown testbed argument `{other}`"))),
        }
    }
    if a.rate == Some(0) {
        return Err(usage("`--rate` must be positive".into()));
    }
    Ok(a)
}

// ---------------------------------------------------------------- running

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shell::workspace_root().join("target"))
}

/// Waits for `child`, stopping it (SIGTERM, then SIGKILL after 3 s) when `stop` says so.
fn wait(child: &mut Child, stop: Stop, what: &str) -> Result<bool, TaskError> {
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| TaskError::Failed(format!("cannot wait for {what}: {e}")))?
        {
            return Ok(status.success());
        }
        if let Err(e) = stop.check() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one run measured, as read back from p2p-bench's and the simulator's JSON.
#[derive(Debug, Default)]
struct Measured {
    ok: bool,
    all_hold_s: Option<f64>,
    elapsed_s: f64,
    bulk: Option<(f64, f64)>,
    urgent: Option<(f64, f64)>,
    cpu_s: f64,
    /// The whole machine's CPU out of idle during the run, and of it softirq, seconds.
    machine: Option<(f64, f64)>,
    node_cpu_max_s: f64,
    /// Each node's last delivery, seconds after the first publish.
    node_last_s: Vec<f64>,
    node_rss_max: u64,
    missing: u64,
    duplicates: u64,
    /// The simulator's all-hold time with the machine's CPU modelled (or without, if off).
    sim_all_hold_s: Option<f64>,
    /// The simulator's all-hold time with links only (no CPU model).
    sim_links_s: Option<f64>,
    sim_bulk_p99: Option<f64>,
    sim_urgent_p99: Option<f64>,
    /// What the links saw during the run.
    links: Option<LinkCounters>,
    /// Chunks each node sent (answers and pushes).
    chunks_served: Vec<u64>,
    /// Chunk requests to full holders beyond the nodes' stripes (handed over, idle, overdue).
    beyond_stripe: (u64, u64, u64),
    /// Chunk requests to full holders for chunks of slow owners' stripes.
    slow_owner: u64,
    /// Chunks (or artifacts) the cores received and did not need, and how many of them were
    /// pushed chunks.
    receipts_wasted: (u64, u64),
    /// Wire bytes over payload bytes x (nodes - 1).
    amplification: f64,
}

fn read_bench(path: &Path, m: &mut Measured) -> Result<(), TaskError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TaskError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| TaskError::Failed(format!("bad JSON in {}: {e}", path.display())))?;
    let w = &v["workloads"][0];
    m.all_hold_s = w["full_delivery_s"].as_f64();
    m.elapsed_s = w["elapsed_s"].as_f64().unwrap_or(0.0);
    m.cpu_s = w["cpu_s"].as_f64().unwrap_or(0.0);
    m.machine = w["machine_busy_s"]
        .as_f64()
        .zip(w["machine_softirq_s"].as_f64());
    m.node_cpu_max_s = w["node_cpu_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).fold(0.0, f64::max))
        .unwrap_or(0.0);
    m.node_last_s = w["node_last_delivery_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    m.node_rss_max = w["node_peak_rss_bytes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).max().unwrap_or(0))
        .unwrap_or(0);
    m.missing = w["missing"].as_u64().unwrap_or(0);
    m.duplicates = w["duplicates"].as_u64().unwrap_or(0);
    m.chunks_served = w["node_chunks_served"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let beyond = |i: usize| w["chunks_asked_beyond_stripe"][i].as_u64().unwrap_or(0);
    m.beyond_stripe = (beyond(0), beyond(1), beyond(2));
    m.slow_owner = w["chunks_asked_slow_owner"].as_u64().unwrap_or(0);
    m.receipts_wasted = (
        w["duplicate_receipts"].as_u64().unwrap_or(0),
        w["pushes_unwanted"].as_u64().unwrap_or(0),
    );
    m.amplification = w["amplification"].as_f64().unwrap_or(0.0);
    for l in w["latency"].as_array().into_iter().flatten() {
        let p = (
            l["p50_ms"].as_f64().unwrap_or(0.0),
            l["p99_ms"].as_f64().unwrap_or(0.0),
        );
        match l["class"].as_str() {
            Some("bulk") => m.bulk = Some(p),
            Some("urgent") => m.urgent = Some(p),
            _ => {}
        }
    }
    Ok(())
}

/// A simulator's prediction: all-hold time (s), bulk and urgent p99 (ms).
type Prediction = (Option<f64>, Option<f64>, Option<f64>);

/// The simulator's prediction of `spec`, from its JSON line.
fn run_sim(
    exe: &Path,
    spec: &RunSpec,
    (cpu, loss): (Option<SimCpu>, Option<(Duration, Duration)>),
    stop: Stop,
) -> Result<Prediction, TaskError> {
    let rate = (spec.rate_bps as f64 * PAYLOAD_SHARE) as u64;
    let slow: Vec<String> = spec.slow_nodes().iter().map(usize::to_string).collect();
    let mut cmd = Command::new(exe);
    cmd.args(["--custom", &spec.shape.custom(&spec.name, 0)])
        .args(["--rate-bps", &rate.to_string()])
        .args(["--slow-rate-bps", &(rate / 10).to_string()])
        .args(["--slow-nodes", &slow.join(",")])
        .args(spec.peers_args())
        .stdout(Stdio::piped());
    if let Some(c) = cpu {
        cmd.args(["--cpu-ns-per-byte", &c.ns_per_byte.to_string()])
            .args(["--cpu-us-per-frame", &c.us_per_frame.to_string()])
            .args(["--cpu-cores", &c.cores.to_string()]);
    }
    if let Some((queue, recovery)) = loss {
        cmd.args(["--queue-ms", &(queue.as_secs_f64() * 1e3).to_string()])
            .args(["--recovery-ms", &(recovery.as_secs_f64() * 1e3).to_string()]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| TaskError::Failed(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = stdout {
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
        }
        s
    });
    let ok = wait(&mut child, stop, "the simulator")?;
    let out = reader.join().unwrap_or_default();
    if !ok {
        return Err(TaskError::Failed(format!(
            "the simulator failed for {}",
            spec.name
        )));
    }
    let v: Value = serde_json::from_str(out.trim())
        .map_err(|e| TaskError::Failed(format!("bad simulator output `{out}`: {e}")))?;
    Ok((
        v["all_hold_ms"].as_f64().map(|x| x / 1e3),
        v["bulk"]["p99_ms"].as_f64(),
        v["urgent"]["p99_ms"].as_f64(),
    ))
}

/// The machine the simulator models for the testbed's predictions (`--sim-cpu`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimCpu {
    /// Nanoseconds of one core per byte received, for the work at both ends.
    pub ns_per_byte: f64,
    /// Microseconds of one core per frame received, whatever its size.
    pub us_per_frame: f64,
    /// Cores the node processes share.
    pub cores: usize,
}

/// The default time a connection takes to recover a frame its receiver's link dropped, in the
/// simulator's model of the testbed's queues: 50 ms, five times the queue's 10 ms, between
/// TCP's fast recovery (a round trip, the queue's delay here) and its 200 ms retransmission
/// timeout (BENCHMARKS.md, "The simulator's CPU model").
pub const SIM_LOSS_RECOVERY: Duration = Duration::from_millis(50);

/// The default model of this machine's two cores: 5 ns per byte and 10 us per frame, from the
/// node processes' own CPU time in W2-1MiB (about 7 ns per byte received, all included: see
/// BENCHMARKS.md, "The simulator's CPU model").
pub const SIM_CPU: SimCpu = SimCpu {
    ns_per_byte: 5.0,
    us_per_frame: 10.0,
    cores: 2,
};

struct Ctx {
    bench: PathBuf,
    sim: Option<PathBuf>,
    sim_cpu: Option<SimCpu>,
    sim_loss: Option<Duration>,
    out_dir: PathBuf,
    shaping: Shaping,
    stop: Stop,
    bench_args: Vec<String>,
    netem_reported: bool,
}

fn run_one(ctx: &mut Ctx, index: usize, spec: &RunSpec) -> Result<Measured, TaskError> {
    ctx.stop.check()?;
    let id = format!("{PREFIX}{}r{index}", std::process::id());
    let rates = spec.rates();
    println!(
        "\n==> {}: {} nodes at {} Mbit/s{}, {}, {}",
        spec.name,
        spec.shape.nodes,
        spec.rate_bps / MBIT,
        if spec.slow > 0 {
            format!(" ({} of them at a tenth)", spec.slow)
        } else {
            String::new()
        },
        spec.shape.describe(),
        spec.mesh()
    );
    let shaping = Shaping {
        prio: ctx.shaping.prio || spec.prio,
        ..ctx.shaping
    };
    let testbed = Testbed::create(&id, &rates, shaping, ctx.stop)?;
    if !ctx.netem_reported {
        ctx.netem_reported = true;
        if testbed.netem_available() {
            println!(
                "    netem is available here, but no delay is added (the runs compare with a zero-latency simulation)"
            );
        } else {
            println!(
                "    netem (added delay) is not available on this kernel: links have bandwidth and a bounded queue, no added delay"
            );
        }
    }
    let out = ctx.out_dir.join(format!("{}.json", spec.name));
    let pictures = ctx.out_dir.join(&spec.name);
    let timeout_s = (spec.shape.bound_s(&rates) * 10.0 + 30.0).min(600.0) as u64;
    let mut cmd = Command::new(&ctx.bench);
    cmd.current_dir(shell::workspace_root())
        .args(["--custom", &spec.shape.custom(&spec.name, timeout_s)])
        .args(["--netns", &testbed.placement()])
        .args(spec.peers_args())
        .arg("--out")
        .arg(&out)
        .args(spec.picture_args(&pictures))
        .args(&ctx.bench_args);
    bench::with_malloc_env(&mut cmd);
    println!("    {}", shell::display(&cmd));
    let mut child = cmd
        .spawn()
        .map_err(|e| TaskError::Failed(format!("cannot start p2p-bench: {e}")))?;
    let ok = wait(&mut child, ctx.stop, "p2p-bench")?;
    let links = testbed.link_counters();
    drop(testbed);
    let mut m = Measured {
        ok,
        links: Some(links),
        ..Measured::default()
    };
    read_bench(&out, &mut m)?;
    if let Some(sim) = &ctx.sim {
        let predict = |model| match run_sim(sim, spec, model, ctx.stop) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                ctx.stop.check()?;
                eprintln!("    simulator: {e}");
                Ok::<_, TaskError>(None)
            }
        };
        if let Some((all, _, _)) = predict((None, None))? {
            m.sim_links_s = all;
        }
        let loss = ctx.sim_loss.map(|r| (ctx.shaping.queue, r));
        let with_cpu = predict((ctx.sim_cpu, loss))?;
        if let Some((all, bulk, urgent)) = with_cpu {
            m.sim_all_hold_s = all;
            m.sim_bulk_p99 = bulk;
            m.sim_urgent_p99 = urgent;
        }
    }
    Ok(m)
}

fn fmt_pair(p: Option<(f64, f64)>) -> String {
    p.map_or("-".into(), |(a, b)| format!("{a:.1} / {b:.1}"))
}

fn fmt_s(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2} s"))
}

fn report(runs: &[(RunSpec, Measured)], cores: usize) {
    println!("\n==> link-bound testbed");
    println!(
        "bound = max(spread, max over nodes of max(bytes received, bytes published) / (rate x {PAYLOAD_SHARE:.3})); links = p2p-sim, same nodes, rates, publishes and topology, zero latency; model = the same with the machine's cores (--sim-cpu) and the links' bounded queues and loss recovery (--sim-loss) modelled"
    );
    println!(
        "{:<14} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>16} {:>16} {:>13} {:>9} {:>9} {:>8}",
        "run",
        "nodes",
        "rate",
        "all hold",
        "bound",
        "links",
        "model",
        "tb/sim",
        "bulk p50/p99 ms",
        "urg. p50/p99 ms",
        "CPU (machine)",
        "node CPU",
        "node RSS",
        "miss/dup"
    );
    for (spec, m) in runs {
        let bound = spec.shape.bound_s(&spec.rates());
        let ratio = match (m.all_hold_s, m.sim_all_hold_s) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let busy = if m.elapsed_s > 0.0 && cores > 0 {
            format!(
                "{:.1} s {:>3.0}%",
                m.cpu_s,
                100.0 * m.cpu_s / (m.elapsed_s * cores as f64)
            )
        } else {
            format!("{:.1} s", m.cpu_s)
        };
        println!(
            "{:<14} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>16} {:>16} {:>13} {:>9} {:>9} {:>8}",
            spec.name,
            spec.shape.nodes,
            format!(
                "{}{}",
                spec.rate_bps / MBIT,
                if spec.slow > 0 {
                    format!("/{}x{}", spec.slow, spec.rate_bps / MBIT / 10)
                } else {
                    String::new()
                }
            ),
            fmt_s(m.all_hold_s),
            format!("{bound:.2} s"),
            fmt_s(m.sim_links_s),
            fmt_s(m.sim_all_hold_s),
            ratio,
            fmt_pair(m.bulk),
            fmt_pair(m.urgent),
            busy,
            format!("{:.2} s", m.node_cpu_max_s),
            format!("{:.0} MB", m.node_rss_max as f64 / 1e6),
            format!(
                "{}/{}{}",
                m.missing,
                m.duplicates,
                if m.ok { "" } else { " FAIL" }
            ),
        );
    }
    for (spec, m) in runs {
        println!(
            "  {}: {}; {}",
            spec.name,
            spec.shape.describe(),
            spec.mesh()
        );
        if let Some(l) = m.links {
            println!(
                "    links: {} TCP segments, {} retransmitted ({:.2} %), {} packets dropped by the queues{}",
                l.segments,
                l.retransmitted,
                100.0 * l.retransmitted as f64 / l.segments.max(1) as f64,
                l.dropped,
                if l.complete {
                    ""
                } else {
                    " (some counters unreadable)"
                }
            );
            let r = l.recoveries;
            println!(
                "    loss recovery: {} fast retransmits, {} tail loss probes, {} retransmission timeouts",
                r.fast, r.probes, r.timeouts
            );
        }
        if !m.node_last_s.is_empty() {
            let last: Vec<String> = m.node_last_s.iter().map(|t| format!("{t:.2}")).collect();
            println!("    last delivery per node (s): {}", last.join(" "));
        }
        if let Some((busy, softirq)) = m.machine.filter(|_| m.elapsed_s > 0.0 && cores > 0) {
            let share = |t: f64| 100.0 * t / (m.elapsed_s * cores as f64);
            println!(
                "    machine: {busy:.1} s out of idle ({:.0} % of {cores} cores), {softirq:.1} s of it in softirq ({:.0} %), the node processes {:.1} s ({:.0} %)",
                share(busy),
                share(softirq),
                m.cpu_s,
                share(m.cpu_s)
            );
        }
        if m.chunks_served.iter().any(|c| *c > 0) {
            let (h, i, o) = m.beyond_stripe;
            println!(
                "    chunk messages sent: node 0 {}, all nodes {}; asked of full holders beyond the stripes: {h} handed over, {i} idle, {o} overdue, {} of slow owners",
                m.chunks_served[0],
                m.chunks_served.iter().sum::<u64>(),
                m.slow_owner
            );
            let (wasted, pushed) = m.receipts_wasted;
            println!(
                "    amplification {:.3}; received and not needed: {wasted} ({pushed} of them pushed)",
                m.amplification
            );
        }
    }
    // Urgent latency under bulk against idle, per rate.
    for (spec, m) in runs {
        let Some(rest) = spec.name.strip_prefix("W4-bulk") else {
            continue;
        };
        let idle = runs
            .iter()
            .find(|(s, _)| s.name == format!("W4-idle{rest}"));
        if let (Some((_, i)), Some((_, b))) = (idle.and_then(|(_, m)| m.urgent), m.urgent) {
            println!(
                "urgent p99 of {} at {} Mbit/s: {b:.1} ms with bulk vs {i:.1} ms idle = {:.1}x (target <= 3x)",
                spec.name,
                spec.rate_bps / MBIT,
                b / i.max(1e-3)
            );
        }
    }
    println!(
        "CPU (machine): the node processes' CPU during the workload over (its wall time x {cores} cores); node CPU and RSS: the largest of one node process"
    );
}

/// With `--repeat`: per run, the spread of its all-hold times over the repetitions and their
/// median against the model's prediction (the model is deterministic: one prediction).
fn calibration(runs: &[(RunSpec, Measured)]) {
    println!("\n==> calibration: each run's repetitions against the model");
    println!(
        "{:<20} {:>4} {:>9} {:>9} {:>9} {:>8} {:>14} {:>10}",
        "run", "runs", "min", "median", "max", "model", "median/model", "max/model"
    );
    let mut names: Vec<&str> = Vec::new();
    for (spec, _) in runs {
        if !names.contains(&spec.base_name()) {
            names.push(spec.base_name());
        }
    }
    for name in names {
        let mut hold: Vec<f64> = runs
            .iter()
            .filter(|(s, _)| s.base_name() == name)
            .filter_map(|(_, m)| m.all_hold_s)
            .collect();
        if hold.is_empty() {
            continue;
        }
        hold.sort_by(f64::total_cmp);
        let median = median_of(&hold);
        let model = runs
            .iter()
            .find(|(s, _)| s.base_name() == name)
            .and_then(|(_, m)| m.sim_all_hold_s);
        let ratio = |x: f64| model.map_or("-".into(), |m| format!("{:.2}", x / m));
        println!(
            "{:<20} {:>4} {:>9} {:>9} {:>9} {:>8} {:>14} {:>10}",
            name,
            hold.len(),
            fmt_s(hold.first().copied()),
            fmt_s(Some(median)),
            fmt_s(hold.last().copied()),
            fmt_s(model),
            ratio(median),
            ratio(hold[hold.len() - 1]),
        );
    }
}

/// Joins the runs' p2p-bench results (`<dir>/<run>.json`) into one file of the same schema at
/// `to`, so that `cargo xtask bench compare` compares two testbed sessions: every run's
/// workload and figures, the targets some run measured, and per run the figures of the testbed
/// itself (`<run>.bound`, `.model`, `.over_model`, `.retransmitted`, `.machine_busy`).
fn write_combined(dir: &Path, runs: &[(RunSpec, Measured)], to: &Path) -> Result<(), String> {
    let mut all: Option<Value> = None;
    let (mut workloads, mut figures, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for (spec, m) in runs {
        let path = dir.join(format!("{}.json", spec.name));
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let mut v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let take = |v: &mut Value, key: &str| match v[key].take() {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        workloads.extend(take(&mut v, "workloads"));
        figures.extend(take(&mut v, "figures"));
        for t in take(&mut v, "targets") {
            if !t["met"].is_null() {
                targets.push(t);
            }
        }
        let bound = spec.shape.bound_s(&spec.rates());
        let mut fig = |what: &str, value: f64, unit: &str| {
            figures.push(serde_json::json!({
                "name": format!("{}.{what}", spec.name),
                "value": value,
                "unit": unit,
                "better": "lower",
            }));
        };
        fig("bound", bound, "s");
        if let Some(model) = m.sim_all_hold_s {
            fig("model", model, "s");
            if let Some(hold) = m.all_hold_s.filter(|_| model > 0.0) {
                fig("over_model", hold / model, "x");
            }
        }
        if let Some(l) = m.links {
            fig(
                "retransmitted",
                100.0 * l.retransmitted as f64 / l.segments.max(1) as f64,
                "%",
            );
        }
        if let Some((busy, _)) = m.machine {
            fig("machine_busy", busy, "s");
        }
        all.get_or_insert(v);
    }
    let mut all = all.ok_or("no run finished")?;
    all["workloads"] = Value::Array(workloads);
    all["figures"] = Value::Array(figures);
    all["targets"] = Value::Array(targets);
    let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
    std::fs::write(to, text + "\n").map_err(|e| e.to_string())
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median_of(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `cargo xtask ci`'s `testbed` step: the smoke run (4 namespaces, a few seconds; it asserts
/// delivery, not timing), skipped with the reason printed when not root or without iproute2.
/// Its build of p2p-bench uses ci's settings (no incremental compilation), so it reuses the
/// `bench` step's.
pub fn ci_smoke() -> Result<(), TaskError> {
    if let Some(why) = unavailable() {
        println!("testbed smoke run skipped: {why}");
        return Ok(());
    }
    smoke_and_full(
        Args {
            smoke: true,
            ..Args::default()
        },
        true,
    )
}

/// `cargo xtask testbed [args]`.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    let a = parse(args)?;
    if let Some(why) = unavailable() {
        return Err(TaskError::Failed(format!("the testbed cannot run: {why}")));
    }
    smoke_and_full(a, false)
}

fn smoke_and_full(a: Args, from_ci: bool) -> Result<(), TaskError> {
    let _signals = SignalGuard::install();
    if a.cleanup {
        return cleanup(a.force);
    }
    let stop = Stop {
        deadline: Instant::now()
            + a.deadline
                .unwrap_or(Duration::from_secs(if a.smoke { 120 } else { 1800 })),
    };
    let runs: Vec<RunSpec> = if a.smoke {
        vec![smoke_run()]
    } else {
        full_runs(a.rate, a.slow_fraction)
            .into_iter()
            .filter(|r| a.only.is_empty() || a.only.iter().any(|o| r.name.starts_with(o.as_str())))
            .collect()
    };
    if runs.is_empty() {
        return Err(TaskError::Usage(format!("no run matches {:?}", a.only)));
    }
    // Every run once, then again: the repetitions of a run are minutes apart, as the spread
    // between sessions is.
    let runs: Vec<RunSpec> = (1..=a.repeat.max(1))
        .flat_map(|k| runs.iter().map(move |r| r.repetition(k)))
        .collect();
    // The smoke run uses the debug build that `cargo xtask ci` has built already.
    let profile = if a.smoke { "debug" } else { "release" };
    let mut build = shell::cargo();
    build.args(["build", "-p", "p2p-bench", "--bin", "p2p-bench"]);
    if !a.smoke {
        build.arg("--release");
    }
    if from_ci {
        build.env("CARGO_INCREMENTAL", "0");
    }
    println!("==> {}", shell::display(&build));
    shell::run(&mut build)?;
    let sim = if a.sim && !a.smoke {
        let mut build = shell::cargo();
        build.args([
            "build",
            "--release",
            "-p",
            "p2p-testkit",
            "--example",
            "testbed_sim",
        ]);
        println!("==> {}", shell::display(&build));
        shell::run(&mut build)?;
        Some(
            target_dir()
                .join("release")
                .join("examples")
                .join("testbed_sim"),
        )
    } else {
        None
    };
    stop.check()?;
    let out_dir = target_dir().join("testbed");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| TaskError::Failed(format!("cannot create {}: {e}", out_dir.display())))?;
    let mut ctx = Ctx {
        bench: target_dir().join(profile).join("p2p-bench"),
        sim,
        sim_cpu: a.sim_cpu,
        sim_loss: a.sim_loss,
        out_dir,
        shaping: Shaping {
            queue: a.queue.unwrap_or(Duration::from_millis(10)),
            burst: a.burst,
            congestion: a.congestion,
            prio: a.prio,
        },
        stop,
        bench_args: a.bench_args.clone(),
        netem_reported: false,
    };
    println!(
        "links: shaped both ways, {}, queue {} ms at the rate + 64 KiB, burst {}; TCP congestion control {}",
        if a.prio {
            "DSCP EF first (htb, two FIFOs)"
        } else {
            "one FIFO"
        },
        ctx.shaping.queue.as_secs_f64() * 1e3,
        a.burst
            .map_or("128 KiB (or 1 ms at the rate if more)".into(), |b| format!(
                "{b} B"
            )),
        a.congestion.map_or_else(
            || std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
                .map_or("the default".into(), |s| s.trim().to_owned()),
            str::to_owned
        )
    );
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (i, spec) in runs.iter().enumerate() {
        match run_one(&mut ctx, i, spec) {
            Ok(m) => {
                if !m.ok {
                    failed.push(spec.name.clone());
                }
                done.push((spec.clone(), m));
            }
            Err(e) => {
                if !done.is_empty() {
                    report(&done, cores());
                }
                return Err(e);
            }
        }
    }
    report(&done, cores());
    if a.repeat > 1 {
        calibration(&done);
    }
    if !a.smoke {
        let all = ctx.out_dir.join("testbed.json");
        match write_combined(&ctx.out_dir, &done, &all) {
            Ok(()) => println!(
                "every run's results in one file (for `cargo xtask bench compare`): {}",
                all.display()
            ),
            Err(e) => eprintln!("cannot write {}: {e}", all.display()),
        }
    }
    // Nothing of ours may be left.
    let ours = format!("{PREFIX}{}r", std::process::id());
    let left: Vec<String> = leftovers()?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(&ours))
        .collect();
    if !left.is_empty() {
        return Err(TaskError::Failed(format!(
            "namespaces left behind: {left:?}"
        )));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "an artifact was missing or delivered twice in {failed:?}"
        )))
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_carry_the_pid() {
        let name = format!("{PREFIX}{}r12-15", u32::MAX);
        assert_eq!(owner_pid(&name), Some(u32::MAX));
        assert_eq!(owner_pid("p2ptbx-1"), None);
        // Interface names (at most 15 bytes) are fixed and short: eth0, v<i>, br0.
        assert!(format!("v{}", 999).len() <= 15);
    }

    #[test]
    fn addresses_are_distinct_per_node() {
        let addrs: std::collections::HashSet<String> = (0..600).map(node_addr).collect();
        assert_eq!(addrs.len(), 600);
        assert_eq!(node_addr(0), "10.99.0.1");
        assert_eq!(node_addr(250), "10.99.1.1");
    }

    #[test]
    fn one_origin_is_bound_by_the_receivers_links() {
        let s = Shape {
            nodes: 13,
            small: 0,
            small_size: 256,
            large: 50,
            large_size: MIB,
            origins: 1,
            spread_ms: 0,
            large_every_ms: 0,
        };
        let rates = vec![300 * MBIT; 13];
        let expect = 50.0 * MIB as f64 / (300e6 * PAYLOAD_SHARE / 8.0);
        assert!((s.bound_s(&rates) - expect).abs() < 1e-9);
        // A slow receiver sets the bound.
        let mut slow = rates.clone();
        slow[12] = 30 * MBIT;
        assert!((s.bound_s(&slow) - 10.0 * expect).abs() < 1e-6);
    }

    #[test]
    fn every_node_publishing_is_bound_by_what_each_receives() {
        let s = Shape {
            nodes: 4,
            small: 0,
            small_size: 256,
            large: 8,
            large_size: MIB,
            origins: 4,
            spread_ms: 500,
            large_every_ms: 0,
        };
        let rates = vec![80 * MBIT; 4];
        let expect = 6.0 * MIB as f64 / (80e6 * PAYLOAD_SHARE / 8.0);
        assert!((s.bound_s(&rates) - expect).abs() < 1e-9);
        let idle = Shape {
            large: 0,
            small: 10,
            ..s
        };
        assert_eq!(
            idle.bound_s(&rates),
            0.5,
            "the spread bounds a light stream"
        );
    }

    #[test]
    fn slow_nodes_are_the_last_and_never_the_first_origin() {
        let r = RunSpec {
            slow: 20,
            ..smoke_run()
        };
        assert_eq!(r.slow_nodes(), vec![1, 2, 3]);
        assert_eq!(r.rates()[0], 300 * MBIT);
        assert_eq!(r.rates()[3], 30 * MBIT);
    }

    #[test]
    fn link_counters_are_read_from_snmp_and_tc() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm OutSegs RetransSegs InErrs\nTcp: 1 1200 37 0\nUdp: InDatagrams\nUdp: 0\n";
        assert_eq!(tcp_segments(snmp), Some((1200, 37)));
        assert_eq!(tcp_segments("Ip: 1\n"), None);
        let netstat = "TcpExt: SyncookiesSent TCPLossProbes TCPTimeouts TCPFastRetrans\nTcpExt: 0 9 4 120\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            tcp_recoveries(netstat),
            Some(Recoveries {
                fast: 120,
                probes: 9,
                timeouts: 4
            })
        );
        assert_eq!(tcp_recoveries("TcpExt: TCPTimeouts\nTcpExt: 1\n"), None);
        let tc = "qdisc tbf 8001: root refcnt 2 rate 300Mbit burst 128Kb lat 11.3ms\n Sent 5217 bytes 40 pkt (dropped 12, overlimits 3 requeues 0)\nqdisc bfifo 10: parent 1:10 limit 12Kb\n Sent 10 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n";
        assert_eq!(qdisc_drops(tc), 12);
    }

    #[test]
    fn the_combined_results_hold_every_run_and_the_testbed_s_own_figures() {
        let dir = std::env::temp_dir().join(format!("p2p-testbed-combined-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut runs = Vec::new();
        for (k, name) in ["one", "two"].iter().enumerate() {
            let json = serde_json::json!({
                "schema": 1, "commit": "abc", "machine": {"cores": 2},
                "workloads": [{"name": name}],
                "targets": [{"target": "t", "measured": "not run", "met": null},
                            {"target": format!("{name} ok"), "measured": "1", "met": true}],
                "figures": [{"name": format!("{name}.time"), "value": 2.0, "unit": "s", "better": "lower"}],
            });
            std::fs::write(dir.join(format!("{name}.json")), json.to_string()).unwrap();
            let spec = RunSpec {
                name: (*name).into(),
                ..smoke_run()
            };
            let m = Measured {
                all_hold_s: Some(2.0),
                sim_all_hold_s: Some(1.6 + k as f64 * 0.4),
                ..Measured::default()
            };
            runs.push((spec, m));
        }
        let to = dir.join("testbed.json");
        write_combined(&dir, &runs, &to).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&to).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v["commit"], "abc");
        assert_eq!(v["workloads"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["targets"].as_array().unwrap().len(),
            2,
            "only measured targets"
        );
        let fig = |name: &str| {
            v["figures"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .and_then(|f| f["value"].as_f64())
        };
        assert_eq!(fig("one.time"), Some(2.0));
        assert_eq!(fig("one.over_model"), Some(1.25));
        assert_eq!(fig("two.over_model"), Some(1.0));
        assert!(fig("two.bound").is_some_and(|b| b > 0.0));
        assert!(write_combined(&dir, &[], &to).is_err());
    }

    #[test]
    fn repetitions_keep_their_run_s_name_as_base() {
        let r = smoke_run();
        assert_eq!(r.repetition(1).name, r.name);
        let third = r.repetition(3);
        assert_eq!(third.name, format!("{}-r3", r.name));
        assert_eq!(third.base_name(), r.name);
        assert_eq!(r.base_name(), r.name);
        let odd = RunSpec {
            name: "W4-bulk-r".into(),
            ..smoke_run()
        };
        assert_eq!(odd.base_name(), "W4-bulk-r");
        assert_eq!(median_of(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(median_of(&[1.0, 2.0, 4.0, 8.0]), 3.0);
    }

    #[test]
    fn arguments_parse_and_reject_nonsense() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse(&s(&[
            "--only",
            "W2,W4",
            "--rate",
            "100",
            "--slow-fraction",
            "0.25",
            "--",
            "--notsent-lowat",
            "16384",
        ]))
        .unwrap();
        assert_eq!(a.only, ["W2", "W4"]);
        assert_eq!(a.rate, Some(100));
        assert_eq!(a.slow_fraction, Some(0.25));
        assert_eq!(a.bench_args, ["--notsent-lowat", "16384"]);
        assert!(parse(&s(&["--slow-fraction", "2"])).is_err());
        assert!(parse(&s(&["--rate", "0"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert_eq!(a.sim_cpu, Some(SIM_CPU));
        let cpu = parse(&s(&["--sim-cpu", "4.5,20"]))
            .unwrap()
            .sim_cpu
            .unwrap();
        assert_eq!((cpu.ns_per_byte, cpu.us_per_frame), (4.5, 20.0));
        assert_eq!(parse(&s(&["--sim-cpu", "off"])).unwrap().sim_cpu, None);
        assert_eq!(a.sim_loss, Some(SIM_LOSS_RECOVERY));
        let loss = parse(&s(&["--sim-loss", "20"])).unwrap().sim_loss;
        assert_eq!(loss, Some(Duration::from_millis(20)));
        assert_eq!(parse(&s(&["--sim-loss", "off"])).unwrap().sim_loss, None);
        assert!(parse(&s(&["--sim-cpu", "5"])).is_err());
        assert_eq!(a.repeat, 1);
        assert_eq!(parse(&s(&["--repeat", "3"])).unwrap().repeat, 3);
        assert!(parse(&s(&["--repeat", "0"])).is_err());
        assert!(parse(&s(&["--repeat", "2.5"])).is_err());
        let runs = full_runs(Some(100), Some(0.25));
        assert!(runs.iter().all(|r| r.rate_bps == 100 * MBIT));
        assert!(runs.iter().all(|r| r.slow == r.shape.nodes.div_ceil(4)));
    }

    #[test]
    fn the_partial_mesh_runs_pass_their_degree_to_the_nodes_and_the_simulator() {
        let runs = full_runs(None, None);
        let mesh: Vec<&RunSpec> = runs.iter().filter(|r| r.name.starts_with("mesh")).collect();
        assert_eq!(mesh.len(), 2);
        for r in &mesh {
            assert_eq!(r.peers, Some(4), "{}", r.name);
            assert_eq!(r.peers_args(), ["--peers", "4"]);
            assert!((13..=16).contains(&r.shape.nodes), "{}", r.name);
        }
        let full = runs.iter().find(|r| r.name == "W2-1MiB").unwrap();
        assert!(full.peers_args().is_empty());
        // The same publishes as their full-mesh counterparts.
        let w2 = runs.iter().find(|r| r.name == "mesh4-W2-1MiB").unwrap();
        assert_eq!(w2.shape, full.shape);
        let w3 = runs.iter().find(|r| r.name == "mesh4-W3-16").unwrap();
        let full_w3 = runs.iter().find(|r| r.name == "W3-scale-16").unwrap();
        assert_eq!((&w3.shape, w3.rate_bps), (&full_w3.shape, full_w3.rate_bps));
    }

    #[test]
    fn the_pictures_go_beside_the_json_with_the_physical_bound() {
        let run = smoke_run();
        let args = run.picture_args(Path::new("target/testbed/smoke"));
        assert_eq!(args[..3], ["--report", "target/testbed/smoke", "--bound"]);
        let (name, secs) = args[3].split_once('=').unwrap();
        assert_eq!(name, "smoke");
        let secs: f64 = secs.parse().unwrap();
        assert!(
            (secs - run.shape.bound_s(&run.rates())).abs() < 1e-6,
            "{secs}"
        );
        assert!(secs > 0.0);
    }

    #[test]
    fn staggered_large_artifacts_bound_the_run_by_the_last_one() {
        let runs = full_runs(None, None);
        let stream = runs
            .iter()
            .find(|r| r.name == "W2-hetero-stream")
            .expect("the stream run");
        assert_eq!(stream.shape.large_every_ms, 1_500);
        assert!(stream.shape.custom("x", 9).contains("large_every_ms=1500"));
        // The last block is published at 7.5 s and takes 4 MiB through a 30 Mbit/s link.
        let last = 7.5 + (4 << 20) as f64 / (30e6 * PAYLOAD_SHARE / 8.0);
        let bound = stream.shape.bound_s(&stream.rates());
        assert!((bound - last).abs() < 1e-9, "{bound} against {last}");
        let at_once = Shape {
            large_every_ms: 0,
            ..stream.shape.clone()
        };
        assert!(at_once.bound_s(&stream.rates()) < bound);
    }

    #[test]
    fn the_custom_text_names_every_field() {
        let text = smoke_run().shape.custom("smoke", 30);
        assert_eq!(
            text,
            "name=smoke,nodes=4,small=20,small_size=256,large=2,large_size=1048576,origins=2,spread_ms=200,large_every_ms=0,timeout_s=30"
        );
    }
}
