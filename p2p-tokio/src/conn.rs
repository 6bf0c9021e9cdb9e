//! The tasks of one established connection: a reader and a writer, each on its half of the
//! TLS stream.
//!
//! The node task pushes messages into the connection's [`MuxSender`] (behind a mutex shared
//! with the writer) and wakes the writer; it never awaits a socket. The writer moves frames to
//! the socket at the peer's pace; the reader reassembles frames and forwards messages over a
//! bounded channel, so a slow node task slows reading (TCP back-pressure), never buffering.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use p2p_core::{Class, Message, NodeId};
use p2p_transport::mux::{MuxError, MuxReceiver, MuxSender};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::handshake::{Established, Stream};
use crate::metrics::{Counters, inc};

/// What the connection, dial and accept tasks tell the node task.
pub(crate) enum ConnEvent {
    /// A handshake completed (inbound or outbound).
    Established(Box<Established>),
    /// A dial attempt failed.
    DialFailed {
        peer: NodeId,
        error: String,
        refused: bool,
    },
    /// A message from a peer (keepalives are not forwarded). The permit holds the message's
    /// share of the connection's read-ahead budget until the node task has handled it.
    Message {
        peer: NodeId,
        conn: u64,
        msg: Message,
        permit: OwnedSemaphorePermit,
    },
    /// The peer's send queue fell below the low-water mark after being congested.
    Drained { peer: NodeId, conn: u64 },
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
    /// Nothing was read for the idle timeout.
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    /// The peer's bytes are not valid multiplexed traffic.
    #[error("protocol error: {0}")]
    Protocol(MuxError),
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

/// The sending state shared by the node task and the writer.
pub(crate) struct SendState {
    pub mux: MuxSender,
    /// Whether the core was told the peer is congested.
    pub congested: bool,
}

/// The part of a connection the node task and the writer share.
pub(crate) struct ConnShared {
    pub send: Mutex<SendState>,
    pub wake: Notify,
    /// Queued bytes at or below which a congested peer is reported drained.
    pub low_water: usize,
}

impl ConnShared {
    pub fn new(mux: MuxSender) -> Self {
        let low_water = mux.config().high_water / 2;
        ConnShared {
            send: Mutex::new(SendState {
                mux,
                congested: false,
            }),
            wake: Notify::new(),
            low_water,
        }
    }

    /// Locks the send state; a poisoned lock (a panicked writer) still holds a usable sender.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, SendState> {
        self.send.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Settings of the connection tasks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnSettings {
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    pub write_chunk: usize,
    pub read_ahead_bytes: usize,
}

/// Who a connection task reports to.
pub(crate) struct ConnCtx {
    pub peer: NodeId,
    pub conn: u64,
    pub events: mpsc::Sender<ConnEvent>,
    /// Where control and urgent messages go: the node task serves this channel first.
    pub urgent: mpsc::Sender<ConnEvent>,
    pub close: watch::Receiver<Close>,
    pub counters: Arc<Counters>,
    pub settings: ConnSettings,
}

impl ConnCtx {
    /// Reports the end of the connection unless the node task already ended it.
    async fn report_closed(mut self, reason: CloseReason) {
        if *self.close.borrow() != Close::Open {
            return;
        }
        let ev = ConnEvent::Closed {
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

/// Reads frames until the stream ends, the peer idles or breaks the protocol, or the node
/// task closes the connection.
pub(crate) async fn reader(mut rd: ReadHalf<Stream>, mut rx: MuxReceiver, mut ctx: ConnCtx) {
    let idle = ctx.settings.idle_timeout;
    let budget = ctx.settings.read_ahead_bytes.min(u32::MAX as usize);
    // One budget per lane, so urgent messages never wait for bulk ones to be handled.
    let urgent_budget = Arc::new(Semaphore::new(budget));
    let bulk_budget = Arc::new(Semaphore::new(budget));
    let mut buf = BytesMut::new();
    let reason = 'conn: loop {
        buf.reserve(64 << 10);
        let read = tokio::select! {
            r = tokio::time::timeout(idle, rd.read_buf(&mut buf)) => r,
            _ = ctx.close.changed() => return,
        };
        match read {
            Err(_) => break CloseReason::Idle(idle),
            Ok(Err(e)) => break CloseReason::Io(e),
            Ok(Ok(0)) => break CloseReason::Eof,
            Ok(Ok(_)) => {}
        }
        rx.feed_buf(&mut buf);
        loop {
            match rx.poll_message() {
                Ok(None) => break,
                // The keepalive convention: an empty advert batch only proves liveness.
                Ok(Some((_, Message::Adverts(adverts)))) if adverts.is_empty() => {}
                Ok(Some((class, msg))) => {
                    let (to, lane) = match class {
                        Class::Control | Class::Urgent => (&ctx.urgent, &urgent_budget),
                        Class::Normal | Class::Bulk => (&ctx.events, &bulk_budget),
                    };
                    // Wait until the node task has handled enough of what was read before.
                    let cost = (p2p_transport::codec::encoded_len(&msg).clamp(1, budget)) as u32;
                    let permit = tokio::select! {
                        p = Arc::clone(lane).acquire_many_owned(cost) => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        _ = ctx.close.changed() => return,
                    };
                    let ev = ConnEvent::Message {
                        peer: ctx.peer,
                        conn: ctx.conn,
                        msg,
                        permit,
                    };
                    tokio::select! {
                        r = to.send(ev) => if r.is_err() { return },
                        _ = ctx.close.changed() => return,
                    }
                }
                Err(e) => break 'conn CloseReason::Protocol(e),
            }
        }
    };
    ctx.report_closed(reason).await;
}

/// Moves frames from the shared sender to the socket at the peer's pace; sends a keepalive
/// when nothing was written for the keepalive interval.
pub(crate) async fn writer(mut wr: WriteHalf<Stream>, shared: Arc<ConnShared>, mut ctx: ConnCtx) {
    let keepalive = ctx.settings.keepalive_interval;
    let chunk = ctx.settings.write_chunk;
    let mut out = BytesMut::new();
    let mut last_write = Instant::now();
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
        let (n, drained) = {
            let mut st = shared.lock();
            let n = st.mux.poll_transmit(&mut out, chunk);
            let drained = st.congested && st.mux.queued_bytes_total() <= shared.low_water;
            if drained {
                st.congested = false;
            }
            (n, drained)
        };
        if drained {
            let ev = ConnEvent::Drained {
                peer: ctx.peer,
                conn: ctx.conn,
            };
            tokio::select! {
                r = ctx.events.send(ev) => if r.is_err() { return },
                r = ctx.close.changed() => if r.is_err() { return },
            }
        }
        if n == 0 {
            let until = last_write + keepalive;
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {
                    let pushed = shared.lock().mux.push(Class::Control, &Message::Adverts(Vec::new()));
                    if pushed.is_ok() {
                        inc(&ctx.counters.keepalives_sent);
                    }
                    last_write = Instant::now();
                }
                r = ctx.close.changed() => if r.is_err() { return },
            }
            continue;
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        let result = tokio::select! {
            r = write => r,
            r = ctx.close.changed() => match r {
                Err(_) => return,
                // Closing: the loop's head decides how.
                Ok(()) => continue,
            },
        };
        out.clear();
        last_write = Instant::now();
        if let Err(e) = result {
            ctx.report_closed(CloseReason::Io(e)).await;
            return;
        }
    }
}
