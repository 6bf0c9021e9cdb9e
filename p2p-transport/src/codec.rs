//! The versioned binary encoding of [`Message`] and of the connection handshake [`Hello`].
//!
//! Decoding works on [`Bytes`] and never copies artifact payloads: the `data` of a push, a
//! response or a chunk is a [`Bytes::slice`] of the input. Every length read from the wire is checked
//! against [`Limits`] (and against the bytes actually present) before anything is allocated,
//! and every malformed input gives a [`DecodeError`], never a panic.
//!
//! # Message format (protocol version 5)
//!
//! All integers are little-endian. A message is one tag byte followed by its fields; the
//! encoding is canonical (one message, one byte string), and a decoder rejects trailing bytes.
//!
//! | tag | message        | fields after the tag                                              |
//! |-----|----------------|-------------------------------------------------------------------|
//! | 1   | `Push`         | advert, `data_len: u32`, `data`                                    |
//! | 2   | `Adverts`      | `count: u16`, `count` × advert                                     |
//! | 3   | `Withdraw`     | `id: [u8; 32]`                                                     |
//! | 4   | `Request`      | `req_id: u64`, `id: [u8; 32]`, `priority: u8`                      |
//! | 5   | `Response`     | `req_id: u64`, `id: [u8; 32]`, `data_len: u32`, `data`             |
//! | 6   | `NotFound`     | `req_id: u64`, `id: [u8; 32]`                                      |
//! | 7   | `ChunkRequest` | `req_id: u64`, `id: [u8; 32]`, `index: u32`, `priority: u8`        |
//! | 8   | `Chunk`        | `req_id: u64`, `id: [u8; 32]`, `index: u32`, `data_len: u32`, `data` |
//! | 9   | `Have`         | `id: [u8; 32]`, `count: u16`, `count` × (`start: u32`, `end: u32`) |
//! | 10  | `Cancel`       | `req_id: u64`                                                      |
//! | 11  | `Decline`      | `id: [u8; 32]`, `count: u16`, `count` × (`start: u32`, `end: u32`) |
//! | 12  | `Fetching`     | advert                                                             |
//!
//! A `Chunk` whose `req_id` is [`PUSHED_CHUNK`](p2p_core::PUSHED_CHUNK) (0) answers no request: its holder pushes it to
//! a peer that said it fetches the artifact (version 3; in version 2 no such chunk was valid).
//! The encoding is the same as a requested chunk's, so the decoder's bounds are the same.
//!
//! Version 4 changes no encoding but how an artifact is named: a chunked artifact is cut into
//! chunks of [`chunk_size_for`](p2p_core::chunks::chunk_size_for) its size (16 KiB for a 4 MiB
//! artifact in a subnet of 128 KiB chunks), and a manifest in another chunk size is bad data,
//! so a version-3 node would refuse the manifests of mid-sized artifacts and name them
//! differently.
//!
//! Version 5 adds `Decline`: a node that asked other peers for chunks of a stripe tells the
//! stripe's owner, so that it pushes none of them; and `Fetching`: in a partial mesh a node
//! that starts fetching a chunked artifact tells its neighbours with the advert (a version-4
//! node would refuse both tags).
//!
//! An advert is `id: [u8; 32]`, `kind: u16`, `size: u64`, `attr_len: u16`, `attr` (44 bytes
//! plus the attribute). The ranges of a `Have` (and of a `Decline`) are half-open chunk index
//! ranges: each is
//! non-empty (`start < end`) and begins at or after the end of the one before (ascending and
//! disjoint); a decoder refuses any other, and more than [`Limits::max_have_ranges`] of them.
//!
//! The payload (`data`) is always the last field, so a message splits into a small header and
//! the payload itself ([`encode_parts`]), which the multiplexer sends without copying.
//!
//! # Chunked artifacts
//!
//! An artifact's id is the SHA-256 of its *root* ([`p2p_core::chunks`]): the artifact's bytes
//! if it is at most `chunk_size` bytes (the same for every member), else its manifest:
//! `b"p2p-gossip/manifest/v1\0\0"` (24 bytes), `size: u64`, `chunk_size: u32`, `count: u32`
//! (= ceil(size / chunk_size), at least 2), then `count` SHA-256s, one per chunk `i` (bytes
//! `i × chunk_size ..` of the artifact). A `Response` carries the root: for a chunked artifact
//! its manifest, which the receiver checks against the id before it asks for any chunk; each
//! `Chunk` is then checked against its hash in the manifest. No small artifact may begin with the
//! tag, so no id names two byte strings. The golden vectors in `tests/it/wire_codec.rs` pin the
//! ids of a small artifact and of a chunked one.
//!
//! # Classes by message type
//!
//! Every message travels in a [`Class`] its type allows ([`allowed_classes`]); the connection
//! layer refuses to queue any other and cuts off a peer that sends one:
//!
//! | message                                                                   | classes |
//! |---------------------------------------------------------------------------|---------|
//! | `Adverts`, `Withdraw`, `Request`, `NotFound`, `ChunkRequest`, `Have`, `Cancel`, `Decline`, `Fetching` | control |
//! | `Push`                                                                    | urgent  |
//! | `Response`, `Chunk`   | urgent, normal or bulk (the requester's priority; a pushed chunk: the pusher's) |
//!
//! # Handshake format
//!
//! [`Hello`] is exactly [`HELLO_LEN`] = 16 bytes, sent once by each side before any message:
//!
//! | bytes  | field                                                          |
//! |--------|----------------------------------------------------------------|
//! | 0..4   | magic `b"P2PG"`: anything else is not a speaker of this protocol |
//! | 4      | hello format version, `2`                                      |
//! | 5..7   | `protocol_version: u16`                                        |
//! | 7..15  | `registry_version: u64`                                        |
//! | 15     | `role` ([`ConnRole`]): `0` main, `1` main offering an express lane, `2` express lane |

use bytes::{BufMut, Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, ChunkRange, Class, Kind, Message, Priority};
use thiserror::Error;

/// The message format version this codec speaks (announced in [`Hello::protocol_version`]):
/// 3 adds pushed chunks (`Chunk` with `req_id` [`PUSHED_CHUNK`](p2p_core::PUSHED_CHUNK)); 4
/// cuts mid-sized artifacts into smaller chunks
/// ([`chunk_size_for`](p2p_core::chunks::chunk_size_for)).
pub const PROTOCOL_VERSION: u16 = 5;
/// The first four bytes of a [`Hello`].
pub const HELLO_MAGIC: [u8; 4] = *b"P2PG";
/// The version of the [`Hello`] layout itself.
pub const HELLO_FORMAT: u8 = 2;
/// The encoded length of a [`Hello`].
pub const HELLO_LEN: usize = 16;
/// The largest `max_message_size` that [`Limits::validate`] accepts: 1 GiB.
pub const MAX_MESSAGE_SIZE_CEILING: usize = 1 << 30;

/// The classes a message of `msg`'s type may travel in (see the module docs): control
/// messages in [`Class::Control`], pushes in [`Class::Urgent`], responses and chunks in the
/// class of the requester's priority (urgent, normal or bulk).
pub fn allowed_classes(msg: &Message) -> &'static [Class] {
    match msg {
        Message::Adverts(_)
        | Message::Withdraw(_)
        | Message::Request { .. }
        | Message::NotFound { .. }
        | Message::ChunkRequest { .. }
        | Message::Have { .. }
        | Message::Cancel { .. }
        | Message::Decline { .. }
        | Message::Fetching(_) => &[Class::Control],
        Message::Push { .. } => &[Class::Urgent],
        Message::Response { .. } | Message::Chunk { .. } => {
            &[Class::Urgent, Class::Normal, Class::Bulk]
        }
    }
}

/// Whether `msg` may travel in `class` ([`allowed_classes`]).
pub fn class_allowed(msg: &Message, class: Class) -> bool {
    allowed_classes(msg).contains(&class)
}

const TAG_PUSH: u8 = 1;
const TAG_ADVERTS: u8 = 2;
const TAG_WITHDRAW: u8 = 3;
const TAG_REQUEST: u8 = 4;
const TAG_RESPONSE: u8 = 5;
const TAG_NOT_FOUND: u8 = 6;
const TAG_CHUNK_REQUEST: u8 = 7;
const TAG_CHUNK: u8 = 8;
const TAG_HAVE: u8 = 9;
const TAG_CANCEL: u8 = 10;
const TAG_DECLINE: u8 = 11;
const TAG_FETCHING: u8 = 12;

/// Encoded length of an advert without its attribute.
const ADVERT_FIXED_LEN: usize = 32 + 2 + 8 + 2;
/// Encoded length of one chunk range of a `Have`.
const RANGE_LEN: usize = 4 + 4;

/// Bounds applied while decoding (and by [`check_encodable`] before sending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message, in bytes (default 16 MiB, at most [`MAX_MESSAGE_SIZE_CEILING`]).
    pub max_message_size: usize,
    /// Longest advert attribute, in bytes (default 64, at most `u16::MAX`).
    pub max_attr_len: usize,
    /// Most adverts in one `Adverts` message (default 1024, at most `u16::MAX`).
    pub max_adverts: usize,
    /// Most chunk ranges in one `Have` message (default 1024, as the core's
    /// `max_have_ranges`; at most `u16::MAX`): 8 KiB of ranges, enough to describe any
    /// holding of an artifact of up to 2,048 chunks (256 MiB in 128 KiB chunks) in one message;
    /// larger holdings take several.
    pub max_have_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 16 << 20,
            max_attr_len: 64,
            max_adverts: 1024,
            max_have_ranges: 1024,
        }
    }
}

/// A [`Limits`] value that the wire format cannot honour.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitsError {
    /// `max_message_size` is zero or above [`MAX_MESSAGE_SIZE_CEILING`].
    #[error("max_message_size {0} is outside 1..={MAX_MESSAGE_SIZE_CEILING}")]
    MessageSize(usize),
    /// `max_attr_len` does not fit the 16-bit length field.
    #[error("max_attr_len {0} exceeds the 16-bit length field")]
    AttrLen(usize),
    /// `max_adverts` does not fit the 16-bit count field.
    #[error("max_adverts {0} exceeds the 16-bit count field")]
    Adverts(usize),
    /// `max_have_ranges` does not fit the 16-bit count field.
    #[error("max_have_ranges {0} exceeds the 16-bit count field")]
    HaveRanges(usize),
}

impl Limits {
    /// The limits matching a core configured with `core`: messages up to
    /// [`largest_message`]`(core)`, the core's attribute length, advert count and chunk range
    /// count. Nodes of one subnet share these settings, so what one sends the others accept.
    pub fn for_core(core: &p2p_core::Config) -> Limits {
        Limits {
            max_message_size: largest_message(core),
            max_attr_len: core.max_attr_len,
            max_adverts: core.max_adverts_per_message,
            max_have_ranges: core.max_have_ranges,
        }
    }

    /// Checks that every limit is representable on the wire.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return Err(LimitsError::MessageSize(self.max_message_size));
        }
        if self.max_attr_len > u16::MAX as usize {
            return Err(LimitsError::AttrLen(self.max_attr_len));
        }
        if self.max_adverts > u16::MAX as usize {
            return Err(LimitsError::Adverts(self.max_adverts));
        }
        if self.max_have_ranges > u16::MAX as usize {
            return Err(LimitsError::HaveRanges(self.max_have_ranges));
        }
        Ok(())
    }
}

/// The encoded length of the largest message a core configured with `core` sends: the
/// largest of a push or response of an artifact that is not chunked (at most
/// `min(max_artifact_size, chunk_size)` bytes, with the longest attribute), a chunk, the
/// response carrying the manifest of a `max_artifact_size` artifact, a full `Adverts` batch and
/// a full `Have`. With the defaults (1 GiB artifacts in 128 KiB chunks) it is the manifest of
/// a 1 GiB artifact: 8,192 chunk hashes, 256 KiB plus a few dozen header bytes.
pub fn largest_message(core: &p2p_core::Config) -> usize {
    let artifact = usize::try_from(core.max_artifact_size).unwrap_or(usize::MAX);
    let chunk = usize::try_from(core.chunk_size).unwrap_or(usize::MAX);
    let whole = artifact.min(chunk);
    // Push: tag, advert with its attribute, data_len; a response or chunk header is shorter.
    let push = (1 + ADVERT_FIXED_LEN + 4)
        .saturating_add(core.max_attr_len)
        .saturating_add(whole);
    let chunked = artifact > chunk;
    let chunk_msg = if chunked {
        (1 + 8 + 32 + 4 + 4usize).saturating_add(chunk)
    } else {
        0
    };
    let chunks = core
        .max_artifact_size
        .div_ceil(u64::from(core.chunk_size.max(1)));
    let manifest = usize::try_from(chunks)
        .unwrap_or(usize::MAX)
        .saturating_mul(32)
        .saturating_add(p2p_core::chunks::MANIFEST_HEADER_LEN);
    let manifest_msg = if chunked {
        (1 + 8 + 32 + 4usize).saturating_add(manifest)
    } else {
        0
    };
    let adverts = core
        .max_adverts_per_message
        .saturating_mul(ADVERT_FIXED_LEN.saturating_add(core.max_attr_len))
        .saturating_add(1 + 2);
    let have = core
        .max_have_ranges
        .saturating_mul(RANGE_LEN)
        .saturating_add(1 + 32 + 2);
    push.max(chunk_msg).max(manifest_msg).max(adverts).max(have)
}

/// Why bytes from a peer are not a valid message or hello.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside a field.
    #[error("truncated {what}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The first byte names no message type.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// The message (or its announced payload) is larger than the limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The size found or announced.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An advert's attribute is longer than the limit.
    #[error("advert attribute of {len} bytes exceeds the limit of {limit}")]
    AttrTooLong {
        /// The announced length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An `Adverts` message announces more adverts than the limit.
    #[error("{count} adverts in one message exceed the limit of {limit}")]
    TooManyAdverts {
        /// The announced count.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `Have` or `Decline` message announces more chunk ranges than the limit.
    #[error("{count} chunk ranges in one message exceed the limit of {limit}")]
    TooManyRanges {
        /// The announced count.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A chunk range of a `Have` or `Decline` is empty (`start >= end`).
    #[error("empty chunk range {start}..{end}")]
    EmptyRange {
        /// The range's start.
        start: u32,
        /// The range's end.
        end: u32,
    },
    /// A chunk range of a `Have` or `Decline` starts before the end of the previous one (ranges must be
    /// ascending and disjoint).
    #[error(
        "chunk range starting at {start} overlaps or precedes the previous one ending at {previous_end}"
    )]
    UnorderedRanges {
        /// The end of the previous range.
        previous_end: u32,
        /// The start of the offending range.
        start: u32,
    },
    /// Bytes remain after a complete message or hello.
    #[error("{extra} trailing bytes after a complete {what}")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes are left over.
        extra: usize,
    },
    /// The handshake does not start with [`HELLO_MAGIC`]: the peer does not speak this protocol.
    #[error("not a p2p-gossip peer: handshake starts with {found:02x?}, expected \"P2PG\"")]
    BadMagic {
        /// The bytes found where the magic should be (as many as were present, up to 4).
        found: Vec<u8>,
    },
    /// The hello names a connection role this codec does not know.
    #[error("unknown connection role {found} in the hello")]
    BadHelloRole {
        /// The role byte.
        found: u8,
    },
    /// The hello layout version is not one this codec reads.
    #[error("unsupported hello format version {found} (this node reads {HELLO_FORMAT})")]
    BadHelloFormat {
        /// The version byte found.
        found: u8,
    },
    /// The peer speaks a message protocol version that this codec does not.
    #[error("unsupported protocol version {found} (this node speaks {PROTOCOL_VERSION})")]
    BadProtocolVersion {
        /// The version announced by the peer.
        found: u16,
    },
}

/// Why a message cannot be sent under the given [`Limits`] (the peer would reject it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message is larger than `max_message_size`.
    #[error("encoded {name} message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The message type.
        name: &'static str,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An advert's attribute is longer than `max_attr_len`.
    #[error("advert attribute of {len} bytes exceeds the limit of {limit}")]
    AttrTooLong {
        /// The attribute's length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An `Adverts` message holds more than `max_adverts` adverts.
    #[error("{count} adverts in one message exceed the limit of {limit}")]
    TooManyAdverts {
        /// The number of adverts.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `Have` or `Decline` message holds more than `max_have_ranges` ranges.
    #[error("{count} chunk ranges in one message exceed the limit of {limit}")]
    TooManyRanges {
        /// The number of ranges.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `Have` or `Decline` message's ranges are not non-empty, ascending and disjoint.
    #[error("chunk ranges must be non-empty, ascending and disjoint")]
    BadRanges,
}

/// The connection handshake, sent by each side before any message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The message format version the sender speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The registry (membership) version the sender currently knows.
    pub registry_version: u64,
    /// What the connection is for.
    pub role: ConnRole,
}

/// What a connection is for, announced in its [`Hello`] (see [`crate::express`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnRole {
    /// The connection to a peer; `express` says the sender takes an express lane beside it.
    Main {
        /// The sender offers an express lane: as the dialer it opens one once both offered, as
        /// the acceptor it admits one.
        express: bool,
    },
    /// The express lane beside the sender's main connection to the receiver: it carries only
    /// the classes [`crate::express::carries`] names.
    Express,
}

impl ConnRole {
    fn to_byte(self) -> u8 {
        match self {
            ConnRole::Main { express: false } => 0,
            ConnRole::Main { express: true } => 1,
            ConnRole::Express => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => ConnRole::Main { express: false },
            1 => ConnRole::Main { express: true },
            2 => ConnRole::Express,
            _ => return None,
        })
    }
}

impl Hello {
    /// A hello of a main connection without an express lane, for this codec's
    /// [`PROTOCOL_VERSION`].
    pub fn new(registry_version: u64) -> Self {
        Hello::with_role(registry_version, ConnRole::Main { express: false })
    }

    /// A hello of a connection in the given role.
    pub fn with_role(registry_version: u64, role: ConnRole) -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            registry_version,
            role,
        }
    }
}

/// Appends the [`HELLO_LEN`] bytes of `hello` to `out`.
pub fn encode_hello(hello: &Hello, out: &mut BytesMut) {
    out.reserve(HELLO_LEN);
    out.put_slice(&HELLO_MAGIC);
    out.put_u8(HELLO_FORMAT);
    out.put_u16_le(hello.protocol_version);
    out.put_u64_le(hello.registry_version);
    out.put_u8(hello.role.to_byte());
}

/// Decodes a hello of exactly [`HELLO_LEN`] bytes.
///
/// The magic is checked first, on whatever bytes are present, so a non-speaker (say, an HTTP
/// client) gets [`DecodeError::BadMagic`] rather than a length complaint. A protocol version
/// other than [`PROTOCOL_VERSION`] is [`DecodeError::BadProtocolVersion`].
pub fn decode_hello(buf: &[u8]) -> Result<Hello, DecodeError> {
    let magic_present = buf.len().min(HELLO_MAGIC.len());
    if buf[..magic_present] != HELLO_MAGIC[..magic_present] {
        return Err(DecodeError::BadMagic {
            found: buf[..magic_present].to_vec(),
        });
    }
    let mut r = Reader { buf, pos: 0 };
    r.take(4, "hello magic")?;
    let format = r.u8("hello format")?;
    if format != HELLO_FORMAT {
        return Err(DecodeError::BadHelloFormat { found: format });
    }
    let protocol_version = r.u16("hello protocol version")?;
    let registry_version = r.u64("hello registry version")?;
    let role_byte = r.u8("hello role")?;
    r.finish("hello")?;
    if protocol_version != PROTOCOL_VERSION {
        return Err(DecodeError::BadProtocolVersion {
            found: protocol_version,
        });
    }
    let role =
        ConnRole::from_byte(role_byte).ok_or(DecodeError::BadHelloRole { found: role_byte })?;
    Ok(Hello {
        protocol_version,
        registry_version,
        role,
    })
}

/// The exact number of bytes [`encode`] appends for `msg`. Cheap: no allocation, no copy.
pub fn encoded_len(msg: &Message) -> usize {
    header_len(msg) + msg.payload_len()
}

/// The length of the part of `msg`'s encoding that precedes its payload.
fn header_len(msg: &Message) -> usize {
    1 + match msg {
        Message::Push { advert, .. } => advert_len(advert) + 4,
        Message::Adverts(adverts) => 2 + adverts.iter().map(advert_len).sum::<usize>(),
        Message::Withdraw(_) => 32,
        Message::Fetching(advert) => advert_len(advert),
        Message::Request { .. } => 8 + 32 + 1,
        Message::Response { .. } => 8 + 32 + 4,
        Message::NotFound { .. } => 8 + 32,
        Message::ChunkRequest { .. } => 8 + 32 + 4 + 1,
        Message::Chunk { .. } => 8 + 32 + 4 + 4,
        Message::Have { ranges, .. } | Message::Decline { ranges, .. } => {
            32 + 2 + RANGE_LEN * ranges.len()
        }
        Message::Cancel { .. } => 8,
    }
}

fn advert_len(a: &Advert) -> usize {
    ADVERT_FIXED_LEN + a.attr.len()
}

/// Checks that `msg` fits `limits` (so a peer with the same limits accepts it) and returns
/// its [`encoded_len`]. Messages that pass can be given to [`encode`] safely.
pub fn check_encodable(msg: &Message, limits: &Limits) -> Result<usize, EncodeError> {
    let check_attr = |a: &Advert| {
        if a.attr.len() > limits.max_attr_len.min(u16::MAX as usize) {
            Err(EncodeError::AttrTooLong {
                len: a.attr.len(),
                limit: limits.max_attr_len,
            })
        } else {
            Ok(())
        }
    };
    match msg {
        Message::Push { advert, .. } | Message::Fetching(advert) => check_attr(advert)?,
        Message::Adverts(adverts) => {
            if adverts.len() > limits.max_adverts.min(u16::MAX as usize) {
                return Err(EncodeError::TooManyAdverts {
                    count: adverts.len(),
                    limit: limits.max_adverts,
                });
            }
            adverts.iter().try_for_each(check_attr)?;
        }
        Message::Have { ranges, .. } | Message::Decline { ranges, .. } => {
            if ranges.len() > limits.max_have_ranges.min(u16::MAX as usize) {
                return Err(EncodeError::TooManyRanges {
                    count: ranges.len(),
                    limit: limits.max_have_ranges,
                });
            }
            let mut previous_end = 0;
            for r in ranges {
                if r.start >= r.end || r.start < previous_end {
                    return Err(EncodeError::BadRanges);
                }
                previous_end = r.end;
            }
        }
        _ => {}
    }
    let size = encoded_len(msg);
    let limit = limits.max_message_size.min(MAX_MESSAGE_SIZE_CEILING);
    if size > limit {
        return Err(EncodeError::TooLarge {
            name: msg.name(),
            size,
            limit: limits.max_message_size,
        });
    }
    Ok(size)
}

/// Appends the encoding of `msg` to `out` (reserving [`encoded_len`] bytes once).
///
/// # Panics
///
/// If a length does not fit its field (payload over 4 GiB, attribute over 64 KiB, more than
/// 65535 adverts or chunk ranges): a caller's bug. [`check_encodable`] rules all of these out.
pub fn encode(msg: &Message, out: &mut BytesMut) {
    out.reserve(encoded_len(msg));
    encode_header(msg, out);
    match msg {
        Message::Push { data, .. }
        | Message::Response { data, .. }
        | Message::Chunk { data, .. } => out.put_slice(data),
        _ => {}
    }
}

/// Encodes `msg` as a small header and its payload, without copying the payload.
///
/// The header is written into `scratch` (which is split, so one allocation serves many
/// headers) and the payload is a reference-counted clone of the message's `data` (empty for
/// messages without one). `header ++ payload` equals the output of [`encode`].
///
/// # Panics
///
/// As [`encode`].
pub fn encode_parts(msg: &Message, scratch: &mut BytesMut) -> (Bytes, Bytes) {
    let hlen = header_len(msg);
    if scratch.capacity() - scratch.len() < hlen {
        scratch.reserve(hlen.max(4096));
    }
    encode_header(msg, scratch);
    let header = scratch.split().freeze();
    let payload = match msg {
        Message::Push { data, .. }
        | Message::Response { data, .. }
        | Message::Chunk { data, .. } => data.clone(),
        _ => Bytes::new(),
    };
    (header, payload)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len)
        .expect("payload length exceeds the u32 field; check_encodable rules this out")
}

fn len_u16(len: usize, what: &str) -> u16 {
    u16::try_from(len)
        .unwrap_or_else(|_| panic!("{what} exceeds the u16 field; check_encodable rules this out"))
}

fn put_advert(a: &Advert, out: &mut BytesMut) {
    out.put_slice(&a.id.0);
    out.put_u16_le(a.kind.0);
    out.put_u64_le(a.size);
    out.put_u16_le(len_u16(a.attr.len(), "advert attribute length"));
    out.put_slice(&a.attr);
}

fn encode_header(msg: &Message, out: &mut BytesMut) {
    match msg {
        Message::Push { advert, data } => {
            out.put_u8(TAG_PUSH);
            put_advert(advert, out);
            out.put_u32_le(len_u32(data.len()));
        }
        Message::Adverts(adverts) => {
            out.put_u8(TAG_ADVERTS);
            out.put_u16_le(len_u16(adverts.len(), "advert count"));
            for a in adverts {
                put_advert(a, out);
            }
        }
        Message::Fetching(advert) => {
            out.put_u8(TAG_FETCHING);
            put_advert(advert, out);
        }
        Message::Withdraw(id) => {
            out.put_u8(TAG_WITHDRAW);
            out.put_slice(&id.0);
        }
        Message::Request {
            req_id,
            id,
            priority,
        } => {
            out.put_u8(TAG_REQUEST);
            out.put_u64_le(*req_id);
            out.put_slice(&id.0);
            out.put_u8(priority.0);
        }
        Message::Response { req_id, id, data } => {
            out.put_u8(TAG_RESPONSE);
            out.put_u64_le(*req_id);
            out.put_slice(&id.0);
            out.put_u32_le(len_u32(data.len()));
        }
        Message::NotFound { req_id, id } => {
            out.put_u8(TAG_NOT_FOUND);
            out.put_u64_le(*req_id);
            out.put_slice(&id.0);
        }
        Message::ChunkRequest {
            req_id,
            id,
            index,
            priority,
        } => {
            out.put_u8(TAG_CHUNK_REQUEST);
            out.put_u64_le(*req_id);
            out.put_slice(&id.0);
            out.put_u32_le(*index);
            out.put_u8(priority.0);
        }
        Message::Chunk {
            req_id,
            id,
            index,
            data,
        } => {
            out.put_u8(TAG_CHUNK);
            out.put_u64_le(*req_id);
            out.put_slice(&id.0);
            out.put_u32_le(*index);
            out.put_u32_le(len_u32(data.len()));
        }
        Message::Have { id, ranges } | Message::Decline { id, ranges } => {
            let tag = if matches!(msg, Message::Have { .. }) {
                TAG_HAVE
            } else {
                TAG_DECLINE
            };
            out.put_u8(tag);
            out.put_slice(&id.0);
            out.put_u16_le(len_u16(ranges.len(), "chunk range count"));
            for r in ranges {
                out.put_u32_le(r.start);
                out.put_u32_le(r.end);
            }
        }
        Message::Cancel { req_id } => {
            out.put_u8(TAG_CANCEL);
            out.put_u64_le(*req_id);
        }
    }
}

/// Decodes one message that occupies all of `buf`.
///
/// Payloads are slices of `buf` (no copy); advert attributes, which the core keeps for long,
/// are copied so that they do not pin a large receive buffer in memory.
pub fn decode(buf: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
    if buf.len() > limits.max_message_size {
        return Err(DecodeError::TooLarge {
            size: buf.len(),
            limit: limits.max_message_size,
        });
    }
    let mut r = Reader { buf: &buf, pos: 0 };
    let tag = r.u8("message tag")?;
    let msg = match tag {
        TAG_PUSH => {
            let advert = r.advert(limits)?;
            let data = r.payload(&buf, limits)?;
            Message::Push { advert, data }
        }
        TAG_ADVERTS => {
            let count = r.u16("advert count")? as usize;
            if count > limits.max_adverts {
                return Err(DecodeError::TooManyAdverts {
                    count,
                    limit: limits.max_adverts,
                });
            }
            let needed = count * ADVERT_FIXED_LEN;
            if needed > r.remaining() {
                return Err(DecodeError::Truncated {
                    what: "adverts",
                    needed,
                    available: r.remaining(),
                });
            }
            let mut adverts = Vec::with_capacity(count);
            for _ in 0..count {
                adverts.push(r.advert(limits)?);
            }
            Message::Adverts(adverts)
        }
        TAG_WITHDRAW => Message::Withdraw(r.id("withdrawn id")?),
        TAG_FETCHING => Message::Fetching(r.advert(limits)?),
        TAG_REQUEST => Message::Request {
            req_id: r.u64("request id")?,
            id: r.id("requested id")?,
            priority: Priority(r.u8("request priority")?),
        },
        TAG_RESPONSE => {
            let req_id = r.u64("request id")?;
            let id = r.id("response id")?;
            let data = r.payload(&buf, limits)?;
            Message::Response { req_id, id, data }
        }
        TAG_NOT_FOUND => Message::NotFound {
            req_id: r.u64("request id")?,
            id: r.id("not-found id")?,
        },
        TAG_CHUNK_REQUEST => Message::ChunkRequest {
            req_id: r.u64("request id")?,
            id: r.id("chunk request id")?,
            index: r.u32("chunk index")?,
            priority: Priority(r.u8("chunk request priority")?),
        },
        TAG_CHUNK => {
            let req_id = r.u64("request id")?;
            let id = r.id("chunk id")?;
            let index = r.u32("chunk index")?;
            let data = r.payload(&buf, limits)?;
            Message::Chunk {
                req_id,
                id,
                index,
                data,
            }
        }
        TAG_HAVE => {
            let id = r.id("have id")?;
            let ranges = r.ranges(limits)?;
            Message::Have { id, ranges }
        }
        TAG_CANCEL => Message::Cancel {
            req_id: r.u64("request id")?,
        },
        TAG_DECLINE => {
            let id = r.id("decline id")?;
            let ranges = r.ranges(limits)?;
            Message::Decline { id, ranges }
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    r.finish(msg.name())?;
    Ok(msg)
}

/// A bounds-checked cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn id(&mut self, what: &'static str) -> Result<ArtifactId, DecodeError> {
        Ok(ArtifactId(self.array(what)?))
    }

    fn advert(&mut self, limits: &Limits) -> Result<Advert, DecodeError> {
        let id = self.id("advert id")?;
        let kind = Kind(self.u16("advert kind")?);
        let size = self.u64("advert size")?;
        let attr_len = self.u16("advert attribute length")? as usize;
        if attr_len > limits.max_attr_len {
            return Err(DecodeError::AttrTooLong {
                len: attr_len,
                limit: limits.max_attr_len,
            });
        }
        let attr = self.take(attr_len, "advert attribute")?;
        let attr = if attr.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(attr)
        };
        Ok(Advert {
            id,
            kind,
            size,
            attr,
        })
    }

    /// Reads `count: u16` and that many chunk ranges, checking the count against the limit
    /// and the bytes present before allocating, and every range's order.
    fn ranges(&mut self, limits: &Limits) -> Result<Vec<ChunkRange>, DecodeError> {
        let count = self.u16("chunk range count")? as usize;
        if count > limits.max_have_ranges {
            return Err(DecodeError::TooManyRanges {
                count,
                limit: limits.max_have_ranges,
            });
        }
        let needed = count * RANGE_LEN;
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                what: "chunk ranges",
                needed,
                available: self.remaining(),
            });
        }
        let mut ranges = Vec::with_capacity(count);
        let mut previous_end = 0;
        for _ in 0..count {
            let start = self.u32("chunk range start")?;
            let end = self.u32("chunk range end")?;
            if start >= end {
                return Err(DecodeError::EmptyRange { start, end });
            }
            if start < previous_end {
                return Err(DecodeError::UnorderedRanges {
                    previous_end,
                    start,
                });
            }
            previous_end = end;
            ranges.push(ChunkRange { start, end });
        }
        Ok(ranges)
    }

    /// Reads `data_len: u32` and slices that many bytes out of `whole` without copying.
    fn payload(&mut self, whole: &Bytes, limits: &Limits) -> Result<Bytes, DecodeError> {
        let len = self.u32("payload length")? as usize;
        if len > limits.max_message_size {
            return Err(DecodeError::TooLarge {
                size: len,
                limit: limits.max_message_size,
            });
        }
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                what: "payload",
                needed: len,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += len;
        Ok(whole.slice(start..start + len))
    }

    fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { what, extra }),
        }
    }
}

/// The per-input check of the `decode` fuzz target, shared with the corpus replay test.
///
/// Decodes `data` as a message (under default and under tight limits) and as a hello; whatever
/// decodes must re-encode to exactly `data` (the format is canonical), with [`encoded_len`]
/// and [`encode_parts`] agreeing, and decode again to the same value.
///
/// # Panics
///
/// When one of those properties fails: that is a bug to report.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let default = Limits::default();
    let tight = Limits {
        max_message_size: 512,
        max_attr_len: 4,
        max_adverts: 3,
        max_have_ranges: 2,
    };
    let loose = decode(input.clone(), &default);
    if let Ok(msg) = &loose {
        let mut out = BytesMut::new();
        encode(msg, &mut out);
        assert_eq!(
            out.len(),
            encoded_len(msg),
            "encoded_len disagrees with encode"
        );
        assert_eq!(&out[..], data, "re-encoding differs from the input");
        let mut scratch = BytesMut::new();
        let (head, payload) = encode_parts(msg, &mut scratch);
        assert_eq!(head.len() + payload.len(), data.len());
        assert_eq!(&data[..head.len()], &head[..]);
        assert_eq!(&data[head.len()..], &payload[..]);
        assert_eq!(check_encodable(msg, &default), Ok(data.len()));
        let again = decode(out.freeze(), &default).expect("re-encoded message must decode");
        assert_eq!(&again, msg);
    }
    if let Ok(msg) = decode(input, &tight) {
        assert_eq!(
            loose.as_ref().ok(),
            Some(&msg),
            "tight limits accepted what default refused"
        );
    }
    if let Ok(hello) = decode_hello(data) {
        let mut out = BytesMut::new();
        encode_hello(&hello, &mut out);
        assert_eq!(&out[..], data, "re-encoded hello differs from the input");
    }
}
