//! The local application API of `p2p-node run`: HTTP/1.1 on a loopback address by default,
//! JSON for metadata, raw bytes for artifact bodies. See `docs/node-api.md` for the reference.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/artifacts?kind=K[&attr=S \| &attr_hex=H]` | publish the body; `201` with the id |
//! | `GET /v1/artifacts[?from=N&limit=L]` | the pool, a page at a time |
//! | `GET /v1/artifacts/{id}` | an artifact's bytes (`404` if not held) |
//! | `DELETE /v1/artifacts/{id}` | remove from the pool (`404` if not held) |
//! | `GET /v1/deliveries` | deliveries as they arrive, one JSON object per line |
//! | `GET /v1/status` | node id, peers, pool, in-flight, rates |
//! | `POST /v1/reevaluate` | ask the priority function again about every kept advert |
//! | `GET /metrics` | Prometheus text format |
//!
//! Bounds: an upload is refused with `413` once it passes the node's `max_artifact_size`
//! (at once if its `Content-Length` says so), and at most [`MAX_CONCURRENT_UPLOADS`] uploads are
//! read at once (others wait), so the API holds at most that many artifacts' bytes beyond the
//! pool. An upload that sends nothing for [`UPLOAD_IDLE_TIMEOUT`] is refused with `408`.
//! Deliveries are fanned out through a broadcast channel of [`WATCH_BUFFER`] events (metadata
//! only, no artifact bytes); a watcher that falls behind by more is told how many it missed
//! (`{"event":"lagged","skipped":N}`) instead of growing memory. At most [`MAX_WATCHERS`]
//! watchers at once; more get `503`. The server serves at most
//! [`ServeLimits::max_connections`] connections at once and closes one whose client sends no
//! request head within [`ServeLimits::header_timeout`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use p2p_core::Buffer;
use p2p_store::FileStorage;
use p2p_tokio::{ArtifactId, Delivered, Deliveries, Kind, NodeError, NodeHandle, NodeMetrics};
use prometheus_client::registry::Registry as MetricsRegistry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;

use crate::prom;
use crate::reload::ReloadMetrics;

/// Uploads read at once; further uploads wait for one to finish.
pub const MAX_CONCURRENT_UPLOADS: usize = 2;

/// Longest pause between two pieces of an upload's body before it is refused.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Uploads of at least this many bytes (with a known length) go into a file of the node's
/// storage, when it has one.
pub const FILE_UPLOAD_MIN: u64 = 1 << 20;

/// Delivery events kept for watchers; a watcher further behind skips the oldest.
pub const WATCH_BUFFER: usize = 1024;

/// Watchers of `/v1/deliveries` at once.
pub const MAX_WATCHERS: usize = 64;

/// A watcher idle this long gets a `{"event":"heartbeat"}` line, so that a client that went
/// away is noticed (its slot freed) at the next write.
pub const WATCH_HEARTBEAT: Duration = Duration::from_secs(10);

/// Artifacts listed in one page of `GET /v1/artifacts` by default, and at most.
pub const LIST_PAGE: usize = 1000;
/// The largest `limit` of `GET /v1/artifacts`.
pub const LIST_PAGE_MAX: usize = 10_000;

/// How often the rates of `/v1/status` are sampled.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// What the API serves, shared by its handlers.
pub struct ApiState {
    handle: NodeHandle,
    metrics: MetricsRegistry,
    reloads: Arc<ReloadMetrics>,
    events: broadcast::Sender<Arc<str>>,
    max_upload: u64,
    deliveries_dir: Option<PathBuf>,
    storage: Option<Arc<FileStorage>>,
    uploads: Semaphore,
    watchers: Arc<Semaphore>,
    rates: Mutex<Rates>,
    started: Instant,
}

/// Per-second rates from the last two samples of the metrics.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    deliveries: f64,
    artifact_bytes_in: f64,
    socket_bytes_in: f64,
    socket_bytes_out: f64,
}

impl Rates {
    fn between(a: &NodeMetrics, b: &NodeMetrics, secs: f64) -> Rates {
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Rates {
            deliveries: per_s(a.core.delivered, b.core.delivered),
            artifact_bytes_in: per_s(a.core.bytes_received, b.core.bytes_received),
            socket_bytes_in: per_s(a.bytes_read, b.bytes_read),
            socket_bytes_out: per_s(a.bytes_written, b.bytes_written),
        }
    }
}

impl ApiState {
    /// The API of the node behind `handle`: uploads up to `max_upload` bytes (the node's
    /// `max_artifact_size`), `/metrics` from the node's and the registry watcher's metrics, and
    /// `GET /v1/artifacts/{id}` falling back to `deliveries_dir` for artifacts not pooled.
    /// With `storage` (the node's `storage_dir`), uploads of 1 MiB or more with a known length
    /// are read into a file of it, and `/v1/status` reports its use.
    pub fn new(
        handle: NodeHandle,
        reloads: Arc<ReloadMetrics>,
        max_upload: u64,
        deliveries_dir: Option<PathBuf>,
        storage: Option<Arc<FileStorage>>,
    ) -> Arc<Self> {
        let mut metrics = MetricsRegistry::default();
        handle.register_metrics(&mut metrics);
        reloads.register(&mut metrics);
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Arc::new(ApiState {
            handle,
            metrics,
            reloads,
            events,
            max_upload,
            deliveries_dir,
            storage,
            uploads: Semaphore::new(MAX_CONCURRENT_UPLOADS),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            rates: Mutex::new(Rates::default()),
            started: Instant::now(),
        })
    }

    /// The sending side of the delivery fan-out, for [`fan_out`].
    pub fn events(&self) -> broadcast::Sender<Arc<str>> {
        self.events.clone()
    }
}

/// The API's routes (including `/metrics`).
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/artifacts", get(list).post(publish))
        .route("/v1/artifacts/{id}", get(fetch).delete(remove))
        .route("/v1/deliveries", get(watch))
        .route("/v1/reevaluate", post(reevaluate))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// `/metrics` alone, for a separate metrics listener.
pub fn metrics_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The HTTP server's own bounds.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Connections served at once; further ones wait in the listener's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request head (also between requests on a kept-alive
    /// connection); then the connection is closed.
    pub header_timeout: Duration,
}

impl Default for ServeLimits {
    /// 128 connections (room for [`MAX_WATCHERS`] watchers and as many other clients), 10 s
    /// for a request head.
    fn default() -> Self {
        ServeLimits {
            max_connections: 2 * MAX_WATCHERS,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` with the default [`ServeLimits`] until the task is aborted.
pub fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
    serve_with(listener, router, ServeLimits::default())
}

/// Serves `router` on `listener` (HTTP/1.1) within `limits` until the task is aborted. A failed
/// `accept` (out of file descriptors, a connection reset while queued) is logged and retried
/// after a pause; it never ends the server.
pub fn serve_with(listener: TcpListener, router: Router, limits: ServeLimits) -> JoinHandle<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "API server: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "API connection ended with an error");
                }
                drop(permit);
            });
        }
    })
}

/// Samples the node's metrics every second for the rates of `/v1/status`, until aborted.
pub fn sample_rates(state: Arc<ApiState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), state.handle.metrics());
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = (Instant::now(), state.handle.metrics());
            let secs = now.0.duration_since(last.0).as_secs_f64();
            if secs > 0.0 {
                *state.rates.lock().unwrap_or_else(PoisonError::into_inner) =
                    Rates::between(&last.1, &now.1, secs);
            }
            last = now;
        }
    })
}

/// Consumes the node's deliveries: logs each, writes it into `dir` if given (as `<hex id>`,
/// through a temporary name and a rename), and sends its event to the watchers. Returns when
/// the node shuts down.
pub async fn fan_out(
    mut deliveries: Deliveries,
    events: broadcast::Sender<Arc<str>>,
    dir: Option<PathBuf>,
) {
    while let Some(d) = deliveries.recv().await {
        tracing::debug!(
            artifact = %d.artifact.id.to_hex(),
            kind = d.artifact.kind.0,
            size = d.artifact.data.len(),
            from = %d.from.to_hex(),
            "delivered"
        );
        if let Some(dir) = &dir {
            let (dir, id, data) = (dir.clone(), d.artifact.id, d.artifact.data.clone());
            let written = tokio::task::spawn_blocking(move || write_delivered(&dir, id, &data));
            match written.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    artifact = %d.artifact.id.to_hex(),
                    error = %e,
                    "cannot write the delivered artifact to deliveries_dir"
                ),
                Err(e) => tracing::warn!(error = %e, "the deliveries_dir writer failed"),
            }
        }
        // No watcher is not an error: the event is simply not kept.
        let _ = events.send(delivery_event(&d, SystemTime::now()));
    }
}

/// Writes `data` to `dir/<hex id>` through `dir/.<hex id>.tmp` and a rename, so that a reader
/// of the directory never sees a partial artifact.
pub fn write_delivered(dir: &Path, id: ArtifactId, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let hex = id.to_hex();
    let tmp = dir.join(format!(".{hex}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(hex))
}

/// The JSON line of a delivery event.
fn delivery_event(d: &Delivered, at: SystemTime) -> Arc<str> {
    let time_ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    let v = json!({
        "event": "delivered",
        "id": d.artifact.id.to_hex(),
        "kind": d.artifact.kind.0,
        "size": d.artifact.data.len(),
        "source": d.from.to_hex(),
        "time_ms": time_ms,
    });
    Arc::from(format!("{v}\n"))
}

/// The first line of every watch: the watcher is subscribed, and sees every delivery from here.
pub const WATCHING: &str = "{\"event\":\"watching\"}\n";

/// The lines a watcher with `rx` receives: [`WATCHING`], then each event, a `lagged` line when
/// it fell behind by more than the channel keeps, a `heartbeat` line after `heartbeat` without
/// events; it ends when the node shuts down (the sender is dropped).
pub fn watch_lines(
    rx: broadcast::Receiver<Arc<str>>,
    heartbeat: Duration,
) -> impl futures_util::Stream<Item = Arc<str>> + Send + 'static {
    let first = futures_util::stream::once(std::future::ready(Arc::<str>::from(WATCHING)));
    let events = futures_util::stream::unfold(rx, move |mut rx| async move {
        let line = tokio::select! {
            r = rx.recv() => match r {
                Ok(line) => line,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Arc::from(format!("{}\n", json!({"event": "lagged", "skipped": n})))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(heartbeat) => Arc::from("{\"event\":\"heartbeat\"}\n"),
        };
        Some((line, rx))
    });
    futures_util::StreamExt::chain(first, events)
}

/// An error answer: a status and a JSON `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        use p2p_core::InputError;
        let status = match &e {
            NodeError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::Rejected(InputError::ArtifactTooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            NodeError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see /v1/status, /v1/artifacts, /v1/deliveries, /v1/reevaluate, /metrics",
    )
}

fn parse_id(s: &str) -> Result<ArtifactId, ApiError> {
    ArtifactId::from_hex(&s.to_ascii_lowercase()).ok_or_else(|| {
        ApiError::bad_request(format!("`{s}` is not an artifact id (64 hex digits)"))
    })
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        prom::encode(&s.metrics),
    )
        .into_response()
}

/// What the node's file storage made: files and their bytes (assembled or uploaded
/// artifacts), and buffers it made in memory for want of a file, with the last reason.
fn storage_json(files: &FileStorage) -> Value {
    json!({
        "dir": files.dir().display().to_string(),
        "files": files.mapped(),
        "bytes": files.mapped_bytes(),
        "fallbacks": files.fallbacks(),
        "last_error": files.last_error(),
    })
}

async fn status(State(s): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let peers = s.handle.connected_peers().await?;
    let topo = s.handle.topology().await?;
    let m = s.handle.metrics();
    let r = *s.rates.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(Json(json!({
        "node_id": s.handle.node_id().to_hex(),
        "max_artifact_size": s.max_upload,
        "listen": s.handle.local_addr().to_string(),
        "uptime_s": s.started.elapsed().as_secs(),
        "registry": { "version": s.reloads.version(), "members": s.reloads.members() },
        "peers": peers.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "topology": topology_json(&topo),
        "pool": { "artifacts": m.core.pool_artifacts, "bytes": m.core.pool_bytes },
        "in_flight": {
            "requests": m.core.in_flight,
            "bytes": m.core.in_flight_bytes,
            "chunks": m.core.chunks_in_flight,
        },
        "swarms": m.core.swarms,
        "incomplete_bytes": m.core.incomplete_bytes,
        "storage": s.storage.as_deref().map(storage_json),
        "delivered_total": m.core.delivered,
        "rates": {
            "deliveries_per_s": r.deliveries,
            "artifact_bytes_in_per_s": r.artifact_bytes_in,
            "socket_bytes_in_per_s": r.socket_bytes_in,
            "socket_bytes_out_per_s": r.socket_bytes_out,
        },
    })))
}

/// The configured topology, this node's neighbours, and (for a derived topology) the whole
/// graph's degrees and whether it is connected.
fn topology_json(t: &p2p_tokio::TopologyView) -> Value {
    use p2p_transport::topology::{Topology, degree_stats, is_connected};
    let setting = match &t.topology {
        Topology::All => "all".to_string(),
        Topology::Degree(k) => format!("degree {k}"),
        Topology::Explicit(list) => format!("explicit list of {}", list.len()),
    };
    let graph = t.graph().map(|g| {
        let d = degree_stats(&g);
        json!({
            "nodes": d.nodes,
            "edges": d.edges,
            "min_degree": d.min,
            "max_degree": d.max,
            "connected": is_connected(&g),
        })
    });
    json!({
        "setting": setting,
        "neighbours": t.neighbours.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "graph": graph,
    })
}

#[derive(Deserialize)]
struct PublishParams {
    kind: Option<String>,
    attr: Option<String>,
    attr_hex: Option<String>,
}

fn parse_kind(kind: Option<&str>) -> Result<Kind, ApiError> {
    let k = kind.ok_or_else(|| ApiError::bad_request("missing query parameter `kind`"))?;
    k.parse::<u16>()
        .map(Kind)
        .map_err(|_| ApiError::bad_request(format!("kind `{k}` is not a number in 0..=65535")))
}

fn parse_attr(p: &PublishParams) -> Result<Bytes, ApiError> {
    match (&p.attr, &p.attr_hex) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give `attr` (a string) or `attr_hex` (hex bytes), not both",
        )),
        (Some(a), None) => Ok(Bytes::copy_from_slice(a.as_bytes())),
        (None, Some(h)) => hex::decode(h)
            .map(Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("attr_hex `{h}` is not hex: {e}"))),
        (None, None) => Ok(Bytes::new()),
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the artifact is larger than the node's max_artifact_size of {max} bytes"),
    )
}

/// Hands each data frame of `body` to `take`, stopping at the first error.
async fn read_frames(
    mut body: Body,
    mut take: impl FnMut(Bytes) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    loop {
        let frame = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload sent nothing for {} s",
                        UPLOAD_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("cannot read the body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            take(data)?;
        }
    }
}

/// Reads `body` into one buffer, refusing it once it passes `max` bytes.
async fn read_body(body: Body, length: Option<u64>, max: u64) -> Result<Bytes, ApiError> {
    // With a known length the buffer is allocated once, at its final size.
    let mut buf = BytesMut::with_capacity(length.unwrap_or(0).min(max) as usize);
    read_frames(body, |data| {
        if buf.len() as u64 + data.len() as u64 > max {
            return Err(too_large(max));
        }
        buf.extend_from_slice(&data);
        Ok(())
    })
    .await?;
    Ok(buf.freeze())
}

/// Reads `body`, of exactly `length` bytes, into a file of `files` mapped into memory.
async fn read_body_to_file(
    body: Body,
    length: u64,
    files: &FileStorage,
) -> Result<Bytes, ApiError> {
    let mut buf = files.map(length as usize).map_err(|e| {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "cannot store {length} bytes in {}: {e}",
                files.dir().display()
            ),
        )
    })?;
    let mut at = 0usize;
    let short = |at: usize| {
        ApiError::bad_request(format!(
            "the body is not the {length} bytes its Content-Length says (at least {at})"
        ))
    };
    read_frames(body, |data| {
        let end = at + data.len();
        let dst = buf
            .as_mut_slice()
            .get_mut(at..end)
            .ok_or_else(|| short(end))?;
        dst.copy_from_slice(&data);
        at = end;
        Ok(())
    })
    .await?;
    if at as u64 != length {
        return Err(short(at));
    }
    Ok(Box::new(buf).freeze())
}

async fn publish(
    State(s): State<Arc<ApiState>>,
    Query(p): Query<PublishParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let kind = parse_kind(p.kind.as_deref())?;
    let attr = parse_attr(&p)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > s.max_upload) {
        return Err(too_large(s.max_upload));
    }
    let _permit = s
        .uploads
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    // A large upload with a known length goes into a file, if the node has a storage.
    let data = match (&s.storage, length) {
        (Some(files), Some(len)) if len >= FILE_UPLOAD_MIN => {
            read_body_to_file(body, len, files).await?
        }
        _ => read_body(body, length, s.max_upload).await?,
    };
    let size = data.len();
    let id = s.handle.publish(kind, attr, data).await?;
    tracing::info!(artifact = %id.to_hex(), kind = kind.0, size, "published through the API");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.to_hex(), "kind": kind.0, "size": size })),
    ))
}

#[derive(Deserialize)]
struct ListParams {
    from: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<Arc<ApiState>>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let from = match &p.from {
        Some(f) => f
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("from `{f}` is not a position")))?,
        None => 0,
    };
    let limit = match &p.limit {
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=LIST_PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit `{l}` is not a number in 1..={LIST_PAGE_MAX}"
                )));
            }
        },
        None => LIST_PAGE,
    };
    let page = s.handle.pool_list(from, limit).await?;
    let m = s.handle.metrics();
    let artifacts: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id.to_hex(),
                "kind": e.kind.0,
                "size": e.size,
                "attr_hex": hex::encode(&e.attr),
            })
        })
        .collect();
    Ok(Json(json!({
        "artifacts": artifacts,
        "next": page.next,
        "pool": { "artifacts": m.core.pool_artifacts, "bytes": m.core.pool_bytes },
    })))
}

async fn fetch(
    State(s): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let octets = HeaderValue::from_static("application/octet-stream");
    if let Some(a) = s.handle.get(id).await? {
        let mut r = Response::new(Body::from(a.data));
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, octets);
        h.insert("x-p2p-kind", HeaderValue::from(a.kind.0));
        if let Ok(v) = HeaderValue::from_str(&hex::encode(&a.attr)) {
            h.insert("x-p2p-attr-hex", v);
        }
        return Ok(r);
    }
    if let Some(dir) = &s.deliveries_dir {
        let path = dir.join(id.to_hex());
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(data)) => {
                let mut r = Response::new(Body::from(data));
                r.headers_mut().insert(header::CONTENT_TYPE, octets);
                return Ok(r);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read the delivered copy: {e}"),
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                ));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("artifact {} is not held", id.to_hex()),
    ))
}

async fn remove(
    State(s): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if s.handle.get(id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("artifact {} is not in the pool", id.to_hex()),
        ));
    }
    s.handle.remove(id).await?;
    tracing::info!(artifact = %id.to_hex(), "removed through the API");
    Ok(Json(json!({ "removed": id.to_hex() })))
}

async fn reevaluate(State(s): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    s.handle.reevaluate().await?;
    Ok(Json(json!({ "reevaluated": true })))
}

async fn watch(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let permit = Arc::clone(&s.watchers).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_WATCHERS} watchers already follow the deliveries"),
        )
    })?;
    let lines = watch_lines(s.events.subscribe(), WATCH_HEARTBEAT);
    // The permit lives as long as the stream, freed when the client goes away.
    let lines = futures_util::StreamExt::map(lines, move |line| {
        let _ = &permit;
        Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(line.as_bytes()))
    });
    let mut r = Response::new(Body::from_stream(lines));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_lagging_watcher_skips_events_and_memory_stays_bounded() {
        let (tx, _) = broadcast::channel::<Arc<str>>(8);
        let slow = tx.subscribe();
        for i in 0..10_000 {
            let _ = tx.send(Arc::from(format!("{{\"n\":{i}}}\n")));
            // The channel never holds more than its capacity, whoever lags.
            assert!(tx.len() <= 8);
        }
        let mut lines = Box::pin(watch_lines(slow, Duration::from_secs(60)));
        assert_eq!(&*lines.next().await.unwrap(), WATCHING);
        let first = lines.next().await.unwrap();
        assert_eq!(&*first, "{\"event\":\"lagged\",\"skipped\":9992}\n");
        // Then the last 8 events, in order.
        for i in 9992..10_000 {
            assert_eq!(&*lines.next().await.unwrap(), format!("{{\"n\":{i}}}\n"));
        }
        drop(tx);
        assert!(
            lines.next().await.is_none(),
            "the stream ends with the node"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_watcher_gets_heartbeats() {
        let (tx, rx) = broadcast::channel::<Arc<str>>(8);
        let mut lines = Box::pin(watch_lines(rx, Duration::from_secs(10)));
        assert_eq!(&*lines.next().await.unwrap(), WATCHING);
        assert_eq!(&*lines.next().await.unwrap(), "{\"event\":\"heartbeat\"}\n");
        tx.send(Arc::from("x\n")).unwrap();
        assert_eq!(&*lines.next().await.unwrap(), "x\n");
    }

    #[tokio::test]
    async fn an_oversize_upload_is_refused_before_the_rest_of_it_is_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        // 1000 pieces of 1 KiB, against a limit of 10 KiB.
        let pieces = futures_util::stream::iter(0..1000).map(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(Bytes::from(vec![0u8; 1024]))
        });
        let e = read_body(Body::from_stream(pieces), None, 10 << 10)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            pulled.load(Ordering::Relaxed),
            11,
            "read stopped at the first excess"
        );
        let ok = read_body(Body::from(vec![7u8; 10 << 10]), Some(10 << 10), 10 << 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10 << 10);
    }

    /// Sends `GET /v1/x` on `s` and returns the status line, or `None` if the connection was
    /// closed without an answer.
    async fn ask(s: &mut tokio::net::TcpStream) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /v1/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .ok()?;
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().next().map(str::to_owned)
    }

    #[tokio::test]
    async fn connections_are_bounded_and_a_silent_one_is_closed_at_the_head_timeout() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(not_found);
        let limits = ServeLimits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
        };
        let server = serve_with(listener, router, limits);
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Both slots are held by silent clients: a third waits in the backlog.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), ask(&mut third))
            .await
            .expect("answered once a silent client was dropped");
        assert_eq!(answer.as_deref(), Some("HTTP/1.1 404 Not Found"));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "served before a slot was free: {:?}",
            started.elapsed()
        );
        // The silent ones were closed by the server.
        for mut s in silent {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                .await
                .expect("closed within the head timeout");
            assert!(matches!(n, Ok(0) | Err(_)));
        }
        server.abort();
    }

    #[test]
    fn delivered_files_appear_whole_under_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = ArtifactId([7; 32]);
        write_delivered(dir.path(), id, b"hello").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(id.to_hex())).unwrap(),
            b"hello"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(parse_kind(None).unwrap_err().message.contains("missing"));
        assert_eq!(parse_kind(Some("7")).unwrap(), Kind(7));
        assert!(
            parse_kind(Some("70000"))
                .unwrap_err()
                .message
                .contains("0..=65535")
        );
        assert!(
            parse_id("xyz")
                .unwrap_err()
                .message
                .contains("64 hex digits")
        );
        let p = |attr: Option<&str>, attr_hex: Option<&str>| PublishParams {
            kind: None,
            attr: attr.map(str::to_owned),
            attr_hex: attr_hex.map(str::to_owned),
        };
        assert_eq!(parse_attr(&p(Some("ab"), None)).unwrap(), Bytes::from("ab"));
        assert_eq!(
            parse_attr(&p(None, Some("0aff"))).unwrap(),
            Bytes::from(vec![0x0a, 0xff])
        );
        assert!(parse_attr(&p(None, Some("0g"))).is_err());
        assert!(parse_attr(&p(Some("a"), Some("00"))).is_err());
    }
}
