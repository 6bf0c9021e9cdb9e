//! A small HTTP/1.1 client of a running node's API ([`crate::api`]), as the CLI uses it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Time to connect to the API.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time for a metadata request (status, remove, list, ...) to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest JSON answer or error body read, and longest line of the deliveries stream.
pub const MAX_JSON: usize = 16 << 20;

/// Why a call of the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the node is not running there, or the connection failed.
    #[error("cannot reach the node's API at {addr}: {message}")]
    Unreachable {
        /// The API address.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The node answered with an error status.
    #[error("{status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The node's explanation.
        message: String,
    },
    /// The answer was not what the API sends.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The node took longer than [`REQUEST_TIMEOUT`].
    #[error("the node did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

/// A client of the API at one address.
#[derive(Clone, Debug)]
pub struct Client {
    addr: SocketAddr,
    http: HyperClient<HttpConnector, Upload>,
}

/// A request body: bytes in memory, or a file read a piece at a time.
type Upload = BoxBody<Bytes, std::io::Error>;

/// Bytes read from a file per piece of an upload.
pub const UPLOAD_PIECE: usize = 256 << 10;

/// The body of `file`, read [`UPLOAD_PIECE`] bytes at a time as the connection takes them.
fn file_body(file: std::fs::File) -> Upload {
    let pieces = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; UPLOAD_PIECE];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((file, buf))
        })
        .await;
        match read {
            Ok(Ok((_, buf))) if buf.is_empty() => None,
            Ok(Ok((file, buf))) => Some((Ok(Frame::data(Bytes::from(buf))), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    BodyExt::boxed(StreamBody::new(pieces))
}

/// Parameters of [`Client::publish`].
#[derive(Clone, Debug)]
pub struct PublishArgs {
    /// The artifact's kind.
    pub kind: u16,
    /// Its attribute bytes.
    pub attr: Vec<u8>,
}

impl Client {
    /// A client of the API at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Client { addr, http }
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let len = body.len() as u64;
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        self.send_body(method, path, body, len).await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Upload,
        len: u64,
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = format!("http://{}{path}", self.addr);
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(hyper::header::CONTENT_LENGTH, len)
            .body(body)
            .map_err(|e| ClientError::Protocol(format!("bad request {uri}: {e}")))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable {
                addr: self.addr,
                message: error_chain(&e),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = read_limited(resp.into_body(), MAX_JSON).await?;
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        Err(ClientError::Status { status, message })
    }

    async fn json(&self, method: Method, path: &str, body: Bytes) -> Result<Value, ClientError> {
        let call = async {
            let resp = self.send(method, path, body).await?;
            let bytes = read_limited(resp.into_body(), MAX_JSON).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("not JSON: {e}")))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Publishes the file at `path`, streamed from disk (the client holds one piece of it at a
    /// time); returns the API's answer (`id`, `kind`, `size`).
    pub async fn publish(&self, args: &PublishArgs, path: &Path) -> Result<Value, ClientError> {
        let cannot =
            |e: std::io::Error| ClientError::Io(format!("cannot read {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        let mut target = format!("/v1/artifacts?kind={}", args.kind);
        if !args.attr.is_empty() {
            target.push_str("&attr_hex=");
            target.push_str(&hex::encode(&args.attr));
        }
        let resp = self
            .send_body(Method::POST, &target, file_body(file), len)
            .await?;
        let bytes = read_limited(resp.into_body(), MAX_JSON).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("not JSON: {e}")))
    }

    /// Removes artifact `id` from the node's pool.
    pub async fn remove(&self, id: &str) -> Result<Value, ClientError> {
        self.json(Method::DELETE, &format!("/v1/artifacts/{id}"), Bytes::new())
            .await
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/status", Bytes::new()).await
    }

    /// One page of the node's pool from position `from`.
    pub async fn list(&self, from: u64, limit: usize) -> Result<Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/artifacts?from={from}&limit={limit}"),
            Bytes::new(),
        )
        .await
    }

    /// Asks the node to re-evaluate its priorities.
    pub async fn reevaluate(&self) -> Result<Value, ClientError> {
        self.json(Method::POST, "/v1/reevaluate", Bytes::new())
            .await
    }

    /// Streams artifact `id` into `out` (through `out` + `.part` and a rename, so that `out`
    /// never holds a partial artifact); returns the bytes written. `None` writes to stdout.
    pub async fn get(&self, id: &str, out: Option<&Path>) -> Result<u64, ClientError> {
        use std::io::Write;
        let resp = self
            .send(Method::GET, &format!("/v1/artifacts/{id}"), Bytes::new())
            .await?;
        let io = |e: std::io::Error| ClientError::Io(e.to_string());
        let part = out.map(|o| {
            let mut name = o.as_os_str().to_owned();
            name.push(".part");
            std::path::PathBuf::from(name)
        });
        let mut sink: Box<dyn Write> = match &part {
            Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                |e| ClientError::Io(format!("cannot create {}: {e}", p.display())),
            )?)),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut body = resp.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(error_chain(&e)))?;
            if let Ok(data) = frame.into_data() {
                sink.write_all(&data).map_err(io)?;
                written += data.len() as u64;
            }
        }
        sink.flush().map_err(io)?;
        drop(sink);
        if let (Some(part), Some(out)) = (part, out) {
            std::fs::rename(&part, out)
                .map_err(|e| ClientError::Io(format!("cannot write {}: {e}", out.display())))?;
        }
        Ok(written)
    }

    /// Follows the node's deliveries.
    pub async fn watch(&self) -> Result<Watch, ClientError> {
        let resp = self
            .send(Method::GET, "/v1/deliveries", Bytes::new())
            .await?;
        Ok(Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// The stream of delivery events of [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event (a JSON object with an `event` field: `delivered`, `lagged` or
    /// `heartbeat`); `None` when the node closed the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(format!("bad event line: {e}")));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Protocol(error_chain(&e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() > MAX_JSON {
                            return Err(ClientError::Protocol("an event line is too long".into()));
                        }
                    }
                }
            }
        }
    }
}

async fn read_limited(mut body: Incoming, max: usize) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Protocol(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(ClientError::Protocol(format!(
                    "the answer is larger than {max} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
