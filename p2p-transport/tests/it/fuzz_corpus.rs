//! The fuzz targets' seed corpus: every committed input replays through the same checks the
//! fuzz targets run, and the committed corpus holds every seed that the generator below makes.
//!
//! To (re)write the seeds after a format change:
//! `cargo test -p p2p-transport --test fuzz_corpus -- --ignored write_seed_corpus`.

use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, ChunkRange, Class, Kind, Message, Priority};
use p2p_transport::codec::{self, ConnRole, Hello};
use p2p_transport::conn;
use p2p_transport::mux::{self, MuxSender};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn enc(msg: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(msg, &mut out);
    out.to_vec()
}

fn sample_messages() -> Vec<(&'static str, Message)> {
    let advert = |b: u8, attr: &'static [u8]| Advert {
        id: ArtifactId([b; 32]),
        kind: Kind(u16::from(b)),
        size: 100 * u64::from(b),
        attr: Bytes::from_static(attr),
    };
    vec![
        (
            "push",
            Message::Push {
                advert: advert(1, b"h=7"),
                data: Bytes::from_static(b"artifact bytes"),
            },
        ),
        (
            "push-empty",
            Message::Push {
                advert: advert(2, b""),
                data: Bytes::new(),
            },
        ),
        ("adverts-empty", Message::Adverts(vec![])),
        (
            "adverts",
            Message::Adverts(vec![advert(3, b"a"), advert(4, b""), advert(5, b"round")]),
        ),
        ("withdraw", Message::Withdraw(ArtifactId([6; 32]))),
        (
            "request",
            Message::Request {
                req_id: 77,
                id: ArtifactId([7; 32]),
                priority: Priority::URGENT,
            },
        ),
        (
            "response",
            Message::Response {
                req_id: 78,
                id: ArtifactId([8; 32]),
                data: Bytes::from(vec![0xabu8; 300]),
            },
        ),
        (
            "not-found",
            Message::NotFound {
                req_id: 79,
                id: ArtifactId([9; 32]),
            },
        ),
        (
            "chunk-request",
            Message::ChunkRequest {
                req_id: 80,
                id: ArtifactId([10; 32]),
                index: 3,
                priority: Priority::BULK,
            },
        ),
        (
            "chunk",
            Message::Chunk {
                req_id: 81,
                id: ArtifactId([11; 32]),
                index: 4,
                data: Bytes::from(vec![0xcdu8; 300]),
            },
        ),
        (
            "have",
            Message::Have {
                id: ArtifactId([12; 32]),
                ranges: vec![
                    ChunkRange { start: 0, end: 2 },
                    ChunkRange { start: 2, end: 3 },
                    ChunkRange { start: 7, end: 40 },
                ],
            },
        ),
        (
            "have-empty",
            Message::Have {
                id: ArtifactId([13; 32]),
                ranges: vec![],
            },
        ),
        ("cancel", Message::Cancel { req_id: 82 }),
        (
            "fetching",
            Message::Fetching(Advert {
                id: ArtifactId([15; 32]),
                kind: Kind(3),
                size: 9 << 20,
                attr: Bytes::from_static(b"ab"),
            }),
        ),
        (
            "decline",
            Message::Decline {
                id: ArtifactId([14; 32]),
                ranges: vec![
                    ChunkRange { start: 1, end: 2 },
                    ChunkRange { start: 9, end: 12 },
                ],
            },
        ),
        (
            "chunk-pushed",
            Message::Chunk {
                req_id: p2p_core::PUSHED_CHUNK,
                id: ArtifactId([11; 32]),
                index: 5,
                data: Bytes::from(vec![0xceu8; 300]),
            },
        ),
    ]
}

/// The `decode` seeds: each message type, prefixes, corruptions, and hellos.
fn decode_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, msg) in sample_messages() {
        let b = enc(&msg);
        seeds.push((name.to_string(), b.clone()));
        seeds.push((format!("{name}-truncated"), b[..b.len() / 2].to_vec()));
        let mut trailing = b.clone();
        trailing.push(0);
        seeds.push((format!("{name}-trailing"), trailing));
    }
    let mut bad_len = enc(&sample_messages()[6].1);
    bad_len[41..45].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push(("response-huge-length".into(), bad_len));
    seeds.push(("adverts-huge-count".into(), vec![2, 0xff, 0xff]));
    let mut long_attr = enc(&sample_messages()[0].1);
    long_attr[43..45].copy_from_slice(&200u16.to_le_bytes());
    seeds.push(("push-attr-too-long".into(), long_attr));
    seeds.push(("empty".into(), vec![]));
    let mut chunk_len = enc(&sample_messages()[9].1);
    chunk_len[45..49].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push(("chunk-huge-length".into(), chunk_len));
    let have = enc(&sample_messages()[10].1);
    let mut have_count = have.clone();
    have_count[33..35].copy_from_slice(&u16::MAX.to_le_bytes());
    seeds.push(("have-huge-count".into(), have_count));
    let mut have_empty_range = have.clone();
    have_empty_range[43..47].copy_from_slice(&3u32.to_le_bytes());
    seeds.push(("have-empty-range".into(), have_empty_range));
    let mut have_unordered = have;
    have_unordered[51..55].copy_from_slice(&1u32.to_le_bytes());
    seeds.push(("have-unordered".into(), have_unordered));
    seeds.push(("unknown-tag".into(), vec![13, 1, 2, 3]));
    let mut hello = BytesMut::new();
    codec::encode_hello(&Hello::new(42), &mut hello);
    seeds.push(("hello".into(), hello.to_vec()));
    let mut hello_v1 = hello.to_vec();
    hello_v1[5..7].copy_from_slice(&1u16.to_le_bytes());
    seeds.push(("hello-protocol-1".into(), hello_v1));
    let mut hello_v2 = hello.to_vec();
    hello_v2[5..7].copy_from_slice(&2u16.to_le_bytes());
    seeds.push(("hello-protocol-2".into(), hello_v2));
    let mut hello_v3 = hello.to_vec();
    hello_v3[5..7].copy_from_slice(&3u16.to_le_bytes());
    seeds.push(("hello-protocol-3".into(), hello_v3));
    let mut express = BytesMut::new();
    codec::encode_hello(&Hello::with_role(42, ConnRole::Express), &mut express);
    seeds.push(("hello-express".into(), express.to_vec()));
    let mut bad_role = express.to_vec();
    bad_role[15] = 9;
    seeds.push(("hello-unknown-role".into(), bad_role));
    seeds.push(("hello-http".into(), b"GET / HTTP/1.1\r\n".to_vec()));
    seeds.push((
        "hello-tls-client-hello".into(),
        vec![0x16, 0x03, 0x01, 0x00, 0xa5],
    ));
    seeds
}

/// A valid stream carrying `msgs` under the fuzz configuration.
fn stream(msgs: &[(Class, Message)]) -> Vec<u8> {
    let mut tx = MuxSender::new(mux::fuzz_config()).expect("valid");
    for (c, m) in msgs {
        tx.push(*c, m).expect("fits the fuzz limits");
    }
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    out.to_vec()
}

fn frame(stream: u32, flags: u8, payload: &[u8], total: Option<u32>) -> Vec<u8> {
    let mut f = stream.to_le_bytes().to_vec();
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    if let Some(t) = total {
        f.extend_from_slice(&t.to_le_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// The `reassemble` seeds: two chunking-seed bytes, then a valid or broken frame stream.
/// Seeds of the `conn` target: the first byte is the flags (bit 0: prepend a valid hello;
/// the rest: the chunking seed), then the peer's bytes.
fn conn_seeds() -> Vec<(String, Vec<u8>)> {
    let msgs = sample_messages();
    let valid = stream(&[
        (Class::Control, msgs[3].1.clone()),
        (Class::Urgent, msgs[0].1.clone()),
    ]);
    let mut hello = BytesMut::new();
    codec::encode_hello(&Hello::new(7), &mut hello);
    vec![
        ("frames-after-hello".into(), [&[1u8][..], &valid].concat()),
        (
            "frames-after-hello-chunked".into(),
            [&[7u8][..], &valid].concat(),
        ),
        (
            "own-hello-then-frames".into(),
            [&[0u8][..], &hello, &valid].concat(),
        ),
        (
            "bad-hello".into(),
            [&[0u8][..], b"GET / HTTP/1.1\r\n\r\n"].concat(),
        ),
        ("half-hello".into(), [&[0u8][..], &hello[..7]].concat()),
        (
            "garbage-after-hello".into(),
            [&[5u8][..], &[0xffu8; 40][..]].concat(),
        ),
    ]
}

fn reassemble_seeds() -> Vec<(String, Vec<u8>)> {
    let msgs = sample_messages();
    let big = Message::Response {
        req_id: 1,
        id: ArtifactId([1; 32]),
        data: Bytes::from(vec![3u8; 3000]),
    };
    let mixed: Vec<(Class, Message)> = vec![
        (Class::Bulk, big.clone()),
        (Class::Urgent, msgs[0].1.clone()),
        (Class::Control, msgs[3].1.clone()),
        (Class::Normal, msgs[6].1.clone()),
        (Class::Control, msgs[4].1.clone()),
    ];
    let valid = stream(&mixed);
    let single = stream(&[(Class::Control, msgs[5].1.clone())]);
    let w = enc(&msgs[4].1);
    let mut seeds = Vec::new();
    for (name, chunking) in [
        ("whole", [0u8, 0]),
        ("chunked", [7, 1]),
        ("bytewise", [1, 0]),
    ] {
        seeds.push((format!("mixed-{name}"), [&chunking[..], &valid].concat()));
    }
    seeds.push(("single-whole".into(), [&[0u8, 0][..], &single].concat()));
    seeds.push(("single-chunked".into(), [&[9u8, 9][..], &single].concat()));
    seeds.push((
        "mixed-truncated".into(),
        [&[3u8, 0][..], &valid[..valid.len() - 5]].concat(),
    ));
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("reserved-flags", frame(1, 0x1c, &w, None)),
        ("empty-frame", frame(1, 0x0c, &[], None)),
        ("too-large", frame(1, 0x04, &w[..3], Some(1 << 20))),
        (
            "duplicate-stream",
            [
                frame(2, 0x04, &w[..3], Some(33)),
                frame(2, 0x04, &w[..3], Some(33)),
            ]
            .concat(),
        ),
        ("unknown-stream", frame(3, 0x08, &w, None)),
        (
            "class-mismatch",
            [
                frame(4, 0x04, &w[..3], Some(33)),
                frame(4, 0x0b, &w[3..], None),
            ]
            .concat(),
        ),
        (
            "overrun",
            [
                frame(5, 0x04, &w[..3], Some(33)),
                frame(5, 0x08, &[0; 40], None),
            ]
            .concat(),
        ),
        (
            "last-short",
            [
                frame(6, 0x04, &w[..3], Some(33)),
                frame(6, 0x08, &w[3..9], None),
            ]
            .concat(),
        ),
        (
            "too-many-partial",
            (0..10)
                .flat_map(|s| frame(s, 0x04, &w[..3], Some(33)))
                .collect(),
        ),
        (
            "buffer-limit",
            (0..5)
                .flat_map(|s| frame(s, 0x04, &w[..3], Some(4096)))
                .collect(),
        ),
        ("undecodable", frame(7, 0x0c, &[42, 0, 0], None)),
    ];
    for (name, body) in broken {
        seeds.push((name.to_string(), [&[0u8, 0][..], &body].concat()));
        seeds.push((format!("{name}-chunked"), [&[5u8, 2][..], &body].concat()));
    }
    seeds
}

fn committed(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect()
}

#[test]
fn decode_corpus_replays_without_failure() {
    let files = committed("decode");
    assert!(files.len() >= 24, "only {} decode seeds", files.len());
    for (name, data) in files {
        eprintln!("decode seed {name}");
        codec::fuzz_decode(&data);
    }
}

#[test]
fn reassemble_corpus_replays_without_failure() {
    let files = committed("reassemble");
    assert!(files.len() >= 24, "only {} reassemble seeds", files.len());
    for (name, data) in files {
        eprintln!("reassemble seed {name}");
        mux::fuzz_reassemble(&data);
    }
}

#[test]
fn conn_corpus_replays_without_failure() {
    let files = committed("conn");
    assert!(files.len() >= 6, "only {} conn seeds", files.len());
    for (name, data) in files {
        eprintln!("conn seed {name}");
        conn::fuzz_connection(&data);
    }
}

#[test]
fn committed_corpus_holds_every_generated_seed() {
    for (target, seeds) in [
        ("decode", decode_seeds()),
        ("reassemble", reassemble_seeds()),
        ("conn", conn_seeds()),
    ] {
        let files = committed(target);
        for (name, data) in seeds {
            assert!(
                files.iter().any(|(n, d)| *n == name && *d == data),
                "{target}/{name} is missing or stale: rerun write_seed_corpus"
            );
        }
    }
}

#[test]
fn valid_seeds_decode_and_reassemble() {
    let limits = codec::Limits::default();
    for (name, msg) in sample_messages() {
        assert_eq!(
            codec::decode(Bytes::from(enc(&msg)), &limits).as_ref(),
            Ok(&msg),
            "{name}"
        );
    }
    let seeds = reassemble_seeds();
    let (_, mixed) = seeds.iter().find(|(n, _)| n == "mixed-chunked").unwrap();
    let mut rx = mux::MuxReceiver::new(mux::fuzz_config()).unwrap();
    rx.feed(Bytes::copy_from_slice(&mixed[2..]));
    let mut n = 0;
    while rx.poll_message().expect("valid stream").is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn broken_decode_seeds_fail_for_the_reason_they_are_named_after() {
    let expected = [
        ("chunk-huge-length", "TooLarge"),
        ("have-huge-count", "TooManyRanges"),
        ("have-empty-range", "EmptyRange"),
        ("have-unordered", "UnorderedRanges"),
        ("unknown-tag", "UnknownTag"),
        ("hello-protocol-1", "BadProtocolVersion"),
        ("hello-protocol-2", "BadProtocolVersion"),
        ("hello-protocol-3", "BadProtocolVersion"),
    ];
    let seeds = decode_seeds();
    for (name, variant) in expected {
        let (_, data) = seeds.iter().find(|(n, _)| n == name).unwrap();
        let err = if name.starts_with("hello") {
            codec::decode_hello(data).unwrap_err()
        } else {
            codec::decode(Bytes::copy_from_slice(data), &codec::Limits::default()).unwrap_err()
        };
        assert!(
            format!("{err:?}").starts_with(variant),
            "{name}: got {err:?}"
        );
    }
}

#[test]
fn broken_reassemble_seeds_fail_for_the_reason_they_are_named_after() {
    let expected = [
        ("reserved-flags", "ReservedFlags"),
        ("empty-frame", "EmptyFrame"),
        ("too-large", "MessageTooLarge"),
        ("duplicate-stream", "DuplicateStream"),
        ("unknown-stream", "UnknownStream"),
        ("class-mismatch", "ClassMismatch"),
        ("overrun", "FrameOverrun"),
        ("last-short", "LastFrameShort"),
        ("too-many-partial", "TooManyPartial"),
        ("buffer-limit", "BufferLimit"),
        ("undecodable", "Decode"),
    ];
    let seeds = reassemble_seeds();
    for (name, variant) in expected {
        let (_, data) = seeds.iter().find(|(n, _)| n == name).unwrap();
        let mut rx = mux::MuxReceiver::new(mux::fuzz_config()).unwrap();
        rx.feed(Bytes::copy_from_slice(&data[2..]));
        let err = loop {
            match rx.poll_message() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{name}: stream accepted"),
                Err(e) => break e,
            }
        };
        assert!(
            format!("{err:?}").starts_with(variant),
            "{name}: got {err:?}"
        );
    }
}

#[test]
#[ignore = "writes fuzz/corpus; run on purpose after a format change"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("decode", decode_seeds()),
        ("reassemble", reassemble_seeds()),
        ("conn", conn_seeds()),
    ] {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
