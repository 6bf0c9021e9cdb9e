//! Serde mirrors of the core's inputs and outputs: one [`Record`] per trace line.
//!
//! Ids are 64 lowercase hex digits, byte strings are standard base64, times are nanoseconds
//! ([`Time::as_nanos`](p2p_core::Time::as_nanos)), kinds and priorities are plain numbers.

use super::profile::PriorityProfile;
use base64::Engine;
use p2p_core::{
    Advert, Artifact, ArtifactId, Bytes, ChunkRange, Class, Decision, DisconnectReason, DropReason,
    Event, Input, Kind, Message, NodeId, Output, Priority, RetryReason,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn not_hex32<E: serde::de::Error>(what: &str, s: &str) -> E {
    E::custom(format!("invalid {what} {s:?}: expected 64 hex digits"))
}

pub(crate) mod node_hex {
    use super::*;
    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::from_hex(&s).ok_or_else(|| not_hex32("node id", &s))
    }
}

mod node_hex_vec {
    use super::*;
    pub fn serialize<S: Serializer>(ids: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(|i| i.to_hex()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NodeId>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| NodeId::from_hex(s).ok_or_else(|| not_hex32("node id", s)))
            .collect()
    }
}

mod art_hex {
    use super::*;
    pub fn serialize<S: Serializer>(id: &ArtifactId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ArtifactId, D::Error> {
        let s = String::deserialize(d)?;
        ArtifactId::from_hex(&s).ok_or_else(|| not_hex32("artifact id", &s))
    }
}

mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
    }
}

mod manifest_b64 {
    use super::*;
    use p2p_core::Manifest;
    pub fn serialize<S: Serializer>(m: &Manifest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(m.root()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Manifest, D::Error> {
        let s = String::deserialize(d)?;
        let root = B64
            .decode(s.as_bytes())
            .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))?;
        Manifest::parse(Bytes::from(root))
            .map_err(|e| D::Error::custom(format!("invalid manifest: {e}")))
    }
}

mod class_name {
    use super::*;
    pub fn serialize<S: Serializer>(c: &Class, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::class_name(*c))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Class, D::Error> {
        let s = String::deserialize(d)?;
        Class::ALL
            .into_iter()
            .find(|c| super::class_name(*c) == s)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown class {s:?}: expected control, urgent, normal or bulk"
                ))
            })
    }
}

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Control => "control",
        Class::Urgent => "urgent",
        Class::Normal => "normal",
        Class::Bulk => "bulk",
    }
}

/// A byte payload as recorded: whole, or (for outputs over the header's
/// `output_payload_inline_max`) as its length and SHA-256.
///
/// In JSON: a base64 string, or `{"len": N, "sha256": "<64 hex>"}`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    /// The bytes themselves.
    Inline(Bytes),
    /// Only the length and SHA-256 of the bytes.
    Digest {
        /// Length in bytes.
        len: u64,
        /// SHA-256 of the bytes.
        sha256: [u8; 32],
    },
}

impl Payload {
    /// `data` inline if it is at most `inline_max` bytes long, else its digest.
    pub fn of(data: &Bytes, inline_max: u64) -> Self {
        if data.len() as u64 <= inline_max {
            Payload::Inline(data.clone())
        } else {
            Payload::Digest {
                len: data.len() as u64,
                sha256: Sha256::digest(data).into(),
            }
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::Digest { len, .. } => *len,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if recorded inline.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Payload::Inline(b) => Some(b),
            Payload::Digest { .. } => None,
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct DigestRepr {
            len: u64,
            sha256: String,
        }
        match self {
            Payload::Inline(b) => s.serialize_str(&B64.encode(b)),
            Payload::Digest { len, sha256 } => DigestRepr {
                len: *len,
                sha256: hex::encode(sha256),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DigestRepr {
            len: u64,
            sha256: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Inline(String),
            Digest(DigestRepr),
        }
        match Repr::deserialize(d).map_err(|_| {
            D::Error::custom(
                "invalid payload: expected a base64 string or {\"len\":N,\"sha256\":\"<hex>\"}",
            )
        })? {
            Repr::Inline(s) => B64
                .decode(s.as_bytes())
                .map(|v| Payload::Inline(Bytes::from(v)))
                .map_err(|e| D::Error::custom(format!("invalid base64: {e}"))),
            Repr::Digest(r) => {
                let mut sha256 = [0u8; 32];
                hex::decode_to_slice(&r.sha256, &mut sha256)
                    .map_err(|_| not_hex32("sha256", &r.sha256))?;
                Ok(Payload::Digest { len: r.len, sha256 })
            }
        }
    }
}

/// Mirror of [`Advert`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertRec {
    /// The artifact id.
    #[serde(with = "art_hex")]
    pub id: ArtifactId,
    /// The kind.
    pub kind: u16,
    /// The size in bytes.
    pub size: u64,
    /// The attribute bytes.
    #[serde(with = "b64")]
    pub attr: Bytes,
}

impl From<&Advert> for AdvertRec {
    fn from(a: &Advert) -> Self {
        AdvertRec {
            id: a.id,
            kind: a.kind.0,
            size: a.size,
            attr: a.attr.clone(),
        }
    }
}

impl From<&AdvertRec> for Advert {
    fn from(a: &AdvertRec) -> Self {
        Advert {
            id: a.id,
            kind: Kind(a.kind),
            size: a.size,
            attr: a.attr.clone(),
        }
    }
}

/// Mirror of [`Message`]; payloads may be digests in output records.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MessageRec {
    /// [`Message::Push`].
    Push {
        /// The advert.
        advert: AdvertRec,
        /// The bytes.
        data: Payload,
    },
    /// [`Message::Adverts`].
    Adverts {
        /// The batch.
        adverts: Vec<AdvertRec>,
    },
    /// [`Message::Fetching`].
    Fetching {
        /// The advert.
        advert: AdvertRec,
    },
    /// [`Message::Withdraw`].
    Withdraw {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
    },
    /// [`Message::Request`].
    Request {
        /// The request id.
        req_id: u64,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The requester's priority.
        priority: u8,
    },
    /// [`Message::Response`].
    Response {
        /// The request id.
        req_id: u64,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The bytes.
        data: Payload,
    },
    /// [`Message::NotFound`].
    NotFound {
        /// The request id.
        req_id: u64,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
    },
    /// [`Message::ChunkRequest`].
    ChunkRequest {
        /// The request id.
        req_id: u64,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The requester's priority.
        priority: u8,
    },
    /// [`Message::Chunk`].
    Chunk {
        /// The request id.
        req_id: u64,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The bytes.
        data: Payload,
    },
    /// [`Message::Have`].
    Have {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk ranges, each `[start, end]` (half-open).
        ranges: Vec<[u32; 2]>,
    },
    /// [`Message::Cancel`].
    Cancel {
        /// The request id.
        req_id: u64,
    },
    /// [`Message::Decline`].
    Decline {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk ranges, each `[start, end]` (half-open).
        ranges: Vec<[u32; 2]>,
    },
}

/// A recorded message whose payload is only a digest cannot be turned back into a [`Message`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("payload recorded as a digest: inputs must carry their bytes")]
pub struct DigestOnly;

impl MessageRec {
    /// Mirrors `msg`, recording payloads over `inline_max` bytes as digests.
    pub fn from_message(msg: &Message, inline_max: u64) -> Self {
        match msg {
            Message::Push { advert, data } => MessageRec::Push {
                advert: advert.into(),
                data: Payload::of(data, inline_max),
            },
            Message::Adverts(adverts) => MessageRec::Adverts {
                adverts: adverts.iter().map(AdvertRec::from).collect(),
            },
            Message::Withdraw(id) => MessageRec::Withdraw { id: *id },
            Message::Fetching(advert) => MessageRec::Fetching {
                advert: advert.into(),
            },
            Message::Request {
                req_id,
                id,
                priority,
            } => MessageRec::Request {
                req_id: *req_id,
                id: *id,
                priority: priority.0,
            },
            Message::Response { req_id, id, data } => MessageRec::Response {
                req_id: *req_id,
                id: *id,
                data: Payload::of(data, inline_max),
            },
            Message::NotFound { req_id, id } => MessageRec::NotFound {
                req_id: *req_id,
                id: *id,
            },
            Message::ChunkRequest {
                req_id,
                id,
                index,
                priority,
            } => MessageRec::ChunkRequest {
                req_id: *req_id,
                id: *id,
                index: *index,
                priority: priority.0,
            },
            Message::Chunk {
                req_id,
                id,
                index,
                data,
            } => MessageRec::Chunk {
                req_id: *req_id,
                id: *id,
                index: *index,
                data: Payload::of(data, inline_max),
            },
            Message::Have { id, ranges } => MessageRec::Have {
                id: *id,
                ranges: ranges.iter().map(|r| [r.start, r.end]).collect(),
            },
            Message::Cancel { req_id } => MessageRec::Cancel { req_id: *req_id },
            Message::Decline { id, ranges } => MessageRec::Decline {
                id: *id,
                ranges: ranges.iter().map(|r| [r.start, r.end]).collect(),
            },
        }
    }

    /// The message, if every payload was recorded inline.
    pub fn to_message(&self) -> Result<Message, DigestOnly> {
        let bytes = |p: &Payload| p.bytes().cloned().ok_or(DigestOnly);
        Ok(match self {
            MessageRec::Push { advert, data } => Message::Push {
                advert: advert.into(),
                data: bytes(data)?,
            },
            MessageRec::Adverts { adverts } => {
                Message::Adverts(adverts.iter().map(Advert::from).collect())
            }
            MessageRec::Withdraw { id } => Message::Withdraw(*id),
            MessageRec::Fetching { advert } => Message::Fetching(advert.into()),
            MessageRec::Request {
                req_id,
                id,
                priority,
            } => Message::Request {
                req_id: *req_id,
                id: *id,
                priority: Priority(*priority),
            },
            MessageRec::Response { req_id, id, data } => Message::Response {
                req_id: *req_id,
                id: *id,
                data: bytes(data)?,
            },
            MessageRec::NotFound { req_id, id } => Message::NotFound {
                req_id: *req_id,
                id: *id,
            },
            MessageRec::ChunkRequest {
                req_id,
                id,
                index,
                priority,
            } => Message::ChunkRequest {
                req_id: *req_id,
                id: *id,
                index: *index,
                priority: Priority(*priority),
            },
            MessageRec::Chunk {
                req_id,
                id,
                index,
                data,
            } => Message::Chunk {
                req_id: *req_id,
                id: *id,
                index: *index,
                data: bytes(data)?,
            },
            MessageRec::Have { id, ranges } => Message::Have {
                id: *id,
                ranges: ranges
                    .iter()
                    .map(|&[start, end]| ChunkRange { start, end })
                    .collect(),
            },
            MessageRec::Cancel { req_id } => Message::Cancel { req_id: *req_id },
            MessageRec::Decline { id, ranges } => Message::Decline {
                id: *id,
                ranges: ranges
                    .iter()
                    .map(|&[start, end]| ChunkRange { start, end })
                    .collect(),
            },
        })
    }

    fn summary(&self) -> String {
        match self {
            MessageRec::Push { advert, data } => format!(
                "push art:{} kind={} len={}",
                advert.id,
                advert.kind,
                data.len()
            ),
            MessageRec::Adverts { adverts } => {
                let mut s = format!("adverts n={}", adverts.len());
                for a in adverts.iter().take(3) {
                    let _ = write!(s, " art:{}({}B)", a.id, a.size);
                }
                if adverts.len() > 3 {
                    s.push_str(" ...");
                }
                s
            }
            MessageRec::Withdraw { id } => format!("withdraw art:{id}"),
            MessageRec::Fetching { advert } => {
                format!("fetching art:{}({}B)", advert.id, advert.size)
            }
            MessageRec::Request {
                req_id,
                id,
                priority,
            } => format!("request #{req_id} art:{id} prio={priority}"),
            MessageRec::Response { req_id, id, data } => {
                format!("response #{req_id} art:{id} len={}", data.len())
            }
            MessageRec::NotFound { req_id, id } => format!("not-found #{req_id} art:{id}"),
            MessageRec::ChunkRequest {
                req_id,
                id,
                index,
                priority,
            } => format!("chunk-request #{req_id} art:{id} chunk={index} prio={priority}"),
            MessageRec::Chunk {
                req_id,
                id,
                index,
                data,
            } => format!("chunk #{req_id} art:{id} chunk={index} len={}", data.len()),
            MessageRec::Have { id, ranges } | MessageRec::Decline { id, ranges } => {
                let name = if matches!(self, MessageRec::Have { .. }) {
                    "have"
                } else {
                    "decline"
                };
                let mut s = format!("{name} art:{id} n={}", ranges.len());
                for [start, end] in ranges.iter().take(3) {
                    let _ = write!(s, " {start}..{end}");
                }
                if ranges.len() > 3 {
                    s.push_str(" ...");
                }
                s
            }
            MessageRec::Cancel { req_id } => format!("cancel #{req_id}"),
        }
    }
}

/// Mirror of [`Input`]; every payload is inline.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InputRec {
    /// [`Input::Membership`].
    Membership {
        /// The registry version.
        version: u64,
        /// The members.
        #[serde(with = "node_hex_vec")]
        members: Vec<NodeId>,
    },
    /// [`Input::PeerConnected`].
    PeerConnected {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
    },
    /// [`Input::PeerDisconnected`].
    PeerDisconnected {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
    },
    /// [`Input::Message`].
    Message {
        /// The sender.
        #[serde(with = "node_hex")]
        from: NodeId,
        /// The message.
        msg: MessageRec,
    },
    /// [`Input::Publish`]; the id is recorded as given, so a replay re-verifies it.
    Publish {
        /// The artifact id as given by the application.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The kind.
        kind: u16,
        /// The attribute bytes.
        #[serde(with = "b64")]
        attr: Bytes,
        /// The artifact's bytes.
        #[serde(with = "b64")]
        data: Bytes,
    },
    /// [`Input::PublishChunked`].
    PublishChunked {
        /// The artifact id as given by the application.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The kind.
        kind: u16,
        /// The attribute bytes.
        #[serde(with = "b64")]
        attr: Bytes,
        /// The artifact's bytes.
        #[serde(with = "b64")]
        data: Bytes,
        /// The manifest as given by the application.
        #[serde(with = "manifest_b64")]
        manifest: p2p_core::Manifest,
    },
    /// [`Input::ChunkHashed`].
    ChunkHashed {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The driver's SHA-256 of the chunk.
        #[serde(with = "art_hex")]
        digest: ArtifactId,
    },
    /// [`Input::Remove`].
    Remove {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
    },
    /// [`Input::Reevaluate`].
    Reevaluate,
    /// [`Input::Congestion`].
    Congestion {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
        /// Whether its send queue is full.
        congested: bool,
    },
    /// [`Input::Timeout`].
    Timeout,
}

impl From<&Input> for InputRec {
    fn from(input: &Input) -> Self {
        match input {
            Input::Membership { version, members } => InputRec::Membership {
                version: *version,
                members: members.clone(),
            },
            Input::PeerConnected(peer) => InputRec::PeerConnected { peer: *peer },
            Input::PeerDisconnected(peer) => InputRec::PeerDisconnected { peer: *peer },
            Input::Message { from, msg } => InputRec::Message {
                from: *from,
                msg: MessageRec::from_message(msg, u64::MAX),
            },
            Input::Publish(a) => InputRec::Publish {
                id: a.id,
                kind: a.kind.0,
                attr: a.attr.clone(),
                data: a.data.clone(),
            },
            Input::PublishChunked { artifact, manifest } => InputRec::PublishChunked {
                id: artifact.id,
                kind: artifact.kind.0,
                attr: artifact.attr.clone(),
                data: artifact.data.clone(),
                manifest: manifest.clone(),
            },
            Input::ChunkHashed { id, index, digest } => InputRec::ChunkHashed {
                id: *id,
                index: *index,
                digest: ArtifactId(*digest),
            },
            Input::Remove(id) => InputRec::Remove { id: *id },
            Input::Reevaluate => InputRec::Reevaluate,
            Input::Congestion { peer, congested } => InputRec::Congestion {
                peer: *peer,
                congested: *congested,
            },
            Input::Timeout => InputRec::Timeout,
        }
    }
}

impl InputRec {
    /// The input, if every payload was recorded inline.
    pub fn to_input(&self) -> Result<Input, DigestOnly> {
        Ok(match self {
            InputRec::Membership { version, members } => Input::Membership {
                version: *version,
                members: members.clone(),
            },
            InputRec::PeerConnected { peer } => Input::PeerConnected(*peer),
            InputRec::PeerDisconnected { peer } => Input::PeerDisconnected(*peer),
            InputRec::Message { from, msg } => Input::Message {
                from: *from,
                msg: msg.to_message()?,
            },
            InputRec::Publish {
                id,
                kind,
                attr,
                data,
            } => Input::Publish(Artifact {
                id: *id,
                kind: Kind(*kind),
                attr: attr.clone(),
                data: data.clone(),
            }),
            InputRec::PublishChunked {
                id,
                kind,
                attr,
                data,
                manifest,
            } => Input::PublishChunked {
                artifact: Artifact {
                    id: *id,
                    kind: Kind(*kind),
                    attr: attr.clone(),
                    data: data.clone(),
                },
                manifest: manifest.clone(),
            },
            InputRec::ChunkHashed { id, index, digest } => Input::ChunkHashed {
                id: *id,
                index: *index,
                digest: digest.0,
            },
            InputRec::Remove { id } => Input::Remove(*id),
            InputRec::Reevaluate => Input::Reevaluate,
            InputRec::Congestion { peer, congested } => Input::Congestion {
                peer: *peer,
                congested: *congested,
            },
            InputRec::Timeout => Input::Timeout,
        })
    }

    fn summary(&self) -> String {
        match self {
            InputRec::Membership { version, members } => {
                format!("membership v={version} members={}", members.len())
            }
            InputRec::PeerConnected { peer } => format!("connected {peer}"),
            InputRec::PeerDisconnected { peer } => format!("disconnected {peer}"),
            InputRec::Message { from, msg } => format!("from {from} {}", msg.summary()),
            InputRec::Publish {
                id,
                kind,
                attr,
                data,
            } => format!(
                "publish art:{id} kind={kind} attr={}B len={}",
                attr.len(),
                data.len()
            ),
            InputRec::PublishChunked { id, data, .. } => {
                format!("publish-chunked art:{id} len={}", data.len())
            }
            InputRec::ChunkHashed { id, index, .. } => {
                format!("chunk-hashed art:{id} #{index}")
            }
            InputRec::Remove { id } => format!("remove art:{id}"),
            InputRec::Reevaluate => "reevaluate".to_owned(),
            InputRec::Congestion { peer, congested } => {
                format!(
                    "congestion {peer} {}",
                    if *congested { "on" } else { "off" }
                )
            }
            InputRec::Timeout => "timeout".to_owned(),
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        match self {
            InputRec::PeerConnected { peer }
            | InputRec::PeerDisconnected { peer }
            | InputRec::Congestion { peer, .. } => vec![*peer],
            InputRec::Message { from, .. } => vec![*from],
            _ => Vec::new(),
        }
    }
}

/// Mirror of [`DisconnectReason`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DisconnectReasonRec {
    /// [`DisconnectReason::NotMember`].
    NotMember,
    /// [`DisconnectReason::TooManyAdverts`].
    TooManyAdverts {
        /// The limit.
        limit: u64,
    },
    /// [`DisconnectReason::TooManyAdvertsOfKind`].
    TooManyAdvertsOfKind {
        /// The kind.
        kind: u16,
        /// The limit.
        limit: u64,
    },
    /// [`DisconnectReason::BadData`].
    BadData {
        /// How many bad artifacts.
        count: u32,
    },
    /// [`DisconnectReason::TooManyRequests`].
    TooManyRequests {
        /// The limit.
        limit: u64,
    },
    /// [`DisconnectReason::RepeatedRequests`].
    RepeatedRequests {
        /// The limit.
        limit: u32,
    },
    /// [`DisconnectReason::UnwantedPushes`].
    UnwantedPushes {
        /// The limit.
        limit: u32,
    },
    /// [`DisconnectReason::ProtocolViolation`].
    ProtocolViolation {
        /// The rule broken.
        what: String,
    },
    /// A reason this trace version does not know, by its `Debug` form.
    Other {
        /// `Debug` of the reason.
        debug: String,
    },
}

impl From<&DisconnectReason> for DisconnectReasonRec {
    fn from(r: &DisconnectReason) -> Self {
        match r {
            DisconnectReason::NotMember => DisconnectReasonRec::NotMember,
            DisconnectReason::TooManyAdverts { limit } => DisconnectReasonRec::TooManyAdverts {
                limit: *limit as u64,
            },
            DisconnectReason::TooManyAdvertsOfKind { kind, limit } => {
                DisconnectReasonRec::TooManyAdvertsOfKind {
                    kind: kind.0,
                    limit: *limit as u64,
                }
            }
            DisconnectReason::BadData { count } => DisconnectReasonRec::BadData { count: *count },
            DisconnectReason::TooManyRequests { limit } => DisconnectReasonRec::TooManyRequests {
                limit: *limit as u64,
            },
            DisconnectReason::RepeatedRequests { limit } => {
                DisconnectReasonRec::RepeatedRequests { limit: *limit }
            }
            DisconnectReason::UnwantedPushes { limit } => {
                DisconnectReasonRec::UnwantedPushes { limit: *limit }
            }
            DisconnectReason::ProtocolViolation(what) => DisconnectReasonRec::ProtocolViolation {
                what: (*what).to_owned(),
            },
            other => DisconnectReasonRec::Other {
                debug: format!("{other:?}"),
            },
        }
    }
}

fn drop_reason_name(r: DropReason) -> String {
    match r {
        DropReason::Unwanted => "unwanted".into(),
        DropReason::TableFull => "table-full".into(),
        DropReason::Duplicate => "duplicate".into(),
        other => format!("{other:?}"),
    }
}

fn retry_reason_name(r: RetryReason) -> String {
    match r {
        RetryReason::Timeout => "timeout".into(),
        RetryReason::NotFound => "not-found".into(),
        RetryReason::BadData => "bad-data".into(),
        RetryReason::Disconnected => "disconnected".into(),
        RetryReason::Withdrawn => "withdrawn".into(),
        other => format!("{other:?}"),
    }
}

/// Mirror of [`Event`]. Reasons of drops and retries are kebab-case names
/// (`unwanted`, `table-full`, `duplicate`, `inconsistent`; `timeout`, `not-found`, `bad-data`,
/// `disconnected`, `withdrawn`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EventRec {
    /// [`Event::Dropped`].
    Dropped {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The sender.
        #[serde(with = "node_hex")]
        from: NodeId,
        /// Why.
        reason: String,
    },
    /// [`Event::Retry`].
    Retry {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The peer that failed.
        #[serde(with = "node_hex")]
        peer: NodeId,
        /// The request.
        req_id: u64,
        /// Why.
        reason: String,
    },
    /// [`Event::Penalized`].
    Penalized {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
        /// Its bad-data count.
        count: u32,
    },
    /// [`Event::PeerDisconnected`].
    PeerDisconnected {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
        /// Why.
        reason: DisconnectReasonRec,
    },
    /// [`Event::MembershipChanged`].
    MembershipChanged {
        /// The version.
        version: u64,
        /// Number of members.
        members: u64,
    },
    /// An event this trace version does not know, by its `Debug` form.
    Other {
        /// `Debug` of the event.
        debug: String,
    },
}

impl From<&Event> for EventRec {
    fn from(e: &Event) -> Self {
        match e {
            Event::Dropped { id, from, reason } => EventRec::Dropped {
                id: *id,
                from: *from,
                reason: drop_reason_name(*reason),
            },
            Event::Retry {
                id,
                peer,
                req_id,
                reason,
            } => EventRec::Retry {
                id: *id,
                peer: *peer,
                req_id: *req_id,
                reason: retry_reason_name(*reason),
            },
            Event::Penalized { peer, count } => EventRec::Penalized {
                peer: *peer,
                count: *count,
            },
            Event::PeerDisconnected { peer, reason } => EventRec::PeerDisconnected {
                peer: *peer,
                reason: reason.into(),
            },
            Event::MembershipChanged { version, members } => EventRec::MembershipChanged {
                version: *version,
                members: *members as u64,
            },
            other => EventRec::Other {
                debug: format!("{other:?}"),
            },
        }
    }
}

/// Mirror of [`Output`]; payloads over the trace's inline limit are digests.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OutputRec {
    /// [`Output::Send`].
    Send {
        /// The peer.
        #[serde(with = "node_hex")]
        to: NodeId,
        /// The wire class.
        #[serde(with = "class_name")]
        class: Class,
        /// The message.
        msg: MessageRec,
    },
    /// [`Output::Deliver`].
    Deliver {
        /// The peer it came from.
        #[serde(with = "node_hex")]
        from: NodeId,
        /// The artifact id.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The kind.
        kind: u16,
        /// The attribute bytes.
        #[serde(with = "b64")]
        attr: Bytes,
        /// The artifact's bytes (or their digest).
        data: Payload,
    },
    /// [`Output::Disconnect`].
    Disconnect {
        /// The peer.
        #[serde(with = "node_hex")]
        peer: NodeId,
        /// Why.
        reason: DisconnectReasonRec,
    },
    /// [`Output::Cancel`].
    Cancel {
        /// The peer.
        #[serde(with = "node_hex")]
        to: NodeId,
        /// The request whose queued answer is dropped.
        req_id: u64,
    },
    /// [`Output::CancelPushes`].
    CancelPushes {
        /// The peer.
        #[serde(with = "node_hex")]
        to: NodeId,
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk ranges, each `[start, end]` (half-open).
        ranges: Vec<[u32; 2]>,
    },
    /// [`Output::HashChunk`].
    HashChunk {
        /// The artifact.
        #[serde(with = "art_hex")]
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The chunk's bytes (or their digest).
        data: Payload,
    },
    /// [`Output::Event`].
    Event {
        /// The event.
        event: EventRec,
    },
}

impl OutputRec {
    /// Mirrors `output`, recording payloads over `inline_max` bytes as digests.
    pub fn from_output(output: &Output, inline_max: u64) -> Self {
        match output {
            Output::Send { to, msg, class } => OutputRec::Send {
                to: *to,
                class: *class,
                msg: MessageRec::from_message(msg, inline_max),
            },
            Output::Deliver { artifact, from } => OutputRec::Deliver {
                from: *from,
                id: artifact.id,
                kind: artifact.kind.0,
                attr: artifact.attr.clone(),
                data: Payload::of(&artifact.data, inline_max),
            },
            Output::Disconnect { peer, reason } => OutputRec::Disconnect {
                peer: *peer,
                reason: reason.into(),
            },
            Output::Cancel { to, req_id } => OutputRec::Cancel {
                to: *to,
                req_id: *req_id,
            },
            Output::CancelPushes { to, id, ranges } => OutputRec::CancelPushes {
                to: *to,
                id: *id,
                ranges: ranges.iter().map(|r| [r.start, r.end]).collect(),
            },
            Output::HashChunk { id, index, data } => OutputRec::HashChunk {
                id: *id,
                index: *index,
                data: Payload::of(data, inline_max),
            },
            Output::Event(e) => OutputRec::Event { event: e.into() },
        }
    }

    fn summary(&self) -> String {
        match self {
            OutputRec::Send { to, class, msg } => {
                format!("send to {to} [{}] {}", class_name(*class), msg.summary())
            }
            OutputRec::Deliver {
                from,
                id,
                kind,
                data,
                ..
            } => format!(
                "deliver art:{id} kind={kind} len={} from {from}",
                data.len()
            ),
            OutputRec::Disconnect { peer, reason } => format!("disconnect {peer} {reason:?}"),
            OutputRec::Cancel { to, req_id } => format!("cancel answer #{req_id} to {to}"),
            OutputRec::CancelPushes { to, id, ranges } => {
                format!("cancel pushes art:{id} {ranges:?} to {to}")
            }
            OutputRec::HashChunk { id, index, data } => {
                format!("hash-chunk art:{id} #{index} len={}", data.len())
            }
            OutputRec::Event { event } => match event {
                EventRec::Dropped { id, from, reason } => {
                    format!("event dropped art:{id} from {from} ({reason})")
                }
                EventRec::Retry {
                    id,
                    peer,
                    req_id,
                    reason,
                } => format!("event retry #{req_id} art:{id} peer {peer} ({reason})"),
                EventRec::Penalized { peer, count } => {
                    format!("event penalized {peer} count={count}")
                }
                EventRec::PeerDisconnected { peer, reason } => {
                    format!("event peer-disconnected {peer} {reason:?}")
                }
                EventRec::MembershipChanged { version, members } => {
                    format!("event membership v={version} members={members}")
                }
                EventRec::Other { debug } => format!("event {debug}"),
            },
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        match self {
            OutputRec::Send { to, .. } => vec![*to],
            OutputRec::Deliver { from, .. } => vec![*from],
            OutputRec::Disconnect { peer, .. } => vec![*peer],
            OutputRec::Cancel { to, .. } | OutputRec::CancelPushes { to, .. } => vec![*to],
            OutputRec::HashChunk { .. } => Vec::new(),
            OutputRec::Event { event } => match event {
                EventRec::Dropped { from, .. } => vec![*from],
                EventRec::Retry { peer, .. }
                | EventRec::Penalized { peer, .. }
                | EventRec::PeerDisconnected { peer, .. } => vec![*peer],
                _ => Vec::new(),
            },
        }
    }
}

mod decision_text {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Decision, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Decision::Fetch(p) => s.collect_str(&format_args!("fetch:{}", p.0)),
            Decision::Later => s.serialize_str("later"),
            Decision::Drop => s.serialize_str("drop"),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decision, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "later" => Ok(Decision::Later),
            "drop" => Ok(Decision::Drop),
            other => other
                .strip_prefix("fetch:")
                .and_then(|p| p.parse::<u8>().ok())
                .map(|p| Decision::Fetch(Priority(p)))
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "invalid decision {s:?}: expected fetch:<0-255>, later or drop"
                    ))
                }),
        }
    }
}

/// One answer of the priority function: the advert it was asked about and what it decided.
///
/// In JSON: `{"id":"<64 hex>","decision":"fetch:<0-255>"|"later"|"drop"}`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRec {
    /// The advert's artifact id.
    #[serde(with = "art_hex")]
    pub id: ArtifactId,
    /// The decision.
    #[serde(with = "decision_text")]
    pub decision: Decision,
}

impl From<(ArtifactId, Decision)> for DecisionRec {
    fn from((id, decision): (ArtifactId, Decision)) -> Self {
        DecisionRec { id, decision }
    }
}

/// One trace line after the header.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Record {
    /// An input fed at time `t` (nanoseconds).
    In {
        /// Time in nanoseconds.
        t: u64,
        /// The input.
        input: InputRec,
    },
    /// An output drained after the input before it; `t` is the driver's time when drained.
    Out {
        /// Time in nanoseconds.
        t: u64,
        /// The output.
        output: OutputRec,
    },
    /// The preceding input was rejected with this error (its `Display` text).
    Error {
        /// Time in nanoseconds.
        t: u64,
        /// The error's message.
        error: String,
    },
    /// The driver replaced the priority function with this profile.
    Priority {
        /// Time in nanoseconds.
        t: u64,
        /// The new profile.
        profile: PriorityProfile,
    },
    /// What the priority function answered during the preceding input, in call order (only in
    /// traces whose header has `decisions`). It follows the input and its error record, before
    /// the outputs; an input during which the function was not asked has none.
    Decisions {
        /// Time in nanoseconds (the input's).
        t: u64,
        /// The answers, in call order.
        decisions: Vec<DecisionRec>,
    },
}

impl Record {
    /// The record's time in nanoseconds.
    pub fn t(&self) -> u64 {
        match self {
            Record::In { t, .. }
            | Record::Out { t, .. }
            | Record::Error { t, .. }
            | Record::Priority { t, .. }
            | Record::Decisions { t, .. } => *t,
        }
    }

    /// Whether this is an input record.
    pub fn is_input(&self) -> bool {
        matches!(self, Record::In { .. })
    }

    /// Whether this is an output record.
    pub fn is_output(&self) -> bool {
        matches!(self, Record::Out { .. })
    }

    /// The peers the record names (sender, receiver or subject; not membership lists).
    pub fn peers(&self) -> Vec<NodeId> {
        match self {
            Record::In { input, .. } => input.peers(),
            Record::Out { output, .. } => output.peers(),
            _ => Vec::new(),
        }
    }

    /// A one-line human summary, without the time.
    pub fn summary(&self) -> String {
        match self {
            Record::In { input, .. } => format!("in  {}", input.summary()),
            Record::Out { output, .. } => format!("out {}", output.summary()),
            Record::Error { error, .. } => format!("err {error}"),
            Record::Priority { profile, .. } => format!("prio {profile}"),
            Record::Decisions { decisions, .. } => {
                let mut s = format!("dec n={}", decisions.len());
                for d in decisions.iter().take(3) {
                    let _ = match d.decision {
                        Decision::Fetch(p) => write!(s, " art:{}=fetch:{}", d.id, p.0),
                        Decision::Later => write!(s, " art:{}=later", d.id),
                        Decision::Drop => write!(s, " art:{}=drop", d.id),
                    };
                }
                if decisions.len() > 3 {
                    s.push_str(" ...");
                }
                s
            }
        }
    }

    /// The record as one JSON line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_written_as_lowercase_hex_and_read_back_in_either_case() {
        let sha256: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(0x1f) ^ 0xa5);
        let digest = Payload::Digest { len: 7, sha256 };
        let json = serde_json::to_string(&digest).unwrap();
        let expected: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(json, format!("{{\"len\":7,\"sha256\":\"{expected}\"}}"));
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), digest);
        let upper = json.replace(&expected, &expected.to_uppercase());
        assert_eq!(serde_json::from_str::<Payload>(&upper).unwrap(), digest);
    }

    #[test]
    fn a_digest_that_is_not_64_hex_digits_is_refused() {
        for bad in [
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}zz", "ab".repeat(31)),
        ] {
            let json = format!("{{\"len\":7,\"sha256\":\"{bad}\"}}");
            let e = serde_json::from_str::<Payload>(&json).unwrap_err();
            assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
        }
    }

    #[test]
    fn ids_are_written_as_lowercase_hex_and_bad_ones_are_named() {
        let id = NodeId(core::array::from_fn(|i| i as u8 * 8));
        let json = serde_json::to_string(&Rec(id)).unwrap();
        assert_eq!(json, format!("\"{}\"", NodeId::to_hex(&id)));
        assert_eq!(json, json.to_lowercase());
        assert_eq!(serde_json::from_str::<Rec>(&json).unwrap().0, id);
        let e = serde_json::from_str::<Rec>("\"abc\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid node id \"abc\": expected 64 hex digits"),
            "{e}"
        );

        #[derive(Debug, Serialize, Deserialize)]
        struct Rec(#[serde(with = "node_hex")] NodeId);
    }
}
