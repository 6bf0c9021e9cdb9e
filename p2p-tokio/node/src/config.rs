//! The node's configuration file and the registry file: parsing, validation, and one-line errors
//! that name the file, the key and the line.
//!
//! See `p2p-tokio/node/examples/node.toml` and `p2p-tokio/node/examples/registry.toml` for the
//! formats.
//! Relative paths in a file are resolved against the directory of that file.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_core::{Decision, Kind, NodeId, Priority, PriorityFnRef};
use p2p_tokio::{Member, Registry};
use p2p_transport::identity::{NodeIdentity, node_id_of_cert};
use p2p_transport::topology::Topology;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use toml::Spanned;

use crate::units::{Millis, Size};

/// A configuration problem, rendered as one line: `file:line: key `k`: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// The key at fault, dotted (`tuning.idle_timeout_ms`), if known.
    pub key: Option<String>,
    /// The 1-based line, if known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        // Keep it to one line whatever the underlying error says.
        let msg = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        f.write_str(&msg)
    }
}

impl std::error::Error for ConfigError {}

/// The text of one file, for locating spans.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            key: Some(key.to_owned()),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
        }
    }

    fn file_err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            key: None,
            line: None,
            message: message.into(),
        }
    }

    /// The dotted key assigned on the line containing `offset`, with its enclosing table header.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[line_start..line_end];
        let (lhs, _) = line.split_once('=')?;
        let key = lhs.trim().trim_matches('"');
        if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
            return None;
        }
        let table = self.text[..line_start].lines().rev().find_map(|l| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        });
        Some(match table {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_owned(),
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span();
            ConfigError {
                file: self.path.to_path_buf(),
                key: span.clone().and_then(|s| self.key_at(s.start)),
                line: span.map(|s| self.line_of(s.start)),
                message: e.message().to_owned(),
            }
        })
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: None,
        line: None,
        message: format!("cannot read the file: {e}"),
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!("`{s}` is not an address of the form host:port"));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{s}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{s}`: {e}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    listen: Spanned<String>,
    key: Spanned<String>,
    cert: Spanned<String>,
    registry: Spanned<String>,
    metrics: Option<Spanned<String>>,
    api: Option<Spanned<String>>,
    api_allow_remote: Option<bool>,
    deliveries_dir: Option<Spanned<String>>,
    storage_dir: Option<Spanned<String>>,
    record_trace: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    #[serde(default)]
    priority: Vec<RawPriority>,
    default_priority: Option<Spanned<String>>,
    #[serde(default)]
    tuning: RawTuning,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    kind: u16,
    priority: Spanned<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawTuning {
    auto_relay: Option<bool>,
    push_threshold: Option<Size>,
    max_artifact_size: Option<Size>,
    chunk_size: Option<Spanned<Size>>,
    max_incomplete_bytes: Option<Size>,
    max_chunks_in_flight: Option<usize>,
    max_chunks_in_flight_per_peer: Option<usize>,
    max_have_ranges: Option<usize>,
    swarm_patience_ms: Option<Millis>,
    push_chunks: Option<bool>,
    push_patience_ms: Option<Millis>,
    max_pushes_in_flight_per_peer: Option<usize>,
    max_unwanted_pushes: Option<u32>,
    connect_timeout_ms: Option<Millis>,
    handshake_timeout_ms: Option<Millis>,
    keepalive_interval_ms: Option<Millis>,
    idle_timeout_ms: Option<Millis>,
    write_stall_timeout_ms: Option<Millis>,
    reassembly_cap: Option<Size>,
    reconnect_backoff_min_ms: Option<Millis>,
    reconnect_backoff_max_ms: Option<Millis>,
    misbehaviour_ban_ms: Option<Millis>,
    misbehaviour_ban_max_ms: Option<Millis>,
    reconnect_churn_burst: Option<u32>,
    reconnect_churn_refill_ms: Option<Millis>,
    delivery_buffer: Option<usize>,
    tcp_nodelay: Option<bool>,
    socket_buffer: Option<Size>,
    max_pending_handshakes: Option<usize>,
    max_pending_handshakes_per_address: Option<usize>,
    admit_registry_addresses_only: Option<bool>,
    express_lanes: Option<bool>,
    express_marking: Option<bool>,
    peers: Option<Spanned<RawPeers>>,
}

/// `peers = "all"`, `peers = 8` or `peers = ["<node id hex>", ...]`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum RawPeers {
    Degree(i64),
    Word(String),
    List(Vec<String>),
}

/// The topology of `peers`.
fn parse_peers(raw: &RawPeers) -> Result<Topology, String> {
    let topology = match raw {
        RawPeers::Word(w) if w == "all" => Topology::All,
        RawPeers::Word(w) => {
            return Err(format!(
                "`{w}` is not a topology: \"all\", a degree (peers = 8) or a list of node ids"
            ));
        }
        RawPeers::Degree(k) => {
            Topology::Degree(usize::try_from(*k).map_err(|_| format!("{k} is not a degree"))?)
        }
        RawPeers::List(ids) if ids.is_empty() => {
            return Err("an empty list connects to no one".into());
        }
        RawPeers::List(ids) => Topology::Explicit(
            ids.iter()
                .map(|id| {
                    NodeId::from_hex(&id.to_ascii_lowercase())
                        .ok_or_else(|| format!("`{id}` is not a node id (64 hex digits)"))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    topology.validate().map_err(|e| e.to_string())?;
    Ok(topology)
}

/// Optional settings of the node; unset ones keep the library's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Relay every delivered artifact.
    pub auto_relay: Option<bool>,
    /// Push threshold in bytes.
    pub push_threshold: Option<u64>,
    /// Largest artifact accepted (default 1 GiB).
    pub max_artifact_size: Option<u64>,
    /// Artifacts larger than this are fetched in chunks of this size (default 128 KiB; every
    /// member must use the same value).
    pub chunk_size: Option<u32>,
    /// Bytes of chunked artifacts being fetched at once (default 1 GiB).
    pub max_incomplete_bytes: Option<u64>,
    /// Chunk requests awaiting answers, over all peers (default 64).
    pub max_chunks_in_flight: Option<usize>,
    /// Chunk requests awaiting answers from one peer (default 8).
    pub max_chunks_in_flight_per_peer: Option<usize>,
    /// Chunk ranges in one `Have` message (default 1024).
    pub max_have_ranges: Option<usize>,
    /// How long only a chunk's stripe owner asks full holders for it (default 100 ms).
    pub swarm_patience: Option<Duration>,
    /// Owners push the chunks of their stripes to the peers that fetch the artifact (default
    /// off).
    pub push_chunks: Option<bool>,
    /// How long a node waits for a chunk its stripe's owner is to push (default 500 ms).
    pub push_patience: Option<Duration>,
    /// Chunks pushed to one peer and not yet announced back before the next push waits
    /// (default 4).
    pub max_pushes_in_flight_per_peer: Option<usize>,
    /// Useless pushed chunks a peer may send before it is cut off (default 256).
    pub max_unwanted_pushes: Option<u32>,
    /// Dial timeout.
    pub connect_timeout: Option<Duration>,
    /// TLS + hello timeout.
    pub handshake_timeout: Option<Duration>,
    /// Keepalive period.
    pub keepalive_interval: Option<Duration>,
    /// Dead-peer timeout.
    pub idle_timeout: Option<Duration>,
    /// Cut of a peer that accepts none of our bytes for this long.
    pub write_stall_timeout: Option<Duration>,
    /// Node-wide bytes reserved for messages under reassembly.
    pub reassembly_cap: Option<usize>,
    /// First reconnect back-off.
    pub reconnect_backoff_min: Option<Duration>,
    /// Largest reconnect back-off.
    pub reconnect_backoff_max: Option<Duration>,
    /// Ban after a first offence.
    pub misbehaviour_ban: Option<Duration>,
    /// Longest ban of a repeat offender.
    pub misbehaviour_ban_max: Option<Duration>,
    /// Admissions of one member in a row before the reconnect churn limit applies.
    pub reconnect_churn_burst: Option<u32>,
    /// One more admission of a member per this period.
    pub reconnect_churn_refill: Option<Duration>,
    /// Bound of the delivery stream.
    pub delivery_buffer: Option<usize>,
    /// TCP_NODELAY.
    pub tcp_nodelay: Option<bool>,
    /// SO_SNDBUF / SO_RCVBUF.
    pub socket_buffer: Option<usize>,
    /// Inbound handshakes pending at once.
    pub max_pending_handshakes: Option<usize>,
    /// Inbound handshakes pending at once from one source address.
    pub max_pending_handshakes_per_address: Option<usize>,
    /// Refuse, before TLS, sources that are no member's registry address (off behind NAT).
    pub admit_registry_addresses_only: Option<bool>,
    /// A second connection per peer for control and urgent messages (default on).
    pub express_lanes: Option<bool>,
    /// Mark express lanes' packets (DSCP EF, socket priority 6; default on).
    pub express_marking: Option<bool>,
    /// Which members to connect to (`peers`, default all): a degree or a list of ids makes a
    /// partial mesh, which turns `auto_relay` on (an explicit `auto_relay = false` is refused).
    pub peers: Option<Topology>,
}

/// The API address of a node whose file does not set `api`: loopback only, so that only local
/// users can publish and remove artifacts.
pub const DEFAULT_API: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9000);

/// The `api` setting: its address (or `None` if `"off"`), refused if it is not loopback unless
/// `api_allow_remote` is set.
fn api_setting(
    src: &Source<'_>,
    api: Option<&Spanned<String>>,
    allow_remote: Option<bool>,
) -> Result<(Option<SocketAddr>, bool), ConfigError> {
    let allow_remote = allow_remote.unwrap_or(false);
    let Some(api) = api else {
        return Ok((Some(DEFAULT_API), allow_remote));
    };
    if api.get_ref() == "off" {
        return Ok((None, allow_remote));
    }
    let addr = parse_addr(api.get_ref()).map_err(|m| src.err("api", Some(api.span()), m))?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(src.err(
            "api",
            Some(api.span()),
            format!(
                "{addr} is not a loopback address; the API lets anyone who reaches it publish \
                 and remove artifacts, so it listens on loopback (127.0.0.1 or [::1]) unless \
                 `api_allow_remote = true` is set"
            ),
        ));
    }
    Ok((Some(addr), allow_remote))
}

/// Reads only the API address of the node configuration at `path` (for the CLI's `--config`),
/// without loading the identity or validating the rest.
pub fn api_address_of(path: &Path) -> Result<Option<SocketAddr>, ConfigError> {
    #[derive(Deserialize)]
    struct ApiOnly {
        api: Option<Spanned<String>>,
        api_allow_remote: Option<bool>,
    }
    let text = read(path)?;
    let src = Source { path, text: &text };
    let raw: ApiOnly = src.parse()?;
    api_setting(&src, raw.api.as_ref(), raw.api_allow_remote).map(|(a, _)| a)
}

/// A validated node configuration.
pub struct NodeFile {
    /// The file it came from.
    pub path: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// The node's identity, loaded from `key` and `cert`.
    pub identity: NodeIdentity,
    /// The registry file (resolved).
    pub registry: PathBuf,
    /// Prometheus endpoint address (the API's address serves `/metrics` too).
    pub metrics: Option<SocketAddr>,
    /// The local application API's address ([`DEFAULT_API`] unless set; `None` if `api = "off"`).
    pub api: Option<SocketAddr>,
    /// Whether `api` may be a non-loopback address (the API has no authentication).
    pub api_allow_remote: bool,
    /// A directory each delivered artifact is written into, as `<hex id>`.
    pub deliveries_dir: Option<PathBuf>,
    /// A directory chunked artifacts are assembled in, as files mapped into memory
    /// (`p2p_store::FileStorage`); unset: in memory.
    pub storage_dir: Option<PathBuf>,
    /// Trace file.
    pub record_trace: Option<PathBuf>,
    /// Log filter from the file.
    pub log_level: Option<String>,
    /// The priority table.
    pub priorities: Vec<(Kind, Priority)>,
    /// What to do with kinds not in the table.
    pub default_decision: Decision,
    /// Tuning.
    pub tuning: Tuning,
}

impl NodeFile {
    /// The priority function of the table.
    pub fn priority_fn(&self) -> PriorityFnRef {
        PriorityFnRef::by_kind(self.priorities.clone(), self.default_decision)
    }
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    match s {
        "urgent" => Ok(Priority::URGENT),
        "normal" => Ok(Priority::NORMAL),
        "bulk" => Ok(Priority::BULK),
        other => other
            .parse::<u8>()
            .map(Priority)
            .map_err(|_| format!("`{other}` is not a priority (urgent, normal, bulk, or 0..=255)")),
    }
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    match s {
        "drop" => Ok(Decision::Drop),
        "later" => Ok(Decision::Later),
        other => parse_priority(other).map(Decision::Fetch).map_err(|_| {
            format!("`{other}` is not a decision (urgent, normal, bulk, 0..=255, later, drop)")
        }),
    }
}

fn ms(v: Option<Millis>) -> Option<Duration> {
    v.map(|m| m.0)
}

fn bytes(v: Option<Size>) -> Option<u64> {
    v.map(|s| s.0)
}

fn bytes_usize(v: Option<Size>) -> Option<usize> {
    // A size beyond the address space is as good as unbounded.
    v.map(|s| usize::try_from(s.0).unwrap_or(usize::MAX))
}

/// Loads and validates the node configuration at `path`, with its identity files.
pub fn load_node(path: &Path) -> Result<NodeFile, ConfigError> {
    let text = read(path)?;
    let src = Source { path, text: &text };
    let raw: RawNode = src.parse()?;
    let listen = parse_addr(raw.listen.get_ref())
        .map_err(|m| src.err("listen", Some(raw.listen.span()), m))?;
    let metrics = raw
        .metrics
        .as_ref()
        .map(|m| parse_addr(m.get_ref()).map_err(|e| src.err("metrics", Some(m.span()), e)))
        .transpose()?;
    let key_path = src.resolve(raw.key.get_ref());
    let cert_path = src.resolve(raw.cert.get_ref());
    let key_pem = std::fs::read_to_string(&key_path).map_err(|e| {
        src.err(
            "key",
            Some(raw.key.span()),
            format!("cannot read {}: {e}", key_path.display()),
        )
    })?;
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| {
        src.err(
            "cert",
            Some(raw.cert.span()),
            format!("cannot read {}: {e}", cert_path.display()),
        )
    })?;
    let identity = NodeIdentity::from_pem(&cert_pem, &key_pem).map_err(|e| {
        src.err(
            "key",
            Some(raw.key.span()),
            format!(
                "the identity in {} and {} cannot be used: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    let registry = src.resolve(raw.registry.get_ref());
    let record_trace = raw.record_trace.as_ref().map(|p| src.resolve(p.get_ref()));
    let log_level = raw.log_level.as_ref().map(|l| l.get_ref().clone());
    if let Some(l) = &raw.log_level {
        tracing_subscriber::EnvFilter::try_new(l.get_ref())
            .map_err(|e| src.err("log_level", Some(l.span()), format!("invalid filter: {e}")))?;
    }
    let mut priorities = Vec::with_capacity(raw.priority.len());
    let mut seen = HashSet::new();
    for p in &raw.priority {
        let prio = parse_priority(p.priority.get_ref())
            .map_err(|m| src.err("priority.priority", Some(p.priority.span()), m))?;
        if !seen.insert(p.kind) {
            return Err(src.err(
                "priority.kind",
                Some(p.priority.span()),
                format!("kind {} is listed twice", p.kind),
            ));
        }
        priorities.push((Kind(p.kind), prio));
    }
    let default_decision = match &raw.default_priority {
        Some(d) => parse_decision(d.get_ref())
            .map_err(|m| src.err("default_priority", Some(d.span()), m))?,
        None => Decision::Fetch(Priority::NORMAL),
    };
    let (api, api_allow_remote) = api_setting(&src, raw.api.as_ref(), raw.api_allow_remote)?;
    let deliveries_dir = raw
        .deliveries_dir
        .as_ref()
        .map(|d| src.resolve(d.get_ref()));
    let storage_dir = raw.storage_dir.as_ref().map(|d| src.resolve(d.get_ref()));
    let t = raw.tuning;
    let peers = t
        .peers
        .as_ref()
        .map(|p| parse_peers(p.get_ref()).map_err(|m| src.err("tuning.peers", Some(p.span()), m)))
        .transpose()?;
    let partial = peers.as_ref().is_some_and(|p| !p.is_full());
    if partial && t.auto_relay == Some(false) {
        let span = t.peers.as_ref().map(Spanned::span);
        return Err(src.err(
            "tuning.peers",
            span,
            "a partial topology needs relaying: remove `auto_relay = false`",
        ));
    }
    let chunk_size = t
        .chunk_size
        .as_ref()
        .map(|c| {
            u32::try_from(c.get_ref().0).map_err(|_| {
                src.err(
                    "tuning.chunk_size",
                    Some(c.span()),
                    format!(
                        "{} bytes is more than the largest chunk size, 4 GiB - 1",
                        c.get_ref().0
                    ),
                )
            })
        })
        .transpose()?;
    let tuning = Tuning {
        auto_relay: t.auto_relay.or(partial.then_some(true)),
        push_threshold: bytes(t.push_threshold),
        max_artifact_size: bytes(t.max_artifact_size),
        chunk_size,
        max_incomplete_bytes: bytes(t.max_incomplete_bytes),
        max_chunks_in_flight: t.max_chunks_in_flight,
        max_chunks_in_flight_per_peer: t.max_chunks_in_flight_per_peer,
        max_have_ranges: t.max_have_ranges,
        swarm_patience: ms(t.swarm_patience_ms),
        push_chunks: t.push_chunks,
        push_patience: ms(t.push_patience_ms),
        max_pushes_in_flight_per_peer: t.max_pushes_in_flight_per_peer,
        max_unwanted_pushes: t.max_unwanted_pushes,
        connect_timeout: ms(t.connect_timeout_ms),
        handshake_timeout: ms(t.handshake_timeout_ms),
        keepalive_interval: ms(t.keepalive_interval_ms),
        idle_timeout: ms(t.idle_timeout_ms),
        write_stall_timeout: ms(t.write_stall_timeout_ms),
        reassembly_cap: bytes_usize(t.reassembly_cap),
        reconnect_backoff_min: ms(t.reconnect_backoff_min_ms),
        reconnect_backoff_max: ms(t.reconnect_backoff_max_ms),
        misbehaviour_ban: ms(t.misbehaviour_ban_ms),
        misbehaviour_ban_max: ms(t.misbehaviour_ban_max_ms),
        reconnect_churn_burst: t.reconnect_churn_burst,
        reconnect_churn_refill: ms(t.reconnect_churn_refill_ms),
        delivery_buffer: t.delivery_buffer,
        tcp_nodelay: t.tcp_nodelay,
        socket_buffer: bytes_usize(t.socket_buffer),
        max_pending_handshakes: t.max_pending_handshakes,
        max_pending_handshakes_per_address: t.max_pending_handshakes_per_address,
        admit_registry_addresses_only: t.admit_registry_addresses_only,
        express_lanes: t.express_lanes,
        express_marking: t.express_marking,
        peers,
    };
    Ok(NodeFile {
        path: path.to_path_buf(),
        listen,
        identity,
        registry,
        metrics,
        api,
        api_allow_remote,
        deliveries_dir,
        storage_dir,
        record_trace,
        log_level,
        priorities,
        default_decision,
        tuning,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    version: u64,
    member_count: Option<Spanned<u64>>,
    #[serde(default)]
    member: Vec<RawMember>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: Option<Spanned<String>>,
    addr: Spanned<String>,
    cert: Option<Spanned<String>>,
}

fn cert_node_id(path: &Path) -> Result<NodeId, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("{} holds no PEM certificate: {e}", path.display()))?;
    node_id_of_cert(&der).map_err(|e| format!("{}: {e}", path.display()))
}

/// Largest registry file read: far above any real subnet (a member takes about 100 bytes), so
/// that a runaway writer cannot make the node buffer an unbounded file.
pub const MAX_REGISTRY_FILE: u64 = 16 << 20;

/// Why a registry file was refused. Each variant renders as one line naming the file, and where
/// known the line and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The file cannot be read, is not TOML, or a key or member is invalid.
    #[error("{0}")]
    Malformed(ConfigError),
    /// The file has no `member_count`, so a torn (half-written) copy cannot be told apart from a
    /// complete one.
    #[error("{0}")]
    MissingCount(ConfigError),
    /// `member_count` differs from the number of `[[member]]` listed: the file is torn (a writer
    /// that does not replace it atomically was caught half-way, or died) or miscounted.
    #[error("{error}")]
    Torn {
        /// The count the file declares.
        declared: u64,
        /// The members it lists.
        found: usize,
        /// Where and what, as one line.
        error: ConfigError,
    },
}

impl From<ConfigError> for RegistryError {
    fn from(e: ConfigError) -> Self {
        RegistryError::Malformed(e)
    }
}

/// Reads at most [`MAX_REGISTRY_FILE`] bytes of the registry file at `path`.
pub fn read_registry_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_REGISTRY_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_REGISTRY_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {MAX_REGISTRY_FILE} bytes"),
        ));
    }
    Ok(bytes)
}

/// Loads and validates the registry file at `path` (see [`parse_registry`]).
pub fn load_registry(path: &Path) -> Result<Registry, RegistryError> {
    let bytes = read_registry_bytes(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: None,
        line: None,
        message: format!("cannot read the file: {e}"),
    })?;
    parse_registry(path, &bytes)
}

/// Validates the registry file `bytes` read from `path` (relative `cert` paths are resolved
/// against its directory).
///
/// `version` and `member_count` are required; each `[[member]]` gives `addr` and its identity
/// as `id` (64 hex digits), `cert` (a PEM file whose key the id is derived from), or both (which
/// must agree). Ids must be distinct, and `member_count` must equal the number of members
/// listed: a file cut short by a torn write still parses, and the count is what tells it apart.
pub fn parse_registry(path: &Path, bytes: &[u8]) -> Result<Registry, RegistryError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: None,
        line: None,
        message: format!("the file is not UTF-8: {e}"),
    })?;
    let src = Source { path, text };
    let raw: RawRegistry = src.parse()?;
    let mut members = Vec::with_capacity(raw.member.len());
    let mut ids = HashSet::new();
    for (i, m) in raw.member.iter().enumerate() {
        let key = |k: &str| format!("member[{i}].{k}");
        let addr = parse_addr(m.addr.get_ref())
            .map_err(|e| src.err(&key("addr"), Some(m.addr.span()), e))?;
        let from_id =
            m.id.as_ref()
                .map(|id| {
                    NodeId::from_hex(&id.get_ref().to_ascii_lowercase()).ok_or_else(|| {
                        src.err(
                            &key("id"),
                            Some(id.span()),
                            format!("`{}` is not a node id (64 hex digits)", id.get_ref()),
                        )
                    })
                })
                .transpose()?;
        let from_cert = m
            .cert
            .as_ref()
            .map(|c| {
                cert_node_id(&src.resolve(c.get_ref()))
                    .map_err(|e| src.err(&key("cert"), Some(c.span()), e))
            })
            .transpose()?;
        let id = match (from_id, from_cert) {
            (Some(a), Some(b)) if a != b => {
                return Err(src
                    .err(
                        &key("id"),
                        m.id.as_ref().map(|s| s.span()),
                        format!(
                            "id {} does not match the certificate's key, whose id is {}",
                            a.to_hex(),
                            b.to_hex()
                        ),
                    )
                    .into());
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => {
                return Err(src
                    .err(
                        &key("id"),
                        Some(m.addr.span()),
                        "a member needs `id` or `cert`",
                    )
                    .into());
            }
        };
        if !ids.insert(id) {
            return Err(src
                .err(
                    &key("id"),
                    Some(m.addr.span()),
                    format!("node {} is listed twice", id.to_hex()),
                )
                .into());
        }
        members.push(Member { id, addr });
    }
    if members.is_empty() {
        return Err(src.file_err("the registry lists no `[[member]]`").into());
    }
    let found = members.len();
    match &raw.member_count {
        None => {
            return Err(RegistryError::MissingCount(src.err(
                "member_count",
                None,
                format!(
                    "missing; the file lists {found} `[[member]]`: declare their number \
                     (`member_count = {found}`) so that a half-written file is refused"
                ),
            )));
        }
        Some(count) if *count.get_ref() != found as u64 => {
            let declared = *count.get_ref();
            return Err(RegistryError::Torn {
                declared,
                found,
                error: src.err(
                    "member_count",
                    Some(count.span()),
                    format!(
                        "declares {declared} members but the file lists {found}: \
                         a torn (half-written) file, or a miscount"
                    ),
                ),
            });
        }
        Some(_) => {}
    }
    Ok(Registry {
        version: raw.version,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source<'_> {
        Source {
            path: Path::new("node.toml"),
            text,
        }
    }

    #[test]
    fn key_at_names_the_table_and_key() {
        let text = "listen = \"x\"\n[tuning]\nidle_timeout_ms = \"a\"\n";
        let s = src(text);
        let off = text.find("\"a\"").unwrap();
        assert_eq!(s.key_at(off).as_deref(), Some("tuning.idle_timeout_ms"));
        assert_eq!(s.line_of(off), 3);
        assert_eq!(s.key_at(1).as_deref(), Some("listen"));
    }

    #[test]
    fn type_errors_name_key_and_line() {
        let text = "listen = \"127.0.0.1:1\"\n[tuning]\nidle_timeout_ms = \"soon\"\n";
        let e = src(text).parse::<RawTuningFile>().unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("tuning.idle_timeout_ms"));
        let line = e.to_string();
        assert!(
            line.starts_with("node.toml:3: key `tuning.idle_timeout_ms`: "),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct RawTuningFile {
        listen: String,
        tuning: RawTuning,
    }

    #[test]
    fn ban_settings_parse() {
        let text = "listen = \"x\"\n[tuning]\nmisbehaviour_ban_ms = 500\nmisbehaviour_ban_max_ms = 4000\nreconnect_churn_burst = 3\nreconnect_churn_refill_ms = 2000\n";
        let f = src(text).parse::<RawTuningFile>().unwrap();
        let ms = |v: u64| Some(Millis(Duration::from_millis(v)));
        assert_eq!(f.tuning.misbehaviour_ban_ms, ms(500));
        assert_eq!(f.tuning.misbehaviour_ban_max_ms, ms(4000));
        assert_eq!(f.tuning.reconnect_churn_burst, Some(3));
        assert_eq!(f.tuning.reconnect_churn_refill_ms, ms(2000));
    }

    #[test]
    fn peers_parse_as_all_a_degree_or_a_list_and_turn_relaying_on() {
        let parse = |v: &str| {
            let text = format!("listen = \"x\"\n[tuning]\npeers = {v}\n");
            let f = src(&text).parse::<RawTuningFile>().unwrap();
            parse_peers(f.tuning.peers.unwrap().get_ref())
        };
        assert_eq!(parse("\"all\""), Ok(Topology::All));
        assert_eq!(parse("4"), Ok(Topology::Degree(4)));
        let (a, b) = (NodeId([1; 32]), NodeId([0xab; 32]));
        let list = format!("[\"{}\", \"{}\"]", a.to_hex(), b.to_hex().to_uppercase());
        assert_eq!(parse(&list), Ok(Topology::Explicit([a, b].into())));
        for bad in ["1", "-3", "\"some\"", "[]", "[\"abc\"]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }

        // In a node file: a partial topology turns relaying on, and refuses it turned off.
        let dir = tempfile::tempdir().unwrap();
        let id = NodeIdentity::generate().unwrap();
        std::fs::write(dir.path().join("key.pem"), id.key_pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), id.cert_pem()).unwrap();
        let path = dir.path().join("node.toml");
        let head = "listen = \"127.0.0.1:1\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\nregistry = \"r.toml\"\n[tuning]\n";
        std::fs::write(&path, format!("{head}peers = 8\n")).unwrap();
        let n = load_node(&path).unwrap();
        assert_eq!(n.tuning.peers, Some(Topology::Degree(8)));
        assert_eq!(n.tuning.auto_relay, Some(true));
        std::fs::write(&path, format!("{head}peers = \"all\"\n")).unwrap();
        assert_eq!(load_node(&path).unwrap().tuning.auto_relay, None);
        std::fs::write(&path, format!("{head}auto_relay = false\npeers = 8\n")).unwrap();
        let Err(e) = load_node(&path) else {
            panic!("relaying turned off under a partial topology is refused")
        };
        assert_eq!(e.key.as_deref(), Some("tuning.peers"));
        assert_eq!(e.line, Some(7));
        std::fs::write(&path, format!("{head}peers = 1\n")).unwrap();
        let Err(e) = load_node(&path) else {
            panic!("a degree of 1 is refused")
        };
        assert!(e.to_string().contains("degree of at least 2"), "{e}");
    }

    #[test]
    fn swarm_settings_load_into_the_tuning() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeIdentity::generate().unwrap();
        std::fs::write(dir.path().join("key.pem"), id.key_pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), id.cert_pem()).unwrap();
        let path = dir.path().join("node.toml");
        let text = "listen = \"127.0.0.1:1\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\nregistry = \"r.toml\"\n[tuning]\nswarm_patience_ms = \"250ms\"\npush_chunks = true\npush_patience_ms = 2000\nmax_pushes_in_flight_per_peer = 2\nmax_unwanted_pushes = 64\n";
        std::fs::write(&path, text).unwrap();
        let t = load_node(&path).unwrap().tuning;
        assert_eq!(t.swarm_patience, Some(Duration::from_millis(250)));
        assert_eq!(t.push_chunks, Some(true));
        assert_eq!(t.push_patience, Some(Duration::from_secs(2)));
        assert_eq!(t.max_pushes_in_flight_per_peer, Some(2));
        assert_eq!(t.max_unwanted_pushes, Some(64));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = src("lisen = \"x\"\n").parse::<RawTuningFile>().unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn priorities_and_decisions_parse() {
        assert_eq!(parse_priority("urgent"), Ok(Priority::URGENT));
        assert_eq!(parse_priority("7"), Ok(Priority(7)));
        assert!(parse_priority("256").is_err());
        assert_eq!(parse_decision("drop"), Ok(Decision::Drop));
        assert_eq!(parse_decision("bulk"), Ok(Decision::Fetch(Priority::BULK)));
        assert!(parse_decision("soon").is_err());
    }

    #[test]
    fn addresses_need_a_port() {
        assert!(parse_addr("127.0.0.1:80").is_ok());
        assert!(parse_addr("[::1]:80").is_ok());
        assert!(parse_addr("localhost:80").is_ok());
        assert!(parse_addr("127.0.0.1").is_err());
    }
    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
    }

    #[test]
    fn example_registry_loads() {
        let r = load_registry(&examples().join("registry.toml")).unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(r.members.len(), 3);
    }

    #[test]
    fn example_node_config_loads_with_generated_identity() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeIdentity::generate().unwrap();
        std::fs::write(dir.path().join("key.pem"), id.key_pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), id.cert_pem()).unwrap();
        for f in ["node.toml", "registry.toml"] {
            std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
        }
        let n = load_node(&dir.path().join("node.toml")).unwrap();
        assert_eq!(n.identity.node_id(), id.node_id());
        assert_eq!(n.listen, "0.0.0.0:4100".parse().unwrap());
        assert_eq!(n.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(n.api, Some(DEFAULT_API));
        assert!(!n.api_allow_remote);
        assert_eq!(n.registry, dir.path().join("registry.toml"));
        assert_eq!(
            n.priorities,
            vec![(Kind(0), Priority::URGENT), (Kind(1), Priority::BULK)]
        );
        assert_eq!(n.tuning.idle_timeout, Some(Duration::from_secs(10)));
        load_registry(&n.registry).unwrap();
    }

    #[test]
    fn registry_member_by_cert_gets_the_cert_id_and_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeIdentity::generate().unwrap();
        std::fs::write(dir.path().join("n.pem"), id.cert_pem()).unwrap();
        let path = dir.path().join("registry.toml");
        std::fs::write(
            &path,
            "version = 4\nmember_count = 1\n[[member]]\ncert = \"n.pem\"\naddr = \"127.0.0.1:5\"\n",
        )
        .unwrap();
        let r = load_registry(&path).unwrap();
        assert_eq!(r.members[0].id, id.node_id());
        let other = NodeId([7; 32]).to_hex();
        std::fs::write(
            &path,
            format!(
                "version = 4\nmember_count = 1\n[[member]]\ncert = \"n.pem\"\nid = \"{other}\"\naddr = \"127.0.0.1:5\"\n"
            ),
        )
        .unwrap();
        let RegistryError::Malformed(e) = load_registry(&path).unwrap_err() else {
            panic!("a mismatching id is malformed");
        };
        assert_eq!(e.key.as_deref(), Some("member[0].id"));
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("does not match"), "{e}");
    }

    #[test]
    fn registry_refuses_duplicates_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        let id = NodeId([1; 32]).to_hex();
        std::fs::write(
            &path,
            format!(
                "version = 1\nmember_count = 2\n[[member]]\nid = \"{id}\"\naddr = \"127.0.0.1:5\"\n[[member]]\nid = \"{id}\"\naddr = \"127.0.0.1:6\"\n"
            ),
        )
        .unwrap();
        let e = load_registry(&path).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        std::fs::write(
            &path,
            "version = 1\nmember_count = 1\n[[member]]\nid = \"abc\"\naddr = \"127.0.0.1:5\"\n",
        )
        .unwrap();
        let RegistryError::Malformed(e) = load_registry(&path).unwrap_err() else {
            panic!("a bad id is malformed");
        };
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("member[0].id"));
        std::fs::write(&path, "version = 1\nmember_count = 0\n").unwrap();
        assert!(
            load_registry(&path)
                .unwrap_err()
                .to_string()
                .contains("no `[[member]]`")
        );
    }

    #[test]
    fn registry_needs_a_member_count_that_matches_the_members() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        let member = |b: u8, port: u16| {
            format!(
                "[[member]]\nid = \"{}\"\naddr = \"127.0.0.1:{port}\"\n",
                NodeId([b; 32]).to_hex()
            )
        };
        let two = format!("{}{}", member(1, 5), member(2, 6));
        let r = parse_registry(
            &path,
            format!("version = 3\nmember_count = 2\n{two}").as_bytes(),
        )
        .unwrap();
        assert_eq!((r.version, r.members.len()), (3, 2));

        // The same file cut after its first member still parses; its count gives it away.
        let complete = format!("version = 3\nmember_count = 2\n{two}");
        let cut = &complete[..complete.find("[[member]]\nid = \"0202").unwrap()];
        let e = parse_registry(&path, cut.as_bytes()).unwrap_err();
        let RegistryError::Torn {
            declared,
            found,
            error,
        } = &e
        else {
            panic!("a cut file is torn: {e}");
        };
        assert_eq!((*declared, *found), (2, 1));
        assert_eq!(error.line, Some(2));
        assert!(e.to_string().contains("key `member_count`"), "{e}");

        let e = parse_registry(&path, format!("version = 3\n{two}").as_bytes()).unwrap_err();
        assert!(matches!(e, RegistryError::MissingCount(_)), "{e}");
        assert!(e.to_string().contains("member_count = 2"), "{e}");

        let e =
            parse_registry(&path, b"version = 3\nmember_count = 2\n[[member]]\nid = ").unwrap_err();
        assert!(matches!(e, RegistryError::Malformed(_)), "{e}");
        let e = parse_registry(&path, b"version = 3\xff").unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn registry_files_larger_than_the_bound_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_REGISTRY_FILE + 1).unwrap();
        let e = read_registry_bytes(&path).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = load_registry(&path).unwrap_err();
        assert!(matches!(e, RegistryError::Malformed(_)), "{e}");
        file.set_len(MAX_REGISTRY_FILE).unwrap();
        assert_eq!(
            read_registry_bytes(&path).unwrap().len() as u64,
            MAX_REGISTRY_FILE
        );
    }
}
