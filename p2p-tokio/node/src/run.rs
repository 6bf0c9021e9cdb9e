//! `p2p-node run`: one node of a subnet, configured by a file, with a registry that follows its
//! file, a Prometheus endpoint and structured logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use p2p_core::NodeId;
use p2p_tokio::{NodeConfig, NodeError, NodeHandle, PriorityProfile, Registry, StartError};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::TcpListener;

use crate::config::{NodeFile, load_node, load_registry};
use crate::prom;
use crate::{EXIT_CONFIG, EXIT_FAILURE, fail, init_logs};

/// How often the registry file's modification time is checked.
const REGISTRY_POLL: Duration = Duration::from_secs(1);

/// Loads the configuration and runs the node until SIGINT or SIGTERM.
pub fn main(config: &Path, record_trace: Option<PathBuf>, log_level: Option<&str>) -> u8 {
    let file = match load_node(config) {
        Ok(f) => f,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    // Stamped before reading: a change made while the node starts is picked up by the watcher.
    let registry_stamp = stamp(&file.registry);
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
    if let Some(v) = t.push_threshold {
        cfg.core.push_threshold = v;
    }
    if let Some(v) = t.max_artifact_size {
        cfg.core.max_artifact_size = v;
        // The codec limits follow the core's bounds.
        cfg.mux.limits = NodeConfig::codec_limits(&cfg.core);
    }
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
    let id = file.identity.node_id();
    if !registry.members.iter().any(|m| m.id == id) {
        tracing::warn!(
            node = %id.to_hex(),
            registry = %registry_path.display(),
            "this node is not a member of its registry; peers will refuse it"
        );
    }
    let version = registry.version;
    let members = fingerprint(&registry);
    let cfg = node_config(file, record_trace);
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

    let mut tasks = Vec::new();
    if let Some(addr) = metrics_addr {
        match serve_metrics(addr, handle.clone()).await {
            Ok((local, task)) => {
                println!("metrics on http://{local}/metrics");
                tracing::info!(%local, "serving Prometheus metrics at /metrics");
                tasks.push(task);
            }
            Err(e) => {
                handle.shutdown().await;
                return fail(
                    EXIT_FAILURE,
                    format!(
                        "{}: key `metrics`: cannot listen on {addr}: {e}",
                        config_path.display()
                    ),
                );
            }
        }
    }
    tasks.push(tokio::spawn(drain_deliveries(handle.clone())));
    tasks.push(tokio::spawn(watch_registry(
        handle.clone(),
        registry_path,
        version,
        members,
        registry_stamp,
    )));

    let signal = shutdown.wait().await;
    tracing::info!(signal, "shutting down");
    handle.shutdown().await;
    for t in tasks {
        t.abort();
    }
    0
}

async fn serve_metrics(
    addr: SocketAddr,
    handle: NodeHandle,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut registry = MetricsRegistry::default();
    handle.register_metrics(&mut registry);
    let task = tokio::spawn(async move {
        if let Err(e) = prom::serve(listener, move || prom::encode(&registry)).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((local, task))
}

/// Consumes the node's deliveries: this binary has no application, it logs and counts them.
async fn drain_deliveries(handle: NodeHandle) {
    let Some(mut deliveries) = handle.take_deliveries() else {
        tracing::error!("the node's deliveries were already taken");
        return;
    };
    while let Some(d) = deliveries.recv().await {
        tracing::debug!(
            artifact = %d.artifact.id.to_hex(),
            kind = d.artifact.kind.0,
            size = d.artifact.data.len(),
            from = %d.from.to_hex(),
            "delivered"
        );
    }
}

/// The members of a registry in a comparable form.
fn fingerprint(r: &Registry) -> Vec<(NodeId, SocketAddr)> {
    let mut v: Vec<(NodeId, SocketAddr)> = r.members.iter().map(|m| (m.id, m.addr)).collect();
    v.sort();
    v
}

/// What identifies a version of a file cheaply: its modification time and size.
type Stamp = (SystemTime, u64);

/// The file's modification time and size (a metadata read: cheap enough for the runtime thread).
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-reads the registry file when its modification time or size changes (checked every
/// second) or on SIGHUP, and hands valid new versions to the node. An invalid file is reported
/// and the registry in force is kept.
async fn watch_registry(
    handle: NodeHandle,
    path: PathBuf,
    mut version: u64,
    mut members: Vec<(NodeId, SocketAddr)>,
    mut last: Option<Stamp>,
) {
    let mut hangup = Hangup::new();
    let mut tick = tokio::time::interval(REGISTRY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            () = hangup.recv() => true,
        };
        let now = stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        let registry = match load_registry(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "registry not reloaded; keeping version {version}");
                continue;
            }
        };
        let new_members = fingerprint(&registry);
        if registry.version < version {
            tracing::warn!(
                offered = registry.version,
                current = version,
                "registry file holds an older version; ignored"
            );
            continue;
        }
        if registry.version == version && new_members == members {
            tracing::debug!(version, "registry unchanged");
            continue;
        }
        if registry.version == version {
            tracing::warn!(version, "registry members changed without a version bump");
        }
        let new_version = registry.version;
        let count = new_members.len();
        match handle.update_registry(registry).await {
            Ok(()) => {
                tracing::info!(version = new_version, members = count, "registry updated");
                version = new_version;
                members = new_members;
            }
            Err(NodeError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "registry update refused"),
        }
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
    use crate::config::Tuning;
    use p2p_core::Decision;
    use p2p_tokio::NodeIdentity;

    #[test]
    fn a_tuned_artifact_size_takes_the_codec_limits_along() {
        for size in [1 << 10, 1 << 20] {
            let file = NodeFile {
                path: PathBuf::from("node.toml"),
                listen: "127.0.0.1:0".parse().unwrap(),
                identity: NodeIdentity::generate().unwrap(),
                registry: PathBuf::from("registry.toml"),
                metrics: None,
                record_trace: None,
                log_level: None,
                priorities: Vec::new(),
                default_decision: Decision::Drop,
                tuning: Tuning {
                    max_artifact_size: Some(size),
                    ..Tuning::default()
                },
            };
            let cfg = node_config(file, None);
            assert_eq!(cfg.core.max_artifact_size, size);
            assert_eq!(cfg.mux.limits, NodeConfig::codec_limits(&cfg.core));
            assert!(cfg.mux.limits.max_message_size > size as usize);
            cfg.validate().unwrap();
        }
    }
}
