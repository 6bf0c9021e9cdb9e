//! Identities, artifacts, adverts, priorities and virtual time.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

fn fmt_hex_prefix(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in &bytes[..6] {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// A node's identity: the SHA-256 of its TLS public key (SubjectPublicKeyInfo DER).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

/// Feeds a 32-byte id to a hasher as four words: the core's keyed hasher takes whole words in
/// one step each, a byte slice (with its length prefix) in several.
fn hash_words<H: std::hash::Hasher>(bytes: &[u8; 32], state: &mut H) {
    for w in bytes.chunks_exact(8) {
        state.write_u64(u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_words(&self.0, state);
    }
}

impl NodeId {
    /// The node id of a public key given as SubjectPublicKeyInfo DER.
    pub fn from_public_key_der(spki_der: &[u8]) -> Self {
        NodeId(Sha256::digest(spki_der).into())
    }

    /// The full id as lowercase hex.
    pub fn to_hex(&self) -> String {
        to_hex32(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex32(s).map(NodeId)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("node:")?;
        fmt_hex_prefix(&self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex_prefix(&self.0, f)
    }
}

/// An artifact's name: the SHA-256 of its root (its bytes, or its manifest if it is larger than
/// one chunk: see [`chunks`](crate::chunks)).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ArtifactId(pub [u8; 32]);

impl std::hash::Hash for ArtifactId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_words(&self.0, state);
    }
}

impl ArtifactId {
    /// The id of `data`: its SHA-256.
    pub fn of(data: &[u8]) -> Self {
        ArtifactId(Sha256::digest(data).into())
    }

    /// The full id as lowercase hex.
    pub fn to_hex(&self) -> String {
        to_hex32(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex32(s).map(ArtifactId)
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("art:")?;
        fmt_hex_prefix(&self.0, f)
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex_prefix(&self.0, f)
    }
}

fn to_hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The application's channel for an artifact (consensus, ingress, certification, ...).
///
/// Limits on tracked adverts are applied per peer and per kind, so a flood of one kind
/// cannot crowd out another.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Kind(pub u16);

/// Download priority chosen by the application's priority function: higher is more urgent.
///
/// Downloads start in priority order (FIFO within a priority), and the artifact travels on
/// the wire in the [`Class`] of the requester's priority.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Priority(pub u8);

impl Priority {
    /// The most urgent priority.
    pub const URGENT: Priority = Priority(255);
    /// A middle priority: the default for adverts.
    pub const NORMAL: Priority = Priority(128);
    /// The least urgent priority.
    pub const BULK: Priority = Priority(0);

    /// The wire class this priority travels in: `>= 192` urgent, `>= 64` normal, else bulk.
    pub fn class(self) -> Class {
        match self.0 {
            192..=255 => Class::Urgent,
            64..=191 => Class::Normal,
            _ => Class::Bulk,
        }
    }
}

/// The wire scheduler's priority class of an outgoing message.
///
/// The multiplexer interleaves frames by class with weighted fairness: lower classes go first,
/// higher classes still progress. Control messages (adverts, requests, withdraws, not-found)
/// are small and travel in [`Class::Control`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Class {
    /// Protocol control traffic.
    Control = 0,
    /// Urgent artifacts (and pushes of small artifacts).
    Urgent = 1,
    /// Normal artifacts.
    Normal = 2,
    /// Bulk artifacts.
    Bulk = 3,
}

impl Class {
    /// All classes, most urgent first.
    pub const ALL: [Class; 4] = [Class::Control, Class::Urgent, Class::Normal, Class::Bulk];
    /// Number of classes.
    pub const COUNT: usize = 4;

    /// The index of this class in [`Class::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The small announcement of an artifact: what a peer reads before deciding to fetch it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Advert {
    /// SHA-256 of the artifact's bytes.
    pub id: ArtifactId,
    /// The application's channel.
    pub kind: Kind,
    /// The artifact's size in bytes.
    pub size: u64,
    /// A few application bytes (a height, a round) for the priority function; bounded by
    /// [`Config::max_attr_len`](crate::Config::max_attr_len).
    pub attr: Bytes,
}

/// An artifact: opaque bytes named by their SHA-256, with a kind and attribute bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Artifact {
    /// The SHA-256 of `data`, or of its manifest if it is chunked.
    pub id: ArtifactId,
    /// The application's channel.
    pub kind: Kind,
    /// Application bytes copied into the advert.
    pub attr: Bytes,
    /// The artifact's bytes.
    pub data: Bytes,
}

impl Artifact {
    /// An artifact of `data`; its id is computed here, with the default chunk size
    /// ([`content_id`](crate::chunks::content_id)).
    pub fn new(kind: Kind, attr: impl Into<Bytes>, data: impl Into<Bytes>) -> Self {
        Self::with_chunk_size(kind, attr, data, crate::chunks::DEFAULT_CHUNK_SIZE)
    }

    /// An artifact of `data` named for a subnet whose chunk size is `chunk_size`.
    pub fn with_chunk_size(
        kind: Kind,
        attr: impl Into<Bytes>,
        data: impl Into<Bytes>,
        chunk_size: u32,
    ) -> Self {
        let data = data.into();
        Artifact {
            id: crate::chunks::content_id(&data, chunk_size),
            kind,
            attr: attr.into(),
            data,
        }
    }

    /// The advert that announces this artifact.
    pub fn advert(&self) -> Advert {
        Advert {
            id: self.id,
            kind: self.kind,
            size: self.data.len() as u64,
            attr: self.attr.clone(),
        }
    }
}

/// A point in virtual time: nanoseconds since an epoch the driver chooses.
///
/// The core never reads a clock; every input carries the current `Time`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);
    /// The farthest representable time.
    pub const MAX: Time = Time(u64::MAX);

    /// A time `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Time(nanos)
    }

    /// A time `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Time(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_id_is_sha256_of_bytes() {
        let id = ArtifactId::of(b"abc");
        assert_eq!(
            id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ArtifactId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ArtifactId::from_hex("zz"), None);
    }

    #[test]
    fn priority_maps_to_wire_class() {
        assert_eq!(Priority::URGENT.class(), Class::Urgent);
        assert_eq!(Priority::NORMAL.class(), Class::Normal);
        assert_eq!(Priority::BULK.class(), Class::Bulk);
        assert_eq!(Priority(63).class(), Class::Bulk);
        assert_eq!(Priority(64).class(), Class::Normal);
        assert_eq!(Priority(192).class(), Class::Urgent);
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = Time::from_millis(5);
        assert_eq!(t + Duration::from_millis(1), Time::from_millis(6));
        assert_eq!(Time::ZERO - t, Duration::ZERO);
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
    }
}
