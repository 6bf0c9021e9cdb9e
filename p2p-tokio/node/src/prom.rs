//! A tiny HTTP/1.1 server answering `GET /metrics` with a node's metrics in the Prometheus text
//! exposition format 0.0.4, as `prometheus-client` encodes its registry ([`encode`]).
//!
//! The server reads at most [`MAX_REQUEST_HEAD`] bytes of a request head, gives a client
//! [`REQUEST_TIMEOUT`] to send it, serves at most [`MAX_CONNECTIONS`] clients at once, and closes
//! every connection after one response. It answers `GET /metrics` (and `HEAD /metrics`) with
//! `200`, any other path with `404`, any other method with `405`, and a malformed head with `400`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The `Content-Type` of the Prometheus text format.
pub use prometheus_text::CONTENT_TYPE;

/// Largest request head (request line and headers) the server reads.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;

/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once; further connections wait in the listener's backlog.
pub const MAX_CONNECTIONS: usize = 32;

/// The metrics of `registry` in the Prometheus text exposition format 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(8 << 10);
    // Writing to a String cannot fail, and the node's collector only fails when its writer does.
    let _ = prometheus_text::encode(&mut text, registry);
    text
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted, answering with the
/// text `source` returns (typically `move || prom::encode(&registry)`).
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
