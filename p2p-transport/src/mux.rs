//! The priority multiplexer: many [`Message`]s over one byte stream per peer pair.
//!
//! [`MuxSender`] encodes messages, splits them into frames and interleaves the frames by
//! [`Class`] with weighted fairness; [`MuxReceiver`] reassembles frames into messages under
//! hard bounds. Both are sans-IO: the driver moves bytes between them and a TLS stream.
//!
//! # Frame format
//!
//! The stream is a sequence of frames, each a header followed by `len` payload bytes. All
//! integers are little-endian.
//!
//! | bytes  | field                                                                      |
//! |--------|----------------------------------------------------------------------------|
//! | 0..4   | `stream: u32`: the message's id, chosen by the sender, unique among its unfinished messages |
//! | 4      | flags: bits 0-1 the [`Class`] (0 control, 1 urgent, 2 normal, 3 bulk); bit 2 `FIRST`; bit 3 `LAST`; bits 4-7 zero |
//! | 5..9   | `len: u32`: the frame's payload length, at least 1                          |
//! | 9..13  | `total: u32`: the whole message's encoded length; present only when `FIRST` is set and `LAST` is not |
//!
//! A message travels as one `FIRST|LAST` frame (9 header bytes) or as a `FIRST` frame that
//! announces its total length, continuation frames, and a `LAST` frame that completes exactly
//! `total` bytes. The concatenated payloads are the message's encoding by
//! [`crate::codec`]. Frames of different messages interleave freely; every frame of a message carries
//! the same class. The multiplexer carries any message in any class; the connection layer
//! ([`crate::conn`]) allows each message type only its classes
//! ([`crate::codec::allowed_classes`]).
//!
//! # Scheduling
//!
//! The sender picks each frame by start-time fair queuing over classes: each class with
//! queued data has a virtual time advanced by `frame bytes / weight`, and the class with the
//! smallest virtual time sends next (ties to the more urgent class). With the default weights
//! (16, 8, 4, 1) a saturated control class gets 16 times the bytes of a saturated bulk class,
//! and bulk still progresses. A class that was idle starts at the current virtual time, so a
//! newly pushed urgent message goes out right after the frame in flight.
//!
//! Within a class, up to `max_active[class]` messages are interleaved round-robin, frame by
//! frame. Consequently a message is delivered before every later message of its class that
//! has at least as many frames; with `max_active = 1` a class is strictly FIFO. Every class
//! defaults to 1: no message of a default core exceeds a chunk (128 KiB, 3.5 ms at 300 Mbit/s)
//! or a manifest, so a small message waits behind at most one such message of its class, and a
//! chunk is finished before the next starts, so the peer can forward it that much sooner
//! (interleaving 4 chunks made all 4 arrive at the time of the last; see BENCHMARKS.md,
//! "FIFO within a class"). FIFO also keeps a `Withdraw` from overtaking the `Adverts` batch it
//! withdraws from.
//!
//! # Bounds
//!
//! The sender refuses a push that would take a class's queue past `max_queued_per_class`
//! ([`PushError::QueueFull`]) and reports [`MuxSender::is_congested`] past `high_water`. The
//! receiver reserves each multi-frame message's announced total when its first frame arrives,
//! after checking `max_message_size`, `max_partial_messages` and `max_buffered_bytes`, and,
//! when it draws on a node-wide [`ReassemblyBudget`], the budget's rule; any violation is a
//! sticky [`MuxError`]. A message under reassembly must make progress: it stalls when no frame
//! of it arrived for `partial_timeout` ([`MuxReceiver::poll_deadline`],
//! [`MuxReceiver::check_stalled`]), so reservations cannot be held by a peer that announces
//! messages and never sends more of them. The rule is about progress, not total duration, so
//! an honest sender on a slow link that interleaves several large messages is never cut: its
//! scheduler serves every started message of a class round-robin and every class by weight,
//! so a started message gets a frame at least every `(Σ weights / weight of its class) ×
//! max_active[class]` frames of its connection ([`MuxConfig::max_frames_between`]; bulk with
//! the defaults: 29 frames of 16 KiB, 464 KiB, under 2 s on a connection carrying
//! 2 Mbit/s). A sender that trickles one frame per message just under the
//! timeout holds its reservations for as long as it trickles; what it can hold is bounded by
//! `max_buffered_bytes` and the node-wide [`ReassemblyBudget`] (its fair share: a connection
//! within its share is never refused). [`MuxConfig::validate`]
//! checks that a receiver's bounds accept every message an honest sender with the same
//! configuration produces.

use crate::codec::{self, DecodeError, EncodeError, Limits, LimitsError};
use crate::reassembly::{BudgetSlot, ReassemblyBudget, Refused};
use crate::sched::{Cut, MIN_CUT, Scheduler};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use p2p_core::{ArtifactId, ChunkRange, Class, Message, RequestId, Revocable, Time};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;
use thiserror::Error;

pub use crate::sched::{FIRST_FRAME_HEADER_LEN, FRAME_HEADER_LEN};
/// Smallest configurable frame size.
pub const MIN_FRAME_SIZE: usize = 1 << 10;
/// Largest configurable frame size.
pub const MAX_FRAME_SIZE: usize = 1 << 20;
/// The smallest `max_bytes` with which [`MuxSender::poll_transmit`] always makes progress
/// when something is queued: a frame is cut short to fit, but not below 512 payload bytes.
pub const MIN_TRANSMIT: usize = FIRST_FRAME_HEADER_LEN + MIN_CUT;

const FLAG_FIRST: u8 = 0x04;
const FLAG_LAST: u8 = 0x08;
const CLASS_MASK: u8 = 0x03;
const RESERVED_MASK: u8 = 0xf0;

/// Configuration of both ends of a multiplexed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuxConfig {
    /// Codec limits: messages larger than `limits.max_message_size` are refused on both ends.
    pub limits: Limits,
    /// Largest frame payload the sender cuts (default 16 KiB, within
    /// [`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`]).
    pub frame_size: usize,
    /// Weight of each class in [`Class::ALL`] order (default 16, 8, 4, 1; each at least 1).
    pub weights: [u32; Class::COUNT],
    /// Messages of each class interleaved at once (default 1 for every class: FIFO within a
    /// class; each at least 1).
    pub max_active: [usize; Class::COUNT],
    /// Total queued bytes at which [`MuxSender::is_congested`] turns true (default 8 MiB).
    pub high_water: usize,
    /// Queued bytes per class past which [`MuxSender::push`] fails (default 64 MiB; at least
    /// `limits.max_message_size`).
    pub max_queued_per_class: usize,
    /// Messages the receiver reassembles at once (default 64).
    pub max_partial_messages: usize,
    /// Bytes the receiver reserves for messages under reassembly (default 64 MiB; at least
    /// `limits.max_message_size`). An honest peer's multi-frame messages to us are mostly its
    /// responses to our requests, which the core keeps within its per-peer in-flight bytes
    /// (32 MiB by default), plus at most one message of another kind per class: 32 MiB plus
    /// one largest message (16 MiB) fits with room to spare. Further bounded node-wide by a
    /// [`ReassemblyBudget`] when the driver gives one.
    pub max_buffered_bytes: usize,
    /// The stall rule: a message under reassembly that received no frame for
    /// `partial_timeout` (since its last frame, or its first) fails the connection
    /// ([`MuxError::Stalled`]). Default 30 s. An honest sender's scheduler gives a started
    /// message a frame at least every `(Σ weights / weight of its class) × max_active[class]`
    /// frames of its connection (with the defaults at most 29 frames of 16 KiB for bulk,
    /// 464 KiB: under 2 s on a connection carrying 2 Mbit/s), far below 30 s on any link an
    /// honest deployment runs.
    pub partial_timeout: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            limits: Limits::default(),
            frame_size: 16 << 10,
            weights: [16, 8, 4, 1],
            max_active: [1, 1, 1, 1],
            high_water: 8 << 20,
            max_queued_per_class: 64 << 20,
            max_partial_messages: 64,
            max_buffered_bytes: 64 << 20,
            partial_timeout: Duration::from_secs(30),
        }
    }
}

/// A [`MuxConfig`] that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxConfigError {
    /// The codec limits are not representable.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// `frame_size` is outside the allowed range.
    #[error("frame_size {0} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}")]
    FrameSize(usize),
    /// A weight is zero.
    #[error("the weight of class {0:?} is zero")]
    ZeroWeight(Class),
    /// A class may have no active message.
    #[error("max_active of class {0:?} is zero")]
    ZeroActive(Class),
    /// A single largest message would not fit a class's queue.
    #[error("max_queued_per_class {queue} is below max_message_size {message}")]
    QueueBelowMessage {
        /// The configured queue bound.
        queue: usize,
        /// The configured message size limit.
        message: usize,
    },
    /// The receiver would refuse what an honest sender with this configuration sends.
    #[error(
        "receiver bounds ({partials} partial messages, {bytes} bytes) are below what the sender \
         interleaves ({active} messages, one of up to {message} bytes)"
    )]
    ReceiverTooSmall {
        /// `max_partial_messages`.
        partials: usize,
        /// `max_buffered_bytes`.
        bytes: usize,
        /// The sum of `max_active`.
        active: usize,
        /// `limits.max_message_size`.
        message: usize,
    },
    /// A zero stall timeout.
    #[error("partial_timeout must be positive")]
    PartialTimeout,
}

impl MuxConfig {
    /// Checks ranges, and that the receiver's bounds accept an honest sender's traffic: as
    /// many partial messages as the sender interleaves, and the largest message. Bytes beyond
    /// one largest message are the caller's choice: what an honest peer has in flight to us is
    /// bounded by what we asked of it, which the multiplexer does not know.
    pub fn validate(&self) -> Result<(), MuxConfigError> {
        self.limits.validate()?;
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size) {
            return Err(MuxConfigError::FrameSize(self.frame_size));
        }
        for class in Class::ALL {
            if self.weights[class.index()] == 0 {
                return Err(MuxConfigError::ZeroWeight(class));
            }
            if self.max_active[class.index()] == 0 {
                return Err(MuxConfigError::ZeroActive(class));
            }
        }
        let message = self.limits.max_message_size;
        if self.max_queued_per_class < message {
            return Err(MuxConfigError::QueueBelowMessage {
                queue: self.max_queued_per_class,
                message,
            });
        }
        let active: usize = self.max_active.iter().sum();
        if self.max_partial_messages < active || self.max_buffered_bytes < message {
            return Err(MuxConfigError::ReceiverTooSmall {
                partials: self.max_partial_messages,
                bytes: self.max_buffered_bytes,
                active,
                message,
            });
        }
        if self.partial_timeout.is_zero() {
            return Err(MuxConfigError::PartialTimeout);
        }
        Ok(())
    }

    /// The most frames an honest sender with this configuration sends between two frames of
    /// one started message of `class`: `(Σ weights / weight of class) × max_active[class]`,
    /// rounded up. [`partial_timeout`](Self::partial_timeout) must cover that many frames at
    /// the slowest link an honest deployment runs.
    pub fn max_frames_between(&self, class: Class) -> u64 {
        let sum: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let w = u64::from(self.weights[class.index()]).max(1);
        sum.div_ceil(w) * self.max_active[class.index()] as u64
    }
}

/// Why [`MuxSender::push`] refused a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError {
    /// The message breaks the codec limits (a peer would reject it).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The class's queue would pass its hard cap: the peer is not reading fast enough.
    #[error("{class:?} queue full: {queued} bytes queued, {len} more would pass the cap of {cap}")]
    QueueFull {
        /// The class pushed to.
        class: Class,
        /// Bytes already queued in it.
        queued: usize,
        /// The message's encoded length.
        len: usize,
        /// `max_queued_per_class`.
        cap: usize,
    },
    /// The message's type may not travel in this class
    /// ([`crate::codec::allowed_classes`]); refused by the
    /// connection layer's sending half.
    #[error("a {msg} message may not travel in class {class:?}")]
    ClassNotAllowed {
        /// The message's type.
        msg: &'static str,
        /// The class asked for.
        class: Class,
    },
}

/// Why a received byte stream is not valid multiplexed traffic. Fatal for the connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxError {
    /// A frame sets flag bits that this version does not define.
    #[error("frame of stream {stream} sets reserved flag bits {flags:#04x}")]
    ReservedFlags {
        /// The frame's stream id.
        stream: u32,
        /// The flags byte.
        flags: u8,
    },
    /// A frame has no payload.
    #[error("frame of stream {stream} is empty")]
    EmptyFrame {
        /// The frame's stream id.
        stream: u32,
    },
    /// A message announces more bytes than `max_message_size`.
    #[error("stream {stream} announces a message of {size} bytes, over the limit of {limit}")]
    MessageTooLarge {
        /// The stream id.
        stream: u32,
        /// The announced size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `FIRST` frame names a stream that is still being reassembled.
    #[error("stream {stream} started again while unfinished")]
    DuplicateStream {
        /// The stream id.
        stream: u32,
    },
    /// A continuation frame names no message under reassembly.
    #[error("continuation frame of unknown stream {stream}")]
    UnknownStream {
        /// The stream id.
        stream: u32,
    },
    /// A continuation frame's class differs from its first frame's.
    #[error("stream {stream} started in {started:?} but continues in {frame:?}")]
    ClassMismatch {
        /// The stream id.
        stream: u32,
        /// The class of the first frame.
        started: Class,
        /// The class of this frame.
        frame: Class,
    },
    /// A frame carries more bytes than its message has left.
    #[error("frame of {frame_len} bytes on stream {stream} overruns the {remaining} bytes left")]
    FrameOverrun {
        /// The stream id.
        stream: u32,
        /// The frame's payload length.
        frame_len: usize,
        /// Bytes of the message not yet received before this frame.
        remaining: usize,
    },
    /// A `LAST` frame ends its message short of the announced total.
    #[error("last frame of {frame_len} bytes on stream {stream} leaves {remaining} bytes missing")]
    LastFrameShort {
        /// The stream id.
        stream: u32,
        /// The frame's payload length.
        frame_len: usize,
        /// Bytes of the message not yet received before this frame.
        remaining: usize,
    },
    /// Starting another message would pass `max_partial_messages`.
    #[error("more than {limit} messages under reassembly")]
    TooManyPartial {
        /// The configured limit.
        limit: usize,
    },
    /// Reserving another message would pass `max_buffered_bytes`.
    #[error("reserving {needed} bytes with {buffered} buffered would pass the limit of {limit}")]
    BufferLimit {
        /// The new message's size.
        needed: usize,
        /// Bytes already reserved.
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The node-wide [`ReassemblyBudget`] refused to reserve another message: this connection
    /// is past its share and the rest is owed to others or taken. Not a misbehaviour by itself.
    #[error(
        "node-wide reassembly budget refused {needed} bytes: {used} of {cap} reserved, this \
         connection holds {usage} with a share of {share}"
    )]
    NodeBudget {
        /// The new message's size.
        needed: usize,
        /// The node's total reserved.
        used: usize,
        /// This connection's reservations.
        usage: usize,
        /// This connection's reserved share.
        share: usize,
        /// The node-wide cap.
        cap: usize,
    },
    /// A message under reassembly received no frame for `partial_timeout`.
    #[error(
        "stream {stream} has {received} of {total} bytes and no frame for {allowed:?}: stalled"
    )]
    Stalled {
        /// The stream id.
        stream: u32,
        /// The announced total.
        total: usize,
        /// Bytes received.
        received: usize,
        /// The inactivity it was allowed (`partial_timeout`).
        allowed: Duration,
    },
    /// A reassembled message does not decode.
    #[error("message on stream {stream} does not decode: {source}")]
    Decode {
        /// The stream id.
        stream: u32,
        /// The codec's complaint.
        source: DecodeError,
    },
}

/// A message queued for sending: its stream id, encoded header and payload, and the request
/// what of it may still be dropped (for [`MuxSender::cancel`] and
/// [`MuxSender::cancel_pushes`]).
struct OutMsg {
    stream: u32,
    header: Bytes,
    payload: Bytes,
    revocable: Option<Revocable>,
}

/// One frame ready to emit: its header bytes and the ranges of its message's parts it carries.
struct Frame {
    hdr: [u8; FIRST_FRAME_HEADER_LEN],
    hlen: usize,
    header_part: Range<usize>,
    payload_part: Range<usize>,
}

impl Frame {
    fn of(cut: &Cut, msg: &OutMsg) -> Frame {
        let mut hdr = [0u8; FIRST_FRAME_HEADER_LEN];
        hdr[0..4].copy_from_slice(&msg.stream.to_le_bytes());
        hdr[4] = cut.class.index() as u8
            | if cut.first() { FLAG_FIRST } else { 0 }
            | if cut.last() { FLAG_LAST } else { 0 };
        hdr[5..9].copy_from_slice(&(cut.len as u32).to_le_bytes());
        if cut.header_len == FIRST_FRAME_HEADER_LEN {
            hdr[9..13].copy_from_slice(&(cut.total as u32).to_le_bytes());
        }
        let hl = msg.header.len();
        let (start, end) = (cut.start, cut.start + cut.len);
        Frame {
            hdr,
            hlen: cut.header_len,
            header_part: start.min(hl)..end.min(hl),
            payload_part: start.max(hl) - hl..end.max(hl) - hl,
        }
    }
}

/// The sending half: queues messages by class and emits interleaved frames.
///
/// Drive it by [`push`](Self::push)ing messages and draining
/// [`poll_transmit`](Self::poll_transmit) (or
/// [`poll_transmit_parts`](Self::poll_transmit_parts) for vectored writes) whenever the stream
/// can take bytes; watch [`is_congested`](Self::is_congested) to stop producing.
pub struct MuxSender {
    cfg: MuxConfig,
    sched: Scheduler<OutMsg>,
    next_stream: u32,
    scratch: BytesMut,
}

impl MuxSender {
    /// A sender with `cfg`, which must pass [`MuxConfig::validate`].
    pub fn new(cfg: MuxConfig) -> Result<Self, MuxConfigError> {
        cfg.validate()?;
        Ok(MuxSender {
            sched: Scheduler::new(cfg.frame_size, cfg.weights, cfg.max_active),
            cfg,
            next_stream: 0,
            scratch: BytesMut::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MuxConfig {
        &self.cfg
    }

    /// Encodes `msg` and queues it in `class`. The payload is not copied.
    pub fn push(&mut self, class: Class, msg: &Message) -> Result<(), PushError> {
        let len = codec::check_encodable(msg, &self.cfg.limits)?;
        let cap = self.cfg.max_queued_per_class;
        let queued = self.sched.queued_bytes(class);
        if queued.saturating_add(len) > cap {
            return Err(PushError::QueueFull {
                class,
                queued,
                len,
                cap,
            });
        }
        let (header, payload) = codec::encode_parts(msg, &mut self.scratch);
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1);
        let out = OutMsg {
            stream,
            header,
            payload,
            revocable: msg.revocable(),
        };
        self.sched.push(class, out, len);
        Ok(())
    }

    /// Drops the queued answer to request `req_id` (a response, chunk or not-found, see
    /// [`Message::answers`]) if none of its frames went out yet; an answer already started
    /// finishes, since its receiver would otherwise hold a partial message until it stalls.
    /// Returns whether an answer was dropped. Its bytes leave the queue figures at once.
    pub fn cancel(&mut self, req_id: RequestId) -> bool {
        self.sched
            .remove_unstarted(|m| m.revocable == Some(Revocable::Answer(req_id)))
            > 0
    }

    /// Drops the queued pushed chunks of `id` whose indices lie in `ranges` (the receiver holds
    /// them) if none of their frames went out yet; returns how many were dropped.
    pub fn cancel_pushes(&mut self, id: &ArtifactId, ranges: &[ChunkRange]) -> usize {
        self.sched
            .remove_unstarted(|m| m.revocable.is_some_and(|r| r.is_push_in(id, ranges)))
    }

    /// Encoded message bytes queued in `class` and not yet emitted (frame headers excluded).
    pub fn queued_bytes(&self, class: Class) -> usize {
        self.sched.queued_bytes(class)
    }

    /// Encoded message bytes queued in all classes.
    pub fn queued_bytes_total(&self) -> usize {
        self.sched.queued_bytes_total()
    }

    /// Whether the queued bytes reached the configured `high_water`: stop producing.
    pub fn is_congested(&self) -> bool {
        self.queued_bytes_total() >= self.cfg.high_water
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.sched.is_idle()
    }

    /// Cuts the next frame that fits in `room` bytes and hands it to `emit` with the message it
    /// belongs to; returns the frame's wire length, or `None` when nothing (more) fits.
    fn cut_next(&mut self, room: usize, emit: impl FnOnce(&Frame, &OutMsg)) -> Option<usize> {
        self.sched
            .next_frame(room, |cut, msg| emit(&Frame::of(cut, msg), msg))
            .map(|(cut, _)| cut.wire_len())
    }

    /// Appends whole frames to `out` while they fit in `max_bytes`; returns the bytes appended.
    ///
    /// A frame that does not fit is cut short when at least 512 payload bytes fit, so any
    /// `max_bytes >= MIN_TRANSMIT` makes progress while something is queued.
    #[must_use = "the appended bytes must be written to the stream"]
    pub fn poll_transmit(&mut self, out: &mut BytesMut, max_bytes: usize) -> usize {
        let mut written = 0;
        let queued = self.queued_bytes_total();
        let want = max_bytes.min(queued + queued / MIN_CUT * 13 + 13);
        out.reserve(want);
        while let Some(n) = self.cut_next(max_bytes - written, |cut, msg| {
            out.put_slice(&cut.hdr[..cut.hlen]);
            out.put_slice(&msg.header[cut.header_part.clone()]);
            out.put_slice(&msg.payload[cut.payload_part.clone()]);
        }) {
            written += n;
        }
        written
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but appends the frames to `out` as
    /// [`Bytes`] pieces for a vectored write, without copying large payloads. Returns the
    /// bytes appended.
    ///
    /// Frame headers, and message parts under [`COALESCE_BELOW`] bytes, are copied into one
    /// shared buffer so that runs of small frames form a single piece (few iovecs, and a
    /// receiver gets each small frame contiguous); larger parts are slices of the queued
    /// messages' own bytes.
    #[must_use = "the appended pieces must be written to the stream"]
    pub fn poll_transmit_parts(&mut self, out: &mut Vec<Bytes>, max_bytes: usize) -> usize {
        let mut written = 0;
        // Taken out of `self` for the calls to `cut_next`, which borrow `self` mutably.
        let mut buf = std::mem::take(&mut self.scratch);
        loop {
            let cut = self.cut_next(max_bytes - written, |cut, msg| {
                put_small(&mut buf, out, &cut.hdr[..cut.hlen]);
                put_part(&mut buf, out, &msg.header, cut.header_part.clone());
                put_part(&mut buf, out, &msg.payload, cut.payload_part.clone());
            });
            let Some(n) = cut else { break };
            written += n;
        }
        flush(&mut buf, out);
        self.scratch = buf;
        written
    }
}

/// Message parts shorter than this are copied by [`MuxSender::poll_transmit_parts`] next to
/// their frame header instead of being sent as a separate slice.
pub const COALESCE_BELOW: usize = 4096;
const COALESCE_BUF: usize = 64 << 10;

/// Appends `bytes` to the coalescing buffer, flushing it first if it is full.
fn put_small(buf: &mut BytesMut, out: &mut Vec<Bytes>, bytes: &[u8]) {
    if buf.capacity() - buf.len() < bytes.len() {
        flush(buf, out);
        buf.reserve(COALESCE_BUF.max(bytes.len()));
    }
    buf.put_slice(bytes);
}

/// Appends `range` of `bytes`: copied when small, else as a slice piece of its own.
fn put_part(buf: &mut BytesMut, out: &mut Vec<Bytes>, bytes: &Bytes, range: Range<usize>) {
    if range.len() < COALESCE_BELOW {
        put_small(buf, out, &bytes[range]);
    } else {
        flush(buf, out);
        out.push(bytes.slice(range));
    }
}

/// Moves the bytes written into `buf` to `out` as one piece.
fn flush(buf: &mut BytesMut, out: &mut Vec<Bytes>) {
    if !buf.is_empty() {
        out.push(buf.split().freeze());
    }
}

/// A message under reassembly.
struct Partial {
    stream: u32,
    class: Class,
    buf: BytesMut,
    total: usize,
    /// The stall deadline (its last frame's time + `partial_timeout`), without the pauses
    /// that happened since that frame.
    deadline: Time,
    /// The receiver's paused total at its last frame.
    paused_at_frame: Duration,
}

/// Where the receiver is in the frame stream.
#[derive(Clone, Copy)]
enum RxState {
    /// Reading a frame header; `have` bytes of it are in `hdr`.
    Header { have: usize },
    /// Copying `left` more payload bytes of the current frame into `partials[slot]`.
    Payload {
        slot: usize,
        left: usize,
        last: bool,
    },
}

/// A parsed frame header.
struct FrameHeader {
    stream: u32,
    class: Class,
    first: bool,
    last: bool,
    len: usize,
    total: usize,
}

/// The receiving half: reassembles frames fed from the stream into messages, under bounds.
///
/// Drive it by [`feed`](Self::feed)ing what the stream delivered, then draining
/// [`poll_message`](Self::poll_message) until it returns `Ok(None)`. Input is parsed lazily
/// by `poll_message`, so the bytes held beyond the configured bounds are only what the driver
/// fed and has not drained. A message that fits one frame and arrives within one fed chunk is
/// decoded from a slice of that chunk, without a copy (its payload then shares the chunk's
/// memory); other messages are copied once into a buffer of their announced size.
pub struct MuxReceiver {
    cfg: MuxConfig,
    input: VecDeque<Bytes>,
    input_len: usize,
    state: RxState,
    hdr: [u8; FIRST_FRAME_HEADER_LEN],
    partials: Vec<Partial>,
    buffered: usize,
    error: Option<MuxError>,
    budget: Option<BudgetSlot>,
    /// When the bytes fed last arrived: the start of the messages they begin.
    now: Time,
    /// Time the driver did not read (see [`MuxReceiver::pause_for`]); deadlines move by it.
    paused: Duration,
    /// The earliest stall deadline of the partial messages, kept up to date.
    earliest: Option<Time>,
}

impl MuxReceiver {
    /// A receiver with `cfg`, which must pass [`MuxConfig::validate`].
    pub fn new(cfg: MuxConfig) -> Result<Self, MuxConfigError> {
        cfg.validate()?;
        Ok(Self::new_unchecked(cfg))
    }

    fn new_unchecked(cfg: MuxConfig) -> Self {
        MuxReceiver {
            cfg,
            input: VecDeque::new(),
            input_len: 0,
            state: RxState::Header { have: 0 },
            hdr: [0; FIRST_FRAME_HEADER_LEN],
            partials: Vec::new(),
            buffered: 0,
            error: None,
            budget: None,
            now: Time::ZERO,
            paused: Duration::ZERO,
            earliest: None,
        }
    }

    /// A receiver with `cfg` whose reservations also draw on the node-wide `budget`.
    pub fn with_budget(cfg: MuxConfig, budget: &ReassemblyBudget) -> Result<Self, MuxConfigError> {
        let mut rx = Self::new(cfg)?;
        rx.budget = Some(budget.register());
        Ok(rx)
    }

    /// The node-wide budget this receiver draws on, if any.
    pub fn budget(&self) -> Option<&ReassemblyBudget> {
        self.budget.as_ref().map(BudgetSlot::budget)
    }

    /// Sets the time at which the bytes fed next arrived (never moves back): messages that
    /// have a frame in them get their stall deadline from it.
    pub fn set_time(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    /// Moves every stall deadline `d` later: the driver did not read for `d` (back-pressure
    /// from its own node), which must not count against the peer.
    pub fn pause_for(&mut self, d: Duration) {
        self.paused += d;
        self.earliest = self.earliest.map(|t| t + d);
    }

    /// The earliest stall deadline of the messages under reassembly (the earliest last frame
    /// plus `partial_timeout`, moved by pauses), if any.
    pub fn poll_deadline(&self) -> Option<Time> {
        if self.error.is_some() {
            return None;
        }
        self.earliest
    }

    /// Fails with [`MuxError::Stalled`] (sticky) if a message under reassembly received no
    /// frame for `partial_timeout` at `now`. Call it once the fed input was parsed (with
    /// [`unparsed_bytes`](Self::unparsed_bytes) at zero), so that bytes that arrived in time
    /// are not missed.
    pub fn check_stalled(&mut self, now: Time) -> Result<(), MuxError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.earliest.is_none_or(|t| now < t) {
            return Ok(());
        }
        let late = self
            .partials
            .iter()
            .find(|p| self.deadline_of(p) <= now)
            .map(|p| MuxError::Stalled {
                stream: p.stream,
                total: p.total,
                received: p.buf.len(),
                allowed: self.cfg.partial_timeout,
            });
        match late {
            Some(e) => Err(self.fail(e)),
            None => Ok(()),
        }
    }

    fn deadline_of(&self, p: &Partial) -> Time {
        p.deadline + (self.paused - p.paused_at_frame)
    }

    fn recompute_earliest(&mut self) {
        self.earliest = self.partials.iter().map(|p| self.deadline_of(p)).min();
    }

    /// Records a sticky error and releases every reservation.
    fn fail(&mut self, e: MuxError) -> MuxError {
        self.error = Some(e.clone());
        self.partials.clear();
        if let Some(b) = &mut self.budget {
            b.give(self.buffered);
        }
        self.buffered = 0;
        self.earliest = None;
        e
    }

    /// The configuration.
    pub fn config(&self) -> &MuxConfig {
        &self.cfg
    }

    /// Hands bytes received from the stream to the receiver (no copy).
    pub fn feed(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.input_len += data.len();
            self.input.push_back(data);
        }
    }

    /// Takes all bytes of a read buffer without copying; `buf` is left empty with its spare
    /// capacity, and can reclaim its whole allocation once the receiver drops the bytes.
    pub fn feed_buf(&mut self, buf: &mut BytesMut) {
        self.feed(buf.split().freeze());
    }

    /// Fed bytes not yet parsed.
    pub fn unparsed_bytes(&self) -> usize {
        self.input_len
    }

    /// Messages currently under reassembly (at most `max_partial_messages`).
    pub fn partial_messages(&self) -> usize {
        self.partials.len()
    }

    /// Bytes reserved for messages under reassembly (at most `max_buffered_bytes`).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The next complete message with its class, `Ok(None)` when more input is needed.
    ///
    /// An error is fatal and sticky: the stream cannot be resynchronized, so every later call
    /// returns it again and the driver should close the connection.
    #[must_use = "a received message or error must be handled"]
    pub fn poll_message(&mut self) -> Result<Option<(Class, Message)>, MuxError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.step() {
            Ok(m) => Ok(m),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn step(&mut self) -> Result<Option<(Class, Message)>, MuxError> {
        loop {
            match self.state {
                RxState::Header { have } => {
                    let Some(h) = self.read_header(have)? else {
                        return Ok(None);
                    };
                    if let Some(done) = self.start_frame(h)? {
                        return Ok(Some(done));
                    }
                }
                RxState::Payload { slot, left, last } => {
                    let left = self.copy_payload(slot, left);
                    if left > 0 {
                        self.state = RxState::Payload { slot, left, last };
                        return Ok(None);
                    }
                    self.state = RxState::Header { have: 0 };
                    if last {
                        let p = self.partials.swap_remove(slot);
                        self.buffered -= p.total;
                        if let Some(b) = &mut self.budget {
                            b.give(p.total);
                        }
                        self.recompute_earliest();
                        return self.finish(p.stream, p.class, p.buf.freeze()).map(Some);
                    }
                }
            }
        }
    }

    /// Accumulates header bytes; returns the parsed header once complete.
    fn read_header(&mut self, mut have: usize) -> Result<Option<FrameHeader>, MuxError> {
        let mut need = FRAME_HEADER_LEN;
        loop {
            if have >= FRAME_HEADER_LEN {
                let flags = self.hdr[4];
                if flags & FLAG_FIRST != 0 && flags & FLAG_LAST == 0 {
                    need = FIRST_FRAME_HEADER_LEN;
                }
            }
            if have >= need {
                break;
            }
            let Some(front) = self.input.front_mut() else {
                self.state = RxState::Header { have };
                return Ok(None);
            };
            let n = (need - have).min(front.len());
            self.hdr[have..have + n].copy_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.input.pop_front();
            }
            self.input_len -= n;
            have += n;
        }
        self.state = RxState::Header { have: 0 };
        let h = &self.hdr;
        let stream = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let flags = h[4];
        let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
        if flags & RESERVED_MASK != 0 {
            return Err(MuxError::ReservedFlags { stream, flags });
        }
        if len == 0 {
            return Err(MuxError::EmptyFrame { stream });
        }
        let class = match flags & CLASS_MASK {
            0 => Class::Control,
            1 => Class::Urgent,
            2 => Class::Normal,
            _ => Class::Bulk,
        };
        let first = flags & FLAG_FIRST != 0;
        let last = flags & FLAG_LAST != 0;
        let total = if need == FIRST_FRAME_HEADER_LEN {
            u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize
        } else {
            len
        };
        Ok(Some(FrameHeader {
            stream,
            class,
            first,
            last,
            len,
            total,
        }))
    }

    /// Checks a frame header against the bounds and the streams in progress. Returns a message
    /// when the frame is a whole message available in one chunk.
    fn start_frame(&mut self, h: FrameHeader) -> Result<Option<(Class, Message)>, MuxError> {
        let stream = h.stream;
        if h.first {
            let limit = self.cfg.limits.max_message_size;
            if h.total > limit {
                return Err(MuxError::MessageTooLarge {
                    stream,
                    size: h.total,
                    limit,
                });
            }
            if !h.last && h.len >= h.total {
                return Err(MuxError::FrameOverrun {
                    stream,
                    frame_len: h.len,
                    remaining: h.total,
                });
            }
            if self.partials.iter().any(|p| p.stream == stream) {
                return Err(MuxError::DuplicateStream { stream });
            }
            if h.last {
                // A whole message in one frame: zero-copy when the current chunk holds it.
                if let Some(front) = self.input.front_mut()
                    && front.len() >= h.len
                {
                    let body = front.split_to(h.len);
                    if front.is_empty() {
                        self.input.pop_front();
                    }
                    self.input_len -= h.len;
                    return self.finish(stream, h.class, body).map(Some);
                }
            }
            if self.partials.len() >= self.cfg.max_partial_messages {
                return Err(MuxError::TooManyPartial {
                    limit: self.cfg.max_partial_messages,
                });
            }
            if self.buffered + h.total > self.cfg.max_buffered_bytes {
                return Err(MuxError::BufferLimit {
                    needed: h.total,
                    buffered: self.buffered,
                    limit: self.cfg.max_buffered_bytes,
                });
            }
            if let Some(b) = &mut self.budget {
                b.try_take(h.total).map_err(
                    |Refused {
                         used,
                         usage,
                         share,
                         cap,
                     }| MuxError::NodeBudget {
                        needed: h.total,
                        used,
                        usage,
                        share,
                        cap,
                    },
                )?;
            }
            self.buffered += h.total;
            let deadline = self.now + self.cfg.partial_timeout;
            self.earliest = Some(self.earliest.map_or(deadline, |t| t.min(deadline)));
            self.partials.push(Partial {
                stream,
                class: h.class,
                buf: BytesMut::with_capacity(h.total),
                total: h.total,
                deadline,
                paused_at_frame: self.paused,
            });
            self.state = RxState::Payload {
                slot: self.partials.len() - 1,
                left: h.len,
                last: h.last,
            };
            return Ok(None);
        }
        let Some(slot) = self.partials.iter().position(|p| p.stream == stream) else {
            return Err(MuxError::UnknownStream { stream });
        };
        let p = &self.partials[slot];
        if p.class != h.class {
            return Err(MuxError::ClassMismatch {
                stream,
                started: p.class,
                frame: h.class,
            });
        }
        let remaining = p.total - p.buf.len();
        if h.len > remaining {
            return Err(MuxError::FrameOverrun {
                stream,
                frame_len: h.len,
                remaining,
            });
        }
        if h.last != (h.len == remaining) {
            // A LAST frame that leaves bytes missing, or a non-LAST frame that completes the
            // message (which would leave a zero-byte LAST frame to follow).
            return Err(if h.last {
                MuxError::LastFrameShort {
                    stream,
                    frame_len: h.len,
                    remaining,
                }
            } else {
                MuxError::FrameOverrun {
                    stream,
                    frame_len: h.len,
                    remaining: remaining - 1,
                }
            });
        }
        if !h.last {
            // Progress: the message's deadline moves to this frame's time. Deadlines only move
            // later, so the earliest changes only when this message held it (then one rescan of
            // at most `max_partial_messages`).
            let old = self.deadline_of(p);
            let p = &mut self.partials[slot];
            p.deadline = self.now + self.cfg.partial_timeout;
            p.paused_at_frame = self.paused;
            if self.earliest == Some(old) {
                self.recompute_earliest();
            }
        }
        self.state = RxState::Payload {
            slot,
            left: h.len,
            last: h.last,
        };
        Ok(None)
    }

    /// Copies up to `left` fed bytes into the partial at `slot`; returns how many are still due.
    fn copy_payload(&mut self, slot: usize, mut left: usize) -> usize {
        let buf = &mut self.partials[slot].buf;
        while left > 0 {
            let Some(front) = self.input.front_mut() else {
                break;
            };
            let n = left.min(front.len());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.input.pop_front();
            }
            self.input_len -= n;
            left -= n;
        }
        left
    }

    fn finish(&self, stream: u32, class: Class, body: Bytes) -> Result<(Class, Message), MuxError> {
        codec::decode(body, &self.cfg.limits)
            .map(|m| (class, m))
            .map_err(|source| MuxError::Decode { stream, source })
    }
}

/// The per-input check of the `reassemble` fuzz target, shared with the corpus replay test.
///
/// Uses the first two bytes of `data` to choose how the rest is chunked, feeds the chunks to a
/// [`MuxReceiver`] with small bounds, drawing on a node-wide [`ReassemblyBudget`] that another
/// connection half fills, and drains it after each chunk while time moves on (up to 400 ms per
/// chunk, with pauses of the driver), checking that it never exceeds its bounds or the
/// budget's cap, that an error is sticky and gives its reservations back, that a stall is
/// reported only past a deadline, and that every message it yields is within the codec limits.
///
/// # Panics
///
/// When one of those properties fails: that is a bug to report.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_reassemble(data: &[u8]) {
    let cfg = fuzz_config();
    let (seed, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, data),
    };
    let budget = ReassemblyBudget::new(cfg.max_buffered_bytes);
    let mut other = budget.register();
    let other_holds = cfg.max_buffered_bytes / 4;
    other
        .try_take(other_holds)
        .expect("an empty budget admits a quarter");
    let mut rx =
        MuxReceiver::with_budget(cfg.clone(), &budget).expect("fuzz configuration is valid");
    let input = Bytes::copy_from_slice(body);
    let mut rng = p2p_core::rng::Rng::new(u64::from(seed));
    let mut now = Time::ZERO;
    let mut at = 0;
    while at < input.len() {
        now = now + Duration::from_millis(rng.below(400));
        if rng.below(8) == 0 {
            rx.pause_for(Duration::from_millis(rng.below(400)));
        }
        rx.set_time(now);
        // Chunks of 1..=64 bytes, or the whole rest when the seed is 0.
        let n = if seed == 0 {
            input.len() - at
        } else {
            1 + rng.below(64) as usize
        };
        let end = (at + n).min(input.len());
        rx.feed(input.slice(at..end));
        at = end;
        loop {
            let r = rx.poll_message();
            assert!(rx.partial_messages() <= cfg.max_partial_messages);
            assert!(rx.buffered_bytes() <= cfg.max_buffered_bytes);
            let reserved: usize = rx.partials.iter().map(|p| p.buf.capacity()).sum();
            assert!(reserved <= cfg.max_buffered_bytes, "reserved {reserved}");
            assert!(budget.used() <= budget.cap(), "node-wide cap");
            assert_eq!(budget.used(), other_holds + rx.buffered_bytes());
            match r {
                Ok(Some((_, msg))) => {
                    assert!(codec::check_encodable(&msg, &cfg.limits).is_ok());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(rx.poll_message(), Err(e), "errors must be sticky");
                    assert_eq!(
                        budget.used(),
                        other_holds,
                        "a failed receiver holds nothing"
                    );
                    return;
                }
            }
        }
        let due = rx.poll_deadline();
        match rx.check_stalled(now) {
            Ok(()) => assert!(due.is_none_or(|d| now < d), "a passed deadline is reported"),
            Err(e) => {
                assert!(matches!(e, MuxError::Stalled { .. }), "{e:?}");
                assert!(
                    due.is_some_and(|d| d <= now),
                    "stalled only past the deadline"
                );
                assert_eq!(rx.poll_message(), Err(e), "errors must be sticky");
                assert_eq!(
                    budget.used(),
                    other_holds,
                    "a failed receiver holds nothing"
                );
                return;
            }
        }
    }
    drop(rx);
    assert_eq!(
        budget.used(),
        other_holds,
        "a dropped receiver holds nothing"
    );
}

/// The small-bounds configuration that [`fuzz_reassemble`] uses (so that fuzzing reaches the
/// bounds quickly); seed-corpus generators build valid streams with it.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_config() -> MuxConfig {
    MuxConfig {
        limits: Limits {
            max_message_size: 4096,
            max_attr_len: 16,
            max_adverts: 8,
            max_have_ranges: 8,
        },
        frame_size: MIN_FRAME_SIZE,
        max_active: [1, 1, 1, 1],
        max_queued_per_class: 4096,
        max_partial_messages: 8,
        max_buffered_bytes: 16384,
        partial_timeout: Duration::from_secs(1),
        ..MuxConfig::default()
    }
}
