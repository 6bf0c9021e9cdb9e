//! The threaded driver's accept thread runs the admission machine: strangers from other
//! loopback addresses are refused before TLS, or (in NAT mode) evicted for a member, and the
//! member's artifact arrives within the pre-authentication deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_core::Kind;
use p2p_threads::{Member, Registry, ThreadedConfig, ThreadedNode};
use p2p_transport::identity::NodeIdentity;
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

use crate::support::{WAIT, identities, wait_until};

/// The bound on the member's delivery: the node's pre-authentication deadline (2 s).
const BOUND: Duration = Duration::from_secs(2);

fn config(identity: NodeIdentity, registry_only: bool) -> ThreadedConfig {
    let mut cfg = ThreadedConfig::new(identity, "127.0.0.1:0".parse().unwrap()).unwrap();
    cfg.policy.backoff_min = Duration::from_millis(20);
    cfg.policy.backoff_max = Duration::from_millis(500);
    cfg.admit_registry_addresses_only = registry_only;
    cfg.max_pending_handshakes = 8;
    cfg
}

/// Idle TCP connections to `to`: `per_address` from each of 127.0.0.2 to 127.0.0.10.
async fn strangers(to: SocketAddr, per_address: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for last in 2..=10 {
        for _ in 0..per_address {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))
            .unwrap();
            held.push(sock.connect(to).await.unwrap());
        }
    }
    held
}

/// Starts a member and a node, lets strangers connect to the node, then gives the member the
/// registry; returns the node's stats and the member's delivery time.
fn member_dials_under_strangers(registry_only: bool) -> (p2p_threads::Stats, Duration) {
    let rt = Runtime::new().unwrap();
    let mut ids = identities(2).into_iter();
    let m = ThreadedNode::start(
        config(ids.next().unwrap(), registry_only),
        Registry::default(),
    )
    .unwrap();
    let v = ThreadedNode::start(
        config(ids.next().unwrap(), registry_only),
        Registry::default(),
    )
    .unwrap();
    let reg = Registry::new(
        1,
        [&m, &v].map(|n| Member {
            id: n.node_id(),
            addr: n.local_addr(),
        }),
    );
    v.update_registry(reg.clone()).unwrap();
    let held = rt.block_on(strangers(v.local_addr(), 4));
    // 36 strangers: all refused (registry-only), or 8 pending and 28 refused (NAT mode).
    wait_until("the strangers are decided on", || {
        v.stats().refused_pre_tls >= if registry_only { 36 } else { 28 }
    });
    let start = Instant::now();
    m.update_registry(reg).unwrap();
    wait_until("the member connects", || m.peers().unwrap().len() == 1);
    let id = m
        .publish(Kind(1), Bytes::new(), Bytes::from(vec![7u8; 800]))
        .unwrap();
    let got = v
        .deliveries()
        .recv_timeout(WAIT)
        .expect("the member's artifact");
    let took = start.elapsed();
    assert_eq!(got.artifact.id, id);
    drop(held);
    let stats = v.stats();
    m.shutdown();
    v.shutdown();
    (stats, took)
}

#[test]
fn strangers_are_refused_before_tls_and_a_member_delivers_within_the_bound() {
    let (stats, took) = member_dials_under_strangers(true);
    println!("threaded, registry-only: {stats:?}, member delivered in {took:?}");
    assert!(took <= BOUND, "{took:?}");
    assert_eq!(stats.refused_pre_tls, 36);
    assert_eq!(stats.handshakes_evicted, 0);
}

#[test]
fn in_nat_mode_a_member_evicts_a_stranger_and_delivers_within_the_bound() {
    let (stats, took) = member_dials_under_strangers(false);
    println!("threaded, NAT mode: {stats:?}, member delivered in {took:?}");
    assert!(took <= BOUND, "{took:?}");
    assert_eq!(
        stats.refused_pre_tls, 28,
        "8 pending, 4 per address and 8 in all"
    );
    assert!(
        stats.handshakes_evicted >= 1,
        "the member took a stranger's slot"
    );
}
