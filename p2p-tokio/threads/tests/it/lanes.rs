//! The threaded driver runs the connection layer's class rule and the fair inbox too: a member
//! sending adverts claimed urgent is cut off and banned, and a member flooding control
//! messages does not hold back a tokio peer's bulk artifacts.
#![allow(
    clippy::disallowed_methods,
    reason = "the test plays hostile peers that speak the wire format by hand"
)]

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use p2p_core::PriorityFnRef;
use p2p_core::{Advert, ArtifactId, Class, Decision, Kind, Message, NodeId, Priority};
use p2p_threads::{Member, Registry, ThreadedConfig, ThreadedNode};
use p2p_transport::mux::{MuxConfig, MuxSender};
use p2p_transport::tls::Members;

use crate::support::{WAIT, bytes, identities, raw_member, try_raw_member, wait_until};

/// Kind 1 is fetched at bulk priority; every other kind is dropped.
fn priorities() -> PriorityFnRef {
    PriorityFnRef::new(|a: &Advert| match a.kind {
        Kind(1) => Decision::Fetch(Priority::BULK),
        _ => Decision::Drop,
    })
}

fn frames(msgs: &[(Class, Message)]) -> BytesMut {
    let mut mux = MuxSender::new(MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    for (class, msg) in msgs {
        mux.push(*class, msg).unwrap();
        while mux.poll_transmit(&mut out, 1 << 20) > 0 {}
    }
    out
}

fn peers(n: &ThreadedNode) -> BTreeSet<NodeId> {
    n.peers().unwrap().into_iter().collect()
}

/// Valid control messages for the flood: requests and withdraws of unknown ids and a batch of
/// 100 adverts of a dropped kind, `rounds` times with distinct ids.
fn flood(rounds: u32) -> Bytes {
    let mut msgs = Vec::new();
    for round in 0..rounds {
        for i in 0..20u32 {
            let mut id = [0xcc; 32];
            id[..4].copy_from_slice(&round.to_le_bytes());
            id[4..8].copy_from_slice(&i.to_le_bytes());
            msgs.push((
                Class::Control,
                Message::Request {
                    req_id: u64::from(round) << 8 | u64::from(i),
                    id: ArtifactId(id),
                    priority: Priority::URGENT,
                },
            ));
            msgs.push((Class::Control, Message::Withdraw(ArtifactId(id))));
        }
        let adverts = (0..100u32)
            .map(|i| {
                let mut id = [0xdd; 32];
                id[..4].copy_from_slice(&round.to_le_bytes());
                id[4..8].copy_from_slice(&i.to_le_bytes());
                Advert {
                    id: ArtifactId(id),
                    kind: Kind(9),
                    size: 2000,
                    attr: Bytes::new(),
                }
            })
            .collect();
        msgs.push((Class::Control, Message::Adverts(adverts)));
    }
    frames(&msgs).freeze()
}

#[test]
fn threaded_node_cuts_a_wrong_class_and_serves_bulk_through_a_control_flood() {
    let mut ids = identities(4).into_iter();
    let (wrong, flooder) = (ids.next().unwrap(), ids.next().unwrap());
    let (t_id, k_id) = (ids.next().unwrap(), ids.next().unwrap());
    let mut t_cfg = ThreadedConfig::new(t_id, "127.0.0.1:0".parse().unwrap()).unwrap();
    t_cfg.core.priority_fn = priorities();
    let t = ThreadedNode::start(t_cfg, Registry::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut k_cfg = p2p_tokio::NodeConfig::new(k_id, "127.0.0.1:0".parse().unwrap());
    k_cfg.core.priority_fn = priorities();
    let k = rt
        .block_on(p2p_tokio::start(k_cfg, p2p_tokio::Registry::default()))
        .unwrap();
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let members = [
        Member {
            id: wrong.node_id(),
            addr: nowhere,
        },
        Member {
            id: flooder.node_id(),
            addr: nowhere,
        },
        Member {
            id: t.node_id(),
            addr: t.local_addr(),
        },
        Member {
            id: k.node_id(),
            addr: k.local_addr(),
        },
    ];
    t.update_registry(Registry::new(1, members)).unwrap();
    rt.block_on(k.update_registry(p2p_tokio::Registry::new(
        1,
        members.iter().map(|m| p2p_tokio::Member {
            id: m.id,
            addr: m.addr,
        }),
    )))
    .unwrap();
    let tls_members = || Members::new(1, members.iter().map(|m| m.id));
    wait_until("t connected to k", || peers(&t).contains(&k.node_id()));

    // Adverts claimed urgent: cut off, then refused as banned.
    let mut tls = raw_member(&wrong, &tls_members(), &t);
    wait_until("the rogue admitted", || peers(&t).len() == 2);
    let advert = Advert {
        id: ArtifactId([1; 32]),
        kind: Kind(1),
        size: 10,
        attr: Bytes::new(),
    };
    tls.write_all(&frames(&[(Class::Urgent, Message::Adverts(vec![advert]))]))
        .unwrap();
    let mut sink = Vec::new();
    let _ = tls.read_to_end(&mut sink);
    wait_until("the rogue cut off", || peers(&t).len() == 1);
    // Banned by the policy: its next connection is refused inside TLS (its address is shared
    // with the other members, so not before TLS), and it gets no hello.
    let refused = t.stats().refused_banned_in_tls;
    assert!(
        try_raw_member(&wrong, &tls_members(), &t).is_err(),
        "a banned member completes no hello exchange"
    );
    wait_until("the banned rogue refused inside TLS", || {
        t.stats().refused_banned_in_tls > refused
    });

    // A flood of valid control messages, repeated for 3 s, while k publishes bulk artifacts.
    let mut tls = raw_member(&flooder, &tls_members(), &t);
    wait_until("the flooder admitted", || peers(&t).len() == 2);
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let data = flood(2000);
    let flood_thread = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                for piece in data.chunks(64 << 10) {
                    if tls.write_all(piece).is_err() {
                        return;
                    }
                    written.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    // Read what the node answers, so its queue to us never fills.
                    match tls.read(&mut sink) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
            }
        })
    };
    let flood_start = Instant::now();
    wait_until("the flood under way", || {
        written.load(Ordering::Relaxed) > 4 << 20
    });
    let mut worst = Duration::ZERO;
    let mut tag = 0u8;
    while flood_start.elapsed() < Duration::from_secs(3) && tag < 60 {
        let start = Instant::now();
        let mut want = BTreeSet::new();
        for i in 0..3 {
            let id = rt
                .block_on(k.publish(Kind(1), Bytes::new(), bytes(tag + i, 1 << 20)))
                .unwrap();
            want.insert(id);
        }
        while !want.is_empty() {
            let d = t
                .deliveries()
                .recv_timeout(WAIT)
                .expect("bulk artifact delivered");
            want.remove(&d.artifact.id);
        }
        worst = worst.max(start.elapsed());
        tag += 3;
    }
    let still = peers(&t).contains(&flooder.node_id());
    stop.store(true, Ordering::Relaxed);
    flood_thread.join().unwrap();
    eprintln!(
        "threaded node: {} x 1 MiB bulk artifacts, worst {worst:?}, under a flood of {} MiB over {:?}",
        tag,
        written.load(Ordering::Relaxed) >> 20,
        flood_start.elapsed()
    );
    assert!(
        still,
        "the flooder sent only valid messages: still connected"
    );
    assert!(
        worst < Duration::from_secs(3),
        "bulk artifacts took {worst:?}: more than their request timeout"
    );
    t.shutdown();
    rt.block_on(k.shutdown());
}
