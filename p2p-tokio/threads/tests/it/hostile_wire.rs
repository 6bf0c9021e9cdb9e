//! The threaded driver runs the connection layer's wire defences: a member that never reads is
//! cut after the write stall timeout (and not banned), and one holding a partial message open
//! is cut at its stall deadline (and banned), while an honest node's artifacts still arrive.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use p2p_core::{ArtifactId, Class, Kind, Message, NodeId, Priority};
use p2p_threads::{Member, Registry, ThreadedConfig, ThreadedNode};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::{MuxConfig, MuxSender};
use p2p_transport::tls::Members;

use crate::support::{
    WAIT, bytes, identities, open_raw_member, open_raw_member_as, raw_member, wait_until,
};
use p2p_transport::codec::{self, ConnRole, HELLO_LEN, Hello};

fn config(identity: NodeIdentity) -> ThreadedConfig {
    let mut cfg = ThreadedConfig::new(identity, "127.0.0.1:0".parse().unwrap()).unwrap();
    cfg.policy.backoff_min = Duration::from_millis(20);
    cfg.policy.backoff_max = Duration::from_millis(500);
    cfg.conn.keepalive_interval = Duration::from_millis(500);
    cfg.conn.idle_timeout = Duration::from_secs(5);
    cfg.core.retry_backoff_initial = Duration::from_millis(50);
    cfg.core.retry_backoff_max = Duration::from_millis(500);
    cfg.conn.write_stall_timeout = Duration::from_millis(500);
    cfg.conn.mux.partial_timeout = Duration::from_millis(1800);
    // Artifacts up to 8 MiB travel whole, so a rogue's 4 MiB message is within the limits and
    // only the stall rule can cut it.
    cfg.core.chunk_size = 8 << 20;
    cfg.conn.mux.limits = p2p_transport::codec::Limits::for_core(&cfg.core);
    cfg
}

/// A rogue member (lowest id) and two threaded nodes a and b, connected.
fn setup() -> (NodeIdentity, Members, ThreadedNode, ThreadedNode) {
    setup_with(|_| {})
}

/// [`setup`] with `tune` applied to a's and b's configurations.
fn setup_with(
    tune: impl Fn(&mut ThreadedConfig),
) -> (NodeIdentity, Members, ThreadedNode, ThreadedNode) {
    let mut ids = identities(3).into_iter();
    let rogue = ids.next().unwrap();
    let start = |id| {
        let mut cfg = config(id);
        tune(&mut cfg);
        ThreadedNode::start(cfg, Registry::default()).unwrap()
    };
    let a = start(ids.next().unwrap());
    let b = start(ids.next().unwrap());
    let members = [
        Member {
            id: rogue.node_id(),
            addr: "127.0.0.1:9".parse().unwrap(),
        },
        Member {
            id: a.node_id(),
            addr: a.local_addr(),
        },
        Member {
            id: b.node_id(),
            addr: b.local_addr(),
        },
    ];
    for n in [&a, &b] {
        n.update_registry(Registry::new(1, members)).unwrap();
    }
    wait_until("a and b connected", || {
        a.peers().unwrap() == vec![b.node_id()]
    });
    let tls_members = Members::new(1, members.iter().map(|m| m.id));
    (rogue, tls_members, a, b)
}

fn frames(mux: &mut MuxSender, msgs: &[(Class, Message)]) -> BytesMut {
    let mut out = BytesMut::new();
    for (class, msg) in msgs {
        mux.push(*class, msg).unwrap();
        while mux.poll_transmit(&mut out, 1 << 20) > 0 {}
    }
    out
}

/// Publishes three artifacts of 100 KB and one of 1 MiB on `from`; returns how long until
/// `to` delivered them all (and `extra`).
fn honest_batch(from: &ThreadedNode, to: &ThreadedNode, tag: u8, extra: &[ArtifactId]) -> Duration {
    let start = Instant::now();
    let mut ids = extra.to_vec();
    for (i, len) in [100_000, 100_000, 100_000, 1 << 20].into_iter().enumerate() {
        let data = bytes(tag + i as u8, len);
        ids.push(from.publish(Kind(1), Bytes::new(), data).unwrap());
    }
    ids.sort();
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let d = to.deliveries().recv_timeout(WAIT).expect("honest delivery");
        got.push(d.artifact.id);
    }
    got.sort();
    assert_eq!(got, ids);
    start.elapsed()
}

fn connected(n: &ThreadedNode, peer: NodeId) -> bool {
    n.peers().unwrap().contains(&peer)
}

/// The threaded driver takes no express lanes: it announces none, and a member that opens one
/// anyway is refused, without a ban, while a and b stay connected.
#[test]
fn an_express_lane_is_refused_by_a_node_that_offers_none() {
    let (rogue, members, a, b) = setup();
    let lane = Hello::with_role(1, ConnRole::Express);
    let mut tls = open_raw_member_as(&rogue, &members, &a, lane).unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    tls.read_exact(&mut theirs).unwrap();
    assert_eq!(
        codec::decode_hello(&theirs).map(|h| h.role),
        Ok(ConnRole::Main { express: false })
    );
    let mut buf = [0u8; 64];
    let end = loop {
        match tls.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break "still open after 5 s",
            Err(_) => break "closed",
        }
    };
    assert_eq!(end, "closed");
    assert_eq!(a.peers().unwrap(), vec![b.node_id()], "the lane is no peer");
    // Not a ban: the same member connects normally afterwards.
    let _main = raw_member(&rogue, &members, &a);
    wait_until("the rogue's main connection", || {
        a.peers().unwrap().len() == 2
    });
}

#[test]
fn idle_connections_are_not_cut_for_a_write_stall_shorter_than_the_keepalive_interval() {
    // Only bytes that wait for the socket arm the write stall timer: connections with nothing
    // to send but keepalives outlive many stall timeouts.
    let keepalive = Duration::from_millis(700);
    let (_, _, a, b) = setup_with(|c| {
        c.conn.write_stall_timeout = Duration::from_millis(200);
        c.conn.keepalive_interval = keepalive;
    });
    std::thread::sleep(2 * keepalive);
    for n in [&a, &b] {
        assert_eq!(n.stats().disconnects, 0, "{:?}", n.stats());
    }
    assert!(connected(&a, b.node_id()));
    let baseline = honest_batch(&a, &b, 10, &[]);
    assert!(baseline < Duration::from_secs(3), "{baseline:?}");
    assert_eq!(a.stats().disconnects, 0);
}

#[test]
fn a_member_that_never_reads_is_cut_after_the_write_stall_timeout_and_not_banned() {
    let (rogue, members, a, b) = setup();
    let baseline = honest_batch(&a, &b, 10, &[]);
    // The largest artifact that travels whole: more than the socket buffers of both ends hold
    // (the kernel grows a send buffer to 4 MiB by default, a receive buffer only as the
    // application reads).
    let big = a
        .publish(Kind(1), Bytes::new(), bytes(60, 8 << 20))
        .unwrap();
    let mut tls = raw_member(&rogue, &members, &a);
    wait_until("rogue admitted", || connected(&a, rogue.node_id()));
    // Eight requests for the 8 MiB artifact; then the rogue never reads again.
    let mut mux = MuxSender::new(MuxConfig::default()).unwrap();
    let requests: Vec<(Class, Message)> = (0..8)
        .map(|req_id| {
            let msg = Message::Request {
                req_id,
                id: big,
                priority: Priority(0),
            };
            (Class::Control, msg)
        })
        .collect();
    tls.write_all(&frames(&mut mux, &requests)).unwrap();
    let asked = Instant::now();
    let honest = honest_batch(&a, &b, 20, &[big]);
    wait_until("rogue cut", || !connected(&a, rogue.node_id()));
    let cut = asked.elapsed();
    eprintln!("threaded: honest {honest:?} (without attack {baseline:?}); rogue cut after {cut:?}");
    assert!(cut >= Duration::from_millis(500), "{cut:?}");
    // Cut by the write stall: the idle timeout (5 s after the requests, the rogue's last
    // bytes) had not passed.
    assert!(cut < Duration::from_secs(5), "{cut:?}");
    assert!(honest < Duration::from_secs(7), "{honest:?}");
    // Not banned: a new connection is admitted.
    drop(tls);
    let refused = a.stats().connections_refused;
    let _again = raw_member(&rogue, &members, &a);
    wait_until("rogue admitted again", || connected(&a, rogue.node_id()));
    assert_eq!(a.stats().connections_refused, refused);
    assert_eq!(a.stats().send_queue_overflows, 0);
}

#[test]
fn a_member_holding_a_partial_message_is_cut_at_its_stall_deadline_and_banned() {
    let (rogue, members, a, b) = setup();
    let baseline = honest_batch(&b, &a, 10, &[]);
    let mut tls = raw_member(&rogue, &members, &a);
    wait_until("rogue admitted", || connected(&a, rogue.node_id()));
    // The first 16 KiB of a 4 MiB message, then no frame of it: it stalls 1.8 s after that
    // frame (the stall timeout).
    let mut head = BytesMut::new();
    head.put_u32_le(1000);
    head.put_u8(3 | 0x04);
    head.put_u32_le(16 << 10);
    head.put_u32_le(4 << 20);
    head.put_bytes(0x5a, 16 << 10);
    tls.write_all(&head).unwrap();
    let sent = Instant::now();
    let honest = honest_batch(&b, &a, 30, &[]);
    // Keepalives, and reads of what the node sends, until the node ends the connection.
    let mut mux = MuxSender::new(MuxConfig::default()).unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let cut = loop {
        assert!(sent.elapsed() < WAIT, "never cut");
        let ka = frames(&mut mux, &[(Class::Control, Message::Adverts(Vec::new()))]);
        if tls.write_all(&ka).is_err() {
            break sent.elapsed();
        }
        match tls.read(&mut sink) {
            Ok(0) => break sent.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break sent.elapsed(),
        }
    };
    eprintln!(
        "threaded: honest {honest:?} while a partial was held (without attack {baseline:?}); rogue cut after {cut:?}"
    );
    let stall = Duration::from_millis(1800);
    assert!(cut >= stall - Duration::from_millis(100), "{cut:?}");
    assert!(cut < stall + Duration::from_secs(2), "{cut:?}");
    assert!(honest < Duration::from_secs(3), "{honest:?}");
    wait_until("rogue gone", || !connected(&a, rogue.node_id()));
    // Banned: a new connection is refused after TLS.
    let refused = a.stats().connections_refused;
    let again = open_raw_member(&rogue, &members, &a).unwrap();
    wait_until("refused while banned", || {
        a.stats().connections_refused > refused
    });
    drop(again);
}
