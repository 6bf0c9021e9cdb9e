//! Codec tests: golden bytes pin the format, quickcheck round-trips every message type, and
//! every malformed input gives its named error.

use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, Kind, Message, Priority};
use p2p_transport::codec::{
    DecodeError, EncodeError, HELLO_LEN, Hello, Limits, LimitsError, PROTOCOL_VERSION,
    check_encodable, decode, decode_hello, encode, encode_hello, encode_parts, encoded_len,
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
fn golden_hello() {
    let hello = Hello {
        protocol_version: 1,
        registry_version: 0x0a0b,
    };
    let mut out = BytesMut::new();
    encode_hello(&hello, &mut out);
    assert_eq!(
        hex::encode(&out),
        "5032504701".to_string() + "0100" + "0b0a000000000000"
    );
    assert_eq!(out.len(), HELLO_LEN);
    assert_eq!(decode_hello(&out), Ok(hello));
    assert_eq!(Hello::new(7).protocol_version, PROTOCOL_VERSION);
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
        decode(Bytes::from_static(&[7, 1, 2]), &Limits::default()),
        Err(DecodeError::UnknownTag(7))
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
    bad_format[4] = 2;
    assert_eq!(
        decode_hello(&bad_format),
        Err(DecodeError::BadHelloFormat { found: 2 })
    );
    let mut bad_proto = good.to_vec();
    bad_proto[5] = 9;
    assert_eq!(
        decode_hello(&bad_proto),
        Err(DecodeError::BadProtocolVersion { found: 9 })
    );
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
}
