//! TCP plumbing: socket options, the listener, dialing, and a byte-counting stream.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::metrics::Counters;

/// Socket options applied to every connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketOpts {
    pub nodelay: bool,
    pub keepalive: Option<Duration>,
    pub buffer: Option<usize>,
    pub notsent_lowat: Option<u32>,
}

impl SocketOpts {
    /// Buffer sizes (set before connect or listen, so the window scale fits them).
    fn apply_buffers(&self, sock: SockRef<'_>) -> io::Result<()> {
        if let Some(size) = self.buffer {
            sock.set_send_buffer_size(size)?;
            sock.set_recv_buffer_size(size)?;
        }
        Ok(())
    }

    /// Options of an established stream.
    pub fn apply_stream(&self, stream: &TcpStream) -> io::Result<()> {
        let sock = SockRef::from(stream);
        sock.set_tcp_nodelay(self.nodelay)?;
        if let Some(idle) = self.keepalive {
            sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
        }
        if let Some(lowat) = self.notsent_lowat {
            sock.set_tcp_notsent_lowat(lowat)?;
        }
        self.apply_buffers(sock)
    }
}

/// The IP TOS byte of express lanes' packets: DSCP EF (expedited forwarding, 46).
pub(crate) const EXPRESS_TOS: u32 = 0xb8;
/// The socket priority of express lanes: `TC_PRIO_INTERACTIVE`, which Linux's default
/// `pfifo_fast` priomap serves in its first band, before best-effort traffic.
pub(crate) const EXPRESS_PRIORITY: u32 = 6;

/// Marks an express lane's packets: DSCP EF for the network, and the socket priority for the
/// host's own queueing discipline (set after the TOS, which resets it).
pub(crate) fn mark_express(stream: &TcpStream) -> io::Result<()> {
    let sock = SockRef::from(stream);
    if stream.local_addr()?.is_ipv4() {
        sock.set_tos_v4(EXPRESS_TOS)?;
    } else {
        sock.set_tclass_v6(EXPRESS_TOS)?;
    }
    sock.set_priority(EXPRESS_PRIORITY)
}

/// A listener on `addr` whose accepted sockets inherit the buffer sizes.
pub(crate) fn listen(addr: SocketAddr, opts: &SocketOpts) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    opts.apply_buffers(SockRef::from(&socket))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Connects to `addr` within `timeout`, from `source` if given (any port), with the options set.
pub(crate) async fn dial(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    opts: &SocketOpts,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    opts.apply_buffers(SockRef::from(&socket))?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    opts.apply_stream(&stream)?;
    Ok(stream)
}

/// A stream that counts the bytes moved through it into the node's counters.
///
/// It wraps the TCP stream under TLS, so the counts include TLS records and handshakes.
pub(crate) struct Counting<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counting<S> {
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Counting { inner, counters }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters
                .bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counters
                .bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
