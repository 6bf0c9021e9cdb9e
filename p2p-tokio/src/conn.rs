//! The tasks of one established connection: a reader and a writer, each on its half of the
//! TLS stream.
//!
//! Both run the sans-IO connection layer ([`p2p_transport::conn`]) and only move bytes and
//! arm its timers. The node task pushes messages into the connection's [`ConnSender`] (behind a
//! mutex shared with the writer) and wakes the writer; it never awaits a socket. The writer
//! moves frames to the socket at the peer's pace; the reader feeds the [`ConnReceiver`] and
//! queues messages in the node's fair [`Inbox`] (by lane and by peer, each peer's lanes bounded
//! in bytes), so a slow node task slows reading from the peers that filled their share (TCP
//! back-pressure), never buffering. Connection events go over a separate channel, which the node
//! task serves before any message.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use p2p_core::{Message, NodeId, Time};
use p2p_transport::conn::{ConnError, ConnEvent, ConnReceiver, ConnSender};
use p2p_transport::inbox::{Full, Inbox, Lane, cost_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::handshake::{Established, Stream};
use crate::metrics::{Counters, inc};

/// What the connection, dial and accept tasks tell the node task, apart from messages (which
/// go through the [`InboxShared`]): bounded by the number of connections, not by any peer's
/// sending rate.
pub(crate) enum Event {
    /// A handshake completed (inbound or outbound).
    Established(Box<Established>),
    /// A dial attempt failed.
    DialFailed {
        peer: NodeId,
        error: String,
        refused: bool,
        /// Whether it was an express lane's dial.
        express: bool,
    },
    /// The peer's send queue fell below the low-water mark after being congested.
    Drained { peer: NodeId, conn: u64 },
    /// The SHA-256 of a chunk the core asked for ([`p2p_core::Output::HashChunk`]).
    ChunkHashed {
        id: p2p_core::ArtifactId,
        index: u32,
        digest: [u8; 32],
    },
    /// The connection ended on its own.
    Closed {
        peer: NodeId,
        conn: u64,
        reason: CloseReason,
    },
}

/// Why a connection ended without the node task asking.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    /// The peer closed the stream.
    #[error("closed by the peer")]
    Eof,
    /// Reading or writing failed.
    #[error("IO error: {0}")]
    Io(io::Error),
    /// The connection layer ended it: the peer went quiet or broke the protocol.
    #[error("{0}")]
    Conn(ConnError),
}

/// How the node task ends a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Close {
    /// Keep running.
    Open,
    /// Stop at once and drop the socket.
    Abort,
    /// Send a TLS close_notify, then stop.
    Graceful,
}

/// The part of a connection the node task and the writer share: the sending half behind a
/// lock (the node task pushes, the writer transmits; neither holds it across an await).
pub(crate) struct ConnShared {
    pub send: Mutex<ConnSender>,
    pub wake: Notify,
}

impl ConnShared {
    pub fn new(sender: ConnSender) -> Self {
        ConnShared {
            send: Mutex::new(sender),
            wake: Notify::new(),
        }
    }

    /// Locks the sending half; a poisoned lock (a panicked writer) still holds a usable sender.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ConnSender> {
        self.send.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A message from a peer (keepalives are not forwarded), queued in the inbox.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub peer: NodeId,
    pub conn: u64,
    pub msg: Message,
    /// Wakes the connection's reader when the node task took a message off its queues.
    pub space: Arc<Notify>,
}

/// The node's fair inbox of messages read from every connection (keyed by connection number),
/// shared by the readers and the node task; neither holds the lock across an await.
pub(crate) struct InboxShared {
    inbox: Mutex<Inbox<u64, Inbound>>,
    /// Wakes the node task when a message was queued.
    pub ready: Notify,
}

impl InboxShared {
    pub fn new(inbox: Inbox<u64, Inbound>) -> Self {
        InboxShared {
            inbox: Mutex::new(inbox),
            ready: Notify::new(),
        }
    }

    /// Locks the inbox; a poisoned lock still holds a usable inbox.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inbox<u64, Inbound>> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next message to handle, and wakes its reader (its queue has room again).
    pub fn pop(&self) -> Option<Inbound> {
        let item = self.lock().pop().map(|(_, _, item)| item);
        if let Some(i) = &item {
            i.space.notify_one();
        }
        item
    }
}

/// Settings of the connection tasks (the connection layer's own are in its `ConnConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnSettings {
    pub write_chunk: usize,
}

/// Who a connection task reports to.
pub(crate) struct ConnCtx {
    pub peer: NodeId,
    pub conn: u64,
    pub events: mpsc::Sender<Event>,
    /// Where messages go.
    pub inbox: Arc<InboxShared>,
    pub close: watch::Receiver<Close>,
    pub counters: Arc<Counters>,
    pub settings: ConnSettings,
    pub clock: Clock,
}

impl ConnCtx {
    /// Reports the end of the connection unless the node task already ended it.
    async fn report_closed(mut self, reason: CloseReason) {
        if *self.close.borrow() != Close::Open {
            return;
        }
        let ev = Event::Closed {
            peer: self.peer,
            conn: self.conn,
            reason,
        };
        tokio::select! {
            _ = self.events.send(ev) => {}
            _ = self.close.changed() => {}
        }
    }
}

/// Reads until the stream ends, the connection layer ends the connection (idle peer, broken
/// protocol), or the node task closes it.
pub(crate) async fn reader(mut rd: ReadHalf<Stream>, mut rx: ConnReceiver, mut ctx: ConnCtx) {
    let space = Arc::new(Notify::new());
    let mut buf = BytesMut::new();
    let reason = 'conn: loop {
        loop {
            let (class, msg) = match rx.poll_event() {
                Ok(None) => break,
                Ok(Some(ConnEvent::Message(class, msg))) => (class, msg),
                // The hello was read during the handshake; there is no second one.
                Ok(Some(ConnEvent::Hello(_))) => continue,
                Err(e) => break 'conn CloseReason::Conn(e),
            };
            // The lane follows from the message's type; the connection layer already refused
            // a class its type does not allow.
            let lane = Lane::of(&msg, class);
            let cost = cost_of(&msg);
            let mut item = Inbound {
                peer: ctx.peer,
                conn: ctx.conn,
                msg,
                space: Arc::clone(&space),
            };
            // Wait until the node task has handled enough of what this peer queued in the lane;
            // the wait is not the peer's silence or stall.
            rx.pause(ctx.clock.now());
            loop {
                let pushed = ctx.inbox.lock().push(ctx.conn, lane, cost, item);
                match pushed {
                    Ok(()) => {
                        ctx.inbox.ready.notify_one();
                        break;
                    }
                    Err(Full(back)) => item = back,
                }
                tokio::select! {
                    () = space.notified() => {}
                    _ = ctx.close.changed() => return,
                }
            }
            rx.touch(ctx.clock.now());
        }
        if let Some(b) = rx.mux().budget() {
            let c = &ctx.counters;
            c.reassembly_bytes.store(b.used() as u64, Ordering::Relaxed);
            c.reassembly_peak_bytes
                .fetch_max(b.peak() as u64, Ordering::Relaxed);
        }
        buf.reserve(64 << 10);
        let deadline = rx.poll_timeout().map(|t| ctx.clock.instant(t));
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Err(e) => break CloseReason::Io(e),
                Ok(0) => break CloseReason::Eof,
                Ok(_) => rx.handle_input(ctx.clock.now(), &mut buf),
            },
            () = timer => rx.handle_timeout(ctx.clock.now()),
            _ = ctx.close.changed() => return,
        }
    };
    ctx.report_closed(reason).await;
}

/// Moves frames from the shared sender to the socket at the peer's pace, reporting each part
/// the TLS stream accepted (the last part of a batch once flushed); lets the connection layer
/// queue a keepalive when its timer fires, and ends the connection when it reports a write
/// stall (the timer stays armed while a write or flush waits).
pub(crate) async fn writer(mut wr: WriteHalf<Stream>, shared: Arc<ConnShared>, mut ctx: ConnCtx) {
    let chunk = ctx.settings.write_chunk;
    let mut out = BytesMut::new();
    loop {
        let close = *ctx.close.borrow();
        match close {
            Close::Open => {}
            Close::Abort => return,
            Close::Graceful => {
                let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
                return;
            }
        }
        let (n, drained, keepalive_at) = {
            let mut tx = shared.lock();
            let n = tx.poll_transmit(ctx.clock.now(), &mut out, chunk);
            (n, tx.poll_congestion() == Some(false), tx.poll_timeout())
        };
        if drained {
            let ev = Event::Drained {
                peer: ctx.peer,
                conn: ctx.conn,
            };
            tokio::select! {
                r = ctx.events.send(ev) => if r.is_err() { return },
                r = ctx.close.changed() => if r.is_err() { return },
            }
        }
        if n == 0 {
            let timer = tokio::select! {
                _ = shared.wake.notified() => false,
                _ = tokio::time::sleep_until(ctx.clock.instant(keepalive_at)) => true,
                r = ctx.close.changed() => if r.is_err() { return } else { false },
            };
            if timer && let Err(e) = on_timer(&shared, &ctx) {
                ctx.report_closed(CloseReason::Conn(e)).await;
                return;
            }
            continue;
        }
        // Write in pieces, each accepted piece reported at once except the last, which counts
        // once flushed: the stall timer covers every wait, the flush included.
        let mut off = 0;
        let mut held = 0;
        let mut closing = false;
        while off < out.len() || held > 0 {
            let deadline = ctx.clock.instant(shared.lock().poll_timeout());
            let step = async {
                if off < out.len() {
                    wr.write(&out[off..]).await.map(Some)
                } else {
                    wr.flush().await.map(|()| None)
                }
            };
            let end = tokio::select! {
                r = step => match r {
                    Ok(Some(0)) => Some(CloseReason::Io(io::ErrorKind::WriteZero.into())),
                    Ok(Some(k)) => {
                        off += k;
                        if off == out.len() {
                            held = k;
                        } else {
                            shared.lock().handle_written(ctx.clock.now(), k);
                        }
                        None
                    }
                    Ok(None) => {
                        shared.lock().handle_written(ctx.clock.now(), held);
                        held = 0;
                        None
                    }
                    Err(e) => Some(CloseReason::Io(e)),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    on_timer(&shared, &ctx).err().map(CloseReason::Conn)
                }
                r = ctx.close.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // Closing: the loop's head decides how.
                    closing = true;
                    None
                }
            };
            if let Some(reason) = end {
                ctx.report_closed(reason).await;
                return;
            }
            if closing {
                break;
            }
        }
        if !closing {
            out.clear();
        }
    }
}

/// Runs the sending half's timer: counts a keepalive it queued, or a write stall.
fn on_timer(shared: &ConnShared, ctx: &ConnCtx) -> Result<(), ConnError> {
    let r = shared.lock().handle_timeout(ctx.clock.now());
    match r {
        Ok(queued) => {
            if queued {
                inc(&ctx.counters.keepalives_sent);
            }
            Ok(())
        }
        Err(e) => {
            inc(&ctx.counters.write_stalls);
            Err(e)
        }
    }
}

/// The driver's clock: the core's and the connection layer's [`Time`] is the time since the
/// node started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Now, as the core's time.
    pub fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The instant of core time `t`, capped a day ahead (the core and the connection layer only
    /// ask for timers within their configured periods).
    pub fn instant(&self, t: Time) -> Instant {
        let d = Duration::from_nanos(t.as_nanos()).min(self.start.elapsed() + ONE_DAY);
        self.start + d
    }
}

const ONE_DAY: Duration = Duration::from_secs(86_400);
