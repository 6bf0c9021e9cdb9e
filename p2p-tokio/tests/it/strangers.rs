//! Strangers holding pre-authentication slots while members dial the node under attack, and
//! banned members refused before TLS (from their registry address) or inside it (from another).
//!
//! Members listen on 127.0.0.1, their registry address; strangers connect from 127.0.0.2 to
//! 127.0.0.30 (the client socket is bound before connecting). Every figure is printed; run with
//! `--nocapture` to see them.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::{Bytes, BytesMut};
use p2p_core::Kind;
use p2p_tokio::{Member, NodeConfig, NodeHandle, Registry};
use p2p_transport::codec::{self, HELLO_LEN, Hello};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::tls::{self, Members, Membership, server_name_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// The bound on an honest member's connection and delivery while strangers attack: the node's
/// pre-authentication deadline (`handshake_timeout`, 2 s by default).
const BOUND: Duration = Duration::from_secs(2);
/// The last byte of the strangers' loopback addresses.
const STRANGERS: std::ops::RangeInclusive<u8> = 2..=30;
/// How long the strangers attack before the member dials: longer than the deadline, so that
/// slots they held expire and are taken again.
const ATTACK_FIRST: Duration = Duration::from_millis(2500);
/// Connection loops per stranger address.
const LOOPS_PER_ADDRESS: usize = 6;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `to` from the address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// Strangers: from each stranger address, [`LOOPS_PER_ADDRESS`] loops that connect, then hold
/// the connection idle (even loops) or trickle a TLS ClientHello one byte per 100 ms (odd
/// loops) until the node closes it, and connect again, until stopped.
struct Attack {
    stop: Arc<AtomicBool>,
    loops: JoinSet<u64>,
}

impl Attack {
    fn start(target: SocketAddr) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = JoinSet::new();
        for last in STRANGERS {
            for k in 0..LOOPS_PER_ADDRESS {
                let stop = Arc::clone(&stop);
                loops.spawn(async move {
                    let mut opened = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(tcp) = connect_from(loopback(last), target).await {
                            opened += 1;
                            hold(tcp, k % 2 == 1, &stop).await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    opened
                });
            }
        }
        Attack { stop, loops }
    }

    /// Stops every loop; returns the connections the strangers opened.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut opened = 0;
        while let Some(n) = self.loops.join_next().await {
            opened += n.unwrap_or(0);
        }
        opened
    }
}

/// Holds `tcp` until the node closes it or the attack stops; `slow` trickles a ClientHello
/// record (announcing 512 bytes) one byte per 100 ms.
async fn hold(mut tcp: TcpStream, slow: bool, stop: &AtomicBool) {
    let header = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01];
    let mut sent = 0usize;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        if slow && sent < 512 {
            let byte = header.get(sent).copied().unwrap_or(0);
            if tcp.write_all(&[byte]).await.is_err() {
                return;
            }
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    /// From the member's registry update (it dials at once) to its connection.
    connected: Duration,
    /// From the same instant to the delivery of its artifact at the node under attack.
    delivered: Duration,
    /// The most pending handshakes seen at the node while the member connected.
    max_pending: u64,
}

/// Waits, sampling `v`'s pending handshakes, until `m` is connected to it, then publishes an
/// artifact on `m` and waits for its delivery at `v`.
async fn member_delivers(
    m: &NodeHandle,
    v: &NodeHandle,
    rx: &mut p2p_tokio::Deliveries,
    start: Instant,
    tag: u8,
) -> Figures {
    let mut max_pending = 0;
    let mut connected = None;
    let mut published = None;
    let deadline = start + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the member did not deliver within {WAIT:?}: {:#?}",
            v.metrics()
        );
        max_pending = max_pending.max(v.metrics().pending_handshakes);
        if connected.is_none() && m.metrics().peers_connected == 1 {
            connected = Some(start.elapsed());
            let id = m
                .publish(Kind(1), Bytes::new(), bytes(tag, 800))
                .await
                .unwrap();
            published = Some(id);
        }
        if let Some(d) = rx.try_recv() {
            assert_eq!(Some(d.artifact.id), published, "the member's artifact");
            return Figures {
                connected: connected.unwrap_or_default(),
                delivered: start.elapsed(),
                max_pending,
            };
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn tuned(identity: NodeIdentity, registry_only: bool) -> NodeConfig {
    let mut c = config(identity);
    c.admit_registry_addresses_only = registry_only;
    c
}

/// A node `v` (attacked when `attack`) and a member `m` with the lower id, which dials `v`
/// once it gets the registry; returns what the member's connection and delivery took.
async fn member_dials(registry_only: bool, attack: bool) -> Figures {
    let mut ids = identities(2).into_iter();
    let (m_id, v_id) = (ids.next().unwrap(), ids.next().unwrap());
    let m = p2p_tokio::start(tuned(m_id, registry_only), Registry::default())
        .await
        .unwrap();
    let v = p2p_tokio::start(tuned(v_id, registry_only), Registry::default())
        .await
        .unwrap();
    let reg = registry(1, &[&m, &v]);
    v.update_registry(reg.clone()).await.unwrap();
    let mut rx = v.take_deliveries().unwrap();
    let cfg_caps = (64, 4);
    let attack = attack.then(|| Attack::start(v.local_addr()));
    if attack.is_some() {
        if registry_only {
            wait_metrics(&v, "strangers refused before TLS", |x| {
                x.refused_pre_tls_not_member_address >= 200
            })
            .await;
        } else {
            // The strangers hold every slot before the member dials.
            wait_metrics(&v, "strangers fill the pool", |x| {
                x.pending_handshakes == cfg_caps.0
            })
            .await;
        }
    }
    if attack.is_some() {
        // Past one deadline: held slots expire and the strangers take them again.
        tokio::time::sleep(ATTACK_FIRST).await;
    }
    let start = Instant::now();
    m.update_registry(reg).await.unwrap();
    let figures = member_delivers(&m, &v, &mut rx, start, 1).await;
    assert!(figures.connected <= figures.delivered);
    let after = v.metrics();
    if let Some(a) = attack {
        let opened = a.stop().await;
        println!(
            "registry_only={registry_only}: {opened} stranger connections; refused before TLS: \
             {} not a member's address, {} address full, {} pool full; evicted: {} strangers \
             for the member, {} at the deadline",
            after.refused_pre_tls_not_member_address,
            after.refused_pre_tls_address_full,
            after.refused_pre_tls_pool_full,
            after.evicted_stranger,
            after.evicted_deadline
        );
        if registry_only {
            assert_eq!(after.evicted_deadline, 0, "no stranger reached a handshake");
        } else {
            assert!(after.evicted_deadline > 0, "{after:#?}");
            assert!(after.refused_pre_tls_address_full > 0, "{after:#?}");
            assert!(after.refused_pre_tls_pool_full > 0, "{after:#?}");
        }
    }
    // Registry-only: only the member's address ever holds a slot.
    let cap = if registry_only {
        cfg_caps.1
    } else {
        cfg_caps.0
    };
    assert!(figures.max_pending <= cap, "{figures:?} above {cap}");
    m.shutdown().await;
    v.shutdown().await;
    figures
}

async fn strangers_do_not_keep_a_member_out(registry_only: bool) {
    init_log();
    let calm = member_dials(registry_only, false).await;
    let attacked = member_dials(registry_only, true).await;
    println!("registry_only={registry_only}: without attack {calm:?}; under attack {attacked:?}");
    assert!(
        attacked.delivered <= BOUND,
        "the member's artifact took {:?} under attack (bound {BOUND:?})",
        attacked.delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_29_addresses_do_not_keep_a_member_out_with_registry_only_admission() {
    strangers_do_not_keep_a_member_out(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_29_addresses_do_not_keep_a_member_out_in_nat_mode() {
    strangers_do_not_keep_a_member_out(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarting_under_attack_reconnects_and_delivers_within_the_bound() {
    init_log();
    let mut ids = identities(2).into_iter();
    let (m_id, v_id) = (ids.next().unwrap(), ids.next().unwrap());
    let m_pem = (m_id.cert_pem().to_owned(), m_id.key_pem().to_owned());
    let m = p2p_tokio::start(tuned(m_id, false), Registry::default())
        .await
        .unwrap();
    let v = p2p_tokio::start(tuned(v_id, false), Registry::default())
        .await
        .unwrap();
    let m_addr = m.local_addr();
    let reg = registry(1, &[&m, &v]);
    v.update_registry(reg.clone()).await.unwrap();
    let mut rx = v.take_deliveries().unwrap();
    let attack = Attack::start(v.local_addr());
    wait_metrics(&v, "strangers fill the pool", |x| {
        x.pending_handshakes == 64
    })
    .await;
    tokio::time::sleep(ATTACK_FIRST).await;

    let start = Instant::now();
    m.update_registry(reg.clone()).await.unwrap();
    let first = member_delivers(&m, &v, &mut rx, start, 1).await;
    assert!(first.delivered <= BOUND, "{first:?}");

    // The member stops and starts again with the same identity and address.
    m.shutdown().await;
    wait_metrics(&v, "the member's connection ended", |x| {
        x.peers_connected == 0
    })
    .await;
    let identity = NodeIdentity::from_pem(&m_pem.0, &m_pem.1).unwrap();
    let mut cfg = tuned(identity, false);
    cfg.listen = m_addr;
    let start = Instant::now();
    let m = p2p_tokio::start(cfg, reg).await.unwrap();
    let second = member_delivers(&m, &v, &mut rx, start, 2).await;
    let opened = attack.stop().await;
    println!(
        "restart under attack ({opened} stranger connections): first {first:?}; after the \
         restart {second:?}"
    );
    assert!(
        second.delivered <= BOUND,
        "after the restart the member's artifact took {:?} (bound {BOUND:?})",
        second.delivered
    );
    assert!(first.max_pending <= 64 && second.max_pending <= 64);
    m.shutdown().await;
    v.shutdown().await;
}

/// A raw TLS client with a member's identity, connecting from `from`: the TLS handshake, our
/// hello, and the node's hello if it answers.
async fn raw_member_from(
    from: IpAddr,
    identity: &NodeIdentity,
    members: &Members,
    target: &NodeHandle,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, Hello)> {
    let cfg = tls::client_config(identity, &Membership::new(members.clone())).unwrap();
    let tcp = connect_from(from, target.local_addr()).await?;
    let mut tls = TlsConnector::from(cfg)
        .connect(server_name_for(target.node_id()), tcp)
        .await?;
    let mut hello = BytesMut::new();
    codec::encode_hello(&Hello::new(1), &mut hello);
    tls.write_all(&hello).await?;
    let mut theirs = [0u8; HELLO_LEN];
    tls.read_exact(&mut theirs).await?;
    let hello = codec::decode_hello(&theirs)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((tls, hello))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_member_is_refused_before_tls_from_its_address_and_inside_tls_from_another() {
    init_log();
    let mut ids = identities(3).into_iter();
    // The rogue has the lowest id: it dials, nobody dials it.
    let rogue = ids.next().unwrap();
    let nodes = subnet(
        ids.map(|id| {
            let mut c = config(id);
            c.misbehaviour_ban = Duration::from_secs(60);
            c
        })
        .collect(),
    )
    .await;
    let (h, v) = (&nodes[0], &nodes[1]);
    // The rogue's registry address is its own: 127.0.0.31 (the honest ones share 127.0.0.1).
    let rogue_ip = loopback(31);
    let mut reg = registry(2, &[h, v]);
    reg.members.push(Member {
        id: rogue.node_id(),
        addr: SocketAddr::new(rogue_ip, 9),
    });
    for n in &nodes {
        n.update_registry(reg.clone()).await.unwrap();
    }
    wait_connected(&nodes, 1).await;
    let members = Members::new(2, reg.members.iter().map(|m| m.id));
    let mut rx = v.take_deliveries().unwrap();
    let mut honest = 0u8;
    let mut honest_flows = async || {
        honest += 1;
        let start = Instant::now();
        let id = h
            .publish(Kind(1), Bytes::new(), bytes(honest, 64 << 10))
            .await
            .unwrap();
        assert_eq!(ids_of(&receive(&mut rx, 1).await), vec![id]);
        start.elapsed()
    };
    let calm = honest_flows().await;

    // The rogue, admitted from its registry address, breaks the protocol: banned.
    let (mut conn, _) = raw_member_from(rogue_ip, &rogue, &members, v)
        .await
        .expect("admitted before its offence");
    conn.write_all(&[0xffu8; 64]).await.unwrap();
    let mut sink = Vec::new();
    let _ = within(1, "the node cuts the rogue", conn.read_to_end(&mut sink)).await;
    wait_metrics(v, "the offence", |m| m.protocol_errors == 1).await;
    let during_ban = honest_flows().await;

    // From its registry address: closed on accept, before any TLS byte is answered.
    let before = v.metrics();
    let refused = raw_member_from(rogue_ip, &rogue, &members, v).await;
    assert!(refused.is_err(), "no TLS with a banned member's address");
    wait_metrics(v, "refused before TLS", |m| m.refused_pre_tls_banned == 1).await;
    assert_eq!(v.metrics().refused_in_tls_banned, 0);

    // From an address it shares with others (127.0.0.1): refused inside TLS, so it never
    // receives the node's hello.
    let shared = raw_member_from(loopback(1), &rogue, &members, v).await;
    assert!(shared.is_err(), "no hello for a banned member");
    wait_metrics(v, "refused inside TLS", |m| m.refused_in_tls_banned == 1).await;
    let after = v.metrics();
    assert_eq!(after.connections_accepted, before.connections_accepted);
    assert_eq!(after.refused_pre_tls_banned, 1);

    // Honest traffic flows throughout.
    let after_refusals = honest_flows().await;
    assert_eq!(v.connected_peers().await.unwrap(), vec![h.node_id()]);
    println!(
        "banned member: honest 64 KiB artifact delivered in {calm:?} before, {during_ban:?} \
         during the ban, {after_refusals:?} after the refusals"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_their_own_addresses_dial_from_them_and_admit_each_other() {
    init_log();
    // Three members, each listening on its own loopback address, with the default rule that
    // only registry addresses are admitted before TLS: a dial must leave from the dialer's
    // listening address, or its peer refuses it as a stranger.
    let configs = identities(3)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = config(id);
            c.listen = SocketAddr::new(loopback(20 + i as u8), 0);
            assert!(c.admit_registry_addresses_only);
            c
        })
        .collect();
    let nodes = subnet(configs).await;
    wait_connected(&nodes, 2).await;
    let mut rxs: Vec<_> = nodes[1..]
        .iter()
        .map(|n| n.take_deliveries().unwrap())
        .collect();
    let id = nodes[0]
        .publish(Kind(1), Bytes::new(), Bytes::from(vec![7u8; 2000]))
        .await
        .unwrap();
    for rx in &mut rxs {
        assert_eq!(ids_of(&receive(rx, 1).await), vec![id]);
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
