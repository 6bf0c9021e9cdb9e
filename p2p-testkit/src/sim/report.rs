//! What a run found: the checks' results and the figures.

use p2p_core::{Kind, TableSizes, Time};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One property check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The property.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was seen (the first violations when it failed).
    pub detail: String,
}

/// Percentiles of a set of durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl LatencyStats {
    /// Statistics of `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        LatencyStats {
            count: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

impl fmt::Display for LatencyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            self.count,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// One published artifact's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFigure {
    /// Index of the publish (scripted ones first, then generated ones).
    pub index: usize,
    /// Its kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: usize,
    /// The publishing node.
    pub origin: usize,
    /// When it was published.
    pub published_at: Time,
    /// Honest nodes expected to hold it at the end.
    pub expected: usize,
    /// Of those, how many had it delivered (or held it).
    pub holders: usize,
    /// Time from publish until the last expected node got it, if all did.
    pub complete_after: Option<Duration>,
    /// Per node slot: time from publish until its first delivery there (`None`: never, and
    /// for the origin).
    pub delivered_after: Vec<Option<Duration>>,
    /// Its chunks (0: it fits one chunk and is not chunked).
    pub chunks: u32,
    /// `Chunk` messages of it that the origin queued (answers it cancelled before they
    /// started included): about `chunks` when peers exchange the rest among themselves.
    pub origin_chunk_sends: u64,
    /// Time from publish until the first chunk from the origin was through at a peer.
    pub first_chunk_out: Option<Duration>,
    /// Time from publish until every chunk had gone through from the origin to some peer at
    /// least once (from then on the origin may leave).
    pub all_chunks_out: Option<Duration>,
}

/// An honest node closing its connection to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cutoff {
    /// When.
    pub at: Time,
    /// The honest node.
    pub by: usize,
    /// The peer cut off.
    pub peer: usize,
    /// The reason: the core's [`p2p_core::DisconnectReason`], the transport's or the policy's.
    pub reason: String,
    /// Whether the honest node's policy banned the peer for it (a misbehaviour), rather than
    /// only ending the connection (a write stall, a node-wide reassembly budget refusal).
    pub banned: bool,
}

/// The trace of one incarnation of a recorded node (see [`Scenario::record`](super::Scenario::record)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedTrace {
    /// The recorded node's index.
    pub node: usize,
    /// Which start of the node this trace covers: 1 for the first, 2 after the first restart, ...
    pub incarnation: u32,
    /// When this incarnation started.
    pub started_at: Time,
    /// When the trace ended: the node's crash or the end of the run.
    pub ended_at: Time,
    /// Whether a crash ended it (otherwise the run's end did).
    pub ended_by_crash: bool,
    /// Records written after the header.
    pub records: u64,
    /// The file written, for a [`TraceSink::File`](super::TraceSink::File).
    pub path: Option<PathBuf>,
    /// The whole trace, for a [`TraceSink::Memory`](super::TraceSink::Memory).
    pub data: Option<Vec<u8>>,
    /// Why the trace could not be written in full, if it could not.
    pub error: Option<String>,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// The command that reproduces the run.
    pub repro: String,
    /// Node slots.
    pub nodes: usize,
    /// Property checks.
    pub checks: Vec<Check>,
    /// Per-artifact figures.
    pub artifacts: Vec<ArtifactFigure>,
    /// (artifact, honest node) pairs expected to be delivered at the end.
    pub expected: usize,
    /// Of those, how many were.
    pub delivered: usize,
    /// Delivery latency (publish to first delivery) over all deliveries.
    pub latency: LatencyStats,
    /// Delivery latency per kind.
    pub latency_by_kind: Vec<(Kind, LatencyStats)>,
    /// Bytes sent on the wire by honest nodes (frames and headers included).
    pub wire_bytes: u64,
    /// Of those, per message type (its [`p2p_core::Message::name`]): how many messages and
    /// their wire bytes.
    pub wire_by_message: Vec<(&'static str, u64, u64)>,
    /// Frames the downlinks dropped and the senders recovered ([`crate::sim::Scenario::tail_drop`]).
    pub frames_dropped: u64,
    /// The ideal: each artifact's size times the number of other honest nodes expected to get it.
    pub ideal_bytes: u64,
    /// Every counter of [`p2p_core::Metrics`] summed over the honest cores running at the end
    /// (a crashed node's counts are lost with it), by metric name.
    pub counters: Vec<(&'static str, u64)>,
    /// Field-wise maximum of every honest node's [`TableSizes`] over the samples.
    pub max_state: TableSizes,
    /// Connections cut off by honest nodes, admissions they refused for churn, and
    /// connections they ended without a ban (write stall, node reassembly budget).
    pub cutoffs: Vec<Cutoff>,
    /// The most bytes any honest node reserved at once for messages under reassembly, over its
    /// connections (its `ReassemblyBudget`'s peak), and that node's cap.
    pub reassembly_peak: (usize, usize),
    /// Simulator events processed.
    pub events: u64,
    /// Inputs fed to cores.
    pub inputs: u64,
    /// Virtual time at the end of the run.
    pub end: Time,
    /// Hash of every output of every node, with its time.
    pub output_hash: u64,
    /// The traces of recorded nodes, one per incarnation, in the order they started.
    pub traces: Vec<RecordedTrace>,
}

impl Report {
    /// Wire bytes over the ideal bytes (1.0 is perfect; framing and control add a little).
    pub fn amplification(&self) -> f64 {
        if self.ideal_bytes == 0 {
            return 0.0;
        }
        self.wire_bytes as f64 / self.ideal_bytes as f64
    }

    /// Fraction of expected deliveries that happened.
    pub fn completeness(&self) -> f64 {
        if self.expected == 0 {
            return 1.0;
        }
        self.delivered as f64 / self.expected as f64
    }

    /// The summed counter `name` (0 if there is none of that name).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Distinct honest nodes that cut off `peer`, with reasons containing `reason`.
    pub fn cut_off_by(&self, peer: usize, reason: &str) -> usize {
        let mut by: Vec<usize> = self
            .cutoffs
            .iter()
            .filter(|c| c.peer == peer && c.reason.contains(reason))
            .map(|c| c.by)
            .collect();
        by.sort_unstable();
        by.dedup();
        by.len()
    }

    /// Panics with the failed checks, the seed and the command that reproduces the run, unless
    /// every check held.
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("{self}");
        }
    }

    pub(crate) fn add_determinism(&mut self, other_hash: u64, other_events: u64) {
        let ok = other_hash == self.output_hash && other_events == self.events;
        self.checks.push(Check {
            name: "determinism",
            ok,
            detail: format!(
                "run 1: hash {:016x}, {} events; run 2: hash {:016x}, {} events",
                self.output_hash, self.events, other_hash, other_events
            ),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} seed {}: {}",
            self.name,
            self.seed,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        for c in &self.checks {
            writeln!(
                f,
                "  [{}] {}: {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        writeln!(
            f,
            "  delivered {}/{} ({:.2}%), latency {}",
            self.delivered,
            self.expected,
            self.completeness() * 100.0,
            self.latency
        )?;
        for (k, s) in &self.latency_by_kind {
            writeln!(f, "    kind {}: {}", k.0, s)?;
        }
        writeln!(
            f,
            "  amplification {:.3} ({} wire bytes / {} ideal), cut-offs {}, events {}, end {:.3}s",
            self.amplification(),
            self.wire_bytes,
            self.ideal_bytes,
            self.cutoffs.len(),
            self.events,
            self.end.as_nanos() as f64 / 1e9
        )?;
        for a in self.artifacts.iter().filter(|a| a.chunks > 0) {
            let t = |d: Option<Duration>| {
                d.map_or("never".to_string(), |d| {
                    format!("{:.1}ms", d.as_secs_f64() * 1e3)
                })
            };
            writeln!(
                f,
                "  artifact #{} ({} bytes, {} chunks, origin {}): first chunk out of the origin {}, every chunk {}, {} chunk sends by the origin; all hold it {}",
                a.index,
                a.size,
                a.chunks,
                a.origin,
                t(a.first_chunk_out),
                t(a.all_chunks_out),
                a.origin_chunk_sends,
                t(a.complete_after)
            )?;
        }
        let shown: Vec<String> = [
            "requests_sent",
            "timeouts",
            "retries",
            "bad_data",
            "peers_disconnected",
            "chunks_requested",
            "chunks_received",
            "chunks_served",
            "chunks_cancelled",
        ]
        .iter()
        .map(|n| format!("{n} {}", self.counter(n)))
        .collect();
        writeln!(f, "  counters (running honest nodes): {}", shown.join(", "))?;
        writeln!(f, "  max state {:?}", self.max_state)?;
        for t in &self.traces {
            write!(
                f,
                "  trace of node {} (incarnation {}): {} records",
                t.node, t.incarnation, t.records
            )?;
            if let Some(p) = &t.path {
                write!(f, " in {}", p.display())?;
            }
            if t.ended_by_crash {
                write!(
                    f,
                    ", ended by its crash at {:.3}s",
                    t.ended_at.as_nanos() as f64 / 1e9
                )?;
            }
            if let Some(e) = &t.error {
                write!(f, ", FAILED: {e}")?;
            }
            writeln!(f)?;
        }
        if !self.passed() {
            writeln!(f, "  reproduce with: {}", self.repro)?;
        }
        Ok(())
    }
}
