//! Connection setup: TLS with the registry-pinned configs, then the codec's [`Hello`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use p2p_core::NodeId;
use p2p_transport::codec::{self, DecodeError, HELLO_LEN, Hello};
use p2p_transport::tls::{PeerRejected, peer_node_id, rejection_reason, server_name_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::metrics::Counters;
use crate::net::Counting;

/// A TLS stream (either role) over a counted TCP stream.
pub(crate) type Stream = tokio_rustls::TlsStream<Counting<TcpStream>>;

/// A connection that completed TLS and the hello exchange.
pub(crate) struct Established {
    /// The authenticated peer.
    pub peer: NodeId,
    /// The stream, ready for multiplexed traffic.
    pub stream: Stream,
    /// Whether we dialed it.
    pub dialed: bool,
    /// The remote address.
    pub remote: SocketAddr,
    /// The registry version the peer announced.
    pub registry_version: u64,
}

/// Why a handshake did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Our verifier refused the peer's certificate (not a member, not the dialed node, ...).
    #[error("peer refused: {0}")]
    Refused(String),
    /// The TLS handshake failed otherwise (including the peer refusing us).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// TLS and the hello did not complete within the handshake timeout.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer's hello is malformed or of another protocol version.
    #[error("bad hello: {0}")]
    Hello(#[from] DecodeError),
    /// Reading or writing the hello failed.
    #[error("hello exchange failed: {0}")]
    Io(io::Error),
    /// The completed handshake has no usable peer certificate (cannot happen with our configs).
    #[error("no peer certificate after the handshake")]
    NoPeerId,
}

impl HandshakeError {
    /// Whether our own verifier refused the peer (counted as a refusal, not a failure).
    pub fn is_refusal(&self) -> bool {
        matches!(self, HandshakeError::Refused(_))
    }
}

fn tls_error(e: io::Error) -> HandshakeError {
    let refused: Option<&PeerRejected> = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(rejection_reason);
    match refused {
        Some(reason) => HandshakeError::Refused(reason.to_string()),
        None => HandshakeError::Tls(e),
    }
}

/// Everything a handshake needs, shared by the accept loop and the dialers.
#[derive(Clone)]
pub(crate) struct Handshaker {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    pub counters: Arc<Counters>,
    pub timeout: Duration,
    /// The registry version we announce (updated with the registry).
    pub registry_version: Arc<std::sync::atomic::AtomicU64>,
}

impl Handshaker {
    fn hello(&self) -> Hello {
        Hello::new(
            self.registry_version
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Runs the server side on an accepted TCP stream.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<Established, HandshakeError> {
        let io = Counting::new(tcp, Arc::clone(&self.counters));
        let work = async {
            let tls = self.acceptor.accept(io).await.map_err(tls_error)?;
            let peer = peer_node_id(tls.get_ref().1).ok_or(HandshakeError::NoPeerId)?;
            let mut stream = Stream::Server(tls);
            let hello = exchange_hello(&mut stream, self.hello()).await?;
            Ok(Established {
                peer,
                stream,
                dialed: false,
                remote,
                registry_version: hello.registry_version,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HandshakeError::Timeout(self.timeout))?
    }

    /// Runs the client side towards `peer` on a connected TCP stream.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        peer: NodeId,
        remote: SocketAddr,
    ) -> Result<Established, HandshakeError> {
        let io = Counting::new(tcp, Arc::clone(&self.counters));
        let work = async {
            let tls = self
                .connector
                .connect(server_name_for(peer), io)
                .await
                .map_err(tls_error)?;
            let actual = peer_node_id(tls.get_ref().1).ok_or(HandshakeError::NoPeerId)?;
            if actual != peer {
                return Err(HandshakeError::Refused(format!(
                    "dialed {peer:?} but {actual:?} answered"
                )));
            }
            let mut stream = Stream::Client(tls);
            let hello = exchange_hello(&mut stream, self.hello()).await?;
            Ok(Established {
                peer,
                stream,
                dialed: true,
                remote,
                registry_version: hello.registry_version,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HandshakeError::Timeout(self.timeout))?
    }
}

/// Sends our hello and reads the peer's (both sides write first: a hello is 15 bytes).
async fn exchange_hello(stream: &mut Stream, ours: Hello) -> Result<Hello, HandshakeError> {
    let mut out = BytesMut::with_capacity(HELLO_LEN);
    codec::encode_hello(&ours, &mut out);
    stream.write_all(&out).await.map_err(HandshakeError::Io)?;
    stream.flush().await.map_err(HandshakeError::Io)?;
    let mut theirs = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut theirs)
        .await
        .map_err(HandshakeError::Io)?;
    Ok(codec::decode_hello(&theirs)?)
}
