//! Codec tests: golden bytes pin the format, quickcheck round-trips every message type, and
//! every malformed input gives its named error.

use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, ChunkRange, Class, Kind, Manifest, Message, Priority};
use p2p_transport::codec::{
    ConnRole, DecodeError, EncodeError, HELLO_LEN, Hello, Limits, LimitsError, PROTOCOL_VERSION,
    allowed_classes, check_encodable, decode, decode_hello, encode, encode_hello, encode_parts,
    encoded_len,
};
use quickcheck::QuickCheck;

use crate::common::M;

fn enc(msg: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode(msg, &mut out);
    out.freeze()
}

fn id(byte: u8) -> ArtifactId {
    ArtifactId([byte; 32])
}

fn advert(byte: u8, attr: &'static [u8]) -> Advert {
    Advert {
        id: id(byte),
        kind: Kind(0x0102),
        size: 0x0102_0304_0506_0708,
        attr: Bytes::from_static(attr),
    }
}

const ID_AA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_BB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// kind 0x0102, size 0x0102030405060708, little-endian.
const KIND_SIZE: &str = "02010807060504030201";
/// The manifest of [`golden_manifest_and_ids`]' data.
/// tag, size 10000, chunk size 4096, count 3; then the SHA-256 of each chunk.
const MANIFEST_ROOT_HEX: &str = concat!(
    "7032702d676f737369702f6d616e69666573742f7631000010270000000000000010000003000000",
    "d67c656e01756650d77717b0839985a056ec28ffe174601d690fc407a2ceffca",
    "416317ed11e1666ed2a36373377df576bd327eb944640bf119b242d6f941bb5a",
    "825cabc798c5aefd6ec7b0f6dbab6c5fe7ff84336193a4e462556d1b0bc37bf1",
);
/// Its id.
const MANIFEST_ID_HEX: &str = "fb5cc92cc73d68c989287d29f9a6e9b23d2c631ad317d716b4ea731ba368453e";
/// The id of the 4 MiB artifact of [`golden_mid_sized_artifact_id`] in a subnet of 128 KiB
/// chunks: the manifest of 128 chunks of 32 KiB (protocol version 4).
const MID_ID_HEX: &str = "a6174d14d70ec9260cfee668dcb7afa8402c08ca84f31da5a21e9b7ba261b8e0";
/// The id of the small artifact `b"hello, swarm"`.
const SMALL_ID_HEX: &str = "372dea1b852de54b1324402f98984731166040215521c4a94803e97348da1bf0";

/// Checks the golden encoding, and that it decodes back to the message.
fn golden(msg: Message, expected: String) {
    let bytes = enc(&msg);
    assert_eq!(hex::encode(&bytes), expected, "encoding of {}", msg.name());
    assert_eq!(encoded_len(&msg), bytes.len());
    assert_eq!(decode(bytes, &Limits::default()), Ok(msg));
}

#[test]
fn golden_push() {
    golden(
        Message::Push {
            advert: advert(0xaa, b"hi"),
            data: Bytes::from_static(b"xyz"),
        },
        format!(
            "01{ID_AA}{KIND_SIZE}0200{}03000000{}",
            hex::encode(b"hi"),
            hex::encode(b"xyz")
        ),
    );
}

#[test]
fn golden_adverts() {
    golden(
        Message::Adverts(vec![advert(0xaa, b""), advert(0xbb, b"z")]),
        format!("020200{ID_AA}{KIND_SIZE}0000{ID_BB}{KIND_SIZE}01007a"),
    );
}

/// A `Fetching` (protocol version 5) is tag 12 and an advert.
#[test]
fn golden_fetching() {
    golden(
        Message::Fetching(advert(0xbb, b"z")),
        format!("0c{ID_BB}{KIND_SIZE}01007a"),
    );
}

#[test]
fn golden_withdraw() {
    golden(Message::Withdraw(id(0xaa)), format!("03{ID_AA}"));
}

#[test]
fn golden_request() {
    golden(
        Message::Request {
            req_id: 0x1122_3344_5566_7788,
            id: id(0xbb),
            priority: Priority(200),
        },
        format!("048877665544332211{ID_BB}c8"),
    );
}

#[test]
fn golden_response() {
    golden(
        Message::Response {
            req_id: 1,
            id: id(0xaa),
            data: Bytes::from_static(b"\x00\xff"),
        },
        format!("050100000000000000{ID_AA}0200000000ff"),
    );
}

#[test]
fn golden_not_found() {
    golden(
        Message::NotFound {
            req_id: 258,
            id: id(0xbb),
        },
        format!("060201000000000000{ID_BB}"),
    );
}

#[test]
fn golden_chunk_request() {
    golden(
        Message::ChunkRequest {
            req_id: 0x1122_3344_5566_7788,
            id: id(0xaa),
            index: 0x0102_0304,
            priority: Priority(7),
        },
        format!("078877665544332211{ID_AA}0403020107"),
    );
}

#[test]
fn golden_chunk() {
    golden(
        Message::Chunk {
            req_id: 3,
            id: id(0xbb),
            index: 258,
            data: Bytes::from_static(b"\x00\xffz"),
        },
        format!("080300000000000000{ID_BB}020100000300000000ff7a"),
    );
}

/// A pushed chunk is a `Chunk` with request id 0 (protocol version 3).
#[test]
fn golden_pushed_chunk() {
    golden(
        Message::Chunk {
            req_id: p2p_core::PUSHED_CHUNK,
            id: id(0xbb),
            index: 7,
            data: Bytes::from_static(b"\x01\x02"),
        },
        format!("080000000000000000{ID_BB}07000000020000000102"),
    );
}

#[test]
fn golden_have() {
    golden(
        Message::Have {
            id: id(0xaa),
            ranges: vec![
                ChunkRange { start: 0, end: 2 },
                ChunkRange { start: 2, end: 3 },
                ChunkRange {
                    start: 0x0100,
                    end: 0x0001_0000,
                },
            ],
        },
        format!("09{ID_AA}0300000000000200000002000000030000000001000000000100"),
    );
    golden(
        Message::Have {
            id: id(0xbb),
            ranges: vec![],
        },
        format!("09{ID_BB}0000"),
    );
}

/// A `Decline` (protocol version 5) has the layout of a `Have` under tag 11.
#[test]
fn golden_decline() {
    golden(
        Message::Decline {
            id: id(0xaa),
            ranges: vec![
                ChunkRange { start: 1, end: 2 },
                ChunkRange { start: 5, end: 9 },
            ],
        },
        format!(
            "0b{ID_AA}0200{}{}{}{}",
            "01000000", "02000000", "05000000", "09000000"
        ),
    );
}

#[test]
fn golden_cancel() {
    golden(
        Message::Cancel {
            req_id: 0x0102_0304_0506_0708,
        },
        "0a0807060504030201".to_string(),
    );
}

/// The manifest of 10,000 bytes (byte i = i % 251) in chunks of 4096: three chunks, and the
/// artifact id is the SHA-256 of the manifest. A change of the manifest layout or hashing
/// changes every large artifact's id, which nodes of different versions would disagree on.
#[test]
fn golden_manifest_and_ids() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let m = Manifest::build(&data, 4096).expect("10,000 bytes take three chunks of 4096");
    assert_eq!(m.count(), 3);
    assert_eq!(hex::encode(m.root()), MANIFEST_ROOT_HEX);
    assert_eq!(hex::encode(m.id().0), MANIFEST_ID_HEX);
    assert_eq!(
        p2p_core::chunks::content_id(&data, 4096),
        m.id(),
        "a large artifact is named by its manifest"
    );
    assert_eq!(Manifest::parse(m.root().clone()), Ok(m));
    // A small artifact is its own root: its id is the SHA-256 of its bytes.
    let small = p2p_core::chunks::content_id(b"hello, swarm", 4096);
    assert_eq!(hex::encode(small.0), SMALL_ID_HEX);
}

/// A mid-sized artifact is cut into chunks of `chunk_size_for` its size (protocol version 4):
/// 4 MiB in a subnet of 128 KiB chunks is named by its manifest of 128 chunks of 32 KiB.
#[test]
fn golden_mid_sized_artifact_id() {
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let m = Manifest::build(&data, 128 << 10).expect("chunked");
    assert_eq!((m.chunk_size(), m.count()), (32 << 10, 128));
    assert_eq!(m.root().len(), 40 + 128 * 32);
    assert_eq!(hex::encode(m.id().0), MID_ID_HEX);
    assert_eq!(p2p_core::chunks::content_id(&data, 128 << 10), m.id());
}

#[test]
fn golden_hello() {
    let hello = Hello {
        protocol_version: 5,
        registry_version: 0x0a0b,
        role: ConnRole::Main { express: true },
    };
    let mut out = BytesMut::new();
    encode_hello(&hello, &mut out);
    assert_eq!(
        hex::encode(&out),
        "5032504702".to_string() + "0500" + "0b0a000000000000" + "01"
    );
    assert_eq!(out.len(), HELLO_LEN);
    assert_eq!(decode_hello(&out), Ok(hello));
    assert_eq!(Hello::new(7).protocol_version, PROTOCOL_VERSION);
    for (role, byte) in [
        (ConnRole::Main { express: false }, 0u8),
        (ConnRole::Main { express: true }, 1),
        (ConnRole::Express, 2),
    ] {
        let mut out = BytesMut::new();
        encode_hello(&Hello::with_role(3, role), &mut out);
        assert_eq!(out[15], byte);
        assert_eq!(decode_hello(&out).map(|h| h.role), Ok(role));
    }
}

#[test]
fn every_message_type_round_trips() {
    fn prop(m: M) -> bool {
        let bytes = enc(&m.0);
        let mut scratch = BytesMut::new();
        let (head, payload) = encode_parts(&m.0, &mut scratch);
        let mut joined = BytesMut::from(&head[..]);
        joined.extend_from_slice(&payload);
        bytes.len() == encoded_len(&m.0)
            && joined.freeze() == bytes
            && check_encodable(&m.0, &Limits::default()) == Ok(bytes.len())
            && decode(bytes, &Limits::default()).as_ref() == Ok(&m.0)
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(M) -> bool);
}

#[test]
fn every_strict_prefix_of_a_message_is_truncated() {
    fn prop(m: M) -> bool {
        let bytes = enc(&m.0);
        (0..bytes.len()).all(|n| {
            matches!(
                decode(bytes.slice(..n), &Limits::default()),
                Err(DecodeError::Truncated { .. })
            )
        })
    }
    QuickCheck::new()
        .tests(100)
        .quickcheck(prop as fn(M) -> bool);
}

#[test]
fn decoded_payload_is_a_slice_of_the_input() {
    let msg = Message::Response {
        req_id: 9,
        id: id(1),
        data: Bytes::from(vec![7u8; 4096]),
    };
    let bytes = enc(&msg);
    let range = bytes.as_ptr_range();
    let Ok(Message::Response { data, .. }) = decode(bytes.clone(), &Limits::default()) else {
        panic!("response must decode");
    };
    assert!(range.contains(&data.as_ptr()), "payload was copied");
}

#[test]
fn unknown_tag_is_rejected() {
    assert_eq!(
        decode(Bytes::from_static(&[0]), &Limits::default()),
        Err(DecodeError::UnknownTag(0))
    );
    assert_eq!(
        decode(Bytes::from_static(&[13, 1, 2]), &Limits::default()),
        Err(DecodeError::UnknownTag(13))
    );
}

#[test]
fn empty_input_is_truncated() {
    assert!(matches!(
        decode(Bytes::new(), &Limits::default()),
        Err(DecodeError::Truncated {
            what: "message tag",
            ..
        })
    ));
}

#[test]
fn message_over_the_size_limit_is_rejected_before_parsing() {
    let limits = Limits {
        max_message_size: 10,
        ..Limits::default()
    };
    assert_eq!(
        decode(Bytes::from(vec![0u8; 11]), &limits),
        Err(DecodeError::TooLarge {
            size: 11,
            limit: 10
        })
    );
}

#[test]
fn announced_payload_over_the_limit_is_rejected_before_reading_it() {
    let limits = Limits {
        max_message_size: 100,
        ..Limits::default()
    };
    // A response header announcing 4 GiB - 1 of payload, with none present.
    let mut b = vec![5u8];
    b.extend_from_slice(&[0; 8 + 32]);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(Bytes::from(b), &limits),
        Err(DecodeError::TooLarge {
            size: u32::MAX as usize,
            limit: 100
        })
    );
}

#[test]
fn attribute_over_the_limit_is_rejected() {
    let msg = Message::Adverts(vec![advert(1, b"123456")]);
    let limits = Limits {
        max_attr_len: 5,
        ..Limits::default()
    };
    assert_eq!(
        decode(enc(&msg), &limits),
        Err(DecodeError::AttrTooLong { len: 6, limit: 5 })
    );
    assert_eq!(
        check_encodable(&msg, &limits),
        Err(EncodeError::AttrTooLong { len: 6, limit: 5 })
    );
}

#[test]
fn advert_count_over_the_limit_is_rejected_before_allocating() {
    // Announces 65535 adverts but carries none: refused on the count alone.
    let limits = Limits::default();
    assert_eq!(
        decode(Bytes::from_static(&[2, 0xff, 0xff]), &limits),
        Err(DecodeError::TooManyAdverts {
            count: 65535,
            limit: 1024
        })
    );
    // Within the limit but more than the bytes present could hold: truncated, not allocated.
    assert!(matches!(
        decode(Bytes::from_static(&[2, 0x00, 0x04]), &limits),
        Err(DecodeError::Truncated {
            what: "adverts",
            ..
        })
    ));
    let many = Message::Adverts(vec![advert(1, b""); 3]);
    let tight = Limits {
        max_adverts: 2,
        ..Limits::default()
    };
    assert_eq!(
        check_encodable(&many, &tight),
        Err(EncodeError::TooManyAdverts { count: 3, limit: 2 })
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut b = BytesMut::new();
    encode(&Message::Withdraw(id(3)), &mut b);
    b.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode(b.freeze(), &Limits::default()),
        Err(DecodeError::TrailingBytes {
            what: "withdraw",
            extra: 2
        })
    );
}

#[test]
fn check_encodable_refuses_what_the_peer_would_refuse() {
    let msg = Message::Push {
        advert: advert(1, b""),
        data: Bytes::from(vec![0u8; 100]),
    };
    let limits = Limits {
        max_message_size: 100,
        ..Limits::default()
    };
    assert_eq!(
        check_encodable(&msg, &limits),
        Err(EncodeError::TooLarge {
            name: "push",
            size: encoded_len(&msg),
            limit: 100
        })
    );
    assert!(decode(enc(&msg), &limits).is_err());
}

#[test]
fn non_speaker_is_rejected_by_magic() {
    let err = decode_hello(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadMagic {
            found: b"GET ".to_vec()
        }
    );
    assert!(err.to_string().contains("not a p2p-gossip peer"));
    // Even a short non-speaker is named as such, not as truncated.
    assert!(matches!(
        decode_hello(b"\x16\x03"),
        Err(DecodeError::BadMagic { .. })
    ));
}

#[test]
fn hello_with_other_versions_is_rejected() {
    let mut good = BytesMut::new();
    encode_hello(&Hello::new(5), &mut good);
    let mut bad_format = good.to_vec();
    bad_format[4] = 1;
    assert_eq!(
        decode_hello(&bad_format),
        Err(DecodeError::BadHelloFormat { found: 1 })
    );
    let mut bad_role = good.to_vec();
    bad_role[15] = 3;
    assert_eq!(
        decode_hello(&bad_role),
        Err(DecodeError::BadHelloRole { found: 3 })
    );
    let mut bad_proto = good.to_vec();
    bad_proto[5] = 9;
    assert_eq!(
        decode_hello(&bad_proto),
        Err(DecodeError::BadProtocolVersion { found: 9 })
    );
    // Peers of protocol version 1 (no chunk messages) and 4 (no `Decline`) are refused.
    for old in [1u16, 4] {
        let mut v = good.to_vec();
        v[5..7].copy_from_slice(&old.to_le_bytes());
        assert_eq!(
            decode_hello(&v),
            Err(DecodeError::BadProtocolVersion { found: old })
        );
    }
}

#[test]
fn hello_truncated_or_with_trailing_bytes_is_rejected() {
    let mut good = BytesMut::new();
    encode_hello(&Hello::new(5), &mut good);
    for n in 4..HELLO_LEN {
        assert!(
            matches!(decode_hello(&good[..n]), Err(DecodeError::Truncated { .. })),
            "prefix of {n}"
        );
    }
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(
        decode_hello(&long),
        Err(DecodeError::TrailingBytes {
            what: "hello",
            extra: 1
        })
    );
}

#[test]
fn limits_are_validated() {
    assert_eq!(Limits::default().validate(), Ok(()));
    let big = Limits {
        max_message_size: 128 << 20,
        ..Limits::default()
    };
    assert_eq!(big.validate(), Ok(()));
    let too_big = Limits {
        max_message_size: (1 << 30) + 1,
        ..Limits::default()
    };
    assert_eq!(
        too_big.validate(),
        Err(LimitsError::MessageSize((1 << 30) + 1))
    );
    let attr = Limits {
        max_attr_len: 70_000,
        ..Limits::default()
    };
    assert_eq!(attr.validate(), Err(LimitsError::AttrLen(70_000)));
    let ranges = Limits {
        max_have_ranges: 65_536,
        ..Limits::default()
    };
    assert_eq!(ranges.validate(), Err(LimitsError::HaveRanges(65_536)));
    assert_eq!(Limits::default().max_have_ranges, 1024);
}

fn have(ranges: &[(u32, u32)]) -> Message {
    Message::Have {
        id: id(0xaa),
        ranges: ranges
            .iter()
            .map(|&(start, end)| ChunkRange { start, end })
            .collect(),
    }
}

/// The bytes of a `Have` with `ranges` as given, whether valid or not.
fn have_bytes(ranges: &[(u32, u32)]) -> Bytes {
    let mut b = vec![9u8];
    b.extend_from_slice(&[0xaa; 32]);
    b.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
    for &(start, end) in ranges {
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&end.to_le_bytes());
    }
    Bytes::from(b)
}

#[test]
fn have_ranges_must_be_non_empty_ascending_and_disjoint() {
    let limits = Limits::default();
    let ok = [(0, 1), (1, 5), (9, u32::MAX)];
    assert_eq!(decode(have_bytes(&ok), &limits), Ok(have(&ok)));
    assert_eq!(
        decode(have_bytes(&[(0, 1), (4, 4)]), &limits),
        Err(DecodeError::EmptyRange { start: 4, end: 4 })
    );
    assert_eq!(
        decode(have_bytes(&[(5, 3)]), &limits),
        Err(DecodeError::EmptyRange { start: 5, end: 3 })
    );
    assert_eq!(
        decode(have_bytes(&[(0, 5), (4, 8)]), &limits),
        Err(DecodeError::UnorderedRanges {
            previous_end: 5,
            start: 4
        })
    );
    assert_eq!(
        decode(have_bytes(&[(10, 12), (0, 2)]), &limits),
        Err(DecodeError::UnorderedRanges {
            previous_end: 12,
            start: 0
        })
    );
    // The sender refuses to queue what the receiver would refuse.
    for bad in [&[(4, 4)][..], &[(0, 5), (4, 8)], &[(10, 12), (0, 2)]] {
        assert_eq!(
            check_encodable(&have(bad), &limits),
            Err(EncodeError::BadRanges)
        );
    }
}

#[test]
fn have_range_count_over_the_limit_is_rejected_before_allocating() {
    let limits = Limits::default();
    // Announces 65535 ranges and carries none: refused on the count alone.
    let mut b = vec![9u8];
    b.extend_from_slice(&[0; 32]);
    b.extend_from_slice(&[0xff, 0xff]);
    assert_eq!(
        decode(Bytes::from(b), &limits),
        Err(DecodeError::TooManyRanges {
            count: 65535,
            limit: 1024
        })
    );
    // Within the limit but more than the bytes present hold: truncated, not allocated.
    let mut b = vec![9u8];
    b.extend_from_slice(&[0; 32]);
    b.extend_from_slice(&1024u16.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    assert!(matches!(
        decode(Bytes::from(b), &limits),
        Err(DecodeError::Truncated {
            what: "chunk ranges",
            ..
        })
    ));
    let tight = Limits {
        max_have_ranges: 2,
        ..Limits::default()
    };
    let three = have(&[(0, 1), (2, 3), (4, 5)]);
    assert_eq!(
        check_encodable(&three, &tight),
        Err(EncodeError::TooManyRanges { count: 3, limit: 2 })
    );
    assert_eq!(
        decode(enc(&three), &tight),
        Err(DecodeError::TooManyRanges { count: 3, limit: 2 })
    );
}

#[test]
fn decoded_chunk_payload_is_a_slice_of_the_input() {
    let msg = Message::Chunk {
        req_id: 9,
        id: id(1),
        index: 2,
        data: Bytes::from(vec![7u8; 4096]),
    };
    let bytes = enc(&msg);
    let range = bytes.as_ptr_range();
    let Ok(Message::Chunk { data, .. }) = decode(bytes.clone(), &Limits::default()) else {
        panic!("chunk must decode");
    };
    assert!(range.contains(&data.as_ptr()), "payload was copied");
    let mut scratch = BytesMut::new();
    let (head, payload) = encode_parts(&msg, &mut scratch);
    assert_eq!(head.len(), 1 + 8 + 32 + 4 + 4);
    let Message::Chunk { data, .. } = &msg else {
        unreachable!()
    };
    assert_eq!(
        payload.as_ptr(),
        data.as_ptr(),
        "encode_parts copied the chunk"
    );
}

#[test]
fn classes_of_the_chunk_messages() {
    let chunk_request = Message::ChunkRequest {
        req_id: 1,
        id: id(1),
        index: 0,
        priority: Priority::URGENT,
    };
    for control in [
        chunk_request,
        have(&[(0, 1)]),
        Message::Cancel { req_id: 1 },
    ] {
        assert_eq!(
            allowed_classes(&control),
            &[Class::Control],
            "{}",
            control.name()
        );
    }
    let chunk = Message::Chunk {
        req_id: 1,
        id: id(1),
        index: 0,
        data: Bytes::new(),
    };
    assert_eq!(
        allowed_classes(&chunk),
        &[Class::Urgent, Class::Normal, Class::Bulk]
    );
}

#[test]
fn limits_for_the_default_core_carry_every_message_it_sends() {
    let core = p2p_core::Config::default();
    let limits = Limits::for_core(&core);
    assert_eq!(limits.validate(), Ok(()));
    assert_eq!(limits.max_have_ranges, core.max_have_ranges);
    let chunk = Message::Chunk {
        req_id: 1,
        id: id(1),
        index: 0,
        data: Bytes::from(vec![0u8; core.chunk_size as usize]),
    };
    assert!(check_encodable(&chunk, &limits).is_ok());
    // The manifest of a largest artifact travels in a response.
    let chunks = core.max_artifact_size.div_ceil(u64::from(core.chunk_size)) as usize;
    let manifest = Message::Response {
        req_id: 1,
        id: id(1),
        data: Bytes::from(vec![0u8; 40 + 32 * chunks]),
    };
    assert!(check_encodable(&manifest, &limits).is_ok());
    let full_have = have(
        &(0..core.max_have_ranges as u32)
            .map(|i| (2 * i, 2 * i + 1))
            .collect::<Vec<_>>(),
    );
    assert!(check_encodable(&full_have, &limits).is_ok());
    // Chunked artifacts keep messages small: far below the 1 GiB largest artifact.
    assert!(limits.max_message_size < 1 << 20, "{limits:?}");
}
