//! The connection threads: accepting, dialing, the TLS handshake, and per connection a reader
//! (this thread) and a writer around p2p-transport's [`ConnReceiver`] and [`ConnSender`].
//!
//! The rustls connection and the [`ConnSender`] sit behind mutexes that no thread holds
//! across socket IO: the reader reads the socket unlocked and decrypts under the lock, the
//! writer encrypts under the lock and writes unlocked, and the node thread only pushes
//! messages. So the node thread never waits for a socket.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2p_core::{ArtifactId, ChunkRange, Class, Message, NodeId, RequestId, Time};
use p2p_transport::admission::{Admission, AdmissionView, Ticket};
use p2p_transport::codec::{ConnRole, Hello};
use p2p_transport::conn::{
    ConnConfig, ConnError, ConnEvent, ConnReceiver, ConnSender, connection_in,
};
use p2p_transport::express::ExpressRefusal;
use p2p_transport::inbox::{Full, Inbox, Lane, cost_of};
use p2p_transport::mux::PushError;
use p2p_transport::reassembly::ReassemblyBudget;
use p2p_transport::tls::{PeerRejected, peer_node_id, rejection_reason, server_name_for};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls::{ConnectionCommon, SideData, StreamOwned};
use tracing::debug;

use crate::node::Event;

/// How often the accept thread looks for new connections and for the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// How often a reader paused by the deliveries back-pressure looks again.
const PAUSE_POLL: Duration = Duration::from_millis(1);
/// Bytes read from a socket at once.
const READ_BUF: usize = 64 << 10;

/// Counters shared by every thread of a node.
#[derive(Default)]
pub(crate) struct Counters {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub refused_pre_tls: AtomicU64,
    pub refused_banned_in_tls: AtomicU64,
    pub evicted: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub dial_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub send_queue_overflows: AtomicU64,
    pub deliveries: AtomicU64,
    pub deliveries_discarded: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every connection thread of a node shares: its settings and its running state.
pub(crate) struct Shared {
    pub settings: Settings,
    /// The registry version announced in new connections' hellos.
    pub registry_version: AtomicU64,
    /// Set while deliveries wait for room: readers stop reading.
    pub paused: AtomicBool,
    /// Set once an [`Event::Inbox`] wake-up is sent; the node thread clears it before it looks
    /// at the inbox, so at most one wake-up waits in the channel per look.
    pub inbox_signalled: AtomicBool,
    /// Set on shutdown: every thread stops.
    pub stop: AtomicBool,
    pub counters: Counters,
    start: Instant,
    next_conn: AtomicU64,
    /// Connection threads alive (reader, writer, handshakes).
    pub live: AtomicUsize,
}

/// Decrements a gauge when dropped.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn new(g: &'a AtomicUsize) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The settings of [`Shared`] that come from the configuration.
pub(crate) struct Settings {
    pub events: SyncSender<Event>,
    /// Messages read from every connection (keyed by connection number), in fair order.
    pub inbox: Mutex<Inbox<u64, Inbound>>,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub conn: ConnConfig,
    pub connect_timeout: Duration,
    /// The address dials leave from: the listening IP when the node listens on one address
    /// (peers that admit only registry addresses see the address the registry lists).
    pub source: Option<std::net::IpAddr>,
    pub handshake_timeout: Duration,
    pub tick: Duration,
    pub write_chunk: usize,
    /// To the accept thread: registry and ban changes, and the ends of inbound handshakes.
    pub accept: Sender<AcceptMsg>,
    /// The node-wide reassembly budget every connection's receiving half draws on.
    pub budget: ReassemblyBudget,
}

/// What the accept thread hears of.
pub(crate) enum AcceptMsg {
    /// The node thread's registry addresses and bans.
    View(AdmissionView),
    /// An inbound TLS handshake ended (completed or not).
    Done(Ticket),
}

impl Shared {
    pub fn new(settings: Settings, registry_version: u64) -> Self {
        Shared {
            settings,
            registry_version: AtomicU64::new(registry_version),
            paused: AtomicBool::new(false),
            inbox_signalled: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            start: Instant::now(),
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
        }
    }

    /// The node's time: nanoseconds since it started.
    pub fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Locks the inbox.
    pub fn inbox(&self) -> MutexGuard<'_, Inbox<u64, Inbound>> {
        lock(&self.settings.inbox)
    }

    /// A fresh connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A message read from a peer, queued in the inbox.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub conn: u64,
    pub peer: NodeId,
    pub msg: Message,
}

/// Why a connection ended (or never started).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnEnd {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("peer refused: {0}")]
    Refused(String),
    #[error("peer refused: {0}")]
    Banned(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("TLS handshake not done within {0:?}")]
    HandshakeTimeout(Duration),
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("closed by the peer")]
    Eof,
    #[error("IO error: {0}")]
    Io(io::Error),
    #[error("the node is stopping")]
    Stopped,
    #[error("connection setup failed: {0}")]
    Setup(String),
}

impl ConnEnd {
    /// Whether the peer broke the protocol.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(self, ConnEnd::Conn(e) if e.is_misbehaviour())
    }

    /// Whether our verifier refused the peer.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ConnEnd::Refused(_) | ConnEnd::Banned(_))
    }
}

/// An IO error of a TLS handshake: a refusal when our verifier refused the peer.
fn tls_error(e: io::Error, timeout: Duration) -> ConnEnd {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(rejection_reason);
    match refused {
        Some(reason @ PeerRejected::Banned(_)) => ConnEnd::Banned(reason.to_string()),
        Some(reason) => ConnEnd::Refused(reason.to_string()),
        None if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) =>
        {
            ConnEnd::HandshakeTimeout(timeout)
        }
        None => ConnEnd::Tls(e.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One established connection, shared by its reader, its writer and the node thread.
pub(crate) struct Link {
    pub conn: u64,
    pub peer: NodeId,
    pub dialed: bool,
    sock: TcpStream,
    tls: Mutex<Connection>,
    sender: Mutex<ConnSender>,
    wake: SyncSender<()>,
    /// Set once the connection is over; whoever sets it first reports the end.
    closed: AtomicBool,
}

impl Link {
    /// Queues `msg` for the writer; returns a change of the congestion mark.
    pub fn push(&self, class: Class, msg: &Message) -> Result<Option<bool>, PushError> {
        let change = {
            let mut s = lock(&self.sender);
            s.push(class, msg)?;
            s.poll_congestion()
        };
        let _ = self.wake.try_send(());
        Ok(change)
    }

    /// Drops the queued answer to `req_id` if the writer has not started it; returns whether
    /// one was dropped and a change of the congestion mark.
    pub fn cancel(&self, req_id: RequestId) -> (bool, Option<bool>) {
        let mut s = lock(&self.sender);
        let dropped = s.cancel(req_id);
        (dropped, s.poll_congestion())
    }

    /// Drops the queued pushes of `id`'s chunks in `ranges` the writer has not started;
    /// returns how many were dropped and a change of the congestion mark.
    pub fn cancel_pushes(&self, id: &ArtifactId, ranges: &[ChunkRange]) -> (usize, Option<bool>) {
        let mut s = lock(&self.sender);
        let dropped = s.cancel_pushes(id, ranges);
        (dropped, s.poll_congestion())
    }

    /// Ends the connection without reporting it: the node thread asked.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.shut();
    }

    fn shut(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
        let _ = self.wake.try_send(());
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Ends the connection from one of its threads; the first to end it reports why.
    fn finish(&self, shared: &Shared, end: ConnEnd) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let _ = shared.settings.events.send(Event::Closed {
                conn: self.conn,
                peer: Some(self.peer),
                dialed: self.dialed,
                end,
            });
        }
        self.shut();
    }

    /// Decrypts bytes read from the socket into `plain`; returns whether the peer closed TLS.
    fn decrypt(
        &self,
        mut wire: &[u8],
        tmp: &mut [u8],
        plain: &mut BytesMut,
    ) -> Result<bool, ConnEnd> {
        let mut tls = lock(&self.tls);
        let mut eof = false;
        while !wire.is_empty() && !eof {
            if tls.read_tls(&mut wire).map_err(ConnEnd::Io)? == 0 {
                eof = true;
            }
            tls.process_new_packets()
                .map_err(|e| ConnEnd::Tls(e.to_string()))?;
            loop {
                match tls.reader().read(tmp) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => plain.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(ConnEnd::Io(e)),
                }
            }
        }
        let wants_write = tls.wants_write();
        drop(tls);
        if wants_write {
            let _ = self.wake.try_send(());
        }
        Ok(eof)
    }

    /// Encrypts `plain` (and whatever TLS wants to send) into `wire`.
    fn encrypt(&self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), ConnEnd> {
        let mut tls = lock(&self.tls);
        let mut off = 0;
        loop {
            while tls.wants_write() {
                tls.write_tls(wire).map_err(ConnEnd::Io)?;
            }
            if off == plain.len() {
                return Ok(());
            }
            let n = tls.writer().write(&plain[off..]).map_err(ConnEnd::Io)?;
            if n == 0 && !tls.wants_write() {
                return Err(ConnEnd::Tls("TLS takes no more plaintext".into()));
            }
            off += n;
        }
    }
}

/// Accepts connections until the node stops. Each accepted socket goes through the
/// admission machine first ([`p2p_transport::admission`]); an admitted one runs its handshake
/// and connection on its own thread, and the accept thread shuts its socket down when the
/// machine evicts it or its deadline passes.
pub(crate) fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut admission: Admission,
    msgs: Receiver<AcceptMsg>,
) {
    let mut socks: HashMap<Ticket, TcpStream> = HashMap::new();
    let evict = |socks: &mut HashMap<Ticket, TcpStream>, e: p2p_transport::admission::Eviction| {
        if let Some(sock) = socks.remove(&e.ticket) {
            let _ = sock.shutdown(Shutdown::Both);
        }
        inc(&shared.counters.evicted);
        debug!(ip = %e.ip, reason = %e.reason, "pending handshake aborted");
    };
    let drain = |admission: &mut Admission, socks: &mut HashMap<Ticket, TcpStream>| {
        while let Ok(msg) = msgs.try_recv() {
            match msg {
                AcceptMsg::View(view) => admission.set_view(&view),
                AcceptMsg::Done(ticket) => {
                    socks.remove(&ticket);
                    admission.finished(ticket);
                }
            }
        }
    };
    while !shared.stopped() {
        drain(&mut admission, &mut socks);
        let now = shared.now();
        for e in admission.handle_timeout(now) {
            evict(&mut socks, e);
        }
        match listener.accept() {
            Ok((sock, remote)) => {
                // A view sent while the socket was arriving is applied first: a socket is
                // judged against the registry the node holds when it arrives.
                drain(&mut admission, &mut socks);
                let admitted = match admission.arrive(now, remote.ip()) {
                    Ok(a) => a,
                    Err(why) => {
                        inc(&shared.counters.refused_pre_tls);
                        debug!(%remote, reason = why.name(), error = %why, "refused before TLS");
                        continue;
                    }
                };
                if let Some(e) = admitted.evicted {
                    evict(&mut socks, e);
                }
                let ticket = admitted.ticket;
                let handle = match sock.try_clone() {
                    Ok(h) => h,
                    Err(e) => {
                        admission.finished(ticket);
                        debug!(%remote, error = %e, "cannot keep a handle on the socket");
                        continue;
                    }
                };
                let conn = shared.next_conn();
                let s = Arc::clone(&shared);
                let spawned = thread::Builder::new()
                    .name(format!("p2p-conn-{conn}"))
                    .spawn(move || inbound(s, conn, sock, remote, ticket));
                match spawned {
                    Ok(_) => {
                        socks.insert(ticket, handle);
                    }
                    Err(e) => {
                        admission.finished(ticket);
                        debug!(%remote, error = %e, "cannot start a connection thread");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                // Out of descriptors and similar: wait instead of spinning.
                debug!(error = %e, "accept failed");
                thread::sleep(ACCEPT_POLL * 10);
            }
        }
    }
}

/// Tells the accept thread that an inbound handshake ended, when dropped.
struct Slot<'a> {
    shared: &'a Shared,
    ticket: Ticket,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = self
            .shared
            .settings
            .accept
            .send(AcceptMsg::Done(self.ticket));
    }
}

/// Runs the TLS handshake on a blocking socket within `timeout`.
fn handshake<C, S>(stream: &mut StreamOwned<C, TcpStream>, timeout: Duration) -> Result<(), ConnEnd>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let deadline = Instant::now() + timeout;
    while stream.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnEnd::HandshakeTimeout(timeout));
        }
        let set = stream
            .sock
            .set_read_timeout(Some(left))
            .and_then(|()| stream.sock.set_write_timeout(Some(left)));
        set.map_err(ConnEnd::Io)?;
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| tls_error(e, timeout))?;
    }
    Ok(())
}

/// The server side of an accepted connection, then the connection itself.
fn inbound(shared: Arc<Shared>, conn: u64, sock: TcpStream, remote: SocketAddr, ticket: Ticket) {
    let _live = Gauge::new(&shared.live);
    let tls = {
        let _slot = Slot {
            shared: &shared,
            ticket,
        };
        let setup = sock
            .set_nonblocking(false)
            .and_then(|()| sock.set_nodelay(true));
        let result = setup.map_err(ConnEnd::Io).and_then(|()| {
            let tls = ServerConnection::new(Arc::clone(&shared.settings.server))
                .map_err(|e| ConnEnd::Tls(e.to_string()))?;
            let mut stream = StreamOwned::new(tls, sock);
            handshake(&mut stream, shared.settings.handshake_timeout)?;
            Ok(stream)
        });
        match result {
            Ok(s) => s,
            Err(end) => {
                if end.is_refusal() {
                    inc(&shared.counters.refused);
                    if matches!(end, ConnEnd::Banned(_)) {
                        inc(&shared.counters.refused_banned_in_tls);
                    }
                } else {
                    inc(&shared.counters.handshake_failures);
                }
                debug!(%remote, error = %end, "inbound handshake failed");
                return;
            }
        }
    };
    let Some(peer) = peer_node_id(&tls.conn) else {
        inc(&shared.counters.handshake_failures);
        return;
    };
    run(&shared, conn, peer, false, tls.conn.into(), tls.sock);
}

/// A TCP connection to `addr` from `source` (any port) if given, within `timeout`.
fn connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    sock.connect_timeout(&addr.into(), timeout)?;
    Ok(sock.into())
}

/// Dials `peer` at `addr`, runs the client handshake, then the connection itself.
pub(crate) fn dial(shared: Arc<Shared>, conn: u64, peer: NodeId, addr: SocketAddr) {
    let _live = Gauge::new(&shared.live);
    let source = shared
        .settings
        .source
        .filter(|ip| ip.is_ipv4() == addr.is_ipv4());
    let result = connect(addr, source, shared.settings.connect_timeout)
        .and_then(|sock| sock.set_nodelay(true).map(|()| sock))
        .map_err(ConnEnd::Connect)
        .and_then(|sock| {
            let tls =
                ClientConnection::new(Arc::clone(&shared.settings.client), server_name_for(peer))
                    .map_err(|e| ConnEnd::Tls(e.to_string()))?;
            let mut stream = StreamOwned::new(tls, sock);
            handshake(&mut stream, shared.settings.handshake_timeout)?;
            match peer_node_id(&stream.conn) {
                Some(actual) if actual == peer => Ok(stream),
                actual => Err(ConnEnd::Refused(format!(
                    "dialed {peer:?} but {actual:?} answered"
                ))),
            }
        });
    match result {
        Ok(stream) => run(&shared, conn, peer, true, stream.conn.into(), stream.sock),
        Err(end) => {
            if end.is_refusal() {
                inc(&shared.counters.refused);
            }
            let _ = shared.settings.events.send(Event::Closed {
                conn,
                peer: Some(peer),
                dialed: true,
                end,
            });
        }
    }
}

/// Runs an established TLS connection: starts its writer, then reads on this thread.
fn run(
    shared: &Arc<Shared>,
    conn: u64,
    peer: NodeId,
    dialed: bool,
    tls: Connection,
    sock: TcpStream,
) {
    let report = |end: ConnEnd| {
        let _ = shared.settings.events.send(Event::Closed {
            conn,
            peer: Some(peer),
            dialed,
            end,
        });
    };
    let hello = Hello::new(shared.registry_version.load(Ordering::Relaxed));
    let settings = &shared.settings;
    let (sender, receiver) =
        match connection_in(&settings.budget, &settings.conn, hello, shared.now()) {
            Ok(halves) => halves,
            // The configuration was validated at start.
            Err(e) => return report(ConnEnd::Setup(e.to_string())),
        };
    // Both directions wake every tick: the reader for its timers, the writer (blocked on a
    // peer that does not read) for the write stall timer.
    let timeouts = sock
        .set_read_timeout(Some(shared.settings.tick))
        .and_then(|()| sock.set_write_timeout(Some(shared.settings.tick)));
    if let Err(e) = timeouts {
        return report(ConnEnd::Io(e));
    }
    let (wake, woken) = sync_channel(1);
    let link = Arc::new(Link {
        conn,
        peer,
        dialed,
        sock,
        tls: Mutex::new(tls),
        sender: Mutex::new(sender),
        wake,
        closed: AtomicBool::new(false),
    });
    let (s, l) = (Arc::clone(shared), Arc::clone(&link));
    let spawned = thread::Builder::new()
        .name(format!("p2p-write-{conn}"))
        .spawn(move || {
            let _live = Gauge::new(&s.live);
            let end = writer(&s, &l, &woken);
            l.finish(&s, end);
        });
    let end = match spawned {
        Ok(_) => reader(shared, &link, receiver),
        Err(e) => ConnEnd::Io(e),
    };
    link.finish(shared, end);
}

/// Reads, decrypts and reassembles until the connection ends; forwards the hello (as the
/// connection's establishment) and the messages to the node thread.
fn reader(shared: &Shared, link: &Arc<Link>, mut rx: ConnReceiver) -> ConnEnd {
    let mut buf = vec![0u8; READ_BUF];
    let mut tmp = vec![0u8; READ_BUF];
    let mut plain = BytesMut::new();
    let mut announced = false;
    let mut paused = false;
    loop {
        if link.is_closed() || shared.stopped() {
            return ConnEnd::Stopped;
        }
        if announced && shared.paused.load(Ordering::Relaxed) {
            // Not reading while deliveries wait: not the peer's silence or stall.
            rx.pause(shared.now());
            paused = true;
            thread::sleep(PAUSE_POLL);
            continue;
        }
        if paused {
            rx.touch(shared.now());
            paused = false;
        }
        let n = match (&link.sock).read(&mut buf) {
            Ok(0) => return ConnEnd::Eof,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => 0,
            Err(e) => return ConnEnd::Io(e),
        };
        let now = shared.now();
        let mut eof = false;
        if n > 0 {
            eof = match link.decrypt(&buf[..n], &mut tmp, &mut plain) {
                Ok(eof) => eof,
                Err(end) => return end,
            };
            rx.handle_input(now, &mut plain);
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
        }
        loop {
            let ev = match rx.poll_event() {
                Ok(None) => break,
                Ok(Some(ConnEvent::Hello(hello))) => {
                    // This driver announces no express lane, so a peer has none to open.
                    if hello.role == ConnRole::Express {
                        return ConnEnd::Refused(ExpressRefusal::NotOffered.to_string());
                    }
                    announced = true;
                    Event::Established {
                        link: Arc::clone(link),
                        hello,
                    }
                }
                Ok(Some(ConnEvent::Message(class, msg))) => {
                    let lane = Lane::of(&msg, class);
                    let cost = cost_of(&msg);
                    let item = Inbound {
                        conn: link.conn,
                        peer: link.peer,
                        msg,
                    };
                    if let Err(end) = queue(shared, link, lane, cost, item) {
                        return end;
                    }
                    continue;
                }
                Err(e) => return ConnEnd::Conn(e),
            };
            rx.pause(shared.now());
            if shared.settings.events.send(ev).is_err() {
                return ConnEnd::Stopped;
            }
            rx.touch(shared.now());
        }
        if eof {
            return ConnEnd::Eof;
        }
    }
}

/// Queues a message in the inbox, waiting while this connection's queue in its lane is full
/// (the node thread takes from it), and wakes the node thread.
fn queue(
    shared: &Shared,
    link: &Link,
    lane: Lane,
    cost: usize,
    mut item: Inbound,
) -> Result<(), ConnEnd> {
    loop {
        if link.is_closed() || shared.stopped() {
            return Err(ConnEnd::Stopped);
        }
        let pushed = shared.inbox().push(link.conn, lane, cost, item);
        match pushed {
            Ok(()) => break,
            Err(Full(back)) => {
                item = back;
                thread::sleep(PAUSE_POLL);
            }
        }
    }
    if !shared.inbox_signalled.swap(true, Ordering::AcqRel)
        && shared.settings.events.send(Event::Inbox).is_err()
    {
        return Err(ConnEnd::Stopped);
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Moves frames from the sender to the socket at the peer's pace, reporting the progress of
/// each write (see [`write_out`]), queues keepalives, ends the connection on a write stall,
/// and reports congestion changes; sleeps on `woken` when there is nothing to send.
fn writer(shared: &Shared, link: &Link, woken: &Receiver<()>) -> ConnEnd {
    let mut plain = BytesMut::new();
    let mut wire = Vec::new();
    loop {
        if link.is_closed() || shared.stopped() {
            return ConnEnd::Stopped;
        }
        let now = shared.now();
        let (change, idle_until) = {
            let mut s = lock(&link.sender);
            if now >= s.poll_timeout()
                && let Err(e) = s.handle_timeout(now)
            {
                return ConnEnd::Conn(e);
            }
            plain.clear();
            let _ = s.poll_transmit(now, &mut plain, shared.settings.write_chunk);
            let idle_until = (!s.wants_transmit()).then(|| s.poll_timeout());
            (s.poll_congestion(), idle_until)
        };
        if let Some(congested) = change {
            let ev = Event::Congestion {
                conn: link.conn,
                peer: link.peer,
                congested,
            };
            if shared.settings.events.send(ev).is_err() {
                return ConnEnd::Stopped;
            }
        }
        wire.clear();
        if let Err(end) = link.encrypt(&plain, &mut wire) {
            return end;
        }
        if let Err(end) = write_out(shared, link, &wire, plain.len()) {
            return end;
        }
        if let Some(until) = idle_until {
            let wait = until.saturating_since(now).min(shared.settings.tick);
            if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(wait) {
                return ConnEnd::Stopped;
            }
        }
    }
}

/// Writes `wire` (the encryption of `plain_len` plaintext bytes the sender handed out) to the
/// socket, whose write timeout is the tick. Each accepted part is reported to the sender in
/// plaintext bytes, in proportion (all of them once the last wire byte is accepted, at least
/// one for any progress before); at each tick without progress the sender's timer runs, and a
/// write stall ends the connection.
fn write_out(shared: &Shared, link: &Link, wire: &[u8], plain_len: usize) -> Result<(), ConnEnd> {
    let done = |off: usize| -> usize {
        if off >= wire.len() {
            plain_len
        } else {
            let part = (plain_len as u128 * off as u128 / wire.len() as u128) as usize;
            part.max(usize::from(off > 0))
                .min(plain_len.saturating_sub(1))
        }
    };
    let mut off = 0;
    let mut reported = 0;
    while off < wire.len() {
        if link.is_closed() || shared.stopped() {
            return Err(ConnEnd::Stopped);
        }
        match (&link.sock).write(&wire[off..]) {
            Ok(0) => return Err(ConnEnd::Io(io::ErrorKind::WriteZero.into())),
            Ok(k) => {
                off += k;
                let now_done = done(off);
                lock(&link.sender).handle_written(shared.now(), now_done - reported);
                reported = now_done;
            }
            Err(e) if is_timeout(&e) => {
                let now = shared.now();
                let mut s = lock(&link.sender);
                if now >= s.poll_timeout() {
                    s.handle_timeout(now).map_err(ConnEnd::Conn)?;
                }
            }
            Err(e) => return Err(ConnEnd::Io(e)),
        }
    }
    Ok(())
}
