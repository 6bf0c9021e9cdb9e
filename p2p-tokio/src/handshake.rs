//! Connection setup: TLS with the registry-pinned configs, then the connection layer's hello
//! exchange ([`p2p_transport::conn`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use p2p_core::NodeId;
use p2p_transport::codec::{ConnRole, DecodeError, Hello};
use p2p_transport::conn::{
    ConnConfig, ConnError, ConnEvent, ConnReceiver, ConnSender, connection_in,
};
use p2p_transport::reassembly::ReassemblyBudget;
use p2p_transport::tls::{PeerRejected, peer_node_id, rejection_reason, server_name_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::conn::Clock;
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
    /// The connection layer's halves, past the hello exchange.
    pub sender: ConnSender,
    pub receiver: ConnReceiver,
    /// Whether we dialed it.
    pub dialed: bool,
    /// The remote address.
    pub remote: SocketAddr,
    /// The registry version the peer announced.
    pub registry_version: u64,
    /// Whether this is an express lane (see [`p2p_transport::express`]): one we dialed as such,
    /// or one whose dialer announced it.
    pub express: bool,
    /// The role the peer announced (on a main connection: whether it takes an express lane).
    pub peer_role: ConnRole,
}

/// Why a handshake did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Our verifier refused the peer's certificate (not a member, not the dialed node, ...).
    #[error("peer refused: {0}")]
    Refused(String),
    /// Our verifier refused the peer's certificate because the member is banned.
    #[error("peer refused: {0}")]
    Banned(String),
    /// The TLS handshake failed otherwise (including the peer refusing us).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// TLS and the hello did not complete within the handshake timeout.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer's hello is malformed or of another protocol version.
    #[error("bad hello: {0}")]
    Hello(#[from] DecodeError),
    /// The connection layer failed during the hello exchange.
    #[error("hello exchange failed: {0}")]
    Conn(ConnError),
    /// The stream ended before the peer's hello.
    #[error("the stream ended before the peer's hello")]
    Eof,
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
        matches!(self, HandshakeError::Refused(_) | HandshakeError::Banned(_))
    }
}

fn tls_error(e: io::Error) -> HandshakeError {
    let refused: Option<&PeerRejected> = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(rejection_reason);
    match refused {
        Some(reason @ PeerRejected::Banned(_)) => HandshakeError::Banned(reason.to_string()),
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
    /// The connection layer's settings.
    pub conn: Arc<ConnConfig>,
    /// The node-wide reassembly budget every connection's receiving half draws on.
    pub budget: ReassemblyBudget,
    pub clock: Clock,
    /// The registry version we announce (updated with the registry).
    pub registry_version: Arc<std::sync::atomic::AtomicU64>,
    /// The role we announce on main connections (whether we take express lanes).
    pub main_role: ConnRole,
}

impl Handshaker {
    fn hello(&self, role: ConnRole) -> Hello {
        Hello::with_role(
            self.registry_version
                .load(std::sync::atomic::Ordering::Relaxed),
            role,
        )
    }

    /// Runs the server side on an accepted TCP stream. It has no deadline of its own: the
    /// accept loop aborts it at the admission machine's pre-authentication deadline.
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
            // The acceptor announces its main role: whether the dialer opened a main connection
            // or an express lane shows in the dialer's hello.
            let (sender, receiver, hello) =
                self.exchange_hello(&mut stream, self.main_role).await?;
            Ok(Established {
                peer,
                stream,
                sender,
                receiver,
                dialed: false,
                remote,
                registry_version: hello.registry_version,
                express: hello.role == ConnRole::Express,
                peer_role: hello.role,
            })
        };
        work.await
    }

    /// Runs the client side towards `peer` on a connected TCP stream, for a main connection or
    /// (`express`) an express lane.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        peer: NodeId,
        remote: SocketAddr,
        express: bool,
    ) -> Result<Established, HandshakeError> {
        let role = if express {
            ConnRole::Express
        } else {
            self.main_role
        };
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
            let (sender, receiver, hello) = self.exchange_hello(&mut stream, role).await?;
            Ok(Established {
                peer,
                stream,
                sender,
                receiver,
                dialed: true,
                remote,
                registry_version: hello.registry_version,
                express,
                peer_role: hello.role,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HandshakeError::Timeout(self.timeout))?
    }

    /// Starts the connection layer, sends our hello and reads the peer's (both sides write
    /// first). Bytes read past the hello stay in the receiver.
    async fn exchange_hello(
        &self,
        stream: &mut Stream,
        role: ConnRole,
    ) -> Result<(ConnSender, ConnReceiver, Hello), HandshakeError> {
        let (mut tx, mut rx) =
            connection_in(&self.budget, &self.conn, self.hello(role), self.clock.now())
                .map_err(|e| HandshakeError::Io(io::Error::other(e)))?;
        let mut out = BytesMut::new();
        let n = tx.poll_transmit(self.clock.now(), &mut out, p2p_transport::mux::MIN_TRANSMIT);
        stream.write_all(&out).await.map_err(HandshakeError::Io)?;
        stream.flush().await.map_err(HandshakeError::Io)?;
        // The hello is on the wire: the write stall timer only covers bytes still waiting.
        tx.handle_written(self.clock.now(), n);
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match rx.poll_event() {
                Ok(Some(ConnEvent::Hello(hello))) => return Ok((tx, rx, hello)),
                Ok(Some(ConnEvent::Message(..))) | Ok(None) => {}
                Err(ConnError::Hello(e)) => return Err(HandshakeError::Hello(e)),
                Err(e) => return Err(HandshakeError::Conn(e)),
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(HandshakeError::Io)?
                == 0
            {
                return Err(HandshakeError::Eof);
            }
            rx.handle_input(self.clock.now(), &mut buf);
        }
    }
}
