//! `--process-per-node`: every node in its own process (this binary's hidden `node` command),
//! driven by the parent over the child's stdin and stdout, one line per message:
//!
//! ```text
//! child  -> parent   ready <node id hex> <listen addr>
//! parent -> child    registry <id>@<addr> <id>@<addr> ...
//! child  -> parent   meshed                          (connected to all its neighbours)
//! parent -> child    run <index> <nodes> <start unix ns> <workload fields>
//! child  -> parent   done                            (it holds every artifact)
//! parent -> child    report
//! child  -> parent   result <JSON of NodeResult>
//! parent closes stdin: the child shuts its node down and exits
//! ```
//!
//! Every child computes the same deterministic plan ([`Workload::plan`]), publishes its own
//! share at the planned instants of a common start time, and records when each artifact was
//! published and delivered in wall-clock nanoseconds (one machine, one clock). The parent joins
//! the records into the same [`Outcome`] as an in-process run. CPU time and peak RSS are each
//! child's own (from its /proc), summed; each node's CPU time and peak RSS are kept too.
//!
//! With `--netns`, node `i` runs as `ip netns exec <ns_i> p2p-bench node --listen <addr_i>`,
//! so its node listens on (and dials from) its namespace's address; the parent stays in its
//! own namespace and talks to it over the same pipes. `cargo xtask testbed` sets up the
//! namespaces, the bridge and the shaped links.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use p2p_bench::plot::{ClassCdf, NodeBytes, PlotData, Timeline};
use p2p_bench::subnet::{Workload, class_name, workload_priority_fn};
use p2p_core::{ArtifactId, Kind, NodeId};
use p2p_tokio::{Member, NodeConfig, NodeIdentity, NodeMetrics, Registry, TopologyView};
use serde::{Deserialize, Serialize};

use crate::machine;
use crate::workloads::{Latency, Outcome, Spec, Tuning};

/// How often a node process samples its anonymous memory.
pub const ANON_SAMPLE: Duration = Duration::from_millis(50);

/// What one node process reports at the end of a workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeResult {
    /// (tag, unix ns) of each artifact it published.
    pub published: Vec<(u64, u64)>,
    /// (tag, unix ns) of each artifact delivered to it, first delivery only.
    pub delivered: Vec<(u64, u64)>,
    /// Deliveries of an artifact it already had.
    pub duplicates: u64,
    /// Deliveries of artifacts not in the plan.
    pub unexpected: u64,
    /// Bytes its node wrote to sockets during the workload.
    pub wire_bytes: u64,
    /// Bytes its node read from sockets during the workload.
    #[serde(default)]
    pub wire_read: u64,
    /// CPU time of the process during the workload, ns.
    pub cpu_ns: u64,
    /// Peak RSS of the process, bytes.
    pub peak_rss: u64,
    /// Whether the peak was reset before the workload.
    pub peak_reset: bool,
    /// Peak anonymous memory (RssAnon, sampled every [`ANON_SAMPLE`]) during the workload,
    /// bytes: the process's own memory, without the pages of files it maps.
    #[serde(default)]
    pub peak_anon: u64,
    /// Requests its core retried.
    pub retries: u64,
    /// Artifacts its core received again after delivering them.
    pub duplicate_receipts: u64,
    /// Chunks its core sent (answers and pushes).
    #[serde(default)]
    pub chunks_served: u64,
    /// Chunk requests its core made to full holders for chunks of other members' stripes:
    /// (handed over, idle, overdue).
    #[serde(default)]
    pub chunks_asked_beyond_stripe: (u64, u64, u64),
    /// Chunk requests its core made to full holders for chunks of slow owners' stripes.
    #[serde(default)]
    pub chunks_asked_slow_owner: u64,
    /// Pushed chunks its core received and did not need (in `duplicate_receipts` too).
    #[serde(default)]
    pub pushes_unwanted: u64,
}

/// The first 8 bytes of a planned artifact: its index in the plan's making order.
fn tag(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The workload's fields as they travel on the `run` line.
fn encode_workload(w: &Workload) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {}",
        w.small,
        w.small_size.start(),
        w.small_size.end(),
        w.large,
        w.large_size,
        w.large_origins,
        w.spread.as_nanos(),
        w.seed,
        w.large_every.as_nanos()
    )
}

fn decode_workload(fields: &[&str]) -> Result<Workload, String> {
    let n = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("bad workload field {i} in {fields:?}"))
    };
    Ok(Workload {
        small: n(0)? as usize,
        small_size: n(1)? as usize..=n(2)? as usize,
        large: n(3)? as usize,
        large_size: n(4)? as usize,
        large_origins: n(5)? as usize,
        spread: Duration::from_nanos(n(6)?),
        seed: n(7)?,
        large_every: Duration::from_nanos(n(8)?),
    })
}

// ---------------------------------------------------------------- parent side

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the child's stdin is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to a node process: {e}"))
    }
}

/// The node processes of one run; killed if the run fails half-way.
struct Procs {
    procs: Vec<Proc>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Procs {
    fn spawn(n: usize, tuning: Tuning, placement: &[Placement]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        if !placement.is_empty() && placement.len() < n {
            return Err(format!(
                "{n} nodes but only {} network namespaces given",
                placement.len()
            ));
        }
        let (tx, lines) = mpsc::channel();
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            let mut cmd = match placement.get(i) {
                Some(p) => {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", &p.netns]).arg(&exe);
                    cmd
                }
                None => Command::new(&exe),
            };
            cmd.args(node_args(placement.get(i).map(|p| p.addr), tuning));
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start node process {i}: {e}"))?;
            let stdout = child.stdout.take().ok_or("no stdout of a node process")?;
            let stdin = child.stdin.take();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
            procs.push(Proc { child, stdin });
        }
        Ok(Procs { procs, lines })
    }

    /// Waits for one line starting with `word` from every process; returns their rests.
    fn gather(&self, word: &str, deadline: Instant) -> Result<Vec<String>, String> {
        let mut got: Vec<Option<String>> = vec![None; self.procs.len()];
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, line) = self.lines.recv_timeout(left).map_err(|_| {
                let waiting: Vec<usize> = (0..got.len()).filter(|&i| got[i].is_none()).collect();
                format!("node processes {waiting:?} did not say `{word}` in time")
            })?;
            if let Some(msg) = line.strip_prefix("error ") {
                return Err(format!("node process {i}: {msg}"));
            }
            match line.split_once(' ') {
                Some((w, rest)) if w == word => got[i] = Some(rest.to_owned()),
                None if line == word => got[i] = Some(String::new()),
                _ => {}
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn broadcast(&mut self, line: &str) -> Result<(), String> {
        self.procs.iter_mut().try_for_each(|p| p.send(line))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            // Closing stdin asks the child to shut down; kill it if it has not within 10 s.
            p.stdin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &mut self.procs {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// The hidden `node` command and its arguments: the listening address (default 127.0.0.1)
/// and every setting of `tuning`.
pub fn node_args(listen: Option<IpAddr>, tuning: Tuning) -> Vec<String> {
    let mut args = vec!["node".to_owned()];
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            args.extend([name.to_owned(), v]);
        }
    };
    add("--listen", listen.map(|a| a.to_string()));
    add(
        "--socket-buffer",
        tuning.socket_buffer.map(|v| v.to_string()),
    );
    add("--chunk-size", tuning.chunk_size.map(|v| v.to_string()));
    add(
        "--notsent-lowat",
        tuning.notsent_lowat.map(|v| v.to_string()),
    );
    add("--write-chunk", tuning.write_chunk.map(|v| v.to_string()));
    add(
        "--swarm-patience-ms",
        tuning.swarm_patience_ms.map(|v| v.to_string()),
    );
    add(
        "--push-patience-ms",
        tuning.push_patience_ms.map(|v| v.to_string()),
    );
    add("--peers", tuning.peers.map(|v| v.to_string()));
    if tuning.no_express {
        args.push("--no-express".to_owned());
    }
    if tuning.push_chunks {
        args.push("--push-chunks".to_owned());
    }
    if tuning.file_storage {
        args.push("--file-storage".to_owned());
    }
    if tuning.express_thread {
        args.push("--express-thread".to_owned());
    }
    args
}

/// Where one node process runs: a network namespace (entered with `ip netns exec`) and the
/// address its node listens on there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The network namespace's name.
    pub netns: String,
    /// The node's listening address.
    pub addr: IpAddr,
}

impl std::str::FromStr for Placement {
    type Err = String;

    /// `namespace=address`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (netns, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not namespace=address"))?;
        if netns.is_empty() || netns.contains(char::is_whitespace) {
            return Err(format!("`{netns}` is not a namespace name"));
        }
        Ok(Placement {
            netns: netns.to_owned(),
            addr: addr
                .parse()
                .map_err(|_| format!("`{addr}` is not an IP address"))?,
        })
    }
}

/// Runs `spec` with one process per node, node `i` in `placement[i]` if given (else on
/// 127.0.0.1 in this process's network namespace).
pub fn run(spec: &Spec, placement: &[Placement]) -> Result<Outcome, String> {
    let n = spec.nodes;
    // What each artifact is, by tag (the parent holds none of their bytes).
    let (_, all) = spec
        .workload
        .plan_for(n, None, |_| false)
        .map_err(|e| e.to_string())?;
    let info: Info = all
        .iter()
        .map(|a| (a.tag, (a.origin, a.kind, a.size)))
        .collect();
    let mut procs = Procs::spawn(n, spec.tuning, placement)?;
    let setup = Instant::now() + Duration::from_secs(60);
    let ready = procs.gather("ready", setup)?;
    let members: Vec<String> = ready.iter().map(|r| r.replace(' ', "@")).collect();
    procs.broadcast(&format!("registry {}", members.join(" ")))?;
    procs.gather("meshed", setup)?;
    let start = unix_ns() + 200_000_000;
    let fields = encode_workload(&spec.workload);
    for (i, p) in procs.procs.iter_mut().enumerate() {
        p.send(&format!("run {i} {n} {start} {fields}"))?;
    }
    let wall = Instant::now();
    let machine_before = machine::MachineCpu::now();
    let done = procs.gather(
        "done",
        Instant::now() + spec.timeout + Duration::from_millis(200),
    );
    let elapsed = wall.elapsed().saturating_sub(Duration::from_millis(200));
    let machine_cpu = machine::MachineCpu::now()
        .zip(machine_before)
        .map(|(after, before)| after.since(before));
    if let Err(e) = &done {
        eprintln!("  {}: {e}; collecting what arrived", spec.name);
    }
    procs.broadcast("report")?;
    let reports = procs.gather("result", Instant::now() + Duration::from_secs(60))?;
    let results: Vec<NodeResult> = reports
        .iter()
        .map(|r| serde_json::from_str(r).map_err(|e| format!("bad node result: {e}")))
        .collect::<Result<_, _>>()?;
    drop(procs);
    let mut outcome = join(spec, &info, &results, elapsed);
    outcome.machine_busy_s = machine_cpu.map(|m| m.busy.as_secs_f64());
    outcome.machine_softirq_s = machine_cpu.map(|m| m.softirq.as_secs_f64());
    Ok(outcome)
}

/// Each planned artifact's origin, kind and size, by tag.
type Info = HashMap<u64, (usize, Kind, u64)>;

/// Joins the children's records into one outcome.
fn join(spec: &Spec, info: &Info, results: &[NodeResult], elapsed: Duration) -> Outcome {
    let n = spec.nodes;
    let published: HashMap<u64, u64> = results
        .iter()
        .flat_map(|r| r.published.iter().copied())
        .collect();
    let first = published.values().copied().min().unwrap_or(0);
    let mut last = first;
    let mut delivered = 0u64;
    let mut delivered_bytes = 0u64;
    let mut lat: HashMap<Kind, Vec<u64>> = HashMap::new();
    let mut timeline = Timeline::default();
    let mut node_last = Vec::with_capacity(results.len());
    for r in results {
        let mut mine = 0u64;
        for &(t, at) in &r.delivered {
            let (Some(&(_, kind, size)), Some(&p)) = (info.get(&t), published.get(&t)) else {
                continue;
            };
            delivered += 1;
            delivered_bytes += size;
            last = last.max(at);
            mine = mine.max(at);
            lat.entry(kind).or_default().push(at.saturating_sub(p));
            timeline.add(Duration::from_nanos(at.saturating_sub(first)), size);
        }
        node_last.push(mine.saturating_sub(first) as f64 / 1e9);
    }
    let expected = info.len() as u64 * (n as u64 - 1);
    let complete = delivered == expected;
    let full = Duration::from_nanos(last.saturating_sub(first));
    let secs = if complete { full } else { elapsed }.as_secs_f64();
    let wire: u64 = results.iter().map(|r| r.wire_bytes).sum();
    let payload: u64 = info.values().map(|i| i.2).sum();
    // By kind: the small (urgent) one first, as in-process.
    let mut classes: Vec<(Kind, Vec<u64>)> = lat.into_iter().collect();
    classes.sort_by_key(|(kind, _)| kind.0);
    let mut cdfs = Vec::with_capacity(classes.len());
    let latency: Vec<Latency> = classes
        .into_iter()
        .map(|(kind, mut v)| {
            v.sort_unstable();
            cdfs.push(ClassCdf::from_sorted(class_name(kind), &v, |ns| {
                ns as f64 / 1e6
            }));
            let pct = |q: f64| {
                let rank = (q * v.len() as f64).ceil() as usize;
                v[rank.clamp(1, v.len()) - 1] as f64 / 1e6
            };
            Latency {
                class: class_name(kind).into(),
                deliveries: v.len(),
                p50_ms: pct(0.5),
                p99_ms: pct(0.99),
                max_ms: v.last().copied().unwrap_or(0) as f64 / 1e6,
            }
        })
        .collect();
    Outcome {
        name: spec.name.clone(),
        title: spec.title.clone(),
        mode: "process-per-node".into(),
        nodes: n,
        artifacts: info.len(),
        payload_bytes: payload,
        full_delivery_s: complete.then_some(full.as_secs_f64()),
        elapsed_s: elapsed.as_secs_f64(),
        goodput_mb_s: if secs > 0.0 {
            delivered_bytes as f64 / secs / 1e6
        } else {
            0.0
        },
        wire_bytes: wire,
        amplification: wire as f64 / (payload as f64 * (n as f64 - 1.0)).max(1.0),
        cpu_s: results.iter().map(|r| r.cpu_ns).sum::<u64>() as f64 / 1e9,
        machine_busy_s: None,
        machine_softirq_s: None,
        peak_rss_bytes: results.iter().map(|r| r.peak_rss).sum(),
        peak_rss_reset: results.iter().all(|r| r.peak_reset),
        node_peak_rss_bytes: results.iter().map(|r| r.peak_rss).collect(),
        node_peak_anon_bytes: results.iter().map(|r| r.peak_anon).collect(),
        file_storage: spec.tuning.file_storage,
        node_cpu_s: results.iter().map(|r| r.cpu_ns as f64 / 1e9).collect(),
        node_last_delivery_s: node_last,
        node_chunks_served: results.iter().map(|r| r.chunks_served).collect(),
        chunks_asked_beyond_stripe: results.iter().fold((0, 0, 0), |(h, i, o), r| {
            let b = r.chunks_asked_beyond_stripe;
            (h + b.0, i + b.1, o + b.2)
        }),
        chunks_asked_slow_owner: results.iter().map(|r| r.chunks_asked_slow_owner).sum(),
        largest_artifact_bytes: crate::workloads::largest(&spec.workload),
        node_rss_bound_bytes: crate::workloads::node_rss_bound_of(&spec.workload),
        missing: expected.saturating_sub(delivered),
        duplicates: results.iter().map(|r| r.duplicates + r.unexpected).sum(),
        duplicate_receipts: results.iter().map(|r| r.duplicate_receipts).sum(),
        pushes_unwanted: results.iter().map(|r| r.pushes_unwanted).sum(),
        retries: results.iter().map(|r| r.retries).sum(),
        latency,
        plot: PlotData {
            latency: cdfs,
            progress: timeline,
            expected_bytes: payload * (n as u64).saturating_sub(1),
            bounds: Vec::new(),
            nodes: results
                .iter()
                .map(|r| NodeBytes {
                    written: r.wire_bytes,
                    read: r.wire_read,
                })
                .collect(),
        },
    }
}

// ---------------------------------------------------------------- child side

/// How many connected peers make a node "meshed": its neighbours in the topology (every other
/// member in a full mesh, about the degree in a partial one, whose other members it reaches
/// only through relays).
pub fn meshed_at(view: &TopologyView) -> u64 {
    view.neighbours.len() as u64
}

/// The hidden `node` command: one node, driven over stdin and stdout.
pub fn node_main(listen: IpAddr, tuning: Tuning) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let result = runtime.block_on(node_async(listen, tuning));
    if let Err(e) = &result {
        println!("error {e}");
    }
    result
}

/// Lines from stdin, read by a thread (stdin has no non-blocking form in std).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct Record {
    expected: usize,
    have: HashSet<u64>,
    delivered: Vec<(u64, u64)>,
    duplicates: u64,
    unexpected: u64,
}

async fn node_async(listen: IpAddr, tuning: Tuning) -> Result<(), String> {
    let mut input = stdin_lines();
    let identity = NodeIdentity::generate().map_err(|e| e.to_string())?;
    let my_id = identity.node_id();
    let mut cfg = NodeConfig::new(identity, SocketAddr::new(listen, 0));
    cfg.core.priority_fn = workload_priority_fn();
    crate::workloads::tune(&mut cfg, tuning);
    let storage = cfg.core.storage.clone();
    let handle = p2p_tokio::start(cfg, Registry::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut deliveries = handle.take_deliveries().ok_or("deliveries taken")?;
    println!("ready {} {}", my_id.to_hex(), handle.local_addr());

    let mut record: Option<Record> = None;
    let mut published: Vec<(u64, u64)> = Vec::new();
    let mut ids: HashMap<u64, ArtifactId> = HashMap::new();
    // At the start of the workload: the process's CPU time, whether its peak RSS was reset,
    // and its node's metrics (counters are reported as their growth since).
    let mut before = (Duration::ZERO, false, NodeMetrics::default());
    let mut said_done = false;
    let (pub_tx, mut pub_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    // The peak of the process's anonymous memory since the workload began, sampled.
    let mut sample = tokio::time::interval(ANON_SAMPLE);
    let mut peak_anon = 0u64;
    loop {
        tokio::select! {
            _ = sample.tick() => {
                peak_anon = peak_anon.max(machine::anon_rss("self").unwrap_or(0));
            }
            line = input.recv() => {
                let Some(line) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.first().copied() {
                    Some("registry") => {
                        let members = words[1..]
                            .iter()
                            .map(|m| {
                                let (id, addr) = m.split_once('@').ok_or("bad member")?;
                                Ok(Member {
                                    id: NodeId::from_hex(id).ok_or("bad node id")?,
                                    addr: addr.parse().map_err(|_| "bad address")?,
                                })
                            })
                            .collect::<Result<Vec<_>, &str>>()?;
                        handle
                            .update_registry(Registry::new(1, members))
                            .await
                            .map_err(|e| e.to_string())?;
                        let view = handle.topology().await.map_err(|e| e.to_string())?;
                        let want = meshed_at(&view);
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while handle.metrics().peers_connected < want {
                            if Instant::now() >= deadline {
                                return Err("the mesh did not form within 60 s".into());
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        println!("meshed");
                    }
                    Some("run") => {
                        let num = |i: usize| -> Result<u64, String> {
                            words.get(i).and_then(|w| w.parse().ok()).ok_or_else(|| format!("bad run line: {line}"))
                        };
                        let (index, nodes, start) = (num(1)? as usize, num(2)? as usize, num(3)?);
                        let workload = decode_workload(&words[4..])?;
                        let chunk = handle.chunk_size();
                        // Only this node's artifacts are held; the others are named as they
                        // are made, a chunk at a time.
                        let (mine, all) = workload
                            .plan_for_in(nodes, Some(chunk), |origin| origin == index, &storage)
                            .map_err(|e| e.to_string())?;
                        ids = all.iter().filter_map(|a| Some((a.tag, a.id?))).collect();
                        record = Some(Record {
                            expected: ids.len() - mine.len(),
                            have: HashSet::new(),
                            delivered: Vec::new(),
                            duplicates: 0,
                            unexpected: 0,
                        });
                        let m = handle.metrics();
                        let reset = machine::reset_peak_rss();
                        peak_anon = machine::anon_rss("self").unwrap_or(0);
                        before = (machine::cpu_time("self").unwrap_or_default(), reset, m);
                        let h = handle.clone();
                        let tx = pub_tx.clone();
                        tokio::spawn(async move {
                            let offset = start.saturating_sub(unix_ns());
                            let t0 = Instant::now() + Duration::from_nanos(offset);
                            for p in mine {
                                let due = t0 + p.at;
                                if due > Instant::now() {
                                    tokio::time::sleep_until(due.into()).await;
                                }
                                let t = tag(&p.data);
                                let at = unix_ns();
                                if h.publish(p.kind, Bytes::new(), p.data).await.is_err() {
                                    break;
                                }
                                let _ = tx.send((t, at));
                            }
                        });
                    }
                    Some("report") => {
                        let m = handle.metrics();
                        let r = record.take().unwrap_or(Record {
                            expected: 0,
                            have: HashSet::new(),
                            delivered: Vec::new(),
                            duplicates: 0,
                            unexpected: 0,
                        });
                        while let Ok(p) = pub_rx.try_recv() {
                            published.push(p);
                        }
                        let b = before.2;
                        let result = NodeResult {
                            published: std::mem::take(&mut published),
                            delivered: r.delivered,
                            duplicates: r.duplicates,
                            unexpected: r.unexpected,
                            wire_bytes: m.bytes_written.saturating_sub(b.bytes_written),
                            wire_read: m.bytes_read.saturating_sub(b.bytes_read),
                            cpu_ns: machine::cpu_time("self")
                                .unwrap_or_default()
                                .saturating_sub(before.0)
                                .as_nanos() as u64,
                            peak_rss: machine::peak_rss("self").unwrap_or(0),
                            peak_anon: peak_anon.max(machine::anon_rss("self").unwrap_or(0)),
                            peak_reset: before.1,
                            retries: m.core.retries.saturating_sub(b.core.retries),
                            duplicate_receipts: m.core.duplicates.saturating_sub(b.core.duplicates),
                            chunks_served: m.core.chunks_served.saturating_sub(b.core.chunks_served),
                            pushes_unwanted: m.core.pushes_unwanted.saturating_sub(b.core.pushes_unwanted),
                            chunks_asked_beyond_stripe: (
                                m.core.chunks_asked_handed_over.saturating_sub(b.core.chunks_asked_handed_over),
                                m.core.chunks_asked_idle.saturating_sub(b.core.chunks_asked_idle),
                                m.core.chunks_asked_overdue.saturating_sub(b.core.chunks_asked_overdue),
                            ),
                            chunks_asked_slow_owner: m.core.chunks_asked_slow_owner.saturating_sub(b.core.chunks_asked_slow_owner),
                        };
                        let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
                        println!("result {json}");
                    }
                    _ => return Err(format!("unknown command: {line}")),
                }
            }
            p = pub_rx.recv() => {
                if let Some(p) = p {
                    published.push(p);
                }
            }
            d = deliveries.recv() => {
                let Some(d) = d else { break };
                let at = unix_ns();
                let t = tag(&d.artifact.data);
                match record.as_mut() {
                    Some(r) if ids.get(&t) == Some(&d.artifact.id) => {
                        if r.have.insert(t) {
                            r.delivered.push((t, at));
                        } else {
                            r.duplicates += 1;
                        }
                        if r.have.len() == r.expected && !said_done {
                            said_done = true;
                            println!("done");
                        }
                    }
                    Some(r) => r.unexpected += 1,
                    None => {}
                }
            }
        }
        if let Some(r) = &record
            && r.expected == 0
            && !said_done
        {
            said_done = true;
            println!("done");
        }
    }
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_fields_survive_the_run_line() {
        let w = Workload {
            small: 7,
            small_size: 100..=300,
            large: 2,
            large_size: 5000,
            large_origins: 3,
            spread: Duration::from_millis(1500),
            large_every: Duration::from_millis(250),
            seed: 9,
        };
        let line = encode_workload(&w);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(decode_workload(&fields).unwrap(), w);
        assert!(decode_workload(&fields[..3]).is_err());
    }

    #[test]
    fn placements_are_namespace_and_address() {
        let p: Placement = "p2ptb1r0-3=10.99.0.4".parse().unwrap();
        assert_eq!(p.netns, "p2ptb1r0-3");
        assert_eq!(p.addr, "10.99.0.4".parse::<IpAddr>().unwrap());
        assert!("p2ptb1r0-3".parse::<Placement>().is_err());
        assert!("=10.99.0.4".parse::<Placement>().is_err());
        assert!("ns=10.99.0".parse::<Placement>().is_err());
        assert!("a b=10.0.0.1".parse::<Placement>().is_err());
    }

    #[test]
    fn a_node_is_meshed_with_its_neighbours_not_every_member() {
        use p2p_transport::topology::Topology;
        let members: Vec<NodeId> = (0..16u8).map(|i| NodeId([i; 32])).collect();
        let me = members[5];
        let view = |topology: Topology| TopologyView {
            neighbours: topology.neighbours(&me, &members).into_iter().collect(),
            topology,
            members: members.clone(),
        };
        let partial = meshed_at(&view(Topology::Degree(4)));
        assert_eq!(
            partial,
            Topology::Degree(4).neighbours(&me, &members).len() as u64
        );
        assert!(
            (4..15).contains(&partial),
            "about 4 of 15, not all: {partial}"
        );
        assert_eq!(meshed_at(&view(Topology::All)), 15);
    }

    #[test]
    fn tags_are_the_plan_index() {
        let w = Workload::default();
        let plan = w.plan(4).unwrap();
        let tags: HashSet<u64> = plan.iter().map(|p| tag(&p.data)).collect();
        assert_eq!(tags.len(), plan.len());
        assert!(tags.iter().all(|&t| t < plan.len() as u64));
    }
}
