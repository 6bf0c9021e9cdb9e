//! The end-to-end workloads W1..W5 on real nodes over TLS on 127.0.0.1, and what is measured
//! of each run.

use std::time::Duration;

use p2p_bench::plot::PlotData;
use p2p_bench::subnet::{LocalSubnet, Report, Workload, class_name, workload_priority_fn};
use p2p_tokio::NodeConfig;
use p2p_transport::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::machine;

/// One workload to run: its name, subnet size and what is published.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Short name (`W1`, `W4-bulk`, ...), the prefix of its figures.
    pub name: String,
    /// One line for the table.
    pub title: String,
    /// Nodes in the subnet.
    pub nodes: usize,
    /// What is published.
    pub workload: Workload,
    /// Give up waiting for full delivery after this long.
    pub timeout: Duration,
    /// The nodes' settings that differ from the defaults.
    pub tuning: Tuning,
    /// Always run with one process per node (its per-node peak RSS is the point).
    pub process_per_node: bool,
}

/// The nodes' settings a run may change from [`NodeConfig`]'s defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// SO_SNDBUF/SO_RCVBUF of the nodes' connections (`None`: the OS default).
    pub socket_buffer: Option<usize>,
    /// The subnet's chunk size (`None`: the default, 128 KiB).
    pub chunk_size: Option<u32>,
    /// TCP_NOTSENT_LOWAT of the nodes' connections (`None`: the node's default; `Some(0)`:
    /// off, the OS default).
    pub notsent_lowat: Option<u32>,
    /// Bytes the nodes' writers take from the multiplexer per socket write (`None`: the
    /// node's default, 64 KiB).
    pub write_chunk: Option<usize>,
    /// The core's `swarm_patience`, ms (`None`: the default, 100 ms).
    pub swarm_patience_ms: Option<u64>,
    /// The core's `push_patience`, ms (`None`: the default, 500 ms).
    pub push_patience_ms: Option<u64>,
    /// The core's `push_chunks` (pushes on).
    pub push_chunks: bool,
    /// The nodes' degree: each connects to about this many others
    /// ([`Topology::Degree`]) and relays what it receives (`None`: a full mesh, no relaying).
    pub peers: Option<usize>,
    /// Turn the nodes' express lanes off (one connection per peer pair).
    pub no_express: bool,
    /// Assemble and make large artifacts in files ([`storage_dir`]), not in memory.
    pub file_storage: bool,
    /// Run the nodes' express lanes on a thread of their own ([`express_runtime`]).
    pub express_thread: bool,
}

/// The runtime the nodes' express lanes run on with [`Tuning::express_thread`]: one
/// current-thread runtime for the whole process, on a thread that lives as long as it.
pub fn express_runtime() -> Result<tokio::runtime::Handle, String> {
    static LANES: std::sync::OnceLock<Result<tokio::runtime::Handle, String>> =
        std::sync::OnceLock::new();
    LANES
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the express lanes' runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("express-lanes".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("cannot start the express lanes' thread: {e}"))?;
            Ok(handle)
        })
        .clone()
}

/// W5's deadline: 600 s, or longer for runs that deliver more than 24 GB in all, at 40 MB/s
/// of deliveries (two cores carry about 100 MB/s of TLS, hashing and copying between 8 to 13
/// node processes).
fn w5_timeout(nodes: usize, count: usize, size: usize) -> Duration {
    let delivered = nodes.saturating_sub(1) as u64 * count as u64 * size as u64;
    Duration::from_secs(600.max(delivered / 40_000_000))
}

/// Where the nodes of a run with [`Tuning::file_storage`] keep their files (each file is
/// unlinked once made: the directory stays empty).
pub fn storage_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("p2p-bench-storage")
}

/// The sizes of the workloads: full, or the quick form that CI runs.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Quick form: tiny counts.
    pub quick: bool,
    /// Size of a W2 block (bytes).
    pub block_size: usize,
    /// The nodes' settings that differ from the defaults.
    pub tuning: Tuning,
    /// W5 (large chunked artifacts, full runs only): (nodes, artifacts, artifact size).
    pub w5: (usize, usize, usize),
}

/// W5's default shape: 13 nodes, 4 artifacts of 64 MiB from one node.
pub const W5_DEFAULT: (usize, usize, usize) = (13, 4, 64 * MIB);

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The workloads in the order they run (smallest memory footprint first, so that a peak RSS
/// that cannot be reset stays meaningful).
pub fn specs(sizes: Sizes) -> Vec<Spec> {
    let q = sizes.quick;
    let small = |count: usize, size: usize, spread: Duration| Workload {
        small: count,
        small_size: size..=size,
        large: 0,
        large_size: MIB,
        large_origins: 1,
        spread,
        large_every: Duration::ZERO,
        seed: 1,
    };
    let timeout = Duration::from_secs(if q { 60 } else { 180 });
    let (w1_nodes, w1_count) = if q { (4, 200) } else { (13, 20_000) };
    let (w3_nodes, w3_count) = if q { (6, 200) } else { (40, 5_000) };
    let (w2_nodes, w2_count) = if q { (4, 4) } else { (13, 50) };
    let block = if q {
        sizes.block_size.min(MIB)
    } else {
        sizes.block_size
    };
    let (w4_nodes, urgent, urgent_spread, bulk_per_node) = if q {
        (4, 40, Duration::from_millis(400), 1)
    } else {
        (13, 400, Duration::from_secs(4), 8)
    };
    let urgent_load = small(urgent, 256, urgent_spread);
    let bulk_load = Workload {
        large: bulk_per_node * w4_nodes,
        large_size: MIB,
        large_origins: w4_nodes,
        ..urgent_load.clone()
    };
    let rate = urgent as f64 / urgent_spread.as_secs_f64();
    let mut specs = vec![
        Spec {
            name: "W1".into(),
            title: format!(
                "small: {w1_nodes} nodes, {w1_count} x 1 KiB from every node round-robin"
            ),
            nodes: w1_nodes,
            workload: small(w1_count, KIB, Duration::ZERO),
            timeout,
            tuning: sizes.tuning,
            process_per_node: false,
        },
        Spec {
            name: "W4-idle".into(),
            title: format!(
                "priority baseline: {w4_nodes} nodes, {urgent} x 256 B urgent at {rate:.0}/s, no bulk"
            ),
            nodes: w4_nodes,
            workload: urgent_load,
            timeout,
            tuning: sizes.tuning,
            process_per_node: false,
        },
        Spec {
            name: "W2".into(),
            title: format!(
                "blocks: {w2_nodes} nodes, {w2_count} x {} from one node",
                fmt_size(block)
            ),
            nodes: w2_nodes,
            workload: Workload {
                large: w2_count,
                large_size: block,
                large_origins: 1,
                ..small(0, KIB, Duration::ZERO)
            },
            timeout,
            tuning: sizes.tuning,
            process_per_node: false,
        },
        Spec {
            name: "W3".into(),
            title: format!("scale: {w3_nodes} nodes, {w3_count} x 1 KiB from every node"),
            nodes: w3_nodes,
            workload: small(w3_count, KIB, Duration::ZERO),
            timeout,
            tuning: sizes.tuning,
            process_per_node: false,
        },
        Spec {
            name: "W4-bulk".into(),
            title: format!(
                "priority under load: as W4-idle, plus {bulk_per_node} x 1 MiB bulk from every node at t=0"
            ),
            nodes: w4_nodes,
            workload: bulk_load,
            timeout,
            tuning: sizes.tuning,
            process_per_node: false,
        },
    ];
    // W5 is heavy (13 processes, artifacts of 64 MiB and more): never in the quick form.
    if !q {
        let (w5_nodes, w5_count, w5_size) = sizes.w5;
        specs.push(Spec {
            name: "W5".into(),
            title: format!(
                "chunked: {w5_nodes} nodes, {w5_count} x {} from one node, a process per node",
                fmt_size(w5_size)
            ),
            nodes: w5_nodes,
            workload: Workload {
                large: w5_count,
                large_size: w5_size,
                large_origins: 1,
                ..small(0, KIB, Duration::ZERO)
            },
            timeout: w5_timeout(w5_nodes, w5_count, w5_size),
            tuning: sizes.tuning,
            process_per_node: true,
        });
    }
    specs
}

/// A workload given on the command line (`--custom`), as comma-separated `key=value` pairs:
/// `name` (required), `nodes`, `small` (count), `small_size` (bytes), `large` (count),
/// `large_size` (bytes), `origins` (nodes publishing the large ones, round-robin), `spread_ms`
/// (the small ones are published evenly over it, the large ones at its start), `timeout_s`.
/// Unset keys take W2's shape: 13 nodes, nothing small, 1 MiB large from one node.
pub fn custom(text: &str, tuning: Tuning) -> Result<Spec, String> {
    let mut name = None;
    let mut nodes = 13usize;
    let mut w = Workload {
        small: 0,
        small_size: 256..=256,
        large: 0,
        large_size: MIB,
        large_origins: 1,
        spread: Duration::ZERO,
        large_every: Duration::ZERO,
        seed: 1,
    };
    let mut timeout = Duration::from_secs(180);
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` in --custom is not key=value"))?;
        if key == "name" {
            name = Some(value.to_owned());
            continue;
        }
        let n: u64 = value
            .parse()
            .map_err(|_| format!("`{value}` for `{key}` in --custom is not a number"))?;
        let n_usize = n as usize;
        match key {
            "nodes" => nodes = n_usize,
            "small" => w.small = n_usize,
            "small_size" => w.small_size = n_usize..=n_usize,
            "large" => w.large = n_usize,
            "large_size" => w.large_size = n_usize,
            "origins" => w.large_origins = n_usize,
            "spread_ms" => w.spread = Duration::from_millis(n),
            "large_every_ms" => w.large_every = Duration::from_millis(n),
            "timeout_s" => timeout = Duration::from_secs(n),
            _ => return Err(format!("unknown key `{key}` in --custom")),
        }
    }
    let name = name.ok_or("--custom needs a name=...")?;
    if nodes < 2 {
        return Err(format!("{name}: at least 2 nodes"));
    }
    w.validate().map_err(|e| format!("{name}: {e}"))?;
    let mut parts = Vec::new();
    if w.small > 0 {
        parts.push(format!(
            "{} x {} over {} ms",
            w.small,
            fmt_size(*w.small_size.end()),
            w.spread.as_millis()
        ));
    }
    if w.large > 0 {
        parts.push(format!(
            "{} x {} from {} node(s)",
            w.large,
            fmt_size(w.large_size),
            w.large_origins
        ));
    }
    Ok(Spec {
        title: format!("{name}: {nodes} nodes, {}", parts.join(" + ")),
        name,
        nodes,
        workload: w,
        timeout,
        tuning,
        process_per_node: true,
    })
}

/// The bound of a node's peak RSS that the code gives for a workload of large artifacts: a
/// receiver writes each verified chunk in place into one buffer of its artifact's size, which
/// becomes the delivered and pooled artifact with no copy, so it holds each artifact once (and
/// the origin holds its artifacts once), plus a base for the runtime, TLS, queues and the chunks
/// in flight (128 MiB).
pub fn node_rss_bound(w: &Workload) -> u64 {
    (w.large * w.large_size) as u64 + BASE_RSS
}

/// A node's memory besides the artifacts (runtime, TLS, queues, buffers), for the bound.
pub const BASE_RSS: u64 = 128 << 20;

fn fmt_size(b: usize) -> String {
    if b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else if b.is_multiple_of(KIB) {
        format!("{} KiB", b / KIB)
    } else {
        format!("{b} B")
    }
}

/// Latency percentiles of one class of a workload, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// `urgent` (the small kind) or `bulk` (the large kind).
    pub class: String,
    /// (artifact, node) deliveries measured.
    pub deliveries: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// What one workload run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The spec's name.
    pub name: String,
    /// The spec's title.
    pub title: String,
    /// `in-process` or `process-per-node`.
    pub mode: String,
    /// Nodes.
    pub nodes: usize,
    /// Artifacts published.
    pub artifacts: usize,
    /// Payload bytes published (each artifact once).
    pub payload_bytes: u64,
    /// Time from the first publish until every node held every artifact (`None`: not reached).
    pub full_delivery_s: Option<f64>,
    /// Time the run lasted.
    pub elapsed_s: f64,
    /// Artifact bytes delivered per second over all receivers, in MB/s (10^6 bytes).
    pub goodput_mb_s: f64,
    /// Bytes written to sockets by every node during the run (TLS records included).
    pub wire_bytes: u64,
    /// wire_bytes / (payload_bytes x (nodes - 1)).
    pub amplification: f64,
    /// CPU time (user + system) of the node process(es) during the run, seconds.
    pub cpu_s: f64,
    /// The whole machine's CPU time out of idle during the run, every process and the kernel's
    /// softirq work included, seconds (process-per-node mode only).
    #[serde(default)]
    pub machine_busy_s: Option<f64>,
    /// Of `machine_busy_s`, the kernel's softirq time (packets through TCP, veth, bridge and
    /// the shaping queues), seconds.
    #[serde(default)]
    pub machine_softirq_s: Option<f64>,
    /// Peak resident memory during the run, bytes (the bench process, or the sum of the
    /// node processes' peaks).
    pub peak_rss_bytes: u64,
    /// Whether the peak was reset before the run (otherwise it is the process's peak so far).
    pub peak_rss_reset: bool,
    /// Peak RSS of each node process, bytes, in node order (process-per-node mode only).
    #[serde(default)]
    pub node_peak_rss_bytes: Vec<u64>,
    /// Peak anonymous memory of each node process (RssAnon, sampled), bytes, in node order
    /// (process-per-node mode only): the RSS without the pages of mapped files.
    #[serde(default)]
    pub node_peak_anon_bytes: Vec<u64>,
    /// Whether the nodes kept large artifacts in files ([`Tuning::file_storage`]).
    #[serde(default)]
    pub file_storage: bool,
    /// CPU time of each node process during the run, seconds, in node order
    /// (process-per-node mode only).
    #[serde(default)]
    pub node_cpu_s: Vec<f64>,
    /// When each node's last delivery came, seconds after the first publish, in node order
    /// (process-per-node mode only): which nodes the all-hold time waited for.
    #[serde(default)]
    pub node_last_delivery_s: Vec<f64>,
    /// The size of the largest artifact, bytes.
    #[serde(default)]
    pub largest_artifact_bytes: u64,
    /// [`node_rss_bound`] of the workload, bytes (0 if it has no large artifacts).
    #[serde(default)]
    pub node_rss_bound_bytes: u64,
    /// (artifact, node) pairs never delivered.
    pub missing: u64,
    /// Deliveries of an artifact to a node that already had it, or of unknown artifacts.
    pub duplicates: u64,
    /// Artifacts the cores received again after delivering them (wasted transfers).
    pub duplicate_receipts: u64,
    /// Of `duplicate_receipts`, pushed chunks no swarm lacked (process-per-node mode only).
    #[serde(default)]
    pub pushes_unwanted: u64,
    /// Requests the cores retried.
    pub retries: u64,
    /// Chunks each node sent (answers and pushes), in node order (process-per-node mode
    /// only): an origin that sends each of its chunks about once sends about its payload.
    #[serde(default)]
    pub node_chunks_served: Vec<u64>,
    /// Chunk requests the cores made to full holders for chunks of other members' stripes:
    /// (handed over, swarm idle, swarm overdue), summed over the nodes (process-per-node mode
    /// only).
    #[serde(default)]
    pub chunks_asked_beyond_stripe: (u64, u64, u64),
    /// Chunk requests the cores made to full holders for chunks of the stripes of owners found
    /// slow, summed over the nodes (process-per-node mode only).
    #[serde(default)]
    pub chunks_asked_slow_owner: u64,
    /// Latency per class.
    pub latency: Vec<Latency>,
    /// What the run's pictures are drawn from (`--report`); not in the JSON.
    #[serde(skip)]
    pub plot: PlotData,
}

impl Outcome {
    /// The latency of `class`, if measured.
    pub fn latency(&self, class: &str) -> Option<&Latency> {
        self.latency.iter().find(|l| l.class == class)
    }

    /// Builds the outcome of an in-process run from the subnet's report.
    fn from_report(spec: &Spec, r: &Report, cpu: Duration, peak: u64, reset: bool) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Outcome {
            name: spec.name.clone(),
            title: spec.title.clone(),
            mode: "in-process".into(),
            nodes: r.nodes,
            artifacts: r.artifacts,
            payload_bytes: r.payload_bytes,
            full_delivery_s: r.full_delivery.map(|d| d.as_secs_f64()),
            elapsed_s: r.elapsed.as_secs_f64(),
            goodput_mb_s: r.goodput_mb_per_s(),
            wire_bytes: r.wire_bytes,
            amplification: r.amplification(),
            cpu_s: cpu.as_secs_f64(),
            machine_busy_s: None,
            machine_softirq_s: None,
            peak_rss_bytes: peak,
            peak_rss_reset: reset,
            node_peak_rss_bytes: Vec::new(),
            node_peak_anon_bytes: Vec::new(),
            file_storage: spec.tuning.file_storage,
            node_cpu_s: Vec::new(),
            node_last_delivery_s: Vec::new(),
            node_chunks_served: Vec::new(),
            chunks_asked_beyond_stripe: (0, 0, 0),
            chunks_asked_slow_owner: 0,
            largest_artifact_bytes: largest(&spec.workload),
            node_rss_bound_bytes: node_rss_bound_of(&spec.workload),
            missing: r.expected.saturating_sub(r.delivered),
            duplicates: r.duplicate_deliveries + r.unexpected_deliveries,
            duplicate_receipts: r.duplicate_receipts,
            pushes_unwanted: 0,
            retries: r.retries,
            latency: r
                .latency
                .iter()
                .map(|l| Latency {
                    class: class_name(l.kind).into(),
                    deliveries: l.deliveries,
                    p50_ms: ms(l.p50),
                    p99_ms: ms(l.p99),
                    max_ms: ms(l.max),
                })
                .collect(),
            plot: r.plot.clone(),
        }
    }
}

/// The size of `w`'s largest artifact.
pub fn largest(w: &Workload) -> u64 {
    let small = if w.small > 0 { *w.small_size.end() } else { 0 };
    let large = if w.large > 0 { w.large_size } else { 0 };
    small.max(large) as u64
}

/// [`node_rss_bound`] if `w` has large artifacts, else 0.
pub fn node_rss_bound_of(w: &Workload) -> u64 {
    if w.large > 0 { node_rss_bound(w) } else { 0 }
}

/// The largest W5 artifact, and so every benchmark node's `max_artifact_size`.
pub const MAX_ARTIFACT_SIZE: u64 = 4 << 30;

/// Applies the run's settings to a node's configuration: the socket buffers, express lanes, TCP_NOTSENT_LOWAT,
/// the writers' chunk, the swarm patience, the chunk size, the topology (with relaying, which a
/// partial one needs), [`MAX_ARTIFACT_SIZE`], and the codec limits that follow from them.
pub fn tune(cfg: &mut NodeConfig, tuning: Tuning) {
    if let Some(k) = tuning.peers {
        cfg.topology = Topology::Degree(k);
        cfg.core.auto_relay = true;
    }
    cfg.socket_buffer = tuning.socket_buffer;
    cfg.express.enabled = !tuning.no_express;
    if tuning.express_thread {
        match express_runtime() {
            Ok(lanes) => cfg.express_runtime = Some(lanes),
            Err(e) => eprintln!("p2p-bench: {e}; express lanes share the node's runtime"),
        }
    }
    match tuning.notsent_lowat {
        None => {}
        Some(0) => cfg.tcp_notsent_lowat = None,
        Some(bytes) => cfg.tcp_notsent_lowat = Some(bytes),
    }
    if let Some(ms) = tuning.swarm_patience_ms {
        cfg.core.swarm_patience = Duration::from_millis(ms);
    }
    if let Some(ms) = tuning.push_patience_ms {
        cfg.core.push_patience = Duration::from_millis(ms);
    }
    cfg.core.push_chunks |= tuning.push_chunks;
    if let Some(bytes) = tuning.write_chunk {
        cfg.write_chunk = bytes.max(p2p_transport::mux::MIN_TRANSMIT);
    }
    if let Some(size) = tuning.chunk_size {
        cfg.core.chunk_size = size;
    }
    cfg.core.max_artifact_size = MAX_ARTIFACT_SIZE;
    cfg.mux.limits = NodeConfig::codec_limits(&cfg.core);
    if tuning.file_storage {
        match p2p_store::FileStorage::new(storage_dir()) {
            Ok(files) => cfg.core.storage = p2p_core::StorageRef(std::sync::Arc::new(files)),
            Err(e) => eprintln!(
                "p2p-bench: no file storage in {} ({e}): artifacts stay in memory",
                storage_dir().display()
            ),
        }
    }
}

/// Runs `spec` on a subnet of nodes in this process. Only the workload is measured: the
/// nodes' start and TLS handshakes happen before, their shutdown after.
pub async fn run_in_process(spec: &Spec) -> Result<Outcome, String> {
    let subnet = LocalSubnet::start(
        spec.nodes,
        workload_priority_fn(),
        Duration::from_secs(60),
        |_, cfg| tune(cfg, spec.tuning),
    )
    .await
    .map_err(|e| format!("{}: {e}", spec.name))?;
    let reset = machine::reset_peak_rss();
    let cpu_before = machine::cpu_time("self").unwrap_or_default();
    let name = &spec.name;
    let report = subnet
        .run(&spec.workload, spec.timeout, Duration::from_secs(2), |p| {
            eprintln!("  {name} {p}")
        })
        .await
        .map_err(|e| format!("{}: {e}", spec.name));
    let cpu = machine::cpu_time("self")
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let peak = machine::peak_rss("self").unwrap_or(0);
    subnet.shutdown().await;
    let report = report?;
    if !report.is_complete() {
        // The subnet's own report lists what is missing, artifact by artifact.
        eprintln!("{report}");
    }
    Ok(Outcome::from_report(spec, &report, cpu, peak, reset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_specs_match_the_brief() {
        let specs = specs(Sizes {
            quick: false,
            block_size: 4 * MIB,
            tuning: Tuning::default(),
            w5: W5_DEFAULT,
        });
        let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
        let w1 = by("W1");
        assert_eq!(
            (w1.nodes, w1.workload.small, w1.workload.large),
            (13, 20_000, 0)
        );
        assert_eq!(w1.workload.small_size, KIB..=KIB);
        let w2 = by("W2");
        assert_eq!(
            (w2.nodes, w2.workload.large, w2.workload.small),
            (13, 50, 0)
        );
        assert_eq!(
            (w2.workload.large_size, w2.workload.large_origins),
            (4 * MIB, 1)
        );
        let w3 = by("W3");
        assert_eq!((w3.nodes, w3.workload.small), (40, 5_000));
        let (idle, bulk) = (by("W4-idle"), by("W4-bulk"));
        assert_eq!(idle.workload.small, bulk.workload.small);
        assert_eq!(idle.workload.spread, bulk.workload.spread);
        assert_eq!(idle.workload.large, 0);
        assert_eq!(bulk.workload.large_origins, bulk.nodes);
        let w5 = by("W5");
        assert_eq!(
            (w5.nodes, w5.workload.large, w5.workload.large_size),
            (13, 4, 64 * MIB)
        );
        assert!(w5.process_per_node);
        assert_eq!(node_rss_bound(&w5.workload), (256 + 128) * MIB as u64);
        assert_eq!(w5.timeout, Duration::from_secs(600));
        let four_gib_to_13 = w5_timeout(13, 1, 4 << 30);
        assert!(
            four_gib_to_13 > Duration::from_secs(1200),
            "{four_gib_to_13:?}"
        );
        for s in &specs {
            s.workload
                .plan(s.nodes)
                .expect("every spec is a valid workload");
        }
    }

    #[test]
    fn custom_workloads_take_every_key_and_refuse_nonsense() {
        let tuning = Tuning {
            write_chunk: Some(16384),
            ..Tuning::default()
        };
        let s = custom(
            "name=W4-bulk,nodes=7,small=40,small_size=300,large=14,large_size=2048,origins=7,spread_ms=1500,large_every_ms=250,timeout_s=9",
            tuning,
        )
        .unwrap();
        assert_eq!((s.name.as_str(), s.nodes), ("W4-bulk", 7));
        assert_eq!(
            (s.workload.small, s.workload.small_size.clone()),
            (40, 300..=300)
        );
        assert_eq!(
            (
                s.workload.large,
                s.workload.large_size,
                s.workload.large_origins
            ),
            (14, 2048, 7)
        );
        assert_eq!(s.workload.spread, Duration::from_millis(1500));
        assert_eq!(s.workload.large_every, Duration::from_millis(250));
        let plan = s.workload.plan(s.nodes).unwrap();
        let mut large: Vec<Duration> = plan
            .iter()
            .filter(|p| p.kind == p2p_bench::subnet::LARGE_KIND)
            .map(|p| p.at)
            .collect();
        large.sort_unstable();
        let expected: Vec<Duration> = (0..14).map(|k| Duration::from_millis(250 * k)).collect();
        assert_eq!(
            large, expected,
            "the large ones 250 ms apart from the start"
        );
        assert_eq!(s.timeout, Duration::from_secs(9));
        assert_eq!(s.tuning, tuning);
        assert!(s.process_per_node);
        assert!(custom("nodes=4", tuning).is_err(), "a name is required");
        assert!(custom("name=x,nodes=1", tuning).is_err());
        assert!(custom("name=x,bogus=1", tuning).is_err());
        assert!(custom("name=x,large=two", tuning).is_err());
        assert!(custom("name=x,large=1,large_size=4", tuning).is_err());
    }

    #[test]
    fn quick_specs_are_tiny() {
        for s in specs(Sizes {
            quick: true,
            block_size: 4 * MIB,
            tuning: Tuning::default(),
            w5: W5_DEFAULT,
        }) {
            assert_ne!(s.name, "W5", "W5 never runs in the quick form");
            assert!(s.nodes <= 6, "{}", s.name);
            assert!(
                s.workload.small <= 200 && s.workload.large <= 4,
                "{}",
                s.name
            );
            assert!(s.workload.large_size <= MIB, "{}", s.name);
        }
    }
}
