//! One peer connection as a sans-IO state machine: the hello exchange, the multiplexer,
//! keepalives, the idle timeout and the congestion marks.
//!
//! A connection is two independent halves, so that a driver may run its reading and its
//! writing on different tasks or threads without sharing a lock between them:
//! - [`ConnSender`] emits our [`Hello`] before any frame, queues messages in the
//!   [`MuxSender`], queues a keepalive when nothing was transmitted for
//!   [`ConnConfig::keepalive_interval`], marks the peer congested when its queue passes the
//!   multiplexer's `high_water` and drained when it falls back to [`ConnConfig::low_water`],
//!   and fails the connection when bytes it handed out wait and the stream accepted none of
//!   them for [`ConnConfig::write_stall_timeout`] (a peer that does not read).
//! - [`ConnReceiver`] reads the peer's hello (it must arrive within
//!   [`ConnConfig::hello_timeout`]), then reassembles messages with the [`MuxReceiver`]
//!   (optionally within a node-wide [`ReassemblyBudget`], each message failing as stalled
//!   when no frame of it arrived for `MuxConfig::partial_timeout`), drops keepalives, and fails the connection when nothing arrived for
//!   [`ConnConfig::idle_timeout`].
//!
//! Both take the time as an argument and never read a clock. The TLS record layer below them
//! is the driver's: these halves see plaintext. Their timers are also available alone
//! ([`KeepaliveTimer`], [`ReceiveTimers`]), for a runner that moves the bytes itself (the
//! simulator).
//!
//! # Driving a connection
//!
//! On the sending side: [`ConnSender::push`] messages; whenever the stream can take bytes, call
//! [`ConnSender::poll_transmit`] and write what it appended, reporting each part the stream
//! accepted with [`ConnSender::handle_written`] (the last part once flushed); after either,
//! read [`ConnSender::poll_congestion`] and tell the core about a change; arm a timer at
//! [`ConnSender::poll_timeout`], also while a write waits, and call
//! [`ConnSender::handle_timeout`] when it fires (it may queue a keepalive, so transmit
//! afterwards, or report a write stall: close the connection).
//!
//! On the receiving side: feed what the stream delivered with [`ConnReceiver::handle_input`],
//! then drain [`ConnReceiver::poll_event`] until it returns `Ok(None)`; arm a timer at
//! [`ConnReceiver::poll_timeout`] and call [`ConnReceiver::handle_timeout`] when it fires. While
//! the driver stops reading for its own reasons (a busy node), bracket the pause with
//! [`ConnReceiver::pause`] and [`ConnReceiver::touch`], so that it is not counted against the
//! peer. An error is sticky: the connection is over and the driver closes it with that reason.
//!
//! # Classes
//!
//! Each message type travels only in its classes
//! ([`crate::codec::allowed_classes`]): [`ConnSender::push`] refuses
//! another class ([`PushError::ClassNotAllowed`]), and [`ConnReceiver`] ends the connection
//! on one ([`ConnError::WrongClass`], a misbehaviour), so a peer cannot claim the control or
//! urgent class for what its type does not allow.
//!
//! # Keepalive convention
//!
//! A keepalive is an empty `Message::Adverts` batch in the control class. It means nothing
//! else, so the receiver drops every empty advert batch before the core.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2p_core::{ArtifactId, ChunkRange, Class, Message, RequestId, Time};
use thiserror::Error;

use crate::codec::{self, DecodeError, HELLO_LEN, Hello};
use crate::mux::{MuxConfig, MuxConfigError, MuxError, MuxReceiver, MuxSender, PushError};
use crate::reassembly::ReassemblyBudget;

/// Settings of both halves of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    /// The multiplexer's settings, the same on both ends.
    pub mux: MuxConfig,
    /// Nothing transmitted for this long queues a keepalive (default 5 s).
    pub keepalive_interval: Duration,
    /// Nothing received for this long ends the connection (default 30 s; more than
    /// `keepalive_interval`).
    pub idle_timeout: Duration,
    /// The peer's hello must arrive within this long of the connection's start (default 5 s).
    pub hello_timeout: Duration,
    /// Queued bytes at or below which a congested peer is marked drained (default half of
    /// `mux.high_water`; below it).
    pub low_water: usize,
    /// Bytes handed out for writing that the stream accepted none of for this long end the
    /// connection ([`ConnError::WriteStall`], default 10 s). Any accepted byte restarts it, so
    /// a slow link that still moves bytes is never cut; a peer that stops reading is cut after
    /// its socket buffers fill plus this long. 10 s is five core request timeouts: a peer
    /// that reads nothing for that long serves nobody.
    pub write_stall_timeout: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        let mux = MuxConfig::default();
        let low_water = mux.high_water / 2;
        ConnConfig {
            mux,
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
            low_water,
            write_stall_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`ConnConfig`] that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnConfigError {
    /// The multiplexer settings are invalid.
    #[error(transparent)]
    Mux(#[from] MuxConfigError),
    /// A zero keepalive interval, or an idle timeout not above it.
    #[error("idle_timeout ({idle:?}) must exceed a non-zero keepalive_interval ({keepalive:?})")]
    Timers {
        /// The keepalive interval.
        keepalive: Duration,
        /// The idle timeout.
        idle: Duration,
    },
    /// A zero hello timeout.
    #[error("hello_timeout must be positive")]
    HelloTimeout,
    /// A zero write stall timeout.
    #[error("write_stall_timeout must be positive")]
    WriteStallTimeout,
    /// A low-water mark at or above the high-water mark.
    #[error("low_water ({low}) must be below mux.high_water ({high})")]
    LowWater {
        /// The low-water mark.
        low: usize,
        /// The multiplexer's high-water mark.
        high: usize,
    },
}

impl ConnConfig {
    /// A configuration with `mux` and default timers, the low-water mark at half its
    /// `high_water`.
    pub fn with_mux(mux: MuxConfig) -> Self {
        let low_water = mux.high_water / 2;
        ConnConfig {
            mux,
            low_water,
            ..ConnConfig::default()
        }
    }

    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), ConnConfigError> {
        self.mux.validate()?;
        if self.keepalive_interval.is_zero() || self.idle_timeout <= self.keepalive_interval {
            return Err(ConnConfigError::Timers {
                keepalive: self.keepalive_interval,
                idle: self.idle_timeout,
            });
        }
        if self.hello_timeout.is_zero() {
            return Err(ConnConfigError::HelloTimeout);
        }
        if self.write_stall_timeout.is_zero() {
            return Err(ConnConfigError::WriteStallTimeout);
        }
        if self.low_water >= self.mux.high_water {
            return Err(ConnConfigError::LowWater {
                low: self.low_water,
                high: self.mux.high_water,
            });
        }
        Ok(())
    }
}

/// Why a connection ended. Every variant is final: the driver closes the connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer's hello is malformed or of another protocol version.
    #[error("bad hello: {0}")]
    Hello(DecodeError),
    /// The peer's hello did not arrive in time.
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    /// Nothing arrived for the idle timeout.
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    /// The peer's bytes are not valid multiplexed traffic, or a message stalled, or the
    /// node-wide reassembly budget refused one.
    #[error("protocol error: {0}")]
    Protocol(MuxError),
    /// The peer sent a message in a class its type does not allow
    /// ([`codec::allowed_classes`]).
    #[error("a {msg} message arrived in class {class:?}, which its type does not allow")]
    WrongClass {
        /// The message's type.
        msg: &'static str,
        /// The class its frames carried.
        class: Class,
    },
    /// Bytes waited to be written and the stream accepted none for the write stall timeout:
    /// the peer does not read.
    #[error("{unwritten} bytes waiting, none accepted for {timeout:?}: the peer does not read")]
    WriteStall {
        /// The configured timeout.
        timeout: Duration,
        /// Bytes handed out and not accepted.
        unwritten: usize,
    },
}

impl ConnError {
    /// Whether the peer broke the protocol (as opposed to going quiet): a misbehaviour. A
    /// stalled message is one; a refusal of the node-wide reassembly budget is not (it depends
    /// on what other connections hold), nor is a write stall (a peer that does not read may
    /// be overloaded or gone, and costs only its own bounded send queue meanwhile).
    pub fn is_misbehaviour(&self) -> bool {
        match self {
            ConnError::Hello(_) | ConnError::WrongClass { .. } => true,
            ConnError::Protocol(e) => !matches!(e, MuxError::NodeBudget { .. }),
            _ => false,
        }
    }
}

/// What the receiving half produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The peer's hello: messages follow.
    Hello(Hello),
    /// A message (never a keepalive), with the class its frames carried.
    Message(Class, Message),
}

/// Builds both halves of a connection that starts at `now` and announces `hello`.
pub fn connection(
    cfg: &ConnConfig,
    hello: Hello,
    now: Time,
) -> Result<(ConnSender, ConnReceiver), ConnConfigError> {
    cfg.validate()?;
    Ok((
        ConnSender::new(cfg, hello, now)?,
        ConnReceiver::new(cfg, now, None)?,
    ))
}

/// Like [`connection`], with a receiving half whose reassembly also draws on the node-wide
/// `budget` (shared by all of a node's connections).
pub fn connection_in(
    budget: &ReassemblyBudget,
    cfg: &ConnConfig,
    hello: Hello,
    now: Time,
) -> Result<(ConnSender, ConnReceiver), ConnConfigError> {
    cfg.validate()?;
    Ok((
        ConnSender::new(cfg, hello, now)?,
        ConnReceiver::new(cfg, now, Some(budget))?,
    ))
}

/// The keepalive rule of [`ConnSender`] alone: a keepalive falls due
/// [`ConnConfig::keepalive_interval`] after bytes were last handed out for writing, and is
/// queued only when nothing else waits (queuing one restarts the interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveTimer {
    interval: Duration,
    last_transmit: Time,
}

impl KeepaliveTimer {
    /// The timer of a connection that starts at `now`.
    pub fn new(cfg: &ConnConfig, now: Time) -> Self {
        KeepaliveTimer {
            interval: cfg.keepalive_interval,
            last_transmit: now,
        }
    }

    /// Bytes were handed out for writing at `now`, or a keepalive was queued: restarts it.
    pub fn transmitted(&mut self, now: Time) {
        self.last_transmit = self.last_transmit.max(now);
    }

    /// When a keepalive falls due.
    pub fn deadline(&self) -> Time {
        self.last_transmit + self.interval
    }

    /// Whether a keepalive is due at `now` (the sender queues one if nothing else waits).
    pub fn is_due(&self, now: Time) -> bool {
        now >= self.deadline()
    }
}

/// The timers of [`ConnReceiver`] alone: the peer's hello within
/// [`ConnConfig::hello_timeout`] of the start, then some input at least every
/// [`ConnConfig::idle_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveTimers {
    /// The hello deadline, until the hello arrived.
    hello_deadline: Option<Time>,
    hello_timeout: Duration,
    idle_timeout: Duration,
    last_input: Time,
}

impl ReceiveTimers {
    /// The timers of a connection that starts at `now`.
    pub fn new(cfg: &ConnConfig, now: Time) -> Self {
        ReceiveTimers {
            hello_deadline: Some(now + cfg.hello_timeout),
            hello_timeout: cfg.hello_timeout,
            idle_timeout: cfg.idle_timeout,
            last_input: now,
        }
    }

    /// Bytes arrived at `now` (or the reader resumed after a pause of its own).
    pub fn heard(&mut self, now: Time) {
        self.last_input = self.last_input.max(now);
    }

    /// The peer's hello arrived: its deadline no longer applies.
    pub fn hello_received(&mut self) {
        self.hello_deadline = None;
    }

    /// Whether the peer's hello arrived.
    pub fn has_hello(&self) -> bool {
        self.hello_deadline.is_none()
    }

    /// The earliest deadline: the hello's until it arrived, or the idle timeout's.
    pub fn deadline(&self) -> Time {
        let idle = self.last_input + self.idle_timeout;
        self.hello_deadline.map_or(idle, |h| h.min(idle))
    }

    /// The error that ends the connection at `now`, if a deadline passed: no hello in time
    /// ([`ConnError::HelloTimeout`]) or nothing received for the idle timeout
    /// ([`ConnError::Idle`]); neither is a misbehaviour.
    pub fn expired(&self, now: Time) -> Option<ConnError> {
        if self.hello_deadline.is_some_and(|h| now >= h) {
            Some(ConnError::HelloTimeout(self.hello_timeout))
        } else if now >= self.last_input + self.idle_timeout {
            Some(ConnError::Idle(self.idle_timeout))
        } else {
            None
        }
    }
}

/// The sending half of a connection.
pub struct ConnSender {
    mux: MuxSender,
    hello: Option<BytesMut>,
    keepalive: KeepaliveTimer,
    low_water: usize,
    congested: bool,
    reported: bool,
    keepalives: u64,
    write_stall_timeout: Duration,
    /// Bytes handed out by `poll_transmit` and not yet reported written.
    unwritten: usize,
    /// When the stream last accepted bytes (or when bytes were handed out with none waiting).
    last_progress: Time,
    error: Option<ConnError>,
}

impl ConnSender {
    fn new(cfg: &ConnConfig, hello: Hello, now: Time) -> Result<Self, MuxConfigError> {
        let mut bytes = BytesMut::with_capacity(HELLO_LEN);
        codec::encode_hello(&hello, &mut bytes);
        Ok(ConnSender {
            mux: MuxSender::new(cfg.mux.clone())?,
            hello: Some(bytes),
            keepalive: KeepaliveTimer::new(cfg, now),
            low_water: cfg.low_water,
            congested: false,
            reported: false,
            keepalives: 0,
            write_stall_timeout: cfg.write_stall_timeout,
            unwritten: 0,
            last_progress: now,
            error: None,
        })
    }

    /// Queues `msg` in `class`. [`PushError::QueueFull`] means the peer does not keep up:
    /// drivers end such a connection. A class the message's type does not allow is refused
    /// ([`PushError::ClassNotAllowed`]): the peer would cut us off for it.
    pub fn push(&mut self, class: Class, msg: &Message) -> Result<(), PushError> {
        if !codec::class_allowed(msg, class) {
            return Err(PushError::ClassNotAllowed {
                msg: msg.name(),
                class,
            });
        }
        self.mux.push(class, msg)?;
        if !self.congested && self.mux.is_congested() {
            self.congested = true;
        }
        Ok(())
    }

    /// Drops the queued answer to request `req_id` if it has not started on the wire
    /// ([`MuxSender::cancel`]); returns whether one was dropped. Clears the congestion mark
    /// when the queue falls to `low_water`.
    pub fn cancel(&mut self, req_id: RequestId) -> bool {
        let dropped = self.mux.cancel(req_id);
        if dropped && self.congested && self.mux.queued_bytes_total() <= self.low_water {
            self.congested = false;
        }
        dropped
    }

    /// Drops the queued pushed chunks of `id` with indices in `ranges` that have not started
    /// on the wire ([`MuxSender::cancel_pushes`]); returns how many were dropped. Clears the
    /// congestion mark when the queue falls to `low_water`.
    pub fn cancel_pushes(&mut self, id: &ArtifactId, ranges: &[ChunkRange]) -> usize {
        let dropped = self.mux.cancel_pushes(id, ranges);
        if dropped > 0 && self.congested && self.mux.queued_bytes_total() <= self.low_water {
            self.congested = false;
        }
        dropped
    }

    /// Appends our hello (first, once, on top of `max_bytes`) and then whole frames to `out`
    /// while they fit in `max_bytes` (at least [`crate::mux::MIN_TRANSMIT`]); returns the bytes
    /// appended.
    #[must_use = "the appended bytes must be written to the stream"]
    pub fn poll_transmit(&mut self, now: Time, out: &mut BytesMut, max_bytes: usize) -> usize {
        let mut n = 0;
        if let Some(hello) = self.hello.take() {
            out.extend_from_slice(&hello);
            n = hello.len();
        }
        n += self.mux.poll_transmit(out, max_bytes);
        self.after_transmit(now, n);
        n
    }

    /// Like [`poll_transmit`](Self::poll_transmit), as [`Bytes`] pieces for a vectored write
    /// (see [`MuxSender::poll_transmit_parts`]).
    #[must_use = "the appended pieces must be written to the stream"]
    pub fn poll_transmit_parts(
        &mut self,
        now: Time,
        out: &mut Vec<Bytes>,
        max_bytes: usize,
    ) -> usize {
        let mut n = 0;
        if let Some(hello) = self.hello.take() {
            n = hello.len();
            out.push(hello.freeze());
        }
        n += self.mux.poll_transmit_parts(out, max_bytes);
        self.after_transmit(now, n);
        n
    }

    fn after_transmit(&mut self, now: Time, n: usize) {
        if n > 0 {
            self.keepalive.transmitted(now);
            if self.unwritten == 0 {
                self.last_progress = now;
            }
            self.unwritten += n;
        }
        if self.congested && self.mux.queued_bytes_total() <= self.low_water {
            self.congested = false;
        }
    }

    /// A change of the congestion mark since the last call: `Some(true)` when the peer became
    /// congested (stop producing for it), `Some(false)` when it drained. Each change is returned
    /// once, to whichever caller asks first: a driver that pushes and transmits from different
    /// tasks forwards it from both.
    pub fn poll_congestion(&mut self) -> Option<bool> {
        (self.congested != self.reported).then(|| {
            self.reported = self.congested;
            self.congested
        })
    }

    /// Whether anything (the hello or frames) waits to be transmitted.
    pub fn wants_transmit(&self) -> bool {
        self.hello.is_some() || !self.mux.is_idle()
    }

    /// Reports that the stream accepted `n` more of the bytes handed out by
    /// [`poll_transmit`](Self::poll_transmit) at `now` (a driver whose stream buffers, such as
    /// TLS, reports the last part of a write once it is flushed). Restarts the write stall
    /// timer when `n > 0`.
    pub fn handle_written(&mut self, now: Time, n: usize) {
        let n = n.min(self.unwritten);
        if n > 0 {
            self.unwritten -= n;
            self.last_progress = self.last_progress.max(now);
            // Bytes reached the stream: the peer hears from us without a keepalive.
            self.keepalive.transmitted(now);
        }
    }

    /// Bytes handed out for writing and not yet reported written.
    pub fn unwritten_bytes(&self) -> usize {
        self.unwritten
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run: while bytes are unwritten, the
    /// write stall deadline alone (no keepalive is sent while bytes wait for the stream, so a
    /// keepalive deadline then would fall due again and again without effect: a driver that
    /// sleeps until it would spin); otherwise a keepalive interval after the last transmission.
    pub fn poll_timeout(&self) -> Time {
        if self.unwritten > 0 {
            self.last_progress + self.write_stall_timeout
        } else {
            self.keepalive.deadline()
        }
    }

    /// Fails with [`ConnError::WriteStall`] (sticky) if bytes were unwritten with no progress
    /// for the write stall timeout; otherwise queues a keepalive if nothing was transmitted
    /// for the keepalive interval and nothing is queued, and returns whether it did.
    pub fn handle_timeout(&mut self, now: Time) -> Result<bool, ConnError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.unwritten > 0 && now >= self.last_progress + self.write_stall_timeout {
            let e = ConnError::WriteStall {
                timeout: self.write_stall_timeout,
                unwritten: self.unwritten,
            };
            self.error = Some(e.clone());
            return Err(e);
        }
        if !self.keepalive.is_due(now) || self.wants_transmit() {
            return Ok(false);
        }
        // An empty batch is always encodable and the queue is empty: the push cannot fail.
        let queued = self
            .mux
            .push(Class::Control, &Message::Adverts(Vec::new()))
            .is_ok();
        if queued {
            self.keepalives += 1;
            // The timer restarts now, even before the keepalive is transmitted.
            self.keepalive.transmitted(now);
        }
        Ok(queued)
    }

    /// Keepalives queued so far.
    pub fn keepalives(&self) -> u64 {
        self.keepalives
    }

    /// The multiplexer, for its queue figures.
    pub fn mux(&self) -> &MuxSender {
        &self.mux
    }
}

/// The receiving half of a connection.
pub struct ConnReceiver {
    mux: MuxReceiver,
    /// The peer's hello bytes read so far; `None` once the hello was decoded.
    hello: Option<Vec<u8>>,
    timers: ReceiveTimers,
    /// When the driver paused reading, while it does.
    paused_since: Option<Time>,
    error: Option<ConnError>,
}

impl ConnReceiver {
    fn new(
        cfg: &ConnConfig,
        now: Time,
        budget: Option<&ReassemblyBudget>,
    ) -> Result<Self, MuxConfigError> {
        let mut mux = match budget {
            Some(b) => MuxReceiver::with_budget(cfg.mux.clone(), b)?,
            None => MuxReceiver::new(cfg.mux.clone())?,
        };
        mux.set_time(now);
        Ok(ConnReceiver {
            mux,
            hello: Some(Vec::with_capacity(HELLO_LEN)),
            timers: ReceiveTimers::new(cfg, now),
            paused_since: None,
            error: None,
        })
    }

    /// Takes bytes the stream delivered at `now` (all of `buf`, which is left empty).
    pub fn handle_input(&mut self, now: Time, buf: &mut BytesMut) {
        if buf.is_empty() || self.error.is_some() {
            buf.clear();
            return;
        }
        self.timers.heard(now);
        self.mux.set_time(now);
        if let Some(hello) = &mut self.hello {
            let take = (HELLO_LEN - hello.len()).min(buf.len());
            hello.extend_from_slice(&buf.split_to(take));
            if hello.len() < HELLO_LEN {
                return;
            }
        }
        self.mux.feed_buf(buf);
    }

    /// The next event, `Ok(None)` when more input is needed, or the error that ended the
    /// connection (returned again on every later call).
    pub fn poll_event(&mut self) -> Result<Option<ConnEvent>, ConnError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(hello) = &self.hello {
            if hello.len() < HELLO_LEN {
                return Ok(None);
            }
            let decoded = codec::decode_hello(hello);
            self.hello = None;
            self.timers.hello_received();
            return match decoded {
                Ok(h) => Ok(Some(ConnEvent::Hello(h))),
                Err(e) => Err(self.fail(ConnError::Hello(e))),
            };
        }
        loop {
            match self.mux.poll_message() {
                Ok(None) => return Ok(None),
                Ok(Some((Class::Control, Message::Adverts(a)))) if a.is_empty() => continue,
                Ok(Some((class, msg))) if codec::class_allowed(&msg, class) => {
                    return Ok(Some(ConnEvent::Message(class, msg)));
                }
                Ok(Some((class, msg))) => {
                    let e = ConnError::WrongClass {
                        msg: msg.name(),
                        class,
                    };
                    return Err(self.fail(e));
                }
                Err(e) => return Err(self.fail(ConnError::Protocol(e))),
            }
        }
    }

    fn fail(&mut self, e: ConnError) -> ConnError {
        self.error = Some(e.clone());
        e
    }

    /// Marks that the driver stops reading at `now` for its own reasons (back-pressure from a
    /// busy node); [`touch`](Self::touch) ends the pause. A pause already begun is kept.
    pub fn pause(&mut self, now: Time) {
        self.paused_since.get_or_insert(now);
    }

    /// Counts the peer as heard from at `now`. A driver that paused reading (back-pressure from
    /// a busy node) calls it when it resumes, so that the pause is not taken for the peer's
    /// silence; if [`pause`](Self::pause) marked its start, the stall deadlines of the
    /// messages under reassembly move by its length as well.
    pub fn touch(&mut self, now: Time) {
        self.timers.heard(now);
        if let Some(since) = self.paused_since.take() {
            self.mux.pause_for(now.saturating_since(since));
        }
    }

    /// Whether the peer's hello was received.
    pub fn has_hello(&self) -> bool {
        self.hello.is_none()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run: the hello deadline until the
    /// hello arrived, then the idle deadline or, earlier, the stall deadline of a message under
    /// reassembly. `None` once the connection failed.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.error.is_some() {
            return None;
        }
        let at = self.timers.deadline();
        Some(self.mux.poll_deadline().map_or(at, |d| d.min(at)))
    }

    /// Fails the connection if its hello, idle or a message's stall deadline passed at `now`.
    /// A stall is only judged once the input fed so far was parsed by
    /// [`poll_event`](Self::poll_event) (bytes that arrived in time count).
    pub fn handle_timeout(&mut self, now: Time) {
        if self.error.is_some() {
            return;
        }
        if let Some(e) = self.timers.expired(now) {
            self.fail(e);
        } else if self.mux.unparsed_bytes() == 0
            && let Err(e) = self.mux.check_stalled(now)
        {
            self.fail(ConnError::Protocol(e));
        }
    }

    /// The multiplexer, for its buffer figures.
    pub fn mux(&self) -> &MuxReceiver {
        &self.mux
    }
}

/// The `conn` fuzz target's check, shared with the corpus replay test: a connection's
/// receiving half, drawing on a node-wide reassembly budget, fed arbitrary bytes in arbitrary
/// chunks, with time moving on between them and the driver pausing now and then, never
/// panics; the hello comes first and once; the budget's cap holds and a failed connection
/// gives its reservations back; an error is sticky and ends the timers; a silent stretch past
/// the receiver's deadline (idle, hello or a message's stall) always ends the connection.
///
/// The first byte picks the chunking seed (0: one chunk) and whether a valid hello is
/// prepended (its low bit), so that the fuzzer reaches the multiplexer quickly.
///
/// # Panics
///
/// When one of those properties fails: that is a bug to report.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_connection(data: &[u8]) {
    let cfg = ConnConfig::with_mux(crate::mux::fuzz_config());
    let (flags, body) = match data {
        [f, rest @ ..] => (*f, rest),
        [] => (0, data),
    };
    let mut input = BytesMut::new();
    if flags & 1 == 1 {
        codec::encode_hello(&Hello::new(1), &mut input);
    }
    input.extend_from_slice(body);
    let budget = ReassemblyBudget::new(cfg.mux.max_buffered_bytes);
    let (_, mut rx) =
        connection_in(&budget, &cfg, Hello::new(1), Time::ZERO).expect("valid configuration");
    let mut rng = p2p_core::rng::Rng::new(u64::from(flags >> 1));
    let mut now = Time::ZERO;
    let mut saw_hello = false;
    while !input.is_empty() {
        let n = if flags >> 1 == 0 {
            input.len()
        } else {
            1 + rng.below(64) as usize
        };
        let mut chunk = input.split_to(n.min(input.len()));
        now = now + Duration::from_millis(rng.below(2_000));
        if rng.below(8) == 0 {
            rx.pause(now);
            now = now + Duration::from_millis(rng.below(2_000));
            rx.touch(now);
        }
        rx.handle_timeout(now);
        rx.handle_input(now, &mut chunk);
        assert!(chunk.is_empty(), "the receiver takes all it is given");
        loop {
            match rx.poll_event() {
                Ok(None) => break,
                Ok(Some(ConnEvent::Hello(_))) => {
                    assert!(!saw_hello, "one hello");
                    saw_hello = true;
                }
                Ok(Some(ConnEvent::Message(_, msg))) => {
                    assert!(saw_hello, "messages only after the hello");
                    assert!(
                        !matches!(&msg, Message::Adverts(a) if a.is_empty()),
                        "keepalive"
                    );
                }
                Err(e) => {
                    let protocol = matches!(e, ConnError::Protocol(_));
                    assert_eq!(rx.poll_event(), Err(e), "errors are sticky");
                    assert_eq!(rx.poll_timeout(), None, "a failed connection has no timer");
                    if protocol {
                        assert_eq!(budget.used(), 0, "a failed connection holds nothing");
                    }
                    return;
                }
            }
            assert!(budget.used() <= budget.cap(), "node-wide cap");
        }
    }
    // Silence: the idle timeout (or the hello deadline) ends it.
    let deadline = rx.poll_timeout().expect("a live connection has a timer");
    rx.handle_timeout(deadline);
    assert!(
        rx.poll_event().is_err(),
        "silence past the deadline ends the connection"
    );
}
