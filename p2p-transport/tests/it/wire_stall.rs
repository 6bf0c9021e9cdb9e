//! Partial messages held open and peers that do not read, on the sans-IO connection layer: the
//! node-wide reassembly budget, the stall rule of a message under reassembly (no frame for
//! `partial_timeout`), and the write stall timeout.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2p_core::{ArtifactId, Class, Message, Time};
use p2p_transport::codec::{Hello, Limits};
use p2p_transport::conn::{
    ConnConfig, ConnError, ConnEvent, ConnReceiver, ConnSender, connection, connection_in,
};
use p2p_transport::mux::{
    FIRST_FRAME_HEADER_LEN, FRAME_HEADER_LEN, MIN_FRAME_SIZE, MuxConfig, MuxError, MuxSender,
};
use p2p_transport::reassembly::ReassemblyBudget;
use quickcheck::{QuickCheck, TestResult};

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

/// A response carrying `len` artifact bytes, named `i` (responses may travel in the urgent,
/// normal and bulk classes).
fn response(i: u8, len: usize) -> Message {
    Message::Response {
        req_id: u64::from(i),
        id: ArtifactId([i; 32]),
        data: Bytes::from(vec![i; len]),
    }
}

/// One peer's sending side, speaking the raw multiplexer so that a test can send part of a
/// message: the hello, then whatever frames it is asked for.
struct Peer {
    mux: MuxSender,
    hello: Option<BytesMut>,
}

impl Peer {
    fn new(cfg: &ConnConfig) -> Peer {
        let (mut tx, _) = connection(cfg, Hello::new(1), t(0)).unwrap();
        let mut hello = BytesMut::new();
        let _ = tx.poll_transmit(t(0), &mut hello, 1 << 16);
        Peer {
            mux: MuxSender::new(cfg.mux.clone()).unwrap(),
            hello: Some(hello),
        }
    }

    /// The hello (first call only) and every frame of `msg`.
    fn bytes_of(&mut self, class: Class, msg: &Message) -> BytesMut {
        let mut out = self.hello.take().unwrap_or_default();
        self.mux.push(class, msg).unwrap();
        while self.mux.poll_transmit(&mut out, 1 << 20) > 0 {}
        out
    }

    /// The hello (first call only) and the first frame of `msg` (larger than one frame), then
    /// its other frames: the first part starts the message, the second completes it.
    fn split_of(&mut self, class: Class, msg: &Message) -> (BytesMut, BytesMut) {
        let hello = self.hello.as_ref().map_or(0, |h| h.len());
        let mut all = self.bytes_of(class, msg);
        let head = all.split_to(hello + FIRST_FRAME_HEADER_LEN + MIN_FRAME_SIZE);
        (head, all)
    }
}

fn small_cfg() -> ConnConfig {
    ConnConfig::with_mux(MuxConfig {
        limits: Limits {
            max_message_size: 64 << 10,
            ..Limits::default()
        },
        frame_size: MIN_FRAME_SIZE,
        max_partial_messages: 16,
        max_buffered_bytes: 64 << 10,
        ..MuxConfig::default()
    })
}

/// Feeds `bytes` at `now` and drains the events.
fn feed(rx: &mut ConnReceiver, now: Time, bytes: &[u8]) -> Result<Vec<ConnEvent>, ConnError> {
    let mut buf = BytesMut::from(bytes);
    rx.handle_input(now, &mut buf);
    let mut v = Vec::new();
    while let Some(e) = rx.poll_event()? {
        v.push(e);
    }
    Ok(v)
}

#[test]
fn a_message_stalled_past_its_deadline_ends_the_connection_as_misbehaviour() {
    let cfg = small_cfg();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let mut peer = Peer::new(&cfg);
    let len = 32 << 10;
    let all = peer.bytes_of(Class::Bulk, &response(1, len));
    // The hello, and the first frame's header and one byte: the whole message is reserved.
    let hello_len = all.len() - len - 100;
    let cut = all.len() / 2;
    let first = &all[..cut];
    assert!(cut > hello_len + FIRST_FRAME_HEADER_LEN);
    let evs = feed(&mut rx, t(1000), first).unwrap();
    assert_eq!(evs.len(), 1, "only the hello");
    let total = rx.mux().buffered_bytes();
    assert!(total > len, "the announced total is reserved");
    let deadline = t(1000) + cfg.mux.partial_timeout;
    assert_eq!(deadline, t(1000) + Duration::from_secs(30));
    assert_eq!(
        rx.poll_timeout(),
        Some(deadline),
        "the stall deadline is armed"
    );
    // Keepalives keep the connection alive but do not save the stalled message.
    let mut ka = peer.bytes_of(Class::Control, &Message::Adverts(Vec::new()));
    let ka = ka.split();
    let half = deadline.saturating_since(t(1000)) / 2;
    assert!(feed(&mut rx, t(1000) + half, &ka).unwrap().is_empty());
    rx.handle_timeout(Time::from_nanos(deadline.as_nanos() - 1));
    assert!(rx.poll_event().is_ok(), "alive just before the deadline");
    rx.handle_timeout(deadline);
    let err = rx.poll_event().unwrap_err();
    assert!(
        matches!(err, ConnError::Protocol(MuxError::Stalled { total: t, .. }) if t == total),
        "{err:?}"
    );
    assert!(err.is_misbehaviour());
    assert_eq!(
        rx.mux().buffered_bytes(),
        0,
        "the reservation is given back"
    );
}

#[test]
fn a_message_that_completes_in_time_is_not_cut_and_pauses_move_the_deadline() {
    let cfg = small_cfg();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let mut peer = Peer::new(&cfg);
    let msg = response(2, 48 << 10);
    let all = peer.bytes_of(Class::Bulk, &msg);
    // Sent in 100 pieces of ~500 bytes, one every 8 s (frames of 1 KiB: a frame header every
    // 24 s at most), over 792 s: far slower than 1 MiB/s, but progressing, so never stalled.
    let piece = all.len().div_ceil(100);
    let mut got = Vec::new();
    for (k, chunk) in all.chunks(piece).enumerate() {
        let now = t(8_000 * k as u64);
        rx.handle_timeout(now);
        got.extend(feed(&mut rx, now, chunk).unwrap());
    }
    assert_eq!(got.last(), Some(&ConnEvent::Message(Class::Bulk, msg)));
    assert_eq!(rx.mux().poll_deadline(), None, "nothing under reassembly");

    // A second message stalls, but the driver paused reading for 20 s meanwhile (its node was
    // busy): the pause does not count.
    let all = peer.bytes_of(Class::Bulk, &response(3, 8 << 10));
    let start = t(1_000_000);
    feed(&mut rx, start, &all[..100]).unwrap();
    let deadline = rx.mux().poll_deadline().unwrap();
    rx.pause(start);
    rx.touch(start + Duration::from_secs(20));
    assert_eq!(
        rx.mux().poll_deadline(),
        Some(deadline + Duration::from_secs(20))
    );
    rx.handle_timeout(deadline);
    assert!(rx.poll_event().is_ok(), "not cut at the unpaused deadline");
    let evs = feed(&mut rx, deadline + Duration::from_secs(19), &all[100..]).unwrap();
    assert_eq!(evs.len(), 1);
}

#[test]
fn colluders_filling_the_budget_leave_an_honest_connection_its_share() {
    // Cap 256 KiB over 4 connections: 32 KiB reserved each, 128 KiB for anyone. Each
    // connection alone could reserve 1 MiB.
    let mut cfg = small_cfg();
    cfg.mux.max_buffered_bytes = 1 << 20;
    cfg.mux.max_partial_messages = 64;
    let budget = ReassemblyBudget::new(256 << 10);
    let mut rxs: Vec<ConnReceiver> = (0..4)
        .map(|_| connection_in(&budget, &cfg, Hello::new(1), t(0)).unwrap().1)
        .collect();
    let mut peers: Vec<Peer> = (0..4).map(|_| Peer::new(&cfg)).collect();
    assert_eq!(budget.share(), 32 << 10);
    // Three colluders announce 8 KiB messages and send a few bytes of each, until refused.
    let mut refused = 0;
    for c in 0..3 {
        for i in 0..40u8 {
            let (head, _) = peers[c].split_of(Class::Bulk, &response(i, 8 << 10));
            match feed(&mut rxs[c], t(1), &head) {
                Ok(_) => {}
                Err(ConnError::Protocol(MuxError::NodeBudget { usage, share, .. })) => {
                    assert!(usage + (8 << 10) > share, "refused only past its share");
                    refused += 1;
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
            assert!(budget.used() <= budget.cap());
        }
    }
    assert!(refused >= 1, "the colluders ran into the cap");
    assert!(budget.used() <= budget.cap());
    // The honest connection still gets a message as large as its share, in pieces.
    let honest = response(9, 30 << 10);
    let all = peers[3].bytes_of(Class::Bulk, &honest);
    let mut got = Vec::new();
    for chunk in all.chunks(1000) {
        got.extend(feed(&mut rxs[3], t(2), chunk).unwrap());
        assert!(budget.used() <= budget.cap());
    }
    assert_eq!(got.last(), Some(&ConnEvent::Message(Class::Bulk, honest)));
    // The refusal is not a misbehaviour; a refused connection holds nothing.
    let refused_rx = rxs.iter_mut().find_map(|rx| rx.poll_event().err()).unwrap();
    assert!(!refused_rx.is_misbehaviour());
    drop(rxs);
    assert_eq!((budget.used(), budget.live()), (0, 0));
}

#[test]
fn an_honest_slow_sender_interleaving_large_messages_is_never_cut() {
    let mut cfg = small_cfg();
    cfg.mux.max_buffered_bytes = 1 << 20;
    cfg.mux.max_active = [1, 4, 4, 4];
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let mut peer = Peer::new(&cfg);
    let mut all = peer.hello.take().unwrap();
    let msgs: Vec<Message> = (0..4).map(|i| response(i, 48 << 10)).collect();
    for m in &msgs {
        peer.mux.push(Class::Bulk, m).unwrap();
    }
    while peer.mux.poll_transmit(&mut all, 1 << 20) > 0 {}
    // The sender interleaves the 4 messages frame by frame (1 KiB frames); the link carries
    // 200 bytes a second, so each message moves at 50 bytes/s, gets a frame every ~20 s and
    // takes over 16 minutes: far past 1 MiB/s, never past `partial_timeout` without a frame.
    assert_eq!(cfg.mux.max_frames_between(Class::Bulk), 29 * 4);
    let mut got = Vec::new();
    let mut now = t(0);
    for chunk in all.chunks(200) {
        now = now + Duration::from_secs(1);
        rx.handle_timeout(now);
        got.extend(feed(&mut rx, now, chunk).unwrap());
        assert!(rx.mux().partial_messages() <= 4);
    }
    assert!(now > t(900_000), "the test ran past 15 minutes: {now:?}");
    let want: Vec<ConnEvent> = msgs
        .into_iter()
        .map(|m| ConnEvent::Message(Class::Bulk, m))
        .collect();
    assert_eq!(got[1..], want[..], "every message arrived, none cut");
}

#[test]
fn a_trickling_sender_keeps_at_most_its_budget_while_an_honest_connection_keeps_its_share() {
    // Cap 256 KiB over 4 connections: 32 KiB reserved each, 128 KiB for anyone. Three
    // tricklers announce four 16 KiB messages each (twice their share), then send one frame
    // of each every 29 s (just under the 30 s stall timeout) for 10 rounds, completing none.
    let mut cfg = small_cfg();
    cfg.mux.max_buffered_bytes = 1 << 20;
    cfg.mux.max_partial_messages = 64;
    let frame = FRAME_HEADER_LEN + MIN_FRAME_SIZE;
    let budget = ReassemblyBudget::new(256 << 10);
    let mut rxs: Vec<ConnReceiver> = (0..4)
        .map(|_| connection_in(&budget, &cfg, Hello::new(1), t(0)).unwrap().1)
        .collect();
    let mut peers: Vec<Peer> = (0..4).map(|_| Peer::new(&cfg)).collect();
    let share = budget.share();
    assert_eq!(share, 32 << 10);
    let mut rests: Vec<Vec<BytesMut>> = vec![Vec::new(); 3];
    for c in 0..3 {
        for i in 0..4u8 {
            let (head, rest) = peers[c].split_of(Class::Bulk, &response(i, 16 << 10));
            feed(&mut rxs[c], t(1), &head).unwrap();
            rests[c].push(rest);
        }
    }
    let trickled =
        |rxs: &[ConnReceiver]| -> usize { rxs[..3].iter().map(|r| r.mux().buffered_bytes()).sum() };
    let held = trickled(&rxs);
    assert!(held > 3 * (64 << 10), "{held}");
    let mut now = t(1);
    for _ in 0..10 {
        now = now + Duration::from_secs(29);
        for c in 0..3 {
            rxs[c].handle_timeout(now);
            assert!(rxs[c].poll_event().is_ok(), "progressing: not stalled");
            for rest in &mut rests[c] {
                assert!(rest.len() > frame, "a frame that does not complete it");
                let f = rest.split_to(frame);
                assert!(feed(&mut rxs[c], now, &f).unwrap().is_empty());
            }
        }
        // The tricklers keep their reservations, within the cap less the honest connection's
        // untouched share.
        assert_eq!(trickled(&rxs), held);
        assert!(held <= budget.cap() - share);
    }
    // More messages of a trickler: admitted while the honest share stays free, then refused
    // (not as misbehaviour), and that connection's reservations are given back.
    let err = (9..20u8)
        .find_map(|i| {
            let (head, _) = peers[2].split_of(Class::Bulk, &response(i, 16 << 10));
            let r = feed(&mut rxs[2], now, &head).err();
            assert!(r.is_some() || budget.used() <= budget.cap() - share);
            r
        })
        .expect("refused before taking the honest share");
    assert!(
        matches!(err, ConnError::Protocol(MuxError::NodeBudget { .. })),
        "{err:?}"
    );
    assert!(!err.is_misbehaviour());
    assert_eq!(rxs[2].mux().buffered_bytes(), 0);
    // The honest connection still gets a message as large as its share.
    let honest = response(99, 30 << 10);
    let all = peers[3].bytes_of(Class::Bulk, &honest);
    let mut got = Vec::new();
    for chunk in all.chunks(1000) {
        got.extend(feed(&mut rxs[3], now, chunk).unwrap());
        assert!(budget.used() <= budget.cap());
    }
    assert_eq!(got.last(), Some(&ConnEvent::Message(Class::Bulk, honest)));
    // Once the tricklers stop sending frames of them (keepalives do not count), their
    // messages stall out one timeout after their last frame.
    for (rx, peer) in rxs[..2].iter_mut().zip(&mut peers) {
        let ka = peer.bytes_of(Class::Control, &Message::Adverts(Vec::new()));
        let half = now + cfg.mux.partial_timeout / 2;
        assert!(feed(rx, half, &ka).unwrap().is_empty());
        rx.handle_timeout(now + (cfg.mux.partial_timeout - Duration::from_nanos(1)));
        assert!(rx.poll_event().is_ok());
        rx.handle_timeout(now + cfg.mux.partial_timeout);
        let err = rx.poll_event().unwrap_err();
        assert!(
            matches!(err, ConnError::Protocol(MuxError::Stalled { .. })),
            "{err:?}"
        );
        assert!(err.is_misbehaviour());
    }
    assert_eq!(trickled(&rxs), 0, "every reservation given back");
}

#[test]
fn prop_the_budget_cap_holds_and_shares_stay_free_across_connections() {
    /// Ops: (connection, start or continue, size in KiB).
    fn prop(conns: u8, cap_kib: u8, ops: Vec<(u8, bool, u8)>) -> TestResult {
        let n = usize::from(conns % 6) + 2;
        let cap = (usize::from(cap_kib) + 16) << 10;
        let cfg = small_cfg();
        let budget = ReassemblyBudget::new(cap);
        let mut rxs: Vec<ConnReceiver> = (0..n)
            .map(|_| connection_in(&budget, &cfg, Hello::new(1), t(0)).unwrap().1)
            .collect();
        let mut peers: Vec<Peer> = (0..n).map(|_| Peer::new(&cfg)).collect();
        let mut open: Vec<Vec<BytesMut>> = vec![Vec::new(); n];
        let mut dead = vec![false; n];
        let share = budget.share();
        for (k, (c, start, kib)) in ops.into_iter().enumerate() {
            let c = usize::from(c) % n;
            if dead[c] {
                continue;
            }
            let now = t(k as u64);
            let fed = if start || open[c].is_empty() {
                let len = (usize::from(kib % 16) + 2) << 10;
                let (head, rest) = peers[c].split_of(Class::Bulk, &response(k as u8, len));
                open[c].push(rest);
                feed(&mut rxs[c], now, &head)
            } else {
                let rest = open[c].remove(0);
                feed(&mut rxs[c], now, &rest)
            };
            match fed {
                Ok(_) => {}
                Err(ConnError::Protocol(MuxError::NodeBudget { usage, needed, .. })) => {
                    // With a fixed set of connections, a connection within its share is
                    // never refused.
                    if usage + needed <= share {
                        return TestResult::error(format!(
                            "refused within share: {usage} + {needed} <= {share}"
                        ));
                    }
                    dead[c] = true;
                }
                Err(ConnError::Protocol(
                    MuxError::BufferLimit { .. } | MuxError::TooManyPartial { .. },
                )) => dead[c] = true,
                Err(e) => return TestResult::error(format!("{e:?}")),
            }
            let sum: usize = rxs.iter().map(|rx| rx.mux().buffered_bytes()).sum();
            if budget.used() > cap || budget.used() != sum {
                return TestResult::error(format!("used {} sum {sum} cap {cap}", budget.used()));
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(u8, u8, Vec<(u8, bool, u8)>) -> TestResult);
}

#[test]
fn a_peer_that_does_not_read_is_cut_after_the_write_stall_timeout_and_not_as_misbehaviour() {
    let cfg = ConnConfig {
        write_stall_timeout: Duration::from_secs(4),
        ..ConnConfig::default()
    };
    let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    tx.push(Class::Bulk, &response(1, 100_000)).unwrap();
    let mut out = BytesMut::new();
    let n = tx.poll_transmit(t(1000), &mut out, 64 << 10);
    assert_eq!(tx.unwritten_bytes(), n);
    assert_eq!(tx.poll_timeout(), t(1000) + Duration::from_secs(4));
    // The socket takes part of it, then nothing more.
    tx.handle_written(t(2000), n / 2);
    assert_eq!(tx.poll_timeout(), t(2000) + Duration::from_secs(4));
    assert_eq!(tx.handle_timeout(t(5999)), Ok(false));
    let err = tx.handle_timeout(t(6000)).unwrap_err();
    assert_eq!(
        err,
        ConnError::WriteStall {
            timeout: Duration::from_secs(4),
            unwritten: n - n / 2
        }
    );
    assert!(!err.is_misbehaviour());
    assert_eq!(tx.handle_timeout(t(7000)), Err(err), "sticky");
}

#[test]
fn prop_the_write_stall_fires_exactly_when_no_byte_was_accepted_for_the_timeout() {
    /// Steps: (ms to wait, bytes the stream accepts then, whether to transmit more first).
    fn prop(steps: Vec<(u16, u16, bool)>) -> TestResult {
        let stall = Duration::from_millis(3000);
        let cfg = ConnConfig {
            write_stall_timeout: stall,
            keepalive_interval: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(7200),
            ..ConnConfig::default()
        };
        let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
        let mut now = t(0);
        // The model: bytes handed out and not accepted, and when the last progress was.
        let mut unwritten = 0usize;
        let mut progress = now;
        let mut out = BytesMut::new();
        for (i, (wait, accept, more)) in steps.into_iter().enumerate() {
            if more {
                tx.push(Class::Normal, &response(i as u8, 2000)).unwrap();
                let n = tx.poll_transmit(now, &mut out, 1 << 20);
                if n > 0 && unwritten == 0 {
                    progress = now;
                }
                unwritten += n;
            }
            let next = now + Duration::from_millis(u64::from(wait % 5000));
            let expect_stall = unwritten > 0 && next >= progress + stall;
            let got = tx.handle_timeout(next);
            if got.is_err() != expect_stall {
                return TestResult::error(format!("at {next:?}: {got:?}, model {expect_stall}"));
            }
            if expect_stall {
                return TestResult::passed();
            }
            now = next;
            let k = usize::from(accept).min(unwritten);
            tx.handle_written(now, k);
            if k > 0 {
                unwritten -= k;
                progress = now;
            }
            if tx.unwritten_bytes() != unwritten {
                return TestResult::error("unwritten differs");
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(Vec<(u16, u16, bool)>) -> TestResult);
}

#[test]
fn a_slow_link_that_keeps_accepting_bytes_is_never_cut() {
    let cfg = ConnConfig::default();
    let (mut tx, _): (ConnSender, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    for i in 0..20 {
        tx.push(Class::Bulk, &response(i, 1 << 20)).unwrap();
    }
    let mut out = BytesMut::new();
    let mut now = t(0);
    // 1 KiB accepted every 9 s (under the 10 s timeout) for 15 minutes.
    let _ = tx.poll_transmit(now, &mut out, 64 << 10);
    for _ in 0..100 {
        now = now + Duration::from_secs(9);
        assert!(tx.handle_timeout(now).is_ok());
        tx.handle_written(now, 1024);
        if tx.unwritten_bytes() == 0 {
            let _ = tx.poll_transmit(now, &mut out, 64 << 10);
        }
    }
    assert!(tx.unwritten_bytes() > 0, "still sending");
}

/// A write slower than the keepalive interval: while bytes wait for the stream the sender's
/// timer is the write stall deadline, which lies ahead, never the keepalive deadline that
/// passed (a driver sleeping until it would wake at once, again and again, for nothing); and
/// bytes the stream accepts restart the keepalive interval.
#[test]
fn a_write_slower_than_the_keepalive_interval_keeps_the_timer_ahead() {
    let cfg = ConnConfig {
        keepalive_interval: Duration::from_millis(500),
        write_stall_timeout: Duration::from_secs(10),
        ..ConnConfig::default()
    };
    let (mut tx, _): (ConnSender, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    for i in 0..4 {
        tx.push(Class::Bulk, &response(i, 1 << 20)).unwrap();
    }
    let mut out = BytesMut::new();
    let mut now = t(0);
    let _ = tx.poll_transmit(now, &mut out, 64 << 10);
    // 1 KiB accepted every 700 ms, more than the keepalive interval.
    for _ in 0..50 {
        let timer = tx.poll_timeout();
        assert!(timer > now, "timer {timer:?} not ahead of {now:?}");
        now = now + Duration::from_millis(700);
        assert_eq!(
            tx.handle_timeout(now),
            Ok(false),
            "no keepalive behind data"
        );
        tx.handle_written(now, 1024);
        assert_eq!(tx.poll_timeout(), now + Duration::from_secs(10));
    }
    // The write done: the keepalive interval counts from the last accepted byte.
    let rest = tx.unwritten_bytes();
    tx.handle_written(now, rest);
    while tx.poll_transmit(now, &mut out, 64 << 10) > 0 {}
    tx.handle_written(now, tx.unwritten_bytes());
    assert_eq!(tx.poll_timeout(), now + Duration::from_millis(500));
    assert_eq!(tx.keepalives(), 0);
}
