//! Multiplexer tests: scheduling by class and within a class, back-pressure, reassembly under
//! arbitrary chunking, and every receiver bound.

use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, ChunkRange, Class, Kind, Message, Priority};
use p2p_transport::codec::{self, DecodeError, EncodeError, Limits};
use p2p_transport::mux::{
    FIRST_FRAME_HEADER_LEN, FRAME_HEADER_LEN, MIN_TRANSMIT, MuxConfig, MuxConfigError, MuxError,
    MuxReceiver, MuxSender, PushError,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

use crate::common::M;

/// One frame as parsed independently from the wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    stream: u32,
    class: u8,
    first: bool,
    last: bool,
    len: usize,
    wire_len: usize,
}

/// Parses a complete frame stream following the documented format.
fn parse_frames(mut b: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let stream = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let flags = b[4];
        let len = u32::from_le_bytes(b[5..9].try_into().unwrap()) as usize;
        let first = flags & 4 != 0;
        let last = flags & 8 != 0;
        let hlen = if first && !last { 13 } else { 9 };
        out.push(Frame {
            stream,
            class: flags & 3,
            first,
            last,
            len,
            wire_len: hlen + len,
        });
        b = &b[hlen + len..];
    }
    out
}

fn response(req_id: u64, len: usize) -> Message {
    Message::Response {
        req_id,
        id: ArtifactId([req_id as u8; 32]),
        data: Bytes::from(vec![req_id as u8; len]),
    }
}

fn urgent_push() -> Message {
    let data = Bytes::from(vec![0x55u8; 200 - 1 - 44 - 4]);
    Message::Push {
        advert: Advert {
            id: ArtifactId::of(&data),
            kind: Kind(1),
            size: data.len() as u64,
            attr: Bytes::new(),
        },
        data,
    }
}

fn sender(cfg: MuxConfig) -> MuxSender {
    MuxSender::new(cfg).expect("valid config")
}

fn receiver(cfg: MuxConfig) -> MuxReceiver {
    MuxReceiver::new(cfg).expect("valid config")
}

fn drain(rx: &mut MuxReceiver) -> Vec<(Class, Message)> {
    let mut got = Vec::new();
    while let Some(m) = rx.poll_message().expect("valid stream") {
        got.push(m);
    }
    got
}

#[test]
fn urgent_message_behind_bulk_leaves_after_at_most_one_bulk_frame() {
    let cfg = MuxConfig::default();
    let frame = cfg.frame_size;
    let mut tx = sender(cfg.clone());
    let mut rx = receiver(cfg);
    let bulk = response(1, 4 << 20);
    let urgent = urgent_push();
    assert_eq!(codec::encoded_len(&urgent), 200);
    tx.push(Class::Bulk, &bulk).unwrap();

    // The driver writes the first bulk frame; then the urgent message is queued.
    let mut wire = BytesMut::new();
    let n = tx.poll_transmit(&mut wire, FIRST_FRAME_HEADER_LEN + frame);
    assert_eq!(n, FIRST_FRAME_HEADER_LEN + frame);
    tx.push(Class::Urgent, &urgent).unwrap();

    let mut rest = BytesMut::new();
    let _ = tx.poll_transmit(&mut rest, usize::MAX);
    let frames = parse_frames(&rest);
    assert_eq!(frames[0].class, Class::Urgent as u8, "urgent goes next");
    assert!(frames[0].first && frames[0].last);
    assert_eq!(frames[0].len, 200);
    assert!(frames[1..].iter().all(|f| f.class == Class::Bulk as u8));

    // The receiver delivers the urgent message after exactly one bulk frame.
    rx.feed(wire.freeze());
    assert!(drain(&mut rx).is_empty());
    let rest = rest.freeze();
    rx.feed(rest.slice(..9 + 200));
    assert_eq!(drain(&mut rx), vec![(Class::Urgent, urgent)]);
    rx.feed(rest.slice(9 + 200..));
    assert_eq!(drain(&mut rx), vec![(Class::Bulk, bulk)]);
}

#[test]
fn urgent_pushed_with_bulk_goes_first() {
    let mut tx = sender(MuxConfig::default());
    tx.push(Class::Bulk, &response(1, 1 << 20)).unwrap();
    tx.push(Class::Urgent, &urgent_push()).unwrap();
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    assert_eq!(parse_frames(&out)[0].class, Class::Urgent as u8);
}

#[test]
fn by_default_a_class_is_fifo_so_a_message_completes_before_the_next_starts() {
    let cfg = MuxConfig::default();
    let mut tx = sender(cfg.clone());
    tx.push(Class::Normal, &response(1, 100 << 10)).unwrap();
    tx.push(Class::Normal, &response(2, 100 << 10)).unwrap();
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    let frames = parse_frames(&out);
    let first_of_second = frames.iter().position(|f| f.stream == 1).unwrap();
    assert!(frames[..first_of_second].last().unwrap().last);
    assert!(frames[first_of_second..].iter().all(|f| f.stream == 1));
}

#[test]
fn small_message_is_not_stuck_behind_a_large_one_of_an_interleaving_class() {
    let cfg = MuxConfig {
        max_active: [1, 4, 4, 4],
        ..MuxConfig::default()
    };
    let mut tx = sender(cfg.clone());
    tx.push(Class::Normal, &response(1, 4 << 20)).unwrap();
    tx.push(Class::Normal, &response(2, 100)).unwrap();
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    let frames = parse_frames(&out);
    assert_eq!(frames[0].stream, 0);
    assert_eq!((frames[1].stream, frames[1].last), (1, true));
    assert!(frames[2..].iter().all(|f| f.stream == 0));
    let mut rx = receiver(cfg);
    rx.feed(out.freeze());
    let got = drain(&mut rx);
    assert_eq!(
        got,
        vec![
            (Class::Normal, response(2, 100)),
            (Class::Normal, response(1, 4 << 20))
        ]
    );
}

#[test]
fn control_class_is_fifo_so_a_withdraw_never_overtakes_its_adverts() {
    let cfg = MuxConfig::default();
    let mut tx = sender(cfg.clone());
    let advert = Advert {
        id: ArtifactId([9; 32]),
        kind: Kind(0),
        size: 5000,
        attr: Bytes::from_static(b"height"),
    };
    let adverts = Message::Adverts(vec![advert; 1000]);
    assert!(codec::encoded_len(&adverts) > 2 * cfg.frame_size);
    let withdraw = Message::Withdraw(ArtifactId([9; 32]));
    tx.push(Class::Control, &adverts).unwrap();
    tx.push(Class::Control, &withdraw).unwrap();
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    let mut rx = receiver(cfg);
    rx.feed(out.freeze());
    assert_eq!(
        drain(&mut rx),
        vec![(Class::Control, adverts), (Class::Control, withdraw)]
    );
}

#[test]
fn bulk_progresses_under_urgent_load_in_proportion_to_weights() {
    let cfg = MuxConfig::default();
    let (wu, wb) = (cfg.weights[1] as usize, cfg.weights[3] as usize);
    let mut tx = sender(cfg.clone());
    for i in 0..64 {
        tx.push(Class::Urgent, &response(i, 64 << 10)).unwrap();
    }
    tx.push(Class::Bulk, &response(99, 4 << 20)).unwrap();
    let mut out = BytesMut::new();
    let window = 2 << 20;
    let _ = tx.poll_transmit(&mut out, window);
    let frames = parse_frames(&out);
    let bulk: usize = frames
        .iter()
        .filter(|f| f.class == Class::Bulk as u8)
        .map(|f| f.wire_len)
        .sum();
    let total: usize = frames.iter().map(|f| f.wire_len).sum();
    let fair = total * wb / (wu + wb);
    let slack = 2 * (cfg.frame_size + FIRST_FRAME_HEADER_LEN);
    assert!(
        bulk + slack >= fair && bulk <= fair + slack,
        "bulk got {bulk} of {total} bytes, fair share {fair}"
    );
}

#[test]
fn push_past_the_class_cap_is_refused_and_congestion_is_reported() {
    let cfg = MuxConfig {
        high_water: 3 << 20,
        max_queued_per_class: 16 << 20,
        ..MuxConfig::default()
    };
    let mut tx = sender(cfg);
    let msg = response(1, (4 << 20) - 100);
    let len = codec::encoded_len(&msg);
    assert!(!tx.is_congested());
    for _ in 0..4 {
        tx.push(Class::Bulk, &msg).unwrap();
    }
    assert!(tx.is_congested());
    assert_eq!(tx.queued_bytes(Class::Bulk), 4 * len);
    assert_eq!(tx.queued_bytes_total(), 4 * len);
    assert_eq!(
        tx.push(Class::Bulk, &msg),
        Err(PushError::QueueFull {
            class: Class::Bulk,
            queued: 4 * len,
            len,
            cap: 16 << 20
        })
    );
    // Other classes have their own cap.
    tx.push(Class::Urgent, &msg).unwrap();
    assert_eq!(tx.queued_bytes(Class::Urgent), len);
    // Draining relieves it.
    let mut out = BytesMut::new();
    let _ = tx.poll_transmit(&mut out, usize::MAX);
    assert!(tx.is_idle() && !tx.is_congested());
    assert_eq!(tx.queued_bytes_total(), 0);
}

#[test]
fn push_of_a_message_over_the_size_limit_is_refused() {
    let mut tx = sender(MuxConfig::default());
    let msg = response(1, 16 << 20);
    assert!(matches!(
        tx.push(Class::Bulk, &msg),
        Err(PushError::Encode(EncodeError::TooLarge { .. }))
    ));
    assert!(tx.is_idle());
}

#[test]
fn transmit_respects_max_bytes_and_progresses_from_min_transmit() {
    let cfg = MuxConfig::default();
    let mut tx = sender(cfg.clone());
    let msg = response(3, 100_000);
    tx.push(Class::Normal, &msg).unwrap();
    let mut wire = BytesMut::new();
    assert_eq!(tx.poll_transmit(&mut wire, MIN_TRANSMIT - 1), 0);
    while !tx.is_idle() {
        let before = wire.len();
        let n = tx.poll_transmit(&mut wire, MIN_TRANSMIT);
        assert!(n > 0 && n <= MIN_TRANSMIT);
        assert_eq!(wire.len() - before, n);
    }
    let mut rx = receiver(cfg);
    rx.feed(wire.freeze());
    assert_eq!(drain(&mut rx), vec![(Class::Normal, msg)]);
}

#[test]
fn vectored_transmit_yields_the_same_bytes_without_copying_payloads() {
    let cfg = MuxConfig::default();
    let mut a = sender(cfg.clone());
    let mut b = sender(cfg);
    let big = response(1, 1 << 20);
    let msgs = [
        (Class::Bulk, big.clone()),
        (Class::Urgent, urgent_push()),
        (Class::Control, Message::Withdraw(ArtifactId([1; 32]))),
        (Class::Normal, response(2, 40_000)),
    ];
    for (c, m) in &msgs {
        a.push(*c, m).unwrap();
        b.push(*c, m).unwrap();
    }
    let mut flat = BytesMut::new();
    let mut parts = Vec::new();
    for budget in [100_000, 7_000, 1_000_000, usize::MAX] {
        let x = a.poll_transmit(&mut flat, budget);
        let y = b.poll_transmit_parts(&mut parts, budget);
        assert_eq!(x, y);
    }
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(&flat[..], &joined[..]);
    let Message::Response { data, .. } = &big else {
        unreachable!()
    };
    let range = data.as_ptr_range();
    assert!(
        parts
            .iter()
            .any(|p| p.len() > 1000 && range.contains(&p.as_ptr())),
        "payload pieces must be slices of the message's data"
    );
}

#[test]
fn single_frame_message_is_decoded_without_copy() {
    let cfg = MuxConfig::default();
    let mut tx = sender(cfg.clone());
    let msg = response(5, 1000);
    tx.push(Class::Normal, &msg).unwrap();
    let mut wire = BytesMut::new();
    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    let wire = wire.freeze();
    let range = wire.as_ptr_range();
    let mut rx = receiver(cfg);
    rx.feed(wire.clone());
    let Some((_, Message::Response { data, .. })) = rx.poll_message().unwrap() else {
        panic!("a response must arrive");
    };
    assert!(range.contains(&data.as_ptr()), "payload was copied");
}

#[test]
fn receiver_reassembles_byte_by_byte() {
    let cfg = MuxConfig {
        frame_size: 1024,
        ..MuxConfig::default()
    };
    let mut tx = sender(cfg.clone());
    let msgs = vec![
        (Class::Bulk, response(1, 5000)),
        (Class::Urgent, urgent_push()),
        (Class::Bulk, response(2, 10)),
    ];
    for (c, m) in &msgs {
        tx.push(*c, m).unwrap();
    }
    let mut wire = BytesMut::new();
    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    let mut rx = receiver(cfg);
    let mut got = Vec::new();
    for b in wire.iter() {
        rx.feed(Bytes::copy_from_slice(&[*b]));
        got.extend(drain(&mut rx));
    }
    assert_eq!(got.len(), 3);
    for m in &msgs {
        assert!(got.contains(m));
    }
    assert_eq!(rx.partial_messages(), 0);
    assert_eq!(rx.buffered_bytes(), 0);
    assert_eq!(rx.unparsed_bytes(), 0);
}

// ---- receiver bounds and malformed streams -------------------------------------------------

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

const FIRST: u8 = 4;
const LAST: u8 = 8;

fn withdraw_bytes() -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(&Message::Withdraw(ArtifactId([7; 32])), &mut b);
    b.to_vec()
}

/// Feeds `wire` and returns the first error, checking that it is sticky.
fn error_of(cfg: MuxConfig, wire: Vec<u8>) -> MuxError {
    let mut rx = receiver(cfg);
    rx.feed(Bytes::from(wire));
    let err = loop {
        match rx.poll_message() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream was accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(rx.poll_message(), Err(err.clone()), "error is sticky");
    rx.feed(Bytes::from(frame(
        50,
        FIRST | LAST,
        &withdraw_bytes(),
        None,
    )));
    assert_eq!(rx.poll_message(), Err(err.clone()), "error is sticky");
    err
}

#[test]
fn frame_with_reserved_flags_is_rejected() {
    assert_eq!(
        error_of(
            MuxConfig::default(),
            frame(1, FIRST | LAST | 0x10, &withdraw_bytes(), None)
        ),
        MuxError::ReservedFlags {
            stream: 1,
            flags: 0x1c
        }
    );
}

#[test]
fn empty_frame_is_rejected() {
    assert_eq!(
        error_of(MuxConfig::default(), frame(2, FIRST | LAST, &[], None)),
        MuxError::EmptyFrame { stream: 2 }
    );
}

#[test]
fn message_announced_over_the_limit_is_rejected_before_buffering() {
    let limit = MuxConfig::default().limits.max_message_size;
    assert_eq!(
        error_of(MuxConfig::default(), frame(3, FIRST, &[1], Some(u32::MAX))),
        MuxError::MessageTooLarge {
            stream: 3,
            size: u32::MAX as usize,
            limit
        }
    );
    // A single frame announcing a huge length is refused before its bytes arrive.
    let mut f = 4u32.to_le_bytes().to_vec();
    f.push(FIRST | LAST);
    f.extend_from_slice(&(limit as u32 + 1).to_le_bytes());
    assert!(matches!(
        error_of(MuxConfig::default(), f),
        MuxError::MessageTooLarge { stream: 4, .. }
    ));
}

#[test]
fn restarting_an_unfinished_stream_is_rejected() {
    let mut w = frame(5, FIRST, &[5], Some(33));
    w.extend(frame(5, FIRST, &[5], Some(33)));
    assert_eq!(
        error_of(MuxConfig::default(), w),
        MuxError::DuplicateStream { stream: 5 }
    );
}

#[test]
fn continuation_of_an_unknown_stream_is_rejected() {
    assert_eq!(
        error_of(MuxConfig::default(), frame(6, LAST, &[1, 2], None)),
        MuxError::UnknownStream { stream: 6 }
    );
}

#[test]
fn continuation_in_another_class_is_rejected() {
    let b = withdraw_bytes();
    let mut w = frame(7, FIRST, &b[..10], Some(33));
    w.extend(frame(7, LAST | 3, &b[10..], None));
    assert_eq!(
        error_of(MuxConfig::default(), w),
        MuxError::ClassMismatch {
            stream: 7,
            started: Class::Control,
            frame: Class::Bulk
        }
    );
}

#[test]
fn frames_that_overrun_or_fall_short_of_the_total_are_rejected() {
    let b = withdraw_bytes();
    let mut over = frame(8, FIRST, &b[..10], Some(33));
    over.extend(frame(8, LAST, &[0; 24], None));
    assert_eq!(
        error_of(MuxConfig::default(), over),
        MuxError::FrameOverrun {
            stream: 8,
            frame_len: 24,
            remaining: 23
        }
    );
    let mut short = frame(9, FIRST, &b[..10], Some(33));
    short.extend(frame(9, LAST, &b[10..20], None));
    assert_eq!(
        error_of(MuxConfig::default(), short),
        MuxError::LastFrameShort {
            stream: 9,
            frame_len: 10,
            remaining: 23
        }
    );
    // A first frame as long as its announced total must be a single FIRST|LAST frame.
    assert!(matches!(
        error_of(MuxConfig::default(), frame(10, FIRST, &b, Some(33))),
        MuxError::FrameOverrun { stream: 10, .. }
    ));
    // A continuation that completes the message must be LAST.
    let mut unfinished = frame(11, FIRST, &b[..10], Some(33));
    unfinished.extend(frame(11, 0, &b[10..], None));
    assert!(matches!(
        error_of(MuxConfig::default(), unfinished),
        MuxError::FrameOverrun { stream: 11, .. }
    ));
}

#[test]
fn too_many_partial_messages_are_rejected() {
    let cfg = MuxConfig::default();
    let mut w = Vec::new();
    for s in 0..=cfg.max_partial_messages as u32 {
        w.extend(frame(s, FIRST, &[1], Some(33)));
    }
    assert_eq!(
        error_of(cfg.clone(), w),
        MuxError::TooManyPartial {
            limit: cfg.max_partial_messages
        }
    );
}

#[test]
fn buffering_past_the_byte_bound_is_rejected() {
    let cfg = MuxConfig::default();
    let size = cfg.limits.max_message_size;
    let fit = cfg.max_buffered_bytes / size;
    let mut w = Vec::new();
    for s in 0..=fit as u32 {
        w.extend(frame(s, FIRST, &[1], Some(size as u32)));
    }
    assert_eq!(
        error_of(cfg.clone(), w),
        MuxError::BufferLimit {
            needed: size,
            buffered: fit * size,
            limit: cfg.max_buffered_bytes
        }
    );
}

#[test]
fn undecodable_message_is_rejected_with_the_codec_error() {
    assert_eq!(
        error_of(
            MuxConfig::default(),
            frame(12, FIRST | LAST, &[42, 0], None)
        ),
        MuxError::Decode {
            stream: 12,
            source: DecodeError::UnknownTag(42)
        }
    );
}

#[test]
fn default_config_is_valid_and_bad_configs_are_named() {
    assert_eq!(MuxConfig::default().validate(), Ok(()));
    let small_frames = MuxConfig {
        frame_size: 100,
        ..MuxConfig::default()
    };
    assert_eq!(small_frames.validate(), Err(MuxConfigError::FrameSize(100)));
    let zero = MuxConfig {
        weights: [1, 0, 1, 1],
        ..MuxConfig::default()
    };
    assert_eq!(
        zero.validate(),
        Err(MuxConfigError::ZeroWeight(Class::Urgent))
    );
    let starved = MuxConfig {
        max_buffered_bytes: 1 << 20,
        ..MuxConfig::default()
    };
    assert!(matches!(
        starved.validate(),
        Err(MuxConfigError::ReceiverTooSmall { .. })
    ));
    let big = MuxConfig {
        limits: Limits {
            max_message_size: 128 << 20,
            ..Limits::default()
        },
        max_queued_per_class: 256 << 20,
        max_buffered_bytes: 13 * (128 << 20),
        ..MuxConfig::default()
    };
    assert_eq!(big.validate(), Ok(()));
    assert!(MuxSender::new(small_frames).is_err());
}

// ---- quickcheck: arbitrary pushes, transmits and chunking ----------------------------------

#[derive(Clone, Debug)]
enum Op {
    Push(Class, Message),
    Transmit(usize),
}

#[derive(Clone, Debug)]
struct Scenario {
    ops: Vec<Op>,
    chunks: Vec<usize>,
    max_active: [usize; 4],
    frame_size: usize,
    vectored: bool,
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = usize::arbitrary(g) % 30;
        let ops = (0..n)
            .map(|_| {
                if u8::arbitrary(g) % 3 == 0 {
                    Op::Transmit(MIN_TRANSMIT + usize::arbitrary(g) % 40_000)
                } else {
                    let class = Class::ALL[usize::arbitrary(g) % 4];
                    Op::Push(class, M::arbitrary(g).0)
                }
            })
            .collect();
        let chunks = (0..1 + usize::arbitrary(g) % 20)
            .map(|_| 1 + usize::arbitrary(g) % 5000)
            .collect();
        let mut max_active = [1; 4];
        max_active
            .iter_mut()
            .for_each(|a| *a = 1 + usize::arbitrary(g) % 4);
        Scenario {
            ops,
            chunks,
            max_active,
            frame_size: 1024 * (1 + usize::arbitrary(g) % 8),
            vectored: bool::arbitrary(g),
        }
    }
}

/// A message with its class.
type Sent = (Class, Message);

/// Runs a scenario; returns the pushed messages (index = stream id), the wire bytes, and what
/// the receiver delivered.
fn run(s: &Scenario) -> (Vec<Sent>, Bytes, Vec<Sent>) {
    let cfg = MuxConfig {
        frame_size: s.frame_size,
        max_active: s.max_active,
        ..MuxConfig::default()
    };
    let mut tx = sender(cfg.clone());
    let mut wire = BytesMut::new();
    let transmit = |tx: &mut MuxSender, budget: usize, wire: &mut BytesMut| {
        if s.vectored {
            let mut parts = Vec::new();
            let n = tx.poll_transmit_parts(&mut parts, budget);
            let before = wire.len();
            parts.iter().for_each(|p| wire.extend_from_slice(p));
            assert_eq!(wire.len() - before, n);
        } else {
            let n = tx.poll_transmit(wire, budget);
            assert!(n <= budget);
        }
    };
    let mut pushed = Vec::new();
    for op in &s.ops {
        match op {
            Op::Push(c, m) => {
                tx.push(*c, m).unwrap();
                pushed.push((*c, m.clone()));
            }
            Op::Transmit(budget) => transmit(&mut tx, *budget, &mut wire),
        }
    }
    transmit(&mut tx, usize::MAX, &mut wire);
    assert!(tx.is_idle());
    let wire = wire.freeze();

    let mut rx = receiver(cfg);
    let mut got = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < wire.len() {
        let end = (at + s.chunks[i % s.chunks.len()]).min(wire.len());
        rx.feed(wire.slice(at..end));
        at = end;
        i += 1;
        got.extend(drain(&mut rx));
        assert!(rx.partial_messages() <= rx.config().max_partial_messages);
    }
    assert_eq!(rx.partial_messages(), 0);
    assert_eq!(rx.buffered_bytes(), 0);
    (pushed, wire, got)
}

#[test]
fn any_pushes_with_any_chunking_reassemble_in_completion_order() {
    fn prop(s: Scenario) -> bool {
        let (pushed, wire, got) = run(&s);
        let frames = parse_frames(&wire);
        // Every frame is within the frame size, and stream ids follow push order.
        assert!(frames.iter().all(|f| f.len <= s.frame_size && f.len > 0));
        let completion: Vec<u32> = frames.iter().filter(|f| f.last).map(|f| f.stream).collect();
        let expected: Vec<(Class, Message)> = completion
            .iter()
            .map(|&st| pushed[st as usize].clone())
            .collect();
        // Everything arrives, once, in the class it was pushed in, in wire completion order.
        got == expected && got.len() == pushed.len()
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Scenario) -> bool);
}

#[test]
fn within_a_class_a_message_arrives_before_later_ones_with_as_many_frames() {
    fn prop(s: Scenario) -> bool {
        let (pushed, wire, _) = run(&s);
        let frames = parse_frames(&wire);
        let mut count = vec![0usize; pushed.len()];
        let mut done_at = vec![0usize; pushed.len()];
        for (i, f) in frames.iter().enumerate() {
            count[f.stream as usize] += 1;
            if f.last {
                done_at[f.stream as usize] = i;
            }
        }
        for x in 0..pushed.len() {
            for y in x + 1..pushed.len() {
                if pushed[x].0 != pushed[y].0 {
                    continue;
                }
                let fifo = s.max_active[pushed[x].0.index()] == 1;
                if (fifo || count[x] <= count[y]) && done_at[x] > done_at[y] {
                    return false;
                }
            }
        }
        true
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Scenario) -> bool);
}

#[test]
fn a_class_with_one_active_message_is_fifo_under_any_transmit_budgets() {
    fn prop(mut s: Scenario) -> bool {
        s.max_active = [1; 4];
        let (pushed, _, got) = run(&s);
        Class::ALL.iter().all(|c| {
            let a: Vec<_> = pushed.iter().filter(|m| m.0 == *c).collect();
            let b: Vec<_> = got.iter().filter(|m| m.0 == *c).collect();
            a == b
        })
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(Scenario) -> bool);
}

#[test]
fn a_message_and_its_priority_class_survive_together() {
    // Responses travel in the class of the request's priority; the class is carried per frame.
    let cfg = MuxConfig::default();
    let mut tx = sender(cfg.clone());
    for (i, p) in [Priority::URGENT, Priority::NORMAL, Priority::BULK]
        .iter()
        .enumerate()
    {
        tx.push(p.class(), &response(i as u64, 30_000)).unwrap();
    }
    let mut wire = BytesMut::new();
    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    let mut rx = receiver(cfg);
    rx.feed(wire.freeze());
    let got = drain(&mut rx);
    assert_eq!(got.len(), 3);
    for (class, msg) in got {
        let Message::Response { req_id, .. } = msg else {
            panic!("response expected")
        };
        let want = [Class::Urgent, Class::Normal, Class::Bulk][req_id as usize];
        assert_eq!(class, want);
    }
    assert_eq!(FRAME_HEADER_LEN, 9);
}

// ---- cancel: a queued answer the requester no longer wants ---------------------------------

/// A chunk of `len` bytes answering request `req_id`, every byte `req_id as u8`.
fn chunk(req_id: u64, len: usize) -> Message {
    Message::Chunk {
        req_id,
        id: ArtifactId([0xcc; 32]),
        index: req_id as u32,
        data: Bytes::from(vec![req_id as u8; len]),
    }
}

/// Whether `wire` contains 32 consecutive bytes equal to `b` (a chunk's payload pattern).
fn contains_run(wire: &[u8], b: u8) -> bool {
    wire.windows(32).any(|w| w.iter().all(|&x| x == b))
}

#[test]
fn a_queued_chunk_is_cancelled_and_its_bytes_never_appear() {
    let cfg = MuxConfig::default();
    let frame = cfg.frame_size;
    let mut tx = sender(cfg.clone());
    let mut rx = receiver(cfg.clone());
    let len = 3 * frame;
    // Five chunks in bulk: four are active (max_active 4), the fifth waits behind them.
    for req in 1..=5 {
        tx.push(Class::Bulk, &chunk(req, len)).unwrap();
    }
    let per = codec::encoded_len(&chunk(1, len));
    assert_eq!(tx.queued_bytes(Class::Bulk), 5 * per);
    // One frame of chunk 1 goes out.
    let mut wire = BytesMut::new();
    let first = tx.poll_transmit(&mut wire, FIRST_FRAME_HEADER_LEN + frame);
    assert_eq!(first, FIRST_FRAME_HEADER_LEN + frame);

    // Chunk 5 has not started: dropped, its bytes leave the queue at once.
    assert!(tx.cancel(5));
    assert_eq!(tx.queued_bytes(Class::Bulk), 5 * per - frame - per);
    assert_eq!(tx.queued_bytes_total(), tx.queued_bytes(Class::Bulk));
    assert!(!tx.cancel(5), "already dropped");
    // Chunk 1 has started: it finishes.
    assert!(!tx.cancel(1));
    // A request with the same id is not an answer: never dropped.
    let request = Message::Request {
        req_id: 3,
        id: ArtifactId([1; 32]),
        priority: Priority::BULK,
    };
    tx.push(Class::Control, &request).unwrap();
    // Chunk 3 is active but not started yet: dropped too.
    assert!(tx.cancel(3));
    assert!(!tx.cancel(99), "no answer to an unknown request");

    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    assert!(tx.is_idle());
    assert_eq!(tx.queued_bytes_total(), 0);
    let wire = wire.freeze();
    assert!(!contains_run(&wire, 5) && !contains_run(&wire, 3));
    assert!(contains_run(&wire, 1) && contains_run(&wire, 2) && contains_run(&wire, 4));
    let streams: Vec<u32> = parse_frames(&wire).iter().map(|f| f.stream).collect();
    assert!(
        !streams.contains(&4) && !streams.contains(&2),
        "{streams:?}"
    );
    rx.feed(wire);
    let got = drain(&mut rx);
    let mut chunks: Vec<_> = got
        .iter()
        .filter_map(|(c, m)| match m {
            Message::Chunk { req_id, data, .. } => {
                assert_eq!(*c, Class::Bulk);
                assert_eq!(data.len(), len);
                Some(*req_id)
            }
            _ => None,
        })
        .collect();
    chunks.sort_unstable();
    assert_eq!(
        chunks,
        vec![1, 2, 4],
        "the started chunk finished and decoded"
    );
    assert!(got.contains(&(Class::Control, request)));
}

#[test]
fn a_cancelled_not_found_or_response_is_dropped_like_a_chunk() {
    let mut tx = sender(MuxConfig {
        max_active: [1, 1, 1, 1],
        ..MuxConfig::default()
    });
    tx.push(Class::Normal, &response(1, 40_000)).unwrap();
    tx.push(Class::Normal, &response(2, 40_000)).unwrap();
    let not_found = Message::NotFound {
        req_id: 3,
        id: ArtifactId([3; 32]),
    };
    tx.push(Class::Control, &not_found).unwrap();
    assert!(tx.cancel(2));
    assert!(tx.cancel(3));
    let mut wire = BytesMut::new();
    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    let mut rx = receiver(MuxConfig::default());
    rx.feed(wire.freeze());
    assert_eq!(drain(&mut rx), vec![(Class::Normal, response(1, 40_000))]);
}

/// Pushed chunks of one artifact in the given ranges are dropped while unstarted; a started
/// one, one of another artifact or outside the ranges, and answers stay.
#[test]
fn queued_pushes_are_cancelled_by_artifact_and_range() {
    let frame = MuxConfig::default().frame_size;
    let mut tx = sender(MuxConfig::default());
    let art = ArtifactId([0xcc; 32]);
    let push = |id: ArtifactId, index: u32| Message::Chunk {
        req_id: p2p_core::PUSHED_CHUNK,
        id,
        index,
        data: Bytes::from(vec![0x40 + index as u8; 2 * frame]),
    };
    for i in 0..4 {
        tx.push(Class::Bulk, &push(art, i)).unwrap();
    }
    tx.push(Class::Bulk, &push(ArtifactId([0xdd; 32]), 2))
        .unwrap();
    tx.push(Class::Bulk, &chunk(2, 2 * frame)).unwrap();
    // One frame of push 0 goes out: it has started.
    let mut wire = BytesMut::new();
    let _ = tx.poll_transmit(&mut wire, FIRST_FRAME_HEADER_LEN + frame);
    let all = [ChunkRange { start: 0, end: 3 }];
    assert_eq!(tx.cancel_pushes(&art, &all), 2, "pushes 1 and 2");
    assert_eq!(tx.cancel_pushes(&art, &all), 0, "already dropped");
    let _ = tx.poll_transmit(&mut wire, usize::MAX);
    assert_eq!(tx.queued_bytes_total(), 0);
    let mut rx = receiver(MuxConfig::default());
    rx.feed(wire.freeze());
    let mut got: Vec<(u8, u64, u32)> = drain(&mut rx)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Chunk {
                req_id, id, index, ..
            } => Some((id.0[0], req_id, index)),
            _ => None,
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        vec![(0xcc, 0, 0), (0xcc, 0, 3), (0xcc, 2, 2), (0xdd, 0, 2)]
    );
}

#[test]
fn cancelling_relieves_congestion_and_keeps_the_queue_figures_exact() {
    let cfg = MuxConfig {
        high_water: 1 << 20,
        ..MuxConfig::default()
    };
    let mut tx = sender(cfg);
    let len = 256 << 10;
    let per = codec::encoded_len(&chunk(1, len));
    for req in 1..=4 {
        tx.push(Class::Bulk, &chunk(req, len)).unwrap();
    }
    tx.push(Class::Urgent, &chunk(10, len)).unwrap();
    assert!(tx.is_congested());
    assert_eq!(tx.queued_bytes_total(), 5 * per);
    for req in [2, 4, 10] {
        assert!(tx.cancel(req));
    }
    assert_eq!(tx.queued_bytes(Class::Bulk), 2 * per);
    assert_eq!(tx.queued_bytes(Class::Urgent), 0);
    assert_eq!(tx.queued_bytes_total(), 2 * per);
    assert!(!tx.is_congested());
    // What is left goes out whole, frame by frame, and the figures reach zero exactly.
    let mut wire = BytesMut::new();
    let mut sent = 0;
    while !tx.is_idle() {
        sent += tx.poll_transmit(&mut wire, MIN_TRANSMIT + 1000);
    }
    assert_eq!(sent, wire.len());
    let payload: usize = parse_frames(&wire).iter().map(|f| f.len).sum();
    assert_eq!(payload, 2 * per);
    assert_eq!(tx.queued_bytes_total(), 0);
}
