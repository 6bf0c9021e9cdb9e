//! `p2p-node run`: one node of a subnet, configured by a file, with a registry that follows its
//! file (safely: see [`p2p_node::reload`]), the local application API ([`p2p_node::api`]) with
//! the Prometheus endpoint, and structured logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use p2p_core::StorageRef;
use p2p_node::api::{self, ApiState};
use p2p_node::config::{NodeFile, load_node, load_registry};
use p2p_node::reload::{ReloadMetrics, ReloadSettings, Reloader, Stamp};
use p2p_store::FileStorage;
use p2p_tokio::{NodeConfig, PriorityProfile, Registry, StartError};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::{EXIT_CONFIG, EXIT_FAILURE, fail, init_logs};

/// Loads the configuration and runs the node until SIGINT or SIGTERM.
pub fn main(config: &Path, record_trace: Option<PathBuf>, log_level: Option<&str>) -> u8 {
    let file = match load_node(config) {
        Ok(f) => f,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    // Stamped before reading: a change made while the node starts is picked up by the watcher.
    let registry_stamp = Stamp::of(&file.registry);
    let registry = match load_registry(&file.registry) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    if let Err(e) = init_logs(log_level, file.log_level.as_deref(), "info") {
        return fail(EXIT_CONFIG, e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(node(file, registry, registry_stamp, record_trace))
}

fn node_config(file: NodeFile, record_trace: Option<PathBuf>) -> NodeConfig {
    let priority_fn = file.priority_fn();
    let profile = PriorityProfile::ByKind {
        table: file.priorities.clone(),
        default: file.default_decision,
    };
    let t = &file.tuning;
    let mut cfg = NodeConfig::new(file.identity, file.listen);
    cfg.core.priority_fn = priority_fn;
    cfg.record_trace = record_trace.or(file.record_trace);
    if cfg.record_trace.is_some() {
        // For information in the trace's header: replays answer from the recorded decisions.
        cfg.record_trace_profile = Some(profile);
    }
    if let Some(v) = t.auto_relay {
        cfg.core.auto_relay = v;
    }
    if let Some(v) = &t.peers {
        cfg.topology = v.clone();
    }
    if let Some(v) = t.push_threshold {
        cfg.core.push_threshold = v;
    }
    if let Some(v) = t.max_artifact_size {
        cfg.core.max_artifact_size = v;
    }
    if let Some(v) = t.chunk_size {
        cfg.core.chunk_size = v;
    }
    if let Some(v) = t.max_incomplete_bytes {
        cfg.core.max_incomplete_bytes = v;
    }
    if let Some(v) = t.max_chunks_in_flight {
        cfg.core.max_chunks_in_flight = v;
    }
    if let Some(v) = t.max_chunks_in_flight_per_peer {
        cfg.core.max_chunks_in_flight_per_peer = v;
    }
    if let Some(v) = t.max_have_ranges {
        cfg.core.max_have_ranges = v;
    }
    if let Some(v) = t.swarm_patience {
        cfg.core.swarm_patience = v;
    }
    if let Some(v) = t.push_chunks {
        cfg.core.push_chunks = v;
    }
    if let Some(v) = t.push_patience {
        cfg.core.push_patience = v;
    }
    if let Some(v) = t.max_pushes_in_flight_per_peer {
        cfg.core.max_pushes_in_flight_per_peer = v;
    }
    if let Some(v) = t.max_unwanted_pushes {
        cfg.core.max_unwanted_pushes = v;
    }
    // The codec limits follow the core's bounds.
    cfg.mux.limits = NodeConfig::codec_limits(&cfg.core);
    if let Some(v) = t.connect_timeout {
        cfg.connect_timeout = v;
    }
    if let Some(v) = t.handshake_timeout {
        cfg.handshake_timeout = v;
    }
    if let Some(v) = t.keepalive_interval {
        cfg.keepalive_interval = v;
    }
    if let Some(v) = t.idle_timeout {
        cfg.idle_timeout = v;
    }
    if let Some(v) = t.write_stall_timeout {
        cfg.write_stall_timeout = v;
    }
    if let Some(v) = t.reassembly_cap {
        cfg.reassembly_cap = v;
    }
    if let Some(v) = t.reconnect_backoff_min {
        cfg.reconnect_backoff_min = v;
    }
    if let Some(v) = t.reconnect_backoff_max {
        cfg.reconnect_backoff_max = v;
    }
    if let Some(v) = t.misbehaviour_ban {
        cfg.misbehaviour_ban = v;
    }
    if let Some(v) = t.misbehaviour_ban_max {
        cfg.misbehaviour_ban_max = v;
    }
    if let Some(v) = t.reconnect_churn_burst {
        cfg.reconnect_churn_burst = v;
    }
    if let Some(v) = t.reconnect_churn_refill {
        cfg.reconnect_churn_refill = v;
    }
    if let Some(v) = t.delivery_buffer {
        cfg.delivery_buffer = v;
    }
    if let Some(v) = t.tcp_nodelay {
        cfg.tcp_nodelay = v;
    }
    if t.socket_buffer.is_some() {
        cfg.socket_buffer = t.socket_buffer;
    }
    if let Some(v) = t.max_pending_handshakes {
        cfg.max_pending_handshakes = v;
    }
    if let Some(v) = t.max_pending_handshakes_per_address {
        cfg.max_pending_handshakes_per_address = v;
    }
    if let Some(v) = t.admit_registry_addresses_only {
        cfg.admit_registry_addresses_only = v;
    }
    if let Some(v) = t.express_lanes {
        cfg.express.enabled = v;
    }
    if let Some(v) = t.express_marking {
        cfg.express_marking = v;
    }
    cfg
}

async fn node(
    file: NodeFile,
    registry: Registry,
    registry_stamp: Option<Stamp>,
    record_trace: Option<PathBuf>,
) -> u8 {
    let config_path = file.path.clone();
    let registry_path = file.registry.clone();
    let metrics_addr = file.metrics;
    let api_addr = file.api;
    let deliveries_dir = file.deliveries_dir.clone();
    let id = file.identity.node_id();
    if !registry.members.iter().any(|m| m.id == id) {
        tracing::warn!(
            node = %id.to_hex(),
            registry = %registry_path.display(),
            "this node is not a member of its registry; peers will refuse it"
        );
    }
    let version = registry.version;
    let reload_metrics = ReloadMetrics::new(&registry);
    let reloader = Reloader::new(
        registry_path,
        &registry,
        registry_stamp,
        ReloadSettings::default(),
        Arc::clone(&reload_metrics),
    );
    if let Some(dir) = &deliveries_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return fail(
            EXIT_FAILURE,
            format!(
                "{}: key `deliveries_dir`: cannot create {}: {e}",
                config_path.display(),
                dir.display()
            ),
        );
    }
    let storage = match &file.storage_dir {
        Some(dir) => match FileStorage::new(dir) {
            Ok(files) => Some(Arc::new(files)),
            Err(e) => {
                return fail(
                    EXIT_FAILURE,
                    format!(
                        "{}: key `storage_dir`: cannot create {}: {e}",
                        config_path.display(),
                        dir.display()
                    ),
                );
            }
        },
        None => None,
    };
    let mut cfg = node_config(file, record_trace);
    if let Some(files) = &storage {
        cfg.core.storage = StorageRef(files.clone());
    }
    let max_upload = cfg.core.max_artifact_size;
    let handle = match p2p_tokio::start(cfg, registry).await {
        Ok(h) => h,
        Err(e @ StartError::InvalidConfig(_)) => {
            return fail(EXIT_CONFIG, format!("{}: {e}", config_path.display()));
        }
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the node: {e}")),
    };
    let shutdown = Shutdown::install();
    println!("node {} listening on {}", id.to_hex(), handle.local_addr());
    tracing::info!(node = %id.to_hex(), listen = %handle.local_addr(), registry_version = version, "node started");

    let state = ApiState::new(
        handle.clone(),
        Arc::clone(&reload_metrics),
        max_upload,
        deliveries_dir.clone(),
        storage,
    );
    let mut tasks = Vec::new();
    match handle.take_deliveries() {
        Some(deliveries) => tasks.push(tokio::spawn(api::fan_out(
            deliveries,
            state.events(),
            deliveries_dir,
        ))),
        None => tracing::error!("the node's deliveries were already taken"),
    }
    let servers = Servers {
        api: api_addr,
        metrics: metrics_addr,
    };
    match servers.start(&state).await {
        Ok(started) => tasks.extend(started),
        Err(e) => {
            handle.shutdown().await;
            return fail(EXIT_FAILURE, format!("{}: {e}", config_path.display()));
        }
    }
    tasks.push(api::sample_rates(Arc::clone(&state)));
    let reload_now = Arc::new(Notify::new());
    tasks.push(tokio::spawn(forward_hangups(Arc::clone(&reload_now))));
    tasks.push(tokio::spawn(reloader.run(handle.clone(), reload_now)));

    let signal = shutdown.wait().await;
    tracing::info!(signal, "shutting down");
    handle.shutdown().await;
    for t in tasks {
        t.abort();
    }
    0
}

/// The listeners of the API and of a separate metrics address.
struct Servers {
    api: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

impl Servers {
    /// Binds and serves the API (with `/metrics`) and, if its address differs, a listener of
    /// `/metrics` alone; announces each on stdout and in the log.
    async fn start(
        &self,
        state: &Arc<ApiState>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let mut tasks = Vec::new();
        let mut api_local = None;
        if let Some(addr) = self.api {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                format!(
                    "key `api`: cannot listen on {addr}: {e} (another node on this host? \
                         give each its own `api` address, or `api = \"off\"`)"
                )
            })?;
            let local = listener
                .local_addr()
                .map_err(|e| format!("key `api`: {e}"))?;
            println!("api on http://{local}/v1/");
            tracing::info!(%local, "serving the application API at /v1/ and metrics at /metrics");
            tasks.push(api::serve(listener, api::router(Arc::clone(state))));
            api_local = Some(local);
        }
        match (self.metrics, api_local) {
            (Some(addr), Some(local)) if addr == local || Some(addr) == self.api => {
                println!("metrics on http://{local}/metrics");
            }
            (Some(addr), _) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("key `metrics`: cannot listen on {addr}: {e}"))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| format!("key `metrics`: {e}"))?;
                println!("metrics on http://{local}/metrics");
                tracing::info!(%local, "serving Prometheus metrics at /metrics");
                tasks.push(api::serve(listener, api::metrics_router(Arc::clone(state))));
            }
            (None, Some(local)) => println!("metrics on http://{local}/metrics"),
            (None, None) => {}
        }
        Ok(tasks)
    }
}

/// Asks the registry watcher for a re-read on every SIGHUP.
async fn forward_hangups(reload_now: Arc<Notify>) {
    let mut hangup = Hangup::new();
    loop {
        hangup.recv().await;
        reload_now.notify_one();
    }
}

/// SIGHUP as a stream (never fires where signals are unavailable).
struct Hangup {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let inner = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; polling the registry only");
                    None
                }
            };
            Hangup { inner }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            if s.recv().await.is_some() {
                tracing::info!("SIGHUP: re-reading the registry");
                return;
            }
            self.inner = None;
        }
        std::future::pending::<()>().await
    }
}

/// SIGINT and SIGTERM handlers, installed before the node announces itself so that a signal
/// sent right after the announcement stops it cleanly instead of killing it.
struct Shutdown {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some((int, term)),
                _ => None,
            };
            Shutdown { streams }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    /// Waits for SIGINT or SIGTERM and names it.
    async fn wait(self) -> &'static str {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.streams {
            return tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for signals; running until killed");
                std::future::pending::<&'static str>().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_core::Decision;
    use p2p_node::config::Tuning;
    use p2p_tokio::NodeIdentity;
    use std::time::Duration;

    #[test]
    fn a_tuned_artifact_or_chunk_size_takes_the_codec_limits_along() {
        for (size, chunk) in [(1 << 10, None), (1 << 20, None), (1 << 30, Some(1 << 20))] {
            let file = NodeFile {
                path: PathBuf::from("node.toml"),
                listen: "127.0.0.1:0".parse().unwrap(),
                identity: NodeIdentity::generate().unwrap(),
                registry: PathBuf::from("registry.toml"),
                metrics: None,
                api: None,
                api_allow_remote: false,
                deliveries_dir: None,
                storage_dir: None,
                record_trace: None,
                log_level: None,
                priorities: Vec::new(),
                default_decision: Decision::Drop,
                tuning: Tuning {
                    max_artifact_size: Some(size),
                    chunk_size: chunk,
                    max_have_ranges: Some(2000),
                    swarm_patience: Some(Duration::from_millis(250)),
                    push_chunks: Some(true),
                    push_patience: Some(Duration::from_secs(2)),
                    max_unwanted_pushes: Some(64),
                    ..Tuning::default()
                },
            };
            let cfg = node_config(file, None);
            assert_eq!(cfg.core.swarm_patience, Duration::from_millis(250));
            assert!(cfg.core.push_chunks);
            assert_eq!(cfg.core.push_patience, Duration::from_secs(2));
            assert_eq!(cfg.core.max_unwanted_pushes, 64);
            assert_eq!(cfg.core.max_artifact_size, size);
            assert_eq!(cfg.core.max_have_ranges, 2000);
            assert_eq!(cfg.mux.limits, NodeConfig::codec_limits(&cfg.core));
            assert_eq!(cfg.mux.limits.max_have_ranges, 2000);
            // One message carries an unchunked artifact or a chunk.
            let one = size.min(u64::from(cfg.core.chunk_size));
            assert_eq!(
                cfg.core.chunk_size,
                chunk.unwrap_or(p2p_core::chunks::DEFAULT_CHUNK_SIZE)
            );
            assert!(cfg.mux.limits.max_message_size > one as usize);
            cfg.validate().unwrap();
        }
    }
}
