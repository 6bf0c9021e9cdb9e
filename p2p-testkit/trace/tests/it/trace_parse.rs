//! Trace parsing: malformed traces give typed errors with line numbers; every input and output
//! survives serialize -> parse; write failures are reported, not panicked on.

use p2p_core::{
    Advert, Artifact, ArtifactId, Bytes, ChunkRange, Class, Config, DisconnectReason, DropReason,
    Event, Input, Kind, Message, Node, NodeId, Output, Priority, RetryReason, Time,
};
use p2p_trace::{
    Header, InputRec, OutputRec, Payload, PriorityProfile, Record, Recorder, Trace, TraceError,
    TraceReader, TraceWriter,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::io;
use std::time::Duration;

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

/// A small valid trace: header, three inputs, two outputs.
fn valid_trace() -> Vec<u8> {
    let header = Header::new(node(1), Config::default(), PriorityProfile::FetchAll);
    let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
    let art = Artifact::new(Kind(3), &b"at"[..], vec![5u8; 2000]);
    let t = Time::from_millis(1);
    w.record_input(
        t,
        &Input::Membership {
            version: 1,
            members: vec![node(1), node(2)],
        },
    )
    .unwrap();
    w.record_input(t, &Input::PeerConnected(node(2))).unwrap();
    w.record_input(
        t,
        &Input::Message {
            from: node(2),
            msg: Message::Push {
                advert: art.advert(),
                data: art.data.clone(),
            },
        },
    )
    .unwrap();
    w.record_output(
        t,
        &Output::Deliver {
            artifact: art,
            from: node(2),
        },
    )
    .unwrap();
    w.record_output(
        t,
        &Output::Event(Event::MembershipChanged {
            version: 1,
            members: 2,
        }),
    )
    .unwrap();
    w.into_inner().unwrap()
}

fn lines(trace: &[u8]) -> Vec<String> {
    String::from_utf8(trace.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

fn parse_err(bytes: &[u8]) -> TraceError {
    Trace::parse_bytes(bytes).expect_err("the trace is malformed")
}

#[test]
fn a_valid_trace_parses_with_line_numbers_and_digested_large_outputs() {
    let trace = Trace::parse_bytes(&valid_trace()).unwrap();
    assert_eq!(trace.header.node, node(1));
    assert_eq!(trace.header.crate_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(trace.entries.len(), 5);
    assert_eq!(trace.entries[0].line, 2);
    assert_eq!(trace.entries[4].index, 4);
    // The 2000-byte delivery is over the 1 KiB inline limit: recorded as length and hash.
    match &trace.entries[3].record {
        Record::Out {
            output:
                OutputRec::Deliver {
                    data: Payload::Digest { len, sha256 },
                    id,
                    ..
                },
            ..
        } => {
            assert_eq!(*len, 2000);
            assert_eq!(sha256, &id.0);
        }
        other => panic!("unexpected record {other:?}"),
    }
    // The input push carries its bytes.
    match &trace.entries[2].record {
        Record::In {
            input: InputRec::Message { msg, .. },
            ..
        } => {
            let Message::Push { data, .. } = msg.to_message().unwrap() else {
                panic!()
            };
            assert_eq!(data.len(), 2000);
        }
        other => panic!("unexpected record {other:?}"),
    }
}

#[test]
fn an_empty_trace_is_an_error() {
    assert!(matches!(parse_err(b""), TraceError::Empty));
    assert!(matches!(parse_err(b"\n  \n"), TraceError::Empty));
}

#[test]
fn a_header_that_is_not_a_trace_is_an_error_on_line_1() {
    let e = parse_err(b"hello\n");
    assert!(matches!(e, TraceError::NotATrace { line: 1, .. }), "{e}");
    let e = parse_err(b"{\"format\":\"pcap\",\"version\":1}\n");
    assert!(matches!(e, TraceError::NotATrace { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("pcap"));
}

#[test]
fn a_newer_format_version_is_refused() {
    let mut l = lines(&valid_trace());
    l[0] = l[0].replace("\"version\":2", "\"version\":3");
    let e = parse_err(&join(&l));
    assert!(
        matches!(e, TraceError::UnsupportedVersion { line: 1, found: 3 }),
        "{e}"
    );
}

#[test]
fn a_version_1_header_parses_without_decisions_but_refuses_them() {
    let mut l = lines(&valid_trace());
    assert!(l[0].contains("\"version\":2") && l[0].contains("\"decisions\":false"));
    l[0] = l[0]
        .replace("\"version\":2", "\"version\":1")
        .replace("\"decisions\":false,", "");
    let trace = Trace::parse_bytes(&join(&l)).unwrap();
    assert!(!trace.header.decisions);
    assert_eq!(trace.entries.len(), 5);
    l[0] = l[0].replace("\"priority\":", "\"decisions\":true,\"priority\":");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Header { line: 1, .. }), "{e}");
}

#[test]
fn decisions_records_parse_only_in_traces_that_record_decisions() {
    let id = ArtifactId([7; 32]).to_hex();
    let rec = format!(
        "{{\"rec\":\"decisions\",\"t\":5,\"decisions\":[{{\"id\":\"{id}\",\"decision\":\"fetch:9\"}},\
         {{\"id\":\"{id}\",\"decision\":\"later\"}},{{\"id\":\"{id}\",\"decision\":\"drop\"}}]}}"
    );
    let mut l = lines(&valid_trace());
    l.insert(4, rec.clone());
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Invalid { line: 5, .. }), "{e}");

    l[0] = l[0].replace("\"decisions\":false", "\"decisions\":true");
    let trace = Trace::parse_bytes(&join(&l)).unwrap();
    let Record::Decisions { t, decisions } = &trace.entries[3].record else {
        panic!("{:?}", trace.entries[3]);
    };
    assert_eq!(*t, 5);
    let got: Vec<_> = decisions.iter().map(|d| (d.id, d.decision)).collect();
    assert_eq!(
        got,
        [
            (ArtifactId([7; 32]), p2p_core::Decision::Fetch(Priority(9))),
            (ArtifactId([7; 32]), p2p_core::Decision::Later),
            (ArtifactId([7; 32]), p2p_core::Decision::Drop),
        ]
    );
    assert_eq!(trace.entries[3].record.to_json(), rec.replace(' ', ""));

    for bad in ["fetch:256", "fetch", "maybe"] {
        l[4] = rec.replacen("later", bad, 1);
        let e = parse_err(&join(&l));
        assert!(
            matches!(e, TraceError::Record { line: 5, .. }),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains("decision"), "{e}");
    }
}

#[test]
fn a_header_missing_a_config_field_names_it() {
    let mut l = lines(&valid_trace());
    l[0] = l[0].replace("\"push_threshold\":1024,", "");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Header { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("push_threshold"), "{e}");
}

#[test]
fn a_header_without_chunk_settings_parses_with_nothing_chunked() {
    let mut l = lines(&valid_trace());
    for field in [
        "\"chunk_size\":131072,",
        "\"max_incomplete_bytes\":1073741824,",
        "\"max_chunks_in_flight\":64,",
        "\"max_chunks_in_flight_per_peer\":8,",
        "\"max_have_ranges\":1024,",
        "\"swarm_patience\":{\"secs\":0,\"nanos\":100000000},",
        "\"offload_chunk_hashing\":false,",
        "\"swarm_linger\":{\"secs\":0,\"nanos\":500000000},",
    ] {
        assert!(l[0].contains(field), "{field} in {}", l[0]);
        l[0] = l[0].replace(field, "");
    }
    let trace = Trace::parse_bytes(&join(&l)).unwrap();
    let c = &trace.header.config;
    assert_eq!(
        c.chunk_size,
        u32::MAX,
        "a trace from before chunking chunks nothing"
    );
    assert!(c.max_artifact_size < u64::from(c.chunk_size));
    let d = Config::default();
    assert_eq!(c.max_incomplete_bytes, d.max_incomplete_bytes);
    assert_eq!(c.max_chunks_in_flight, d.max_chunks_in_flight);
    assert_eq!(
        c.max_chunks_in_flight_per_peer,
        d.max_chunks_in_flight_per_peer
    );
    assert_eq!(c.max_have_ranges, d.max_have_ranges);
}

#[test]
fn a_header_with_an_unknown_priority_profile_is_an_error() {
    let mut l = lines(&valid_trace());
    l[0] = l[0].replace("\"fetch-all\"", "\"fetch-most\"");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Header { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("fetch-most"), "{e}");
}

#[test]
fn a_bad_node_id_is_an_error_on_its_line() {
    let mut l = lines(&valid_trace());
    l[2] = l[2].replace("0202020202", "zz02020202");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Record { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("invalid node id"), "{e}");
}

#[test]
fn an_unknown_record_type_is_an_error_on_its_line() {
    let mut l = lines(&valid_trace());
    l[1] = l[1].replace("\"rec\":\"in\"", "\"rec\":\"input\"");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Record { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("input"), "{e}");
}

#[test]
fn a_missing_time_is_an_error_naming_the_field() {
    let mut l = lines(&valid_trace());
    l[2] = l[2].replace("\"t\":1000000,", "");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Record { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("`t`"), "{e}");
}

#[test]
fn bad_base64_is_an_error_on_its_line() {
    let mut l = lines(&valid_trace());
    let i = l[3].find("\"data\":\"").unwrap() + 8;
    l[3].insert_str(i, "!!");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Record { line: 4, .. }), "{e}");
    assert!(e.to_string().contains("base64"), "{e}");
}

#[test]
fn an_input_whose_payload_is_only_a_digest_cannot_be_replayed() {
    let mut l = lines(&valid_trace());
    let start = l[3].find("\"data\":\"").unwrap() + 7;
    let end = start + 1 + l[3][start + 1..].find('"').unwrap() + 1;
    let digest = format!("{{\"len\":2000,\"sha256\":\"{}\"}}", "ab".repeat(32));
    l[3].replace_range(start..end, &digest);
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Invalid { line: 4, .. }), "{e}");
}

#[test]
fn a_truncated_last_line_is_an_error_on_that_line() {
    let bytes = valid_trace();
    let cut = &bytes[..bytes.len() - 20];
    let e = parse_err(cut);
    assert!(matches!(e, TraceError::Record { line: 6, .. }), "{e}");
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let mut l = lines(&valid_trace());
    l.insert(2, String::new());
    l[4] = l[4].replace("\"rec\":\"in\"", "\"rec\":\"nope\"");
    let e = parse_err(&join(&l));
    assert!(matches!(e, TraceError::Record { line: 5, .. }), "{e}");
}

#[test]
fn a_line_over_the_limit_is_refused_before_it_is_buffered() {
    let bytes = valid_trace();
    let header_len = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut r = TraceReader::with_max_line_len(&bytes[..], header_len).unwrap();
    let mut first_error = None;
    for item in r.by_ref() {
        if let Err(e) = item {
            first_error = Some(e);
            break;
        }
    }
    // Line 4 holds the 2000-byte push in base64, longer than the header.
    match first_error {
        Some(TraceError::LineTooLong { line: 4, max }) => assert_eq!(max, header_len),
        other => panic!("unexpected {other:?}"),
    }
    assert!(r.next().is_none(), "the reader stops after an error");
}

#[test]
fn invalid_utf8_is_an_error_on_its_line() {
    let mut bytes = valid_trace();
    let second_nl = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0;
    bytes[second_nl - 3] = 0xff;
    let e = parse_err(&bytes);
    assert!(matches!(e, TraceError::NotUtf8 { line: 2 }), "{e}");
    assert_eq!(e.line(), Some(2));
}

// ---- round trip ----

#[derive(Clone, Debug)]
struct ArbInput(Input);
#[derive(Clone, Debug)]
struct ArbOutput(Output);

fn arb_node(g: &mut Gen) -> NodeId {
    let mut b = [0u8; 32];
    for x in &mut b {
        *x = u8::arbitrary(g);
    }
    NodeId(b)
}

fn arb_id(g: &mut Gen) -> ArtifactId {
    ArtifactId(arb_node(g).0)
}

fn arb_bytes(g: &mut Gen) -> Bytes {
    Bytes::from(Vec::<u8>::arbitrary(g))
}

fn arb_advert(g: &mut Gen) -> Advert {
    Advert {
        id: arb_id(g),
        kind: Kind(u16::arbitrary(g)),
        size: u64::arbitrary(g),
        attr: arb_bytes(g),
    }
}

fn arb_message(g: &mut Gen) -> Message {
    match u8::arbitrary(g) % 12 {
        0 => Message::Push {
            advert: arb_advert(g),
            data: arb_bytes(g),
        },
        1 => {
            let n = usize::arbitrary(g) % 4;
            Message::Adverts((0..n).map(|_| arb_advert(g)).collect())
        }
        2 => Message::Withdraw(arb_id(g)),
        3 => Message::Request {
            req_id: u64::arbitrary(g),
            id: arb_id(g),
            priority: Priority(u8::arbitrary(g)),
        },
        4 => Message::Response {
            req_id: u64::arbitrary(g),
            id: arb_id(g),
            data: arb_bytes(g),
        },
        5 => Message::NotFound {
            req_id: u64::arbitrary(g),
            id: arb_id(g),
        },
        6 => Message::ChunkRequest {
            req_id: u64::arbitrary(g),
            id: arb_id(g),
            index: u32::arbitrary(g),
            priority: Priority(u8::arbitrary(g)),
        },
        7 => Message::Chunk {
            req_id: u64::arbitrary(g),
            id: arb_id(g),
            index: u32::arbitrary(g),
            data: arb_bytes(g),
        },
        8 => Message::Have {
            id: arb_id(g),
            ranges: arb_ranges(g),
        },
        9 => Message::Decline {
            id: arb_id(g),
            ranges: arb_ranges(g),
        },
        10 => Message::Fetching(arb_advert(g)),
        _ => Message::Cancel {
            req_id: u64::arbitrary(g),
        },
    }
}

fn arb_reason(g: &mut Gen) -> DisconnectReason {
    match u8::arbitrary(g) % 8 {
        0 => DisconnectReason::NotMember,
        5 => DisconnectReason::RepeatedRequests {
            limit: u32::arbitrary(g),
        },
        7 => DisconnectReason::UnwantedPushes {
            limit: u32::arbitrary(g),
        },
        1 => DisconnectReason::TooManyAdverts {
            limit: usize::arbitrary(g),
        },
        2 => DisconnectReason::TooManyAdvertsOfKind {
            kind: Kind(u16::arbitrary(g)),
            limit: usize::arbitrary(g),
        },
        3 => DisconnectReason::BadData {
            count: u32::arbitrary(g),
        },
        4 => DisconnectReason::TooManyRequests {
            limit: usize::arbitrary(g),
        },
        _ => DisconnectReason::ProtocolViolation(
            g.choose(&["too many adverts in one message", "x"]).unwrap(),
        ),
    }
}

impl Arbitrary for ArbInput {
    fn arbitrary(g: &mut Gen) -> Self {
        ArbInput(match u8::arbitrary(g) % 9 {
            0 => {
                let n = usize::arbitrary(g) % 5;
                Input::Membership {
                    version: u64::arbitrary(g),
                    members: (0..n).map(|_| arb_node(g)).collect(),
                }
            }
            1 => Input::PeerConnected(arb_node(g)),
            2 => Input::PeerDisconnected(arb_node(g)),
            3 => Input::Message {
                from: arb_node(g),
                msg: arb_message(g),
            },
            4 => {
                // Sometimes with an id that does not match: it must survive as given.
                let mut a = Artifact::new(Kind(u16::arbitrary(g)), arb_bytes(g), arb_bytes(g));
                if bool::arbitrary(g) {
                    a.id = arb_id(g);
                }
                Input::Publish(a)
            }
            5 => Input::Remove(arb_id(g)),
            6 => Input::Reevaluate,
            7 => Input::Congestion {
                peer: arb_node(g),
                congested: bool::arbitrary(g),
            },
            _ => Input::Timeout,
        })
    }
}

/// Up to four ascending, disjoint chunk ranges.
fn arb_ranges(g: &mut Gen) -> Vec<ChunkRange> {
    let n = usize::arbitrary(g) % 5;
    let mut next = 0u32;
    (0..n)
        .map(|_| {
            let start = next + u32::arbitrary(g) % 3;
            let end = start + 1 + u32::arbitrary(g) % 50;
            next = end;
            ChunkRange { start, end }
        })
        .collect()
}

impl Arbitrary for ArbOutput {
    fn arbitrary(g: &mut Gen) -> Self {
        ArbOutput(match u8::arbitrary(g) % 11 {
            0 => Output::Send {
                to: arb_node(g),
                msg: arb_message(g),
                class: *g.choose(&Class::ALL).unwrap(),
            },
            1 => Output::Deliver {
                artifact: Artifact::new(Kind(u16::arbitrary(g)), arb_bytes(g), arb_bytes(g)),
                from: arb_node(g),
            },
            2 => Output::Disconnect {
                peer: arb_node(g),
                reason: arb_reason(g),
            },
            3 => Output::Event(Event::Dropped {
                id: arb_id(g),
                from: arb_node(g),
                reason: *g
                    .choose(&[
                        DropReason::Unwanted,
                        DropReason::TableFull,
                        DropReason::Duplicate,
                    ])
                    .unwrap(),
            }),
            4 => Output::Event(Event::Retry {
                id: arb_id(g),
                peer: arb_node(g),
                req_id: u64::arbitrary(g),
                reason: *g
                    .choose(&[
                        RetryReason::Timeout,
                        RetryReason::NotFound,
                        RetryReason::BadData,
                        RetryReason::Disconnected,
                        RetryReason::Withdrawn,
                    ])
                    .unwrap(),
            }),
            5 => Output::Event(Event::Penalized {
                peer: arb_node(g),
                count: u32::arbitrary(g),
            }),
            6 => Output::Event(Event::PeerDisconnected {
                peer: arb_node(g),
                reason: arb_reason(g),
            }),
            7 => Output::Cancel {
                to: arb_node(g),
                req_id: u64::arbitrary(g),
            },
            8 => Output::CancelPushes {
                to: arb_node(g),
                id: arb_id(g),
                ranges: arb_ranges(g),
            },
            _ => Output::Event(Event::MembershipChanged {
                version: u64::arbitrary(g),
                members: usize::arbitrary(g),
            }),
        })
    }
}

fn round_trip(inputs: Vec<ArbInput>, outputs: Vec<ArbOutput>, inline_max: u8, seed: u64) -> bool {
    let inline_max = u64::from(inline_max);
    let config = Config {
        seed,
        push_threshold: seed % 5000,
        chunk_size: 4096 + (seed % 100_000) as u32,
        max_have_ranges: 1 + (seed % 3000) as usize,
        reevaluate_interval: Duration::from_nanos(seed % 7_777_777_777),
        ..Config::default()
    };
    let mut header = Header::new(
        node(7),
        config,
        "by-kind:3=9;default=later".parse().unwrap(),
    );
    header.output_payload_inline_max = inline_max;
    let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
    for (i, ArbInput(input)) in inputs.iter().enumerate() {
        w.record_input(Time::from_nanos(i as u64 * 1_000_003), input)
            .unwrap();
    }
    for (i, ArbOutput(output)) in outputs.iter().enumerate() {
        w.record_output(Time::from_nanos(u64::MAX - i as u64), output)
            .unwrap();
    }
    let trace = Trace::parse_bytes(&w.into_inner().unwrap()).unwrap();
    assert_eq!(
        format!("{:?}", trace.header.config),
        format!("{:?}", header.config)
    );
    assert_eq!(trace.header.priority, header.priority);
    assert_eq!(trace.header.output_payload_inline_max, inline_max);
    assert_eq!(trace.entries.len(), inputs.len() + outputs.len());
    for (i, (ArbInput(input), e)) in inputs.iter().zip(&trace.entries).enumerate() {
        let Record::In { t, input: rec } = &e.record else {
            return false;
        };
        assert_eq!(*t, i as u64 * 1_000_003);
        // Input has no PartialEq; its Debug shows every field and byte.
        assert_eq!(
            format!("{:?}", rec.to_input().unwrap()),
            format!("{input:?}")
        );
    }
    for (i, (ArbOutput(output), e)) in outputs
        .iter()
        .zip(&trace.entries[inputs.len()..])
        .enumerate()
    {
        let Record::Out { t, output: rec } = &e.record else {
            return false;
        };
        assert_eq!(*t, u64::MAX - i as u64);
        assert_eq!(rec, &OutputRec::from_output(output, inline_max));
        if let (Output::Deliver { artifact, .. }, OutputRec::Deliver { data, .. }) = (output, rec) {
            assert_eq!(data.len(), artifact.data.len() as u64);
            match data {
                Payload::Inline(b) => assert_eq!(b, &artifact.data),
                Payload::Digest { sha256, .. } => assert_eq!(sha256, &artifact.id.0),
            }
        }
    }
    true
}

#[test]
fn every_input_and_output_survives_serialize_then_parse() {
    QuickCheck::new()
        .tests(300)
        .quickcheck(round_trip as fn(Vec<ArbInput>, Vec<ArbOutput>, u8, u64) -> bool);
}

// ---- write failures ----

/// Accepts `room` bytes, then fails every write.
struct Full {
    room: usize,
}

impl io::Write for Full {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_recorder_whose_writer_fails_keeps_the_node_running_and_reports_the_error() {
    let cfg = Config::default();
    let mut r =
        Recorder::create(node(1), cfg, PriorityProfile::FetchAll, Full { room: 100 }).unwrap();
    let now = Time::ZERO;
    r.handle_input(
        now,
        Input::Membership {
            version: 1,
            members: vec![node(1), node(2)],
        },
    )
    .unwrap();
    r.handle_input(now, Input::PeerConnected(node(2))).unwrap();
    // A record larger than the buffer goes straight to the failing writer.
    let big = Artifact::new(Kind(0), Bytes::new(), vec![1u8; 200_000]);
    r.handle_input(now, Input::Publish(big.clone())).unwrap();
    let mut outputs = 0;
    while r.poll_output().is_some() {
        outputs += 1;
    }
    assert!(outputs >= 2, "the node still produced its outputs");
    assert!(r.node().has_artifact(&big.id));
    let e = r.write_error().cloned().expect("the failure is reported");
    assert_eq!(e.kind, io::ErrorKind::StorageFull);
    assert_eq!(r.flush(), Err(e.clone()), "the error is sticky");
    assert_eq!(r.finish().err(), Some(e));
}

#[test]
fn a_trace_writer_reports_a_failure_at_flush() {
    let header = Header::new(node(1), Config::default(), PriorityProfile::FetchAll);
    let mut w = TraceWriter::new(Full { room: 10 }, &header).expect("the header is buffered");
    w.record_input(Time::ZERO, &Input::Timeout)
        .expect("buffered");
    assert_eq!(w.records_written(), 1);
    let e = w.flush().unwrap_err();
    assert_eq!(e.kind, io::ErrorKind::StorageFull);
    assert_eq!(w.record_input(Time::ZERO, &Input::Timeout), Err(e));
}

#[test]
fn writers_and_recorders_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<TraceWriter<std::fs::File>>();
    assert_send::<Recorder<std::fs::File>>();
    let _ = Node::new(node(1), Config::default());
}
