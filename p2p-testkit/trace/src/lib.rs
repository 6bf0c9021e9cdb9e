//! Trace record and replay of one p2p-core [`Node`].
//!
//! A trace is a JSON Lines file, readable by people and by `p2p-trace`:
//!
//! - line 1, the [`Header`]: `{"format":"p2p-trace","version":2,"crate_version":..,"node":..,
//!   "seed":..,"priority":"fetch-all","decisions":true,"output_payload_inline_max":1024,
//!   "config":{..}}` where `config` holds every numeric and boolean [`Config`] field by name
//!   (durations as `{"secs":..,"nanos":..}`) and the seed is at top level;
//! - then one [`Record`] per line: `{"rec":"in","t":<ns>,"input":{..}}` for every input,
//!   `{"rec":"error",..}` right after it when the application's input was rejected,
//!   `{"rec":"decisions","t":<ns>,"decisions":[{"id":..,"decision":"fetch:<p>"|"later"|"drop"},..]}`
//!   next when the trace records decisions and the priority function was asked during the input
//!   (its answers in call order), `{"rec":"out","t":<ns>,"output":{..}}` for every output
//!   drained after it, and `{"rec":"priority",..}` when the driver swapped in a named profile.
//!
//! # The priority function
//!
//! The priority function belongs to the embedder, so a trace records what it decided rather than
//! what it is. When the header says `"decisions":true`, the recorder ran the node's own function
//! wrapped in a [`DecisionLog`] (see [`DecisionLog::wrap`]; also every function swapped in later),
//! and wrote each input's answers in a `decisions` record; a replay answers from those records
//! with a [`ReplayPriorityFn`] and reports a divergence when the node asks about another advert
//! than recorded, asks more often, or asks less often. Recording decisions never changes what
//! the node does, and any function, closures with private state included, replays bit for bit.
//!
//! Without decisions (`"decisions":false`, and every version 1 trace) the node ran the function
//! that the header's [`PriorityProfile`] names, as do replays, and `priority` records name the
//! profiles swapped in. With decisions, `priority` is informational and `priority` records are
//! not replayed.
//!
//! Version 1 traces (no `decisions` field and no `decisions` records) are still read and
//! replayed; this build writes version 2.
//!
//! Inputs carry all their bytes (base64); output payloads larger than the header's
//! `output_payload_inline_max` are recorded as `{"len":..,"sha256":..}`.
//!
//! Record with a [`Recorder`] wrapped around a node, or with a [`TraceWriter`] from a driver that
//! owns its node; read with [`Trace::parse`] or [`TraceReader`]; check with [`replay`]. The
//! `p2p-trace` binary of this package shows, filters, replays and compares trace files.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decisions;
mod profile;
mod reader;
pub mod record;
mod replay;
mod writer;

pub use decisions::{DecisionDivergence, DecisionLog, RecordingPriorityFn, ReplayPriorityFn};
pub use profile::{PriorityProfile, ProfileError};
pub use reader::{DEFAULT_MAX_LINE_LEN, Entry, Trace, TraceError, TraceReader};
pub use record::{DecisionRec, InputRec, MessageRec, OutputRec, Payload, Record};
pub use replay::{Divergence, DivergenceKind, ReplayReport, replay, replay_with_node};
pub use writer::{Recorder, TraceWriteError, TraceWriter};

use p2p_core::{Config, Node, NodeId, StorageRef};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `format` field of a trace header.
pub const FORMAT_NAME: &str = "p2p-trace";
/// The trace format version this build writes; it also reads [`FORMAT_VERSION_1`].
pub const FORMAT_VERSION: u32 = 2;
/// The first format version: the priority function is always a named profile.
pub const FORMAT_VERSION_1: u32 = 1;
/// The default `output_payload_inline_max`: output payloads up to 1 KiB are recorded whole.
pub const DEFAULT_OUTPUT_PAYLOAD_INLINE_MAX: u64 = 1024;

/// What a trace says about the node it recorded: enough to build the same node again.
#[derive(Clone, Debug)]
pub struct Header {
    /// The version of p2p-trace that wrote the trace.
    pub crate_version: String,
    /// The recorded node's id.
    pub node: NodeId,
    /// The node's configuration (including `seed`). Without `decisions` its `priority_fn` is
    /// built from `priority`; with them it is the recorded node's own function in a header made
    /// by [`Header::with_decisions`], and the function `priority` names in a parsed one.
    pub config: Config,
    /// Without `decisions`, the named priority function the node started with (and ran). With
    /// `decisions`, informational only: what the embedder said it started with, if anything.
    pub priority: PriorityProfile,
    /// Whether the trace records the priority function's decisions (`decisions` records), which
    /// a replay answers from instead of running `priority`'s function.
    pub decisions: bool,
    /// Output payloads longer than this are recorded as length and SHA-256 only.
    pub output_payload_inline_max: u64,
}

impl Header {
    /// A header for node `node` with `config` and the priority function named by `priority`
    /// (it replaces `config.priority_fn`), recording output payloads up to 1 KiB whole.
    pub fn new(node: NodeId, mut config: Config, priority: PriorityProfile) -> Self {
        config.priority_fn = priority.to_fn();
        Header {
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            node,
            config,
            priority,
            decisions: false,
            output_payload_inline_max: DEFAULT_OUTPUT_PAYLOAD_INLINE_MAX,
        }
    }

    /// A header for node `node` with `config`, whose priority function (whatever it is) is
    /// recorded by its decisions: `config.priority_fn` is kept as it is. `priority` is written
    /// for information only ([`PriorityProfile::FetchAll`] when the embedder names none).
    pub fn with_decisions(node: NodeId, config: Config, priority: Option<PriorityProfile>) -> Self {
        Header {
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            node,
            config,
            priority: priority.unwrap_or(PriorityProfile::FetchAll),
            decisions: true,
            output_payload_inline_max: DEFAULT_OUTPUT_PAYLOAD_INLINE_MAX,
        }
    }

    /// A fresh node as the header describes it: its id, config, seed and the priority function
    /// `priority` names. For a trace with `decisions`, [`replay`] replaces that function with a
    /// [`ReplayPriorityFn`].
    pub fn build_node(&self) -> Node {
        let mut config = self.config.clone();
        config.priority_fn = self.priority.to_fn();
        Node::new(self.node, config)
    }

    /// The header as one JSON line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&HeaderRec::from(self))
            .unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"))
    }

    /// The fields that differ between two headers, as `name: ours != theirs` lines.
    pub fn differences(&self, other: &Header) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(HeaderRec::from(self)).unwrap_or_default(),
            serde_json::to_value(HeaderRec::from(other)).unwrap_or_default(),
        );
        let mut out = Vec::new();
        diff_values("", &a, &b, &mut out);
        out
    }
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff_values(&p, u, v, out),
                    (u, v) => out.push(format!("{p}: {u:?} != {v:?}")),
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} != {b}")),
        _ => {}
    }
}

/// Every numeric and boolean field of [`Config`] except `seed` (in the header) and
/// `priority_fn` (a named profile or recorded decisions).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRec {
    push_threshold: u64,
    max_attr_len: usize,
    max_artifact_size: u64,
    #[serde(default = "default_chunks::chunk_size")]
    chunk_size: u32,
    #[serde(default = "default_chunks::max_incomplete_bytes")]
    max_incomplete_bytes: u64,
    #[serde(default = "default_chunks::max_chunks_in_flight")]
    max_chunks_in_flight: usize,
    #[serde(default = "default_chunks::max_chunks_in_flight_per_peer")]
    max_chunks_in_flight_per_peer: usize,
    #[serde(default = "default_chunks::max_have_ranges")]
    max_have_ranges: usize,
    #[serde(default = "default_chunks::swarm_patience")]
    swarm_patience: Duration,
    #[serde(default)]
    push_chunks: bool,
    #[serde(default = "default_chunks::push_patience")]
    push_patience: Duration,
    #[serde(default = "default_chunks::max_unwanted_pushes")]
    max_unwanted_pushes: u32,
    /// Traces written before the push window had none (no limit).
    #[serde(default = "default_chunks::no_push_window")]
    max_pushes_in_flight_per_peer: usize,
    /// Traces written before it announced every verified chunk at once (zero).
    #[serde(default)]
    have_interval: Duration,
    #[serde(default)]
    offload_chunk_hashing: bool,
    #[serde(default = "default_chunks::swarm_linger")]
    swarm_linger: Duration,
    auto_relay: bool,
    max_auto_relay_pool: usize,
    #[serde(default = "default_relay_pool_bytes")]
    max_auto_relay_pool_bytes: u64,
    reevaluate_interval: Duration,
    max_adverts_per_peer: usize,
    max_adverts_per_peer_per_kind: usize,
    max_pending_downloads: usize,
    advert_batch_size: usize,
    #[serde(default = "default_resync_interval")]
    resync_interval: Duration,
    max_adverts_per_message: usize,
    max_in_flight: usize,
    max_in_flight_per_peer: usize,
    max_in_flight_bytes: u64,
    max_in_flight_bytes_per_peer: u64,
    parallel_fetch_min_size: u64,
    max_parallel_requests: usize,
    request_timeout_base: Duration,
    request_timeout_per_mib: Duration,
    retry_backoff_initial: Duration,
    retry_backoff_max: Duration,
    max_bad_data_per_peer: u32,
    max_queued_requests_per_peer: usize,
    #[serde(default = "default_serve::max_early_repeats")]
    max_early_repeats: u32,
    #[serde(default = "default_serve::serve_rate")]
    serve_rate: u64,
    #[serde(default = "default_serve::serve_burst")]
    serve_burst: u64,
    max_delivered_memory: usize,
    max_dropped_memory: usize,
}

/// Traces written before serving had a per-peer budget replay with the defaults.
mod default_serve {
    use p2p_core::Config;
    pub fn max_early_repeats() -> u32 {
        Config::default().max_early_repeats
    }
    pub fn serve_rate() -> u64 {
        Config::default().serve_rate
    }
    pub fn serve_burst() -> u64 {
        Config::default().serve_burst
    }
}

/// Traces written before chunking replay with nothing chunked (the largest chunk size: every
/// artifact they hold is below it, as it was when they were recorded) and the default chunk
/// bounds, which then never apply.
mod default_chunks {
    use p2p_core::Config;
    pub fn chunk_size() -> u32 {
        u32::MAX
    }
    pub fn max_incomplete_bytes() -> u64 {
        Config::default().max_incomplete_bytes
    }
    pub fn max_chunks_in_flight() -> usize {
        Config::default().max_chunks_in_flight
    }
    pub fn max_chunks_in_flight_per_peer() -> usize {
        Config::default().max_chunks_in_flight_per_peer
    }
    pub fn max_have_ranges() -> usize {
        Config::default().max_have_ranges
    }
    pub fn swarm_patience() -> std::time::Duration {
        Config::default().swarm_patience
    }
    pub fn swarm_linger() -> std::time::Duration {
        Config::default().swarm_linger
    }
    pub fn push_patience() -> std::time::Duration {
        Config::default().push_patience
    }
    pub fn max_unwanted_pushes() -> u32 {
        Config::default().max_unwanted_pushes
    }
    pub fn no_push_window() -> usize {
        usize::MAX
    }
}

/// Traces written before resyncs were paced replay with the default.
fn default_resync_interval() -> Duration {
    Config::default().resync_interval
}

/// Traces written before the relay pool had a byte bound replay with the default.
fn default_relay_pool_bytes() -> u64 {
    Config::default().max_auto_relay_pool_bytes
}

impl From<&Config> for ConfigRec {
    fn from(c: &Config) -> Self {
        ConfigRec {
            push_threshold: c.push_threshold,
            max_attr_len: c.max_attr_len,
            max_artifact_size: c.max_artifact_size,
            chunk_size: c.chunk_size,
            max_incomplete_bytes: c.max_incomplete_bytes,
            max_chunks_in_flight: c.max_chunks_in_flight,
            max_chunks_in_flight_per_peer: c.max_chunks_in_flight_per_peer,
            max_have_ranges: c.max_have_ranges,
            swarm_patience: c.swarm_patience,
            push_chunks: c.push_chunks,
            push_patience: c.push_patience,
            max_unwanted_pushes: c.max_unwanted_pushes,
            max_pushes_in_flight_per_peer: c.max_pushes_in_flight_per_peer,
            have_interval: c.have_interval,
            offload_chunk_hashing: c.offload_chunk_hashing,
            swarm_linger: c.swarm_linger,
            auto_relay: c.auto_relay,
            max_auto_relay_pool: c.max_auto_relay_pool,
            max_auto_relay_pool_bytes: c.max_auto_relay_pool_bytes,
            reevaluate_interval: c.reevaluate_interval,
            max_adverts_per_peer: c.max_adverts_per_peer,
            max_adverts_per_peer_per_kind: c.max_adverts_per_peer_per_kind,
            max_pending_downloads: c.max_pending_downloads,
            advert_batch_size: c.advert_batch_size,
            resync_interval: c.resync_interval,
            max_adverts_per_message: c.max_adverts_per_message,
            max_in_flight: c.max_in_flight,
            max_in_flight_per_peer: c.max_in_flight_per_peer,
            max_in_flight_bytes: c.max_in_flight_bytes,
            max_in_flight_bytes_per_peer: c.max_in_flight_bytes_per_peer,
            parallel_fetch_min_size: c.parallel_fetch_min_size,
            max_parallel_requests: c.max_parallel_requests,
            request_timeout_base: c.request_timeout_base,
            request_timeout_per_mib: c.request_timeout_per_mib,
            retry_backoff_initial: c.retry_backoff_initial,
            retry_backoff_max: c.retry_backoff_max,
            max_bad_data_per_peer: c.max_bad_data_per_peer,
            max_queued_requests_per_peer: c.max_queued_requests_per_peer,
            max_early_repeats: c.max_early_repeats,
            serve_rate: c.serve_rate,
            serve_burst: c.serve_burst,
            max_delivered_memory: c.max_delivered_memory,
            max_dropped_memory: c.max_dropped_memory,
        }
    }
}

impl ConfigRec {
    fn into_config(self, seed: u64, priority: &PriorityProfile) -> Config {
        Config {
            seed,
            push_threshold: self.push_threshold,
            max_attr_len: self.max_attr_len,
            max_artifact_size: self.max_artifact_size,
            chunk_size: self.chunk_size,
            max_incomplete_bytes: self.max_incomplete_bytes,
            max_chunks_in_flight: self.max_chunks_in_flight,
            max_chunks_in_flight_per_peer: self.max_chunks_in_flight_per_peer,
            max_have_ranges: self.max_have_ranges,
            swarm_patience: self.swarm_patience,
            push_patience: self.push_patience,
            max_unwanted_pushes: self.max_unwanted_pushes,
            max_pushes_in_flight_per_peer: self.max_pushes_in_flight_per_peer,
            have_interval: self.have_interval,
            push_chunks: self.push_chunks,
            offload_chunk_hashing: self.offload_chunk_hashing,
            swarm_linger: self.swarm_linger,
            auto_relay: self.auto_relay,
            max_auto_relay_pool: self.max_auto_relay_pool,
            max_auto_relay_pool_bytes: self.max_auto_relay_pool_bytes,
            reevaluate_interval: self.reevaluate_interval,
            priority_fn: priority.to_fn(),
            // Where chunks are assembled changes no output: a replay assembles in memory.
            storage: StorageRef::memory(),
            max_adverts_per_peer: self.max_adverts_per_peer,
            max_adverts_per_peer_per_kind: self.max_adverts_per_peer_per_kind,
            max_pending_downloads: self.max_pending_downloads,
            advert_batch_size: self.advert_batch_size,
            resync_interval: self.resync_interval,
            max_adverts_per_message: self.max_adverts_per_message,
            max_in_flight: self.max_in_flight,
            max_in_flight_per_peer: self.max_in_flight_per_peer,
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_in_flight_bytes_per_peer: self.max_in_flight_bytes_per_peer,
            parallel_fetch_min_size: self.parallel_fetch_min_size,
            max_parallel_requests: self.max_parallel_requests,
            request_timeout_base: self.request_timeout_base,
            request_timeout_per_mib: self.request_timeout_per_mib,
            retry_backoff_initial: self.retry_backoff_initial,
            retry_backoff_max: self.retry_backoff_max,
            max_bad_data_per_peer: self.max_bad_data_per_peer,
            max_queued_requests_per_peer: self.max_queued_requests_per_peer,
            max_early_repeats: self.max_early_repeats,
            serve_rate: self.serve_rate,
            serve_burst: self.serve_burst,
            max_delivered_memory: self.max_delivered_memory,
            max_dropped_memory: self.max_dropped_memory,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRec {
    format: String,
    version: u32,
    crate_version: String,
    #[serde(with = "record::node_hex")]
    node: NodeId,
    seed: u64,
    priority: PriorityProfile,
    /// Absent in version 1.
    #[serde(default)]
    decisions: bool,
    output_payload_inline_max: u64,
    config: ConfigRec,
}

impl From<&Header> for HeaderRec {
    fn from(h: &Header) -> Self {
        HeaderRec {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            crate_version: h.crate_version.clone(),
            node: h.node,
            seed: h.config.seed,
            priority: h.priority.clone(),
            decisions: h.decisions,
            output_payload_inline_max: h.output_payload_inline_max,
            config: ConfigRec::from(&h.config),
        }
    }
}

impl From<HeaderRec> for Header {
    fn from(r: HeaderRec) -> Self {
        let config = r.config.into_config(r.seed, &r.priority);
        Header {
            crate_version: r.crate_version,
            node: r.node,
            config,
            priority: r.priority,
            decisions: r.decisions,
            output_payload_inline_max: r.output_payload_inline_max,
        }
    }
}

/// The fuzz target's check, shared with the corpus replay test: parsing arbitrary bytes never
/// panics, and a trace that parses writes back to text that parses to the same trace.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(trace) = Trace::parse_bytes(data) else {
        return;
    };
    let mut text = Vec::new();
    trace.write_to(&mut text).expect("writing to memory");
    let again = Trace::parse_bytes(&text).expect("a written trace parses");
    assert_eq!(again.header.to_json(), trace.header.to_json());
    let records = |t: &Trace| {
        t.entries
            .iter()
            .map(|e| e.record.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&again), records(&trace));
}
