//! A local subnet: N real nodes in one process on 127.0.0.1 (real sockets, real TLS, fresh
//! identities), a mixed workload published into it, and a report of what reached whom and when.
//!
//! This is the engine of `p2p-node demo` and of the benchmarks: [`LocalSubnet::start`] brings the
//! nodes up and connects them in a full mesh, [`LocalSubnet::run`] publishes a [`Workload`] while
//! it watches every node's deliveries, and returns a [`Report`] (delivery completeness with the
//! exact missing pairs, time to full delivery, goodput, bytes on the wire, amplification, latency
//! percentiles per priority class, duplicates). The report's `Display` is an aligned table.
//!
//! Latency is measured per (artifact, receiving node) from the instant just before the origin's
//! `publish` call to the instant the receiver's delivery stream yields the artifact.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_core::ManifestBuilder;
use p2p_core::chunks::{chunk_size_for, content_id};
use p2p_core::rng::Rng;
use p2p_core::{ArtifactId, Decision, Kind, NodeId, Priority, PriorityFnRef, StorageRef};
use p2p_transport::identity::{IdentityError, NodeIdentity};
use tokio::task::JoinHandle;

use p2p_tokio::{Member, NodeConfig, NodeError, NodeHandle, NodeMetrics, Registry, StartError};

use crate::plot::{ClassCdf, NodeBytes, PlotData, Timeline};

/// The kind of the workload's small artifacts, fetched at [`Priority::URGENT`].
pub const SMALL_KIND: Kind = Kind(0);
/// The kind of the workload's large artifacts, fetched at [`Priority::BULK`].
pub const LARGE_KIND: Kind = Kind(1);

/// The demo's priority function: [`SMALL_KIND`] urgent, [`LARGE_KIND`] bulk, other kinds normal.
pub fn workload_priority_fn() -> PriorityFnRef {
    PriorityFnRef::by_kind(
        vec![(SMALL_KIND, Priority::URGENT), (LARGE_KIND, Priority::BULK)],
        Decision::Fetch(Priority::NORMAL),
    )
}

/// The class of a workload kind, as reports and pictures name it: `urgent` ([`SMALL_KIND`]),
/// `bulk` ([`LARGE_KIND`]) or `other`.
pub fn class_name(kind: Kind) -> &'static str {
    match kind {
        SMALL_KIND => "urgent",
        LARGE_KIND => "bulk",
        _ => "other",
    }
}

/// Why a local subnet could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubnetError {
    /// A subnet needs at least two nodes.
    #[error("a subnet needs at least 2 nodes, got {0}")]
    TooFewNodes(usize),
    /// The workload cannot be generated as given.
    #[error("invalid workload: {0}")]
    Workload(String),
    /// Generating a node identity failed.
    #[error("cannot generate the identity of node {node}: {source}")]
    Identity {
        /// The node's index.
        node: usize,
        /// The cause.
        source: IdentityError,
    },
    /// A node did not start.
    #[error("node {node} did not start: {source}")]
    Start {
        /// The node's index.
        node: usize,
        /// The cause.
        source: StartError,
    },
    /// A node refused an operation (registry update, publish).
    #[error("node {node}: {source}")]
    Node {
        /// The node's index.
        node: usize,
        /// The cause.
        source: NodeError,
    },
    /// The mesh (every node connected to all its neighbours) did not form in time.
    #[error(
        "the nodes did not connect to all their neighbours within {timeout:?} (peers connected per node: {peers:?})"
    )]
    MeshTimeout {
        /// The time allowed.
        timeout: Duration,
        /// Connected peers of each node when it expired.
        peers: Vec<u64>,
    },
}

/// A mixed workload: many small urgent artifacts from every node, a few large bulk ones from a
/// few nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Number of small artifacts ([`SMALL_KIND`]), published round-robin by every node.
    pub small: usize,
    /// Size range of a small artifact in bytes (drawn uniformly, seeded); at least 16.
    pub small_size: RangeInclusive<usize>,
    /// Number of large artifacts ([`LARGE_KIND`]).
    pub large: usize,
    /// Size of a large artifact in bytes; at least 16.
    pub large_size: usize,
    /// Number of nodes (the first ones) that publish the large artifacts, round-robin.
    pub large_origins: usize,
    /// The small artifacts are published evenly over this period; the large ones from its start,
    /// [`Workload::large_every`] apart.
    pub spread: Duration,
    /// Time between two large artifacts' publishes (zero: all at the start).
    pub large_every: Duration,
    /// Seed of the artifacts' contents and sizes (drawn from [`p2p_core::rng::Rng`]).
    pub seed: u64,
}

impl Default for Workload {
    /// 100 small artifacts per node of a 13-node subnet (256 B..1 KiB) and 8 of 1 MiB from 3
    /// nodes, published over 2 s.
    fn default() -> Self {
        Workload {
            small: 1300,
            small_size: 256..=1024,
            large: 8,
            large_size: 1 << 20,
            large_origins: 3,
            spread: Duration::from_secs(2),
            large_every: Duration::ZERO,
            seed: 1,
        }
    }
}

/// One artifact the workload publishes.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The publishing node's index.
    pub origin: usize,
    /// The artifact's kind.
    pub kind: Kind,
    /// Its bytes (the first 8 are its index in the plan, so every artifact is distinct).
    pub data: Bytes,
    /// When to publish it, after the workload's start.
    pub at: Duration,
}

/// What one planned artifact is, without its bytes (see [`Workload::plan_for`]).
#[derive(Clone, Debug)]
pub struct Summary {
    /// The publishing node's index.
    pub origin: usize,
    /// The artifact's kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Its first 8 bytes as a little-endian number: its index in the plan's making order.
    pub tag: u64,
    /// Its id, if a chunk size was given.
    pub id: Option<p2p_core::ArtifactId>,
}

/// A planned artifact before its bytes are made.
#[derive(Clone, Copy)]
struct Slot {
    origin: usize,
    kind: Kind,
    size: usize,
    at: Duration,
    index: u64,
}

impl Slot {
    /// Its bytes, drawn from `rng` into a buffer of `storage`; the first 8 are its index.
    fn make(&self, rng: &mut Rng, storage: &StorageRef) -> Planned {
        let mut buf = storage.buffer(self.size);
        let data = buf.as_mut_slice();
        rng.fill(data);
        data[..8].copy_from_slice(&self.index.to_le_bytes());
        Planned {
            origin: self.origin,
            kind: self.kind,
            data: buf.freeze(),
            at: self.at,
        }
    }

    /// Its id for chunks of `chunk_size` (if given), drawing the same bytes as [`Slot::make`]
    /// a chunk at a time (the generator fills 8 bytes per draw, so pieces of a multiple of 8
    /// bytes draw the same stream as one fill).
    fn id_streamed(&self, rng: &mut Rng, chunk_size: Option<u32>) -> Option<p2p_core::ArtifactId> {
        const PIECE: u32 = 1 << 20;
        // The chunks the artifact is cut into (`chunk_size_for` its size).
        let cut = chunk_size.map(|c| chunk_size_for(self.size as u64, c));
        let piece = cut.unwrap_or(PIECE) as usize;
        let mut builder = cut.and_then(ManifestBuilder::new);
        if chunk_size.is_some_and(|c| self.size as u64 <= u64::from(c))
            || self.size <= piece
            || !piece.is_multiple_of(8)
            || (chunk_size.is_some() && builder.is_none())
        {
            let data = self.make(rng, &StorageRef::memory()).data;
            return chunk_size.map(|c| content_id(&data, c));
        }
        let mut buf = vec![0u8; piece];
        let mut left = self.size;
        let mut first = true;
        while left > 0 {
            let n = left.min(piece);
            rng.fill(&mut buf[..n]);
            if first {
                buf[..8].copy_from_slice(&self.index.to_le_bytes());
                first = false;
            }
            if let Some(b) = &mut builder {
                b.push(&buf[..n]).expect("pieces of the chunk size");
            }
            left -= n;
        }
        builder.map(|b| b.finish().expect("more than one chunk").id())
    }
}

impl Workload {
    /// Checks the sizes and counts.
    pub fn validate(&self) -> Result<(), SubnetError> {
        let bad = |m: String| Err(SubnetError::Workload(m));
        if self.small_size.start() > self.small_size.end() {
            return bad(format!(
                "small size range {}..{} is empty",
                self.small_size.start(),
                self.small_size.end()
            ));
        }
        if self.small > 0 && *self.small_size.start() < 16 {
            return bad("small artifacts must be at least 16 bytes".into());
        }
        if self.large > 0 && self.large_size < 16 {
            return bad("large artifacts must be at least 16 bytes".into());
        }
        if self.large > 0 && self.large_origins == 0 {
            return bad("large artifacts need at least one origin".into());
        }
        if self.small == 0 && self.large == 0 {
            return bad("the workload publishes nothing".into());
        }
        Ok(())
    }

    /// The artifacts to publish on a subnet of `nodes` nodes, in publishing order.
    pub fn plan(&self, nodes: usize) -> Result<Vec<Planned>, SubnetError> {
        let mut out = Vec::with_capacity(self.small + self.large);
        let memory = StorageRef::memory();
        self.generate(nodes, |slot, rng| out.push(slot.make(rng, &memory)))?;
        out.sort_by_key(|p| p.at);
        Ok(out)
    }

    /// The plan as one node of a process-per-node run needs it: the bytes of the artifacts
    /// whose origin `keep` accepts (in publishing order), and what every artifact is, with its
    /// id for chunks of `chunk_size` if one is given. The other artifacts' bytes are made (and
    /// hashed) a chunk at a time, so the caller never holds them.
    pub fn plan_for(
        &self,
        nodes: usize,
        chunk_size: Option<u32>,
        keep: impl Fn(usize) -> bool,
    ) -> Result<(Vec<Planned>, Vec<Summary>), SubnetError> {
        self.plan_for_in(nodes, chunk_size, keep, &StorageRef::memory())
    }

    /// [`Workload::plan_for`], making the kept artifacts in buffers of `storage`.
    pub fn plan_for_in(
        &self,
        nodes: usize,
        chunk_size: Option<u32>,
        keep: impl Fn(usize) -> bool,
        storage: &StorageRef,
    ) -> Result<(Vec<Planned>, Vec<Summary>), SubnetError> {
        let mut kept = Vec::new();
        let mut all = Vec::with_capacity(self.small + self.large);
        self.generate(nodes, |slot, rng| {
            let id = if keep(slot.origin) {
                let p = slot.make(rng, storage);
                let id = chunk_size.map(|c| content_id(&p.data, c));
                kept.push(p);
                id
            } else {
                slot.id_streamed(rng, chunk_size)
            };
            all.push(Summary {
                origin: slot.origin,
                kind: slot.kind,
                size: slot.size as u64,
                tag: slot.index,
                id,
            });
        })?;
        kept.sort_by_key(|p| p.at);
        Ok((kept, all))
    }

    /// Hands every planned artifact's slot to `f` in making order, with the generator its bytes
    /// come from (`f` must draw exactly the slot's bytes from it).
    fn generate(&self, nodes: usize, mut f: impl FnMut(Slot, &mut Rng)) -> Result<(), SubnetError> {
        self.validate()?;
        if nodes < 2 {
            return Err(SubnetError::TooFewNodes(nodes));
        }
        let mut rng = Rng::new(self.seed);
        let mut index = 0u64;
        let origins = self.large_origins.min(nodes).max(1);
        for i in 0..self.large {
            let slot = Slot {
                origin: i % origins,
                kind: LARGE_KIND,
                size: self.large_size,
                at: self.large_every * i as u32,
                index,
            };
            index += 1;
            f(slot, &mut rng);
        }
        let span = (self.small_size.end() - self.small_size.start()) as u64 + 1;
        for i in 0..self.small {
            let size = self.small_size.start() + rng.below(span) as usize;
            let at = self.spread.mul_f64(i as f64 / self.small.max(1) as f64);
            let slot = Slot {
                origin: i % nodes,
                kind: SMALL_KIND,
                size,
                at,
                index,
            };
            index += 1;
            f(slot, &mut rng);
        }
        Ok(())
    }

    /// Total payload bytes of the plan (each artifact once).
    pub fn payload_bytes(plan: &[Planned]) -> u64 {
        plan.iter().map(|p| p.data.len() as u64).sum()
    }
}

/// What is known about one published artifact.
#[derive(Clone, Debug)]
struct Published {
    origin: usize,
    kind: Kind,
    size: u64,
    at: Instant,
    /// Receivers that got it (indexed by node).
    got: Vec<bool>,
}

#[derive(Debug, Default)]
struct Tracker {
    nodes: usize,
    published: HashMap<ArtifactId, Published>,
    order: Vec<ArtifactId>,
    expected_pairs: u64,
    delivered_pairs: u64,
    delivered_bytes: u64,
    duplicates: u64,
    unexpected: u64,
    last_delivery: Option<Instant>,
    latencies: HashMap<Kind, Vec<Duration>>,
    /// What the progress is measured from: the start of the run, or the first publish if
    /// that came earlier.
    origin: Option<Instant>,
    /// Payload bytes delivered over time since `origin` (bounded).
    timeline: Timeline,
}

impl Tracker {
    fn publish(&mut self, id: ArtifactId, origin: usize, kind: Kind, size: u64, at: Instant) {
        self.origin.get_or_insert(at);
        let mut got = vec![false; self.nodes];
        got[origin] = true;
        if self
            .published
            .insert(
                id,
                Published {
                    origin,
                    kind,
                    size,
                    at,
                    got,
                },
            )
            .is_none()
        {
            self.order.push(id);
            self.expected_pairs += self.nodes as u64 - 1;
        }
    }

    fn deliver(&mut self, node: usize, id: ArtifactId, size: u64, now: Instant) {
        let Some(p) = self.published.get_mut(&id) else {
            self.unexpected += 1;
            return;
        };
        if p.got[node] {
            if node == p.origin {
                self.unexpected += 1;
            } else {
                self.duplicates += 1;
            }
            return;
        }
        p.got[node] = true;
        self.delivered_pairs += 1;
        self.delivered_bytes += size;
        self.last_delivery = Some(now);
        let since = self
            .origin
            .map_or(Duration::ZERO, |o| now.saturating_duration_since(o));
        self.timeline.add(since, size);
        self.latencies
            .entry(p.kind)
            .or_default()
            .push(now.saturating_duration_since(p.at));
    }

    fn complete(&self) -> bool {
        self.delivered_pairs == self.expected_pairs
    }
}

/// A snapshot of a running workload, passed to the progress callback of [`LocalSubnet::run`].
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the workload started.
    pub elapsed: Duration,
    /// Artifacts published so far.
    pub published: usize,
    /// Artifacts the workload publishes in all.
    pub to_publish: usize,
    /// (artifact, node) pairs delivered so far.
    pub delivered: u64,
    /// (artifact, node) pairs expected for everything the workload publishes.
    pub expected: u64,
    /// Payload bytes delivered since the previous snapshot, per second (10^6 B = 1 MB).
    pub mb_per_s: f64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = if self.expected == 0 {
            100.0
        } else {
            100.0 * self.delivered as f64 / self.expected as f64
        };
        write!(
            f,
            "[{:>6.1} s] published {:>6}/{:<6} delivered {:>8}/{:<8} ({:>5.1}%) {:>8.1} MB/s",
            self.elapsed.as_secs_f64(),
            self.published,
            self.to_publish,
            self.delivered,
            self.expected,
            pct,
            self.mb_per_s
        )
    }
}

/// Latency percentiles of one artifact kind.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyStats {
    /// The kind.
    pub kind: Kind,
    /// The priority the workload's priority function gives it.
    pub priority: Priority,
    /// Artifacts of the kind published.
    pub artifacts: usize,
    /// Deliveries measured (artifact, node pairs).
    pub deliveries: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// An artifact that did not reach some nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The artifact.
    pub id: ArtifactId,
    /// Its kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// The publishing node's index.
    pub origin: usize,
    /// The nodes (indices) that did not receive it.
    pub nodes: Vec<usize>,
}

/// The outcome of a workload on a local subnet.
#[derive(Clone, Debug)]
pub struct Report {
    /// Node count.
    pub nodes: usize,
    /// The node ids, by index.
    pub node_ids: Vec<NodeId>,
    /// The workload that ran.
    pub workload: Workload,
    /// Artifacts published.
    pub artifacts: usize,
    /// Payload bytes published (each artifact once).
    pub payload_bytes: u64,
    /// (artifact, node) pairs expected: every artifact to every node but its origin.
    pub expected: u64,
    /// (artifact, node) pairs delivered.
    pub delivered: u64,
    /// Payload bytes delivered, over all receivers.
    pub delivered_bytes: u64,
    /// Time from the first publish to the last delivery, if everything was delivered.
    pub full_delivery: Option<Duration>,
    /// Time the run lasted (to full delivery or to the timeout).
    pub elapsed: Duration,
    /// Bytes written to sockets by all nodes during the workload (TLS records included).
    pub wire_bytes: u64,
    /// Deliveries of an artifact to a node that already had it (exactly-once violations).
    pub duplicate_deliveries: u64,
    /// Deliveries of artifacts the workload did not publish, or back to their origin.
    pub unexpected_deliveries: u64,
    /// Artifacts the nodes' cores received again after delivering them (wasted transfers).
    pub duplicate_receipts: u64,
    /// Requests retried by the cores.
    pub retries: u64,
    /// Latency percentiles per kind (small kind first).
    pub latency: Vec<LatencyStats>,
    /// What is missing, artifact by artifact, in publishing order.
    pub missing: Vec<Missing>,
    /// What the run's pictures are drawn from (bounded; see [`crate::plot`]). It has no
    /// bounds: the caller adds those it knows.
    pub plot: PlotData,
}

impl Report {
    /// Whether every artifact reached every node exactly once.
    pub fn is_complete(&self) -> bool {
        self.delivered == self.expected && self.missing.is_empty()
    }

    /// Payload bytes delivered per second of the time to full delivery (or of the run), in MB/s.
    pub fn goodput_mb_per_s(&self) -> f64 {
        let t = self.full_delivery.unwrap_or(self.elapsed).as_secs_f64();
        if t <= 0.0 {
            0.0
        } else {
            self.delivered_bytes as f64 / t / 1e6
        }
    }

    /// Bytes on the wire divided by payload x (N - 1): 1.0 is ideal.
    pub fn amplification(&self) -> f64 {
        let ideal = self.payload_bytes as f64 * (self.nodes.saturating_sub(1)) as f64;
        if ideal == 0.0 {
            0.0
        } else {
            self.wire_bytes as f64 / ideal
        }
    }
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} us", s * 1e6)
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        SMALL_KIND => "small/urgent",
        LARGE_KIND => "large/bulk",
        _ => "other",
    }
}

/// At most this many missing artifacts are listed by `Display`; the rest are counted.
const MISSING_SHOWN: usize = 20;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "report")?;
        self.fmt_setup(f)?;
        self.fmt_delivery(f)?;
        self.fmt_traffic(f)?;
        writeln!(f)?;
        self.fmt_latency(f)?;
        if !self.missing.is_empty() {
            writeln!(f)?;
            self.fmt_missing(f)?;
        }
        Ok(())
    }
}

/// One aligned row of the report: a label and its value.
fn row(f: &mut fmt::Formatter<'_>, label: &str, value: String) -> fmt::Result {
    writeln!(f, "  {label:<24}{value}")
}

/// The report's parts, in the order `Display` writes them.
impl Report {
    /// The subnet and the workload.
    fn fmt_setup(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        row(
            f,
            "subnet",
            format!("{} nodes on 127.0.0.1, TLS, seed {}", self.nodes, w.seed),
        )?;
        row(
            f,
            "workload",
            format!(
                "{} small ({}..{} B, kind {}, urgent) + {} large ({}, kind {}, bulk) from {} node(s)",
                w.small,
                w.small_size.start(),
                w.small_size.end(),
                SMALL_KIND.0,
                w.large,
                fmt_bytes(w.large_size as u64),
                LARGE_KIND.0,
                w.large_origins.min(self.nodes).max(1),
            ),
        )
    }

    /// Completeness, time to full delivery, payload and goodput.
    fn fmt_delivery(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = if self.expected == 0 {
            100.0
        } else {
            100.0 * self.delivered as f64 / self.expected as f64
        };
        let verdict = if self.is_complete() {
            ": every artifact reached every node"
        } else {
            ": INCOMPLETE"
        };
        row(
            f,
            "delivered",
            format!(
                "{}/{} (artifact, node) pairs ({pct:.1}%){verdict}",
                self.delivered, self.expected,
            ),
        )?;
        row(
            f,
            "time to full delivery",
            match self.full_delivery {
                Some(d) => fmt_dur(d),
                None => format!("not reached within {}", fmt_dur(self.elapsed)),
            },
        )?;
        row(
            f,
            "payload",
            format!(
                "{:.3} MB published x {} receivers = {:.3} MB delivered",
                self.payload_bytes as f64 / 1e6,
                self.nodes.saturating_sub(1),
                self.delivered_bytes as f64 / 1e6
            ),
        )?;
        row(f, "goodput", format!("{:.1} MB/s", self.goodput_mb_per_s()))
    }

    /// Bytes on the wire, amplification, duplicates and retries.
    fn fmt_traffic(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(
            f,
            "bytes on the wire",
            format!(
                "{:.3} MB (all nodes, TLS included)",
                self.wire_bytes as f64 / 1e6
            ),
        )?;
        row(
            f,
            "amplification",
            format!(
                "{:.3} (wire / (payload x (N-1)); 1.0 is ideal)",
                self.amplification()
            ),
        )?;
        row(
            f,
            "duplicates",
            format!(
                "{} deliveries, {} receipts, {} unexpected",
                self.duplicate_deliveries, self.duplicate_receipts, self.unexpected_deliveries
            ),
        )?;
        row(f, "retries", self.retries.to_string())
    }

    /// The latency table, a line per kind.
    fn fmt_latency(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  latency from publish to delivery, per (artifact, node):"
        )?;
        writeln!(
            f,
            "  {:<14}{:>5}{:>10}{:>11}{:>12}{:>12}{:>12}{:>12}",
            "class", "kind", "priority", "artifacts", "deliveries", "p50", "p99", "max"
        )?;
        for l in &self.latency {
            writeln!(
                f,
                "  {:<14}{:>5}{:>10}{:>11}{:>12}{:>12}{:>12}{:>12}",
                kind_label(l.kind),
                l.kind.0,
                l.priority.0,
                l.artifacts,
                l.deliveries,
                fmt_dur(l.p50),
                fmt_dur(l.p99),
                fmt_dur(l.max)
            )?;
        }
        Ok(())
    }

    /// The missing artifacts (the first [`MISSING_SHOWN`]) and the node ids.
    fn fmt_missing(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: usize = self.missing.iter().map(|m| m.nodes.len()).sum();
        writeln!(
            f,
            "  missing: {} artifact(s), {pairs} (artifact, node) pair(s):",
            self.missing.len()
        )?;
        for m in self.missing.iter().take(MISSING_SHOWN) {
            let nodes: Vec<String> = m.nodes.iter().map(|n| n.to_string()).collect();
            writeln!(
                f,
                "    artifact {} (kind {}, {} B, from node {}) not at node(s) {}",
                m.id.to_hex(),
                m.kind.0,
                m.size,
                m.origin,
                nodes.join(", ")
            )?;
        }
        if self.missing.len() > MISSING_SHOWN {
            writeln!(
                f,
                "    ... and {} more artifact(s)",
                self.missing.len() - MISSING_SHOWN
            )?;
        }
        writeln!(f, "  nodes:")?;
        for (i, id) in self.node_ids.iter().enumerate() {
            writeln!(f, "    {i:>3} {}", id.to_hex())?;
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Bytes written to sockets and core counters, summed over the nodes.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    wire_bytes: u64,
    /// Artifacts received again after their delivery.
    duplicates: u64,
    retries: u64,
}

impl Counters {
    /// What was counted since `before`.
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            wire_bytes: self.wire_bytes.saturating_sub(before.wire_bytes),
            duplicates: self.duplicates.saturating_sub(before.duplicates),
            retries: self.retries.saturating_sub(before.retries),
        }
    }
}

/// The progress snapshots of a run: one per tick, with the goodput since the previous one.
struct Ticker {
    start: Instant,
    tick: Duration,
    /// When the next snapshot is due.
    next: Instant,
    last_bytes: u64,
    last_at: Instant,
    to_publish: usize,
    expected: u64,
}

impl Ticker {
    fn new(start: Instant, tick: Duration, to_publish: usize, expected: u64) -> Self {
        Ticker {
            start,
            tick,
            next: start + tick,
            last_bytes: 0,
            last_at: start,
            to_publish,
            expected,
        }
    }

    /// The snapshot at `now`, with `published` artifacts out; schedules the next one.
    fn snapshot(&mut self, now: Instant, published: usize, tracker: &Mutex<Tracker>) -> Progress {
        let (delivered, bytes) = {
            let t = lock(tracker);
            (t.delivered_pairs, t.delivered_bytes)
        };
        let secs = now.duration_since(self.last_at).as_secs_f64();
        let progress = Progress {
            elapsed: now.duration_since(self.start),
            published,
            to_publish: self.to_publish,
            delivered,
            expected: self.expected,
            mb_per_s: if secs > 0.0 {
                (bytes - self.last_bytes) as f64 / secs / 1e6
            } else {
                0.0
            },
        };
        self.last_bytes = bytes;
        self.last_at = now;
        self.next += self.tick;
        progress
    }
}

/// Waits for the publisher task: its error, or the task's failure as a workload error.
async fn join_publisher(p: JoinHandle<Result<(), SubnetError>>) -> Result<(), SubnetError> {
    match p.await {
        Ok(result) => result,
        Err(e) => Err(SubnetError::Workload(format!("publisher task failed: {e}"))),
    }
}

/// N nodes of one subnet running in this process, and the deliveries they have seen.
pub struct LocalSubnet {
    handles: Vec<NodeHandle>,
    ids: Vec<NodeId>,
    tracker: Arc<Mutex<Tracker>>,
    collectors: Vec<JoinHandle<()>>,
}

fn lock(t: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // A collector that panicked cannot leave the tracker half-updated in a way that matters
    // for counting: keep going with its data.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalSubnet {
    /// Starts `nodes` nodes on 127.0.0.1 with fresh identities and `priority_fn`, lets `configure`
    /// adjust each node's configuration (given its index), hands every node the full registry and
    /// waits up to `mesh_timeout` until each one is connected to all its neighbours (all others
    /// in a full mesh).
    pub async fn start(
        nodes: usize,
        priority_fn: PriorityFnRef,
        mesh_timeout: Duration,
        configure: impl Fn(usize, &mut NodeConfig),
    ) -> Result<Self, SubnetError> {
        if nodes < 2 {
            return Err(SubnetError::TooFewNodes(nodes));
        }
        let tracker = Arc::new(Mutex::new(Tracker {
            nodes,
            ..Tracker::default()
        }));
        let mut handles = Vec::with_capacity(nodes);
        let mut ids = Vec::with_capacity(nodes);
        let mut subnet_members = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let identity = NodeIdentity::generate()
                .map_err(|source| SubnetError::Identity { node, source })?;
            let id = identity.node_id();
            let mut cfg = NodeConfig::new(identity, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            cfg.core.priority_fn = priority_fn.clone();
            cfg.core.seed = (node as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            configure(node, &mut cfg);
            let registry = Registry {
                version: 0,
                members: Vec::new(),
            };
            let handle = p2p_tokio::start(cfg, registry)
                .await
                .map_err(|source| SubnetError::Start { node, source })?;
            subnet_members.push(Member {
                id,
                addr: handle.local_addr(),
            });
            ids.push(id);
            handles.push(handle);
        }
        let mut subnet = LocalSubnet {
            handles,
            ids,
            tracker,
            collectors: Vec::with_capacity(nodes),
        };
        for (node, handle) in subnet.handles.iter().enumerate() {
            let Some(mut deliveries) = handle.take_deliveries() else {
                return Err(SubnetError::Workload(format!(
                    "the deliveries of node {node} were already taken"
                )));
            };
            let tracker = Arc::clone(&subnet.tracker);
            subnet.collectors.push(tokio::spawn(async move {
                while let Some(d) = deliveries.recv().await {
                    let now = Instant::now();
                    let size = d.artifact.data.len() as u64;
                    lock(&tracker).deliver(node, d.artifact.id, size, now);
                }
            }));
        }
        let registry = Registry {
            version: 1,
            members: subnet_members,
        };
        for (node, handle) in subnet.handles.iter().enumerate() {
            handle
                .update_registry(registry.clone())
                .await
                .map_err(|source| SubnetError::Node { node, source })?;
        }
        subnet.wait_mesh(mesh_timeout).await?;
        Ok(subnet)
    }

    /// Waits until every node is connected to all its neighbours in its topology (every other
    /// node in a full mesh).
    async fn wait_mesh(&self, timeout: Duration) -> Result<(), SubnetError> {
        let deadline = Instant::now() + timeout;
        let mut want = Vec::with_capacity(self.handles.len());
        for (node, h) in self.handles.iter().enumerate() {
            let view = h
                .topology()
                .await
                .map_err(|source| SubnetError::Node { node, source })?;
            want.push(view.neighbours.len() as u64);
        }
        loop {
            let peers: Vec<u64> = self
                .handles
                .iter()
                .map(|h| h.metrics().peers_connected)
                .collect();
            if peers.iter().zip(&want).all(|(&p, &w)| p >= w) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SubnetError::MeshTimeout { timeout, peers });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The nodes' handles, by index.
    pub fn handles(&self) -> &[NodeHandle] {
        &self.handles
    }

    /// The nodes' ids, by index.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Every node's metrics, by index.
    pub fn metrics(&self) -> Vec<NodeMetrics> {
        self.handles.iter().map(|h| h.metrics()).collect()
    }

    /// Publishes `data` of `kind` at node `origin` and tracks its delivery to every other node.
    pub async fn publish(
        &self,
        origin: usize,
        kind: Kind,
        data: Bytes,
    ) -> Result<ArtifactId, SubnetError> {
        publish_tracked(&self.handles, &self.tracker, origin, kind, data).await
    }

    /// Whether every artifact published so far reached every node.
    pub fn all_delivered(&self) -> bool {
        lock(&self.tracker).complete()
    }

    /// Publishes `workload` and waits until every artifact reached every node or `timeout`
    /// passed since the start, calling `on_progress` every `tick`. The report tells which.
    pub async fn run(
        &self,
        workload: &Workload,
        timeout: Duration,
        tick: Duration,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Report, SubnetError> {
        let plan = workload.plan(self.handles.len())?;
        let to_publish = plan.len();
        let payload_bytes = Workload::payload_bytes(&plan);
        let before = self.counters();
        let bytes_before = self.node_bytes();
        let start = Instant::now();
        lock(&self.tracker).origin.get_or_insert(start);
        let published = Arc::new(AtomicUsize::new(0));
        let mut publisher = Some(self.spawn_publisher(plan, start, Arc::clone(&published)));
        let expected = to_publish as u64 * (self.handles.len() as u64 - 1);
        let mut ticker = Ticker::new(start, tick, to_publish, expected);
        let deadline = start + timeout;
        loop {
            let done_publishing = published.load(Relaxed) == to_publish;
            // Once the publisher is done (or stopped early), surface its error.
            if (done_publishing || publisher.as_ref().is_some_and(|p| p.is_finished()))
                && let Some(p) = publisher.take()
            {
                join_publisher(p).await?;
            }
            if done_publishing && self.all_delivered() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= ticker.next {
                on_progress(&ticker.snapshot(now, published.load(Relaxed), &self.tracker));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(p) = publisher.take() {
            p.abort();
        }
        let elapsed = start.elapsed();
        let counters = self.counters().since(&before);
        let node_bytes = self
            .node_bytes()
            .iter()
            .zip(&bytes_before)
            .map(|(now, then)| NodeBytes {
                written: now.written.saturating_sub(then.written),
                read: now.read.saturating_sub(then.read),
            })
            .collect();
        Ok(self.report(
            workload,
            (to_publish, payload_bytes),
            start,
            elapsed,
            (counters, node_bytes),
        ))
    }

    /// Publishes `plan` from `start` on, each artifact at its time, counting them in
    /// `published`.
    fn spawn_publisher(
        &self,
        plan: Vec<Planned>,
        start: Instant,
        published: Arc<AtomicUsize>,
    ) -> JoinHandle<Result<(), SubnetError>> {
        let handles = self.handles.clone();
        let tracker = Arc::clone(&self.tracker);
        tokio::spawn(async move {
            for p in plan {
                let due = start + p.at;
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                publish_tracked(&handles, &tracker, p.origin, p.kind, p.data).await?;
                published.fetch_add(1, Relaxed);
            }
            Ok(())
        })
    }

    /// The nodes' summed traffic and core counters.
    fn counters(&self) -> Counters {
        self.metrics()
            .iter()
            .fold(Counters::default(), |c, m| Counters {
                wire_bytes: c.wire_bytes + m.bytes_written,
                duplicates: c.duplicates + m.core.duplicates,
                retries: c.retries + m.core.retries,
            })
    }

    /// Socket bytes each node wrote and read so far.
    fn node_bytes(&self) -> Vec<NodeBytes> {
        self.metrics()
            .iter()
            .map(|m| NodeBytes {
                written: m.bytes_written,
                read: m.bytes_read,
            })
            .collect()
    }

    /// The report of a run of `workload` that published `artifacts` (with `payload_bytes`)
    /// from `start` on and lasted `elapsed`; `counters` are the nodes' during the run, summed
    /// and per node.
    fn report(
        &self,
        workload: &Workload,
        (artifacts, payload_bytes): (usize, u64),
        start: Instant,
        elapsed: Duration,
        (counters, node_bytes): (Counters, Vec<NodeBytes>),
    ) -> Report {
        let t = lock(&self.tracker);
        let complete = t.complete() && t.published.len() == artifacts;
        let full_delivery = complete.then(|| {
            t.last_delivery
                .map_or(Duration::ZERO, |l| l.saturating_duration_since(start))
        });
        let mut latency = Vec::new();
        let mut cdfs = Vec::new();
        for (kind, priority) in [(SMALL_KIND, Priority::URGENT), (LARGE_KIND, Priority::BULK)] {
            let mut v = t.latencies.get(&kind).cloned().unwrap_or_default();
            let count = t.published.values().filter(|p| p.kind == kind).count();
            if count == 0 {
                continue;
            }
            v.sort_unstable();
            cdfs.push(ClassCdf::from_sorted(class_name(kind), &v, |d| {
                d.as_secs_f64() * 1e3
            }));
            latency.push(LatencyStats {
                kind,
                priority,
                artifacts: count,
                deliveries: v.len(),
                p50: percentile(&v, 0.50),
                p99: percentile(&v, 0.99),
                max: v.last().copied().unwrap_or_default(),
            });
        }
        let missing = t
            .order
            .iter()
            .filter_map(|id| {
                let p = &t.published[id];
                let nodes: Vec<usize> = (0..t.nodes).filter(|&n| !p.got[n]).collect();
                (!nodes.is_empty()).then_some(Missing {
                    id: *id,
                    kind: p.kind,
                    size: p.size,
                    origin: p.origin,
                    nodes,
                })
            })
            .collect();
        let unpublished = artifacts.saturating_sub(t.published.len()) as u64;
        Report {
            nodes: t.nodes,
            node_ids: self.ids.clone(),
            workload: workload.clone(),
            artifacts,
            payload_bytes,
            expected: t.expected_pairs + unpublished * (t.nodes as u64 - 1),
            delivered: t.delivered_pairs,
            delivered_bytes: t.delivered_bytes,
            full_delivery,
            elapsed,
            wire_bytes: counters.wire_bytes,
            duplicate_deliveries: t.duplicates,
            unexpected_deliveries: t.unexpected,
            duplicate_receipts: counters.duplicates,
            retries: counters.retries,
            latency,
            missing,
            plot: PlotData {
                latency: cdfs,
                progress: t.timeline.clone(),
                expected_bytes: payload_bytes * (t.nodes as u64).saturating_sub(1),
                bounds: Vec::new(),
                nodes: node_bytes,
            },
        }
    }

    /// Shuts every node down gracefully and stops watching deliveries.
    pub async fn shutdown(self) {
        for h in &self.handles {
            h.shutdown().await;
        }
        for c in &self.collectors {
            c.abort();
        }
    }
}

async fn publish_tracked(
    handles: &[NodeHandle],
    tracker: &Mutex<Tracker>,
    origin: usize,
    kind: Kind,
    data: Bytes,
) -> Result<ArtifactId, SubnetError> {
    let handle = handles.get(origin).ok_or_else(|| {
        SubnetError::Workload(format!("origin {origin} is not a node of the subnet"))
    })?;
    let chunk_size = handle.chunk_size();
    let id = if data.len() as u64 > u64::from(chunk_size) {
        // Hashing a large artifact is bulk work: off the runtime's worker threads.
        let d = data.clone();
        tokio::task::spawn_blocking(move || content_id(&d, chunk_size))
            .await
            .map_err(|e| SubnetError::Workload(format!("hashing failed: {e}")))?
    } else {
        ArtifactId::of(&data)
    };
    // Registered before publishing: a push may be delivered before `publish` returns.
    lock(tracker).publish(id, origin, kind, data.len() as u64, Instant::now());
    handle
        .publish(kind, Bytes::new(), data)
        .await
        .map_err(|source| SubnetError::Node {
            node: origin,
            source,
        })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_distinct_and_within_sizes() {
        let w = Workload {
            small: 50,
            small_size: 100..=200,
            large: 3,
            large_size: 5000,
            large_origins: 2,
            spread: Duration::from_millis(500),
            large_every: Duration::ZERO,
            seed: 7,
        };
        let a = w.plan(4).unwrap();
        let b = w.plan(4).unwrap();
        assert_eq!(a.len(), 53);
        let ids: std::collections::HashSet<ArtifactId> =
            a.iter().map(|p| ArtifactId::of(&p.data)).collect();
        assert_eq!(ids.len(), 53, "every artifact is distinct");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.data, y.data);
            assert_eq!(x.origin, y.origin);
        }
        for p in &a {
            if p.kind == SMALL_KIND {
                assert!((100..=200).contains(&p.data.len()));
                assert!(p.origin < 4);
            } else {
                assert_eq!(p.data.len(), 5000);
                assert!(p.origin < 2);
                assert_eq!(p.at, Duration::ZERO);
            }
            assert!(p.at <= Duration::from_millis(500));
        }
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let c = Workload {
            seed: 8,
            ..w.clone()
        }
        .plan(4)
        .unwrap();
        assert_ne!(a[5].data, c[5].data);
    }

    #[test]
    fn invalid_workloads_are_refused() {
        let w = Workload::default();
        assert!(
            Workload {
                small_size: 10..=20,
                ..w.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            Workload {
                small: 0,
                large: 0,
                ..w.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            Workload {
                large_origins: 0,
                ..w.clone()
            }
            .validate()
            .is_err()
        );
        assert!(matches!(w.plan(1), Err(SubnetError::TooFewNodes(1))));
    }

    #[test]
    fn tracker_counts_pairs_duplicates_and_latency() {
        let mut t = Tracker {
            nodes: 3,
            ..Tracker::default()
        };
        let t0 = Instant::now();
        let id = ArtifactId::of(b"x");
        t.publish(id, 0, SMALL_KIND, 1, t0);
        assert_eq!(t.expected_pairs, 2);
        t.deliver(1, id, 1, t0 + Duration::from_millis(3));
        assert!(!t.complete());
        t.deliver(1, id, 1, t0 + Duration::from_millis(4));
        assert_eq!(t.duplicates, 1);
        t.deliver(0, id, 1, t0 + Duration::from_millis(4));
        assert_eq!(t.unexpected, 1);
        t.deliver(2, ArtifactId::of(b"y"), 1, t0);
        assert_eq!(t.unexpected, 2);
        t.deliver(2, id, 1, t0 + Duration::from_millis(5));
        assert!(t.complete());
        assert_eq!(t.delivered_bytes, 2);
        assert_eq!(
            t.latencies[&SMALL_KIND],
            vec![Duration::from_millis(3), Duration::from_millis(5)]
        );
        // Progress counts first deliveries only, from the first publish, in 1 ms bins.
        assert_eq!(t.timeline.total(), 2);
        assert_eq!(
            t.timeline.cumulative(),
            vec![
                (0.0, 0),
                (0.001, 0),
                (0.002, 0),
                (0.003, 0),
                (0.004, 1),
                (0.005, 1),
                (0.006, 2)
            ]
        );
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn report_lists_missing_pairs_and_is_incomplete() {
        let id = ArtifactId::of(b"z");
        let r = Report {
            nodes: 3,
            node_ids: vec![NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32])],
            workload: Workload::default(),
            artifacts: 1,
            payload_bytes: 10,
            expected: 2,
            delivered: 1,
            delivered_bytes: 10,
            full_delivery: None,
            elapsed: Duration::from_secs(5),
            wire_bytes: 50,
            duplicate_deliveries: 0,
            unexpected_deliveries: 0,
            duplicate_receipts: 0,
            retries: 0,
            latency: vec![],
            plot: PlotData::default(),
            missing: vec![Missing {
                id,
                kind: LARGE_KIND,
                size: 10,
                origin: 0,
                nodes: vec![2],
            }],
        };
        assert!(!r.is_complete());
        let text = r.to_string();
        assert!(text.contains("INCOMPLETE"), "{text}");
        assert!(
            text.contains(&format!(
                "artifact {} (kind 1, 10 B, from node 0) not at node(s) 2",
                id.to_hex()
            )),
            "{text}"
        );
        assert!((r.amplification() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn a_node_s_plan_names_every_artifact_as_the_whole_plan_does() {
        let w = Workload {
            small: 5,
            large: 2,
            large_size: 300_000,
            large_origins: 2,
            ..Workload::default()
        };
        let plan = w.plan(3).unwrap();
        let (mine, all) = w.plan_for(3, Some(65_536), |o| o == 1).unwrap();
        let ids: HashMap<u64, p2p_core::ArtifactId> = plan
            .iter()
            .map(|p| {
                let tag = u64::from_le_bytes(p.data[..8].try_into().unwrap());
                (tag, content_id(&p.data, 65_536))
            })
            .collect();
        assert_eq!(all.len(), plan.len());
        for s in &all {
            assert_eq!(Some(ids[&s.tag]), s.id, "artifact {}", s.tag);
        }
        let expect: Vec<_> = plan
            .iter()
            .filter(|p| p.origin == 1)
            .map(|p| p.data.clone())
            .collect();
        assert_eq!(
            mine.iter().map(|p| p.data.clone()).collect::<Vec<_>>(),
            expect
        );
    }
}
