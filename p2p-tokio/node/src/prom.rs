//! Prometheus text exposition (format 0.0.4) of a node's [`NodeMetrics`], and a tiny HTTP/1.1
//! server answering `GET /metrics` with it.
//!
//! Every counter and gauge of [`NodeMetrics`] (and of the core's [`p2p_core::Metrics`] inside it)
//! is rendered with its `# HELP` and `# TYPE` lines; counters end in `_total`. The structs are
//! destructured field by field, so adding a field without rendering it does not compile.
//!
//! The server reads at most [`MAX_REQUEST_HEAD`] bytes of a request head, gives a client
//! [`REQUEST_TIMEOUT`] to send it, serves at most [`MAX_CONNECTIONS`] clients at once, and closes
//! every connection after one response. It answers `GET /metrics` (and `HEAD /metrics`) with
//! `200`, any other path with `404`, any other method with `405`, and a malformed head with `400`.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use p2p_tokio::NodeMetrics;

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest request head (request line and headers) the server reads.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;

/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once; further connections wait in the listener's backlog.
pub const MAX_CONNECTIONS: usize = 32;

/// Whether a metric only grows or may go up and down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MetricType {
    Counter,
    Gauge,
}

struct Out {
    text: String,
}

impl Out {
    fn metric(&mut self, name: &str, ty: MetricType, help: &str, value: u64) {
        let (ty_name, full) = match ty {
            MetricType::Counter => ("counter", format!("p2p_{name}_total")),
            MetricType::Gauge => ("gauge", format!("p2p_{name}")),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {full} {help}");
        let _ = writeln!(self.text, "# TYPE {full} {ty_name}");
        let _ = writeln!(self.text, "{full} {value}");
    }
}

/// Renders `m` in the Prometheus text exposition format 0.0.4: one `# HELP`, one `# TYPE` and one
/// sample line per metric, names prefixed with `p2p_`.
pub fn render(m: &NodeMetrics) -> String {
    use MetricType::{Counter, Gauge};
    let &NodeMetrics {
        core,
        bytes_written,
        bytes_read,
        connections_accepted,
        connections_dialed,
        connections_refused,
        handshake_failures,
        dial_failures,
        peers_connected,
        disconnects,
        protocol_errors,
        idle_timeouts,
        send_queue_overflows,
        keepalives_sent,
        messages_received,
        messages_sent,
        congestion_events,
        deliveries,
        deliveries_discarded,
    } = m;
    let p2p_core::Metrics {
        adverts_received,
        adverts_dropped,
        pushes_received,
        requests_sent,
        responses_received,
        bytes_received,
        delivered,
        duplicates,
        retries,
        timeouts,
        bad_data,
        peers_disconnected,
        requests_served,
        not_found_sent,
        bytes_served,
        tracked_adverts,
        pending_downloads,
        in_flight,
        in_flight_bytes,
        pool_artifacts,
        pool_bytes,
        connected_peers,
    } = core;
    let mut o = Out {
        text: String::with_capacity(8 << 10),
    };
    // The driver's socket-level figures.
    o.metric(
        "socket_bytes_written",
        Counter,
        "Bytes written to sockets, TLS records included.",
        bytes_written,
    );
    o.metric(
        "socket_bytes_read",
        Counter,
        "Bytes read from sockets, TLS records included.",
        bytes_read,
    );
    o.metric(
        "connections_accepted",
        Counter,
        "Inbound connections that completed the handshake.",
        connections_accepted,
    );
    o.metric(
        "connections_dialed",
        Counter,
        "Outbound connections that completed the handshake.",
        connections_dialed,
    );
    o.metric(
        "connections_refused",
        Counter,
        "Connections refused or failed before completing the handshake.",
        connections_refused,
    );
    o.metric(
        "handshake_failures",
        Counter,
        "Handshakes that failed otherwise (timeout, IO error, bad hello, TLS alert).",
        handshake_failures,
    );
    o.metric(
        "dial_failures",
        Counter,
        "Dial attempts that did not produce a connection.",
        dial_failures,
    );
    o.metric(
        "peers_connected",
        Gauge,
        "Peers with an established connection.",
        peers_connected,
    );
    o.metric(
        "disconnects",
        Counter,
        "Established connections that ended (for any reason).",
        disconnects,
    );
    o.metric(
        "protocol_errors",
        Counter,
        "Connections cut because the peer broke the wire protocol.",
        protocol_errors,
    );
    o.metric(
        "idle_timeouts",
        Counter,
        "Connections cut because nothing was read for the idle timeout.",
        idle_timeouts,
    );
    o.metric(
        "send_queue_overflows",
        Counter,
        "Connections cut because the peer's send queue hit its hard cap.",
        send_queue_overflows,
    );
    o.metric(
        "keepalives_sent",
        Counter,
        "Keepalive messages sent.",
        keepalives_sent,
    );
    o.metric(
        "messages_received",
        Counter,
        "Messages received from peers and fed to the core (keepalives excluded).",
        messages_received,
    );
    o.metric(
        "messages_sent",
        Counter,
        "Messages handed to the multiplexers for sending.",
        messages_sent,
    );
    o.metric(
        "congestion_events",
        Counter,
        "Times a peer's send queue passed its high-water mark.",
        congestion_events,
    );
    o.metric(
        "deliveries",
        Counter,
        "Artifacts handed to the application's delivery stream.",
        deliveries,
    );
    o.metric(
        "deliveries_discarded",
        Counter,
        "Deliveries discarded because the application dropped its delivery stream.",
        deliveries_discarded,
    );
    // The core's figures.
    o.metric(
        "adverts_received",
        Counter,
        "Adverts received (each advert of a batch counts).",
        adverts_received,
    );
    o.metric(
        "adverts_dropped",
        Counter,
        "Adverts and pushes not kept (unwanted, table full, duplicate, inconsistent).",
        adverts_dropped,
    );
    o.metric(
        "pushes_received",
        Counter,
        "Pushed artifacts received.",
        pushes_received,
    );
    o.metric("requests_sent", Counter, "Requests sent.", requests_sent);
    o.metric(
        "responses_received",
        Counter,
        "Responses received (valid or not).",
        responses_received,
    );
    o.metric(
        "artifact_bytes_received",
        Counter,
        "Artifact bytes received in responses and pushes.",
        bytes_received,
    );
    o.metric(
        "delivered",
        Counter,
        "Artifacts delivered to the application.",
        delivered,
    );
    o.metric(
        "duplicates",
        Counter,
        "Artifacts received again after delivery (wasted bytes).",
        duplicates,
    );
    o.metric(
        "retries",
        Counter,
        "Requests retried (timeout, not-found, bad data, disconnect, withdraw).",
        retries,
    );
    o.metric("timeouts", Counter, "Requests that timed out.", timeouts);
    o.metric(
        "bad_data",
        Counter,
        "Artifacts received whose bytes did not match their id or size.",
        bad_data,
    );
    o.metric(
        "peers_disconnected",
        Counter,
        "Peers disconnected by the core.",
        peers_disconnected,
    );
    o.metric(
        "requests_served",
        Counter,
        "Requests answered with the artifact.",
        requests_served,
    );
    o.metric(
        "not_found_sent",
        Counter,
        "Requests answered with not-found.",
        not_found_sent,
    );
    o.metric(
        "artifact_bytes_served",
        Counter,
        "Artifact bytes sent in responses and pushes.",
        bytes_served,
    );
    o.metric(
        "tracked_adverts",
        Gauge,
        "Adverts tracked (one per advertising peer and artifact).",
        tracked_adverts,
    );
    o.metric(
        "pending_downloads",
        Gauge,
        "Artifacts tracked for download.",
        pending_downloads,
    );
    o.metric(
        "in_flight_requests",
        Gauge,
        "Requests in flight (not counting timed-out ones still awaited).",
        in_flight,
    );
    o.metric(
        "in_flight_bytes",
        Gauge,
        "Bytes requested and not yet received.",
        in_flight_bytes,
    );
    o.metric(
        "pool_artifacts",
        Gauge,
        "Artifacts in the local pool.",
        pool_artifacts,
    );
    o.metric("pool_bytes", Gauge, "Bytes in the local pool.", pool_bytes);
    o.metric(
        "core_connected_peers",
        Gauge,
        "Peers the core counts as connected.",
        connected_peers,
    );
    o.text
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted, answering with the
/// text `source` returns (typically `move || prom::render(&handle.metrics())`).
///
/// Errors of single connections are logged at debug level and never end the server; an error of
/// `accept` itself (other than running out of file descriptors, which is retried after a pause)
/// is returned.
pub async fn serve<F>(listener: TcpListener, source: F) -> io::Result<()>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let source = Arc::new(source);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = match Arc::clone(&permits).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return Ok(()),
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient_accept_error(&e) => {
                tracing::warn!(error = %e, "metrics server: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*source).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
            drop(permit);
        });
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    ) || e.raw_os_error().is_some_and(|c| c == 23 || c == 24) // ENFILE, EMFILE
}

async fn answer(
    mut stream: TcpStream,
    source: &(dyn Fn() -> String + Send + Sync),
) -> io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head timed out",
            ));
        }
    };
    let response = match head {
        Some(head) => respond(&head, source),
        None => reply(
            400,
            "Bad Request",
            "text/plain",
            b"bad request\n".to_vec(),
            false,
        ),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Reads until the blank line that ends a request head; `None` if the head is too long or the
/// client closed the connection first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf.len() + n > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

/// The full HTTP response to a request head.
fn respond(head: &[u8], source: &(dyn Fn() -> String + Send + Sync)) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reply(
            400,
            "Bad Request",
            "text/plain",
            b"bad request\n".to_vec(),
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return reply(
            400,
            "Bad Request",
            "text/plain",
            b"bad request\n".to_vec(),
            false,
        );
    }
    let path = target.split('?').next().unwrap_or(target);
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            reply(200, "OK", CONTENT_TYPE, source().into_bytes(), head_only)
        }
        ("GET" | "HEAD", _) => reply(
            404,
            "Not Found",
            "text/plain",
            b"not found\n".to_vec(),
            head_only,
        ),
        _ => reply(
            405,
            "Method Not Allowed",
            "text/plain",
            b"method not allowed\n".to_vec(),
            false,
        ),
    }
}

fn reply(status: u16, reason: &str, content_type: &str, body: Vec<u8>, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sample() -> NodeMetrics {
        NodeMetrics {
            bytes_written: 12345,
            peers_connected: 3,
            core: p2p_core::Metrics {
                delivered: 7,
                pool_bytes: 99,
                ..p2p_core::Metrics::default()
            },
            ..NodeMetrics::default()
        }
    }

    #[test]
    fn every_metric_has_help_type_and_one_sample() {
        let text = render(&sample());
        let mut names = HashSet::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 3, 0);
        for triple in lines.chunks(3) {
            let help = triple[0].strip_prefix("# HELP ").expect("HELP line");
            let name = help.split(' ').next().unwrap();
            let ty = triple[1]
                .strip_prefix(&format!("# TYPE {name} "))
                .expect("TYPE line of the same metric");
            assert!(ty == "counter" || ty == "gauge", "{ty}");
            assert_eq!(ty == "counter", name.ends_with("_total"), "{name}");
            let (sample_name, value) = triple[2].split_once(' ').expect("sample line");
            assert_eq!(sample_name, name);
            value.parse::<u64>().expect("integer value");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(names.insert(name.to_owned()), "duplicate metric {name}");
        }
        // 18 driver figures and the 22 of the core.
        assert_eq!(names.len(), 40);
    }

    #[test]
    fn values_are_rendered_under_their_names() {
        let text = render(&sample());
        assert!(text.contains("\np2p_socket_bytes_written_total 12345\n"));
        assert!(text.contains("\np2p_peers_connected 3\n"));
        assert!(text.contains("\np2p_delivered_total 7\n"));
        assert!(text.contains("\np2p_pool_bytes 99\n"));
    }

    #[test]
    fn responses_by_method_and_path() {
        let src = || "x 1\n".to_owned();
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\nHost: a", &src)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(ok.ends_with("\r\n\r\nx 1\n"));
        let query = String::from_utf8(respond(b"GET /metrics?x=1 HTTP/1.0", &src)).unwrap();
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n"));
        let head = String::from_utf8(respond(b"HEAD /metrics HTTP/1.1", &src)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        let missing = String::from_utf8(respond(b"GET / HTTP/1.1", &src)).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let post = String::from_utf8(respond(b"POST /metrics HTTP/1.1", &src)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        for bad in [
            &b"garbage"[..],
            b"GET /metrics",
            b"GET /metrics SPDY/3",
            b"",
        ] {
            let r = String::from_utf8(respond(bad, &src)).unwrap();
            assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        }
    }

    #[test]
    fn head_end_is_found_with_crlf_or_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
