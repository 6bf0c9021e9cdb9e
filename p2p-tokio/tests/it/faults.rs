//! Faults on real sockets: non-members, removed members, killed connections, garbage.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use crate::support::*;
use bytes::Bytes;
use p2p_core::{Kind, Message};
use p2p_tokio::{Member, Registry};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::{MuxConfig, MuxReceiver};
use p2p_transport::tls::Members;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_with_a_valid_certificate_is_refused_in_tls() {
    init_log();
    let mut ids = identities(3).into_iter();
    // The outsider has the lowest id, so it is the one that dials.
    let outsider_id = ids.next().unwrap();
    let nodes = subnet(ids.map(config).collect()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;

    // The outsider believes it is a member and dials both.
    let mut reg = registry(1, &[a, b]);
    reg.members.push(Member {
        id: outsider_id.node_id(),
        addr: "127.0.0.1:9".parse().unwrap(),
    });
    let outsider = p2p_tokio::start(config(outsider_id), reg).await.unwrap();
    outsider
        .publish(Kind(1), Bytes::new(), bytes(5, 200))
        .await
        .unwrap();
    wait_metrics(a, "refusal", |m| m.connections_refused >= 1).await;
    wait_metrics(b, "refusal", |m| m.connections_refused >= 1).await;
    wait_metrics(&outsider, "failed dials", |m| m.dial_failures >= 2).await;

    // The members keep serving each other.
    let mut rx_b = b.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(6, 300_000))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![id]);

    // The outsider never reached a core: no connection, no delivery, no accepted connection.
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    assert_eq!(a.metrics().core.delivered, 0);
    assert_eq!(b.metrics().core.delivered, 1);
    for n in [a, b] {
        let m = n.metrics();
        assert_eq!(m.connections_accepted + m.connections_dialed, 1);
        assert_eq!(m.core.connected_peers, 1);
    }
    let m = outsider.metrics();
    assert_eq!(m.peers_connected, 0);
    assert_eq!(m.connections_dialed, 0);
    outsider.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_removed_at_run_time_is_disconnected_refused_and_welcome_back_when_readded() {
    init_log();
    // The removed node has the lowest id: after the removal it keeps dialing the others.
    let nodes = subnet(identities(3).into_iter().map(config).collect()).await;
    let (c, a, b) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_connected(&nodes, 2).await;

    let v2 = registry(2, &[a, b]);
    a.update_registry(v2.clone()).await.unwrap();
    b.update_registry(v2).await.unwrap();
    wait_metrics(a, "removal", |m| m.peers_connected == 1).await;
    wait_metrics(b, "removal", |m| m.peers_connected == 1).await;
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    wait_metrics(a, "refused redial", |m| m.connections_refused >= 1).await;
    wait_metrics(b, "refused redial", |m| m.connections_refused >= 1).await;
    wait_metrics(c, "no peers", |m| m.peers_connected == 0).await;

    // An older registry version is refused.
    assert!(a.update_registry(registry(1, &[a, b, c])).await.is_err());

    // Re-added, it reconnects and gossip reaches it again.
    let v3 = registry(3, &[a, b, c]);
    a.update_registry(v3.clone()).await.unwrap();
    b.update_registry(v3).await.unwrap();
    wait_connected(&nodes, 2).await;
    let mut rx_c = c.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(7, 100))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_c, 1).await), vec![id]);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_mid_transfer_is_reestablished_and_the_transfer_completes() {
    init_log();
    let configs = identities(2)
        .into_iter()
        .map(|id| {
            let mut cfg = config(id);
            cfg.socket_buffer = Some(16 << 10);
            cfg
        })
        .collect();
    let nodes = subnet(configs).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    let mut rx = b.take_deliveries().unwrap();

    let id = b
        .publish(Kind(1), Bytes::new(), bytes(8, 12 << 20))
        .await
        .unwrap();
    let mut rx_a = a.take_deliveries().unwrap();
    wait_metrics(a, "transfer under way", |m| m.bytes_read > 1 << 20).await;
    assert_eq!(
        a.metrics().core.delivered,
        0,
        "the transfer ended before the kill"
    );
    assert!(a.drop_connection(b.node_id()).await.unwrap());

    let got = receive(&mut rx_a, 1).await;
    assert_eq!(got[0].artifact.id, id);
    assert_eq!(got[0].artifact.data.len(), 12 << 20);
    wait_connected(&nodes, 1).await;
    let m = a.metrics();
    assert_eq!(m.connections_dialed + m.connections_accepted, 2, "{m:#?}");
    assert!(m.core.retries >= 1, "the cut request was retried: {m:#?}");
    assert_eq!(m.core.delivered, 1);
    assert!(rx.try_recv().is_none());
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_garbage_frames_is_cut_off_and_others_transfers_complete() {
    init_log();
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_b = b.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(9, 4 << 20))
        .await
        .unwrap();

    let (mut tls, hello) = raw_member_connection(&rogue, members.clone(), a).await;
    assert_eq!(hello.unwrap().registry_version, 2);
    wait_metrics(a, "rogue admitted", |m| m.peers_connected == 2).await;
    // A frame with reserved flag bits set, then noise.
    let mut junk = vec![0u8, 0, 0, 0, 0xf4, 4, 0, 0, 0];
    junk.extend_from_slice(&[0xab; 64]);
    tls.write_all(&junk).await.unwrap();
    let mut sink = Vec::new();
    let end = within(1, "the node cuts the rogue", tls.read_to_end(&mut sink)).await;
    // Either a clean close or a reset: the connection is gone.
    let _ = end;
    wait_metrics(a, "protocol error", |m| m.protocol_errors == 1).await;
    wait_metrics(a, "rogue gone", |m| m.peers_connected == 1).await;

    // Banned: a new connection completes TLS (it is a member) but is refused after it.
    let refused_before = a.metrics().connections_refused;
    let (mut again, _) = raw_member_connection(&rogue, members, a).await;
    let mut sink = Vec::new();
    let _ = within(
        1,
        "the banned rogue is dropped",
        again.read_to_end(&mut sink),
    )
    .await;
    // The node counts the refusal once its handshake task ends, which may be after the rogue
    // saw the connection close.
    wait_metrics(a, "the banned rogue refused", |m| {
        m.connections_refused > refused_before
    })
    .await;

    // The honest transfer completed regardless.
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![id]);
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Sends garbage on a fresh connection of the rogue to `a` and waits until `a` counted the
/// protocol error number `n`.
async fn offend(rogue: &NodeIdentity, members: &Members, a: &p2p_tokio::NodeHandle, n: u64) {
    let (mut tls, hello) = raw_member_connection(rogue, members.clone(), a).await;
    assert!(hello.is_ok(), "admitted: the node sent its hello");
    tls.write_all(&[0xffu8; 64]).await.unwrap();
    let mut sink = Vec::new();
    let _ = within(5, "the node cuts the rogue", tls.read_to_end(&mut sink)).await;
    wait_metrics(a, "protocol error counted", |m| m.protocol_errors == n).await;
}

/// Whether a fresh connection of the rogue to `a` is refused (dropped after the handshake)
/// rather than admitted as a peer.
async fn refused(rogue: &NodeIdentity, members: &Members, a: &p2p_tokio::NodeHandle) -> bool {
    let before = a.metrics().connections_refused;
    let (tls, _) = raw_member_connection(rogue, members.clone(), a).await;
    let mut outcome = None;
    for _ in 0..300 {
        let m = a.metrics();
        if m.connections_refused > before {
            outcome = Some(true);
            break;
        }
        if m.peers_connected == 2 {
            outcome = Some(false);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tls);
    outcome.expect("the node decides on the connection within 3 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_double_for_a_repeat_offender_while_honest_traffic_flows() {
    init_log();
    let ban = Duration::from_millis(1000);
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member_with(|c| {
        c.misbehaviour_ban = ban;
        c.misbehaviour_ban_max = ban * 8;
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_b = b.take_deliveries().unwrap();

    // First offence: banned for `ban`.
    offend(&rogue, &members, a, 1).await;
    assert!(
        refused(&rogue, &members, a).await,
        "banned after the first offence"
    );
    tokio::time::sleep(ban + ban * 3 / 10).await;
    // The ban ended; the second offence bans it for twice as long, so after the same wait it
    // is still refused.
    offend(&rogue, &members, a, 2).await;
    tokio::time::sleep(ban + ban * 3 / 10).await;
    assert!(
        refused(&rogue, &members, a).await,
        "the second ban is longer"
    );

    // Meanwhile the honest pair keeps working.
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(3, 1 << 20))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![id]);
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_gets_keepalives_and_is_cut_after_the_idle_timeout() {
    init_log();
    let mut ids = identities(2).into_iter();
    let silent = ids.next().unwrap();
    let mut cfg = config(ids.next().unwrap());
    cfg.keepalive_interval = std::time::Duration::from_millis(100);
    cfg.idle_timeout = std::time::Duration::from_millis(600);
    cfg.handshake_timeout = std::time::Duration::from_millis(300);
    let a = p2p_tokio::start(cfg, Registry::default()).await.unwrap();
    let mut reg = registry(1, &[&a]);
    reg.members.push(Member {
        id: silent.node_id(),
        addr: "127.0.0.1:9".parse().unwrap(),
    });
    a.update_registry(reg.clone()).await.unwrap();

    // A TCP client that never starts TLS is dropped at the handshake timeout.
    let mut mute = TcpStream::connect(a.local_addr()).await.unwrap();
    let mut sink = Vec::new();
    let _ = within(1, "handshake timeout", mute.read_to_end(&mut sink)).await;
    wait_metrics(&a, "handshake failure", |m| m.handshake_failures >= 1).await;

    // A member that completes the handshake and then says nothing.
    let members = Members::new(1, reg.members.iter().map(|m| m.id));
    let (mut tls, hello) = raw_member_connection(&silent, members, &a).await;
    hello.unwrap();
    let mut rx = MuxReceiver::new(MuxConfig::default()).unwrap();
    let mut keepalives = 0;
    let mut buf = vec![0u8; 4096];
    let ended = within(1, "idle cut", async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rx.feed(Bytes::copy_from_slice(&buf[..n])),
            }
            while let Ok(Some((_, msg))) = rx.poll_message() {
                assert_eq!(
                    msg,
                    Message::Adverts(Vec::new()),
                    "only keepalives expected"
                );
                keepalives += 1;
            }
        }
    });
    ended.await;
    assert!(keepalives >= 2, "{keepalives} keepalives before the cut");
    wait_metrics(&a, "idle cut", |m| {
        m.idle_timeouts == 1 && m.peers_connected == 0
    })
    .await;
    assert!(a.metrics().keepalives_sent >= 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_advertising_thousands_it_never_serves_does_not_delay_honest_artifacts() {
    init_log();
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut tls, hello) = raw_member_connection(&rogue, members.clone(), a).await;
    hello.unwrap();
    wait_metrics(a, "rogue admitted", |m| m.peers_connected == 2).await;

    // 5,000 adverts of artifacts that do not exist, inside the per-peer limits, all urgent.
    let adverts: Vec<(p2p_core::Class, Message)> = (0..5u32)
        .map(|batch| {
            let list = (0..1000u32)
                .map(|i| {
                    let mut id = [0xeeu8; 32];
                    id[..4].copy_from_slice(&(batch * 1000 + i).to_le_bytes());
                    p2p_core::Advert {
                        id: p2p_core::ArtifactId(id),
                        kind: Kind(1),
                        size: 2000,
                        attr: Bytes::new(),
                    }
                })
                .collect();
            (p2p_core::Class::Control, Message::Adverts(list))
        })
        .collect();
    tls.write_all(&frames(&adverts)).await.unwrap();
    wait_metrics(a, "the rogue's adverts tracked", |m| {
        m.core.tracked_adverts >= 5000
    })
    .await;
    // The rogue reads what it is sent (requests) and never answers. Honest artifacts from b
    // still reach a at once: they do not wait behind the rogue's queue.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(n) = tls.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        tls
    });
    let mut rx_a = a.take_deliveries().unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            b.publish(Kind(1), Bytes::new(), bytes(70 + i, 50_000))
                .await
                .unwrap(),
        );
    }
    ids.sort();
    assert_eq!(ids_of(&receive(&mut rx_a, 5).await), ids);
    let m = a.metrics();
    assert_eq!(
        m.core.retries, 0,
        "each honest artifact came from b at the first request"
    );
    assert!(m.core.tracked_adverts >= 5000, "the attack was still on");
    drain.abort();

    // An unsolicited 200 KiB push (over the push threshold, within the message size limit) is
    // a protocol violation: cut off, nothing delivered.
    let (mut tls, hello) = raw_member_connection(&rogue, members, b).await;
    hello.unwrap();
    wait_metrics(b, "rogue admitted", |m| m.peers_connected == 2).await;
    let big = bytes(99, 200 << 10);
    let push = Message::Push {
        advert: p2p_core::Advert {
            id: p2p_core::ArtifactId::of(&big),
            kind: Kind(1),
            size: big.len() as u64,
            attr: Bytes::new(),
        },
        data: big,
    };
    tls.write_all(&frames(&[(p2p_core::Class::Urgent, push)]))
        .await
        .unwrap();
    wait_metrics(b, "rogue cut off", |m| m.peers_connected == 1).await;
    assert_eq!(b.metrics().core.delivered, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}
