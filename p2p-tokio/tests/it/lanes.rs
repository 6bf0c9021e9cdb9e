//! Classes by message type and the node's fair inbox, on real TLS: a member that claims a
//! class its message's type does not allow is cut off; a member flooding control messages
//! delays neither other members' bulk artifacts nor a new member's connection.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, Class, Decision, Kind, Message, Priority, PriorityFnRef};
use p2p_tokio::{Member, NodeConfig, NodeHandle, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_a_message_in_a_class_its_type_does_not_allow_is_cut_off_and_banned() {
    init_log();
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let adverts = Message::Adverts(
        (0..100u8)
            .map(|i| Advert {
                id: ArtifactId([i; 32]),
                kind: Kind(1),
                size: 2000,
                attr: Bytes::new(),
            })
            .collect(),
    );
    let big = bytes(3, 100 << 10);
    let response = Message::Response {
        req_id: 1,
        id: ArtifactId::of(&big),
        data: big,
    };
    // An advert batch claimed urgent to `a`, a 100 KiB response (several frames, within the
    // message size limit) claimed control to `b`.
    for (target, class, msg) in [(a, Class::Urgent, adverts), (b, Class::Control, response)] {
        let (mut tls, hello) = raw_member_connection(&rogue, members.clone(), target).await;
        hello.unwrap();
        wait_metrics(target, "rogue admitted", |m| m.peers_connected == 2).await;
        tls.write_all(&frames(&[(class, msg)])).await.unwrap();
        let mut sink = Vec::new();
        let _ = within(1, "the node cuts the rogue", tls.read_to_end(&mut sink)).await;
        wait_metrics(target, "protocol error", |m| m.protocol_errors == 1).await;
        wait_metrics(target, "rogue gone", |m| m.peers_connected == 1).await;
        assert_eq!(target.metrics().core.tracked_adverts, 0);
        assert_eq!(target.metrics().core.delivered, 0);
        // Banned by the policy: a new connection is refused after TLS.
        let refused_before = target.metrics().connections_refused;
        let (mut again, _) = raw_member_connection(&rogue, members.clone(), target).await;
        let _ = within(
            1,
            "the banned rogue is dropped",
            again.read_to_end(&mut sink),
        )
        .await;
        wait_metrics(target, "refusal", |m| {
            m.connections_refused > refused_before
        })
        .await;
    }
    // The honest members still serve each other.
    let mut rx_b = b.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(4, 300_000))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![id]);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Kind 1 is fetched at bulk priority; every other kind is dropped.
fn bulk_config(id: p2p_transport::identity::NodeIdentity) -> NodeConfig {
    let mut cfg = config(id);
    cfg.core.priority_fn = PriorityFnRef::new(|a: &Advert| match a.kind {
        Kind(1) => Decision::Fetch(Priority::BULK),
        _ => Decision::Drop,
    });
    cfg
}

/// A chunk of valid control messages: requests and withdraws of unknown ids, and a batch of
/// [`FLOOD_BATCH`] adverts of new ids of a kind the node drops.
fn flood_chunk(round: u32) -> BytesMut {
    let mut msgs = Vec::new();
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
    let adverts = (0..FLOOD_BATCH)
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
    frames(&msgs)
}

/// Adverts per batch in [`flood_chunk`].
const FLOOD_BATCH: u32 = 100;

/// Rounds of [`flood_chunk`] the rogue encodes once and repeats (41 messages each).
const FLOOD_ROUNDS: u32 = 2000;

/// How long the flood runs at least.
const FLOOD: Duration = Duration::from_secs(3);

/// Publishes `n` artifacts of 1 MiB on `from` and returns the longest time from a publish to
/// its delivery at `to`.
async fn bulk_latency(
    from: &NodeHandle,
    to_rx: &mut p2p_tokio::Deliveries,
    n: u8,
    tag: u8,
) -> Duration {
    let mut sent = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let id = from
            .publish(Kind(1), Bytes::new(), bytes(tag + i, 1 << 20))
            .await
            .unwrap();
        sent.push((id, start));
    }
    let mut worst = Duration::ZERO;
    for d in receive(to_rx, usize::from(n)).await {
        let (_, start) = sent.iter().find(|(id, _)| *id == d.artifact.id).unwrap();
        worst = worst.max(start.elapsed());
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_control_messages_delays_neither_honest_bulk_artifacts_nor_a_new_member()
{
    init_log();
    let mut ids = identities(4).into_iter();
    let rogue = ids.next().unwrap();
    let (a_id, b_id, c_id) = (
        ids.next().unwrap(),
        ids.next().unwrap(),
        ids.next().unwrap(),
    );
    let nodes = subnet(vec![bulk_config(a_id), bulk_config(b_id)]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let rogue_member = Member {
        id: rogue.node_id(),
        addr: "127.0.0.1:9".parse().unwrap(),
    };
    let mut reg = registry(2, &[a, b]);
    reg.members.push(rogue_member);
    for n in &nodes {
        n.update_registry(reg.clone()).await.unwrap();
    }
    wait_connected(&nodes, 1).await;
    let members = p2p_transport::tls::Members::new(2, reg.members.iter().map(|m| m.id));
    let mut rx_a = a.take_deliveries().unwrap();

    // Without the attack.
    let quiet = bulk_latency(b, &mut rx_a, 3, 10).await;

    // The rogue floods `a` with valid control messages as fast as `a` takes them, and reads
    // everything `a` answers.
    let (tls, hello) = raw_member_connection(&rogue, members, a).await;
    hello.unwrap();
    wait_metrics(a, "rogue admitted", |m| m.peers_connected == 2).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, flooded) = (Arc::clone(&stop), Arc::clone(&flooded));
        // Encoded once, then written again and again: the rogue's rate is the socket's.
        let chunks: Vec<BytesMut> = (0..FLOOD_ROUNDS).map(flood_chunk).collect();
        let mut all = BytesMut::new();
        for c in &chunks {
            all.extend_from_slice(c);
        }
        let all = all.freeze();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for piece in all.chunks(64 << 10) {
                    if wr.write_all(piece).await.is_err() {
                        return wr;
                    }
                }
                flooded.fetch_add(u64::from(FLOOD_ROUNDS) * 41, Ordering::Relaxed);
            }
            wr
        })
    };
    let flood_start = Instant::now();
    let received_before = a.metrics().messages_received;
    wait_metrics(a, "the flood reaches the node", |m| {
        m.messages_received > received_before + 20_000
    })
    .await;

    // Honest bulk artifacts from b, three at a time, for the first 3 s of the flood.
    let mut attacked = Duration::ZERO;
    let mut tag = 20u8;
    let mut honest = 0;
    while flood_start.elapsed() < FLOOD && tag < 200 {
        attacked = attacked.max(bulk_latency(b, &mut rx_a, 3, tag).await);
        tag += 3;
        honest += 3;
    }

    // The node answers its handle at once.
    let start = Instant::now();
    let peers = a.connected_peers().await.unwrap();
    let command = start.elapsed();
    assert_eq!(peers.len(), 2);

    // A new member joins: its connection is handled, and its artifact arrives.
    let mut c_cfg = bulk_config(c_id);
    c_cfg.listen = "127.0.0.1:0".parse().unwrap();
    let c = p2p_tokio::start(c_cfg, Registry::default()).await.unwrap();
    let mut reg3 = registry(3, &[a, b, &c]);
    reg3.members.push(rogue_member);
    let start = Instant::now();
    for n in [a, b, &c] {
        n.update_registry(reg3.clone()).await.unwrap();
    }
    wait_metrics(&c, "the new member connected", |m| m.peers_connected == 2).await;
    wait_metrics(a, "a connected to the new member", |m| {
        m.peers_connected == 3
    })
    .await;
    let join = start.elapsed();
    let id = c
        .publish(Kind(1), Bytes::new(), bytes(40, 100_000))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_a, 1).await), vec![id]);
    let new_member = start.elapsed();

    let during = a.metrics();
    stop.store(true, Ordering::Relaxed);
    let wr = flood.await.unwrap();
    let flood_messages = flooded.load(Ordering::Relaxed);
    let flood_time = flood_start.elapsed();
    eprintln!(
        "1 MiB bulk artifacts: worst {quiet:?} quiet, {attacked:?} for {honest} under the flood \
         ({flood_time:?}); \
         command {command:?}; new member connected in {join:?}, its artifact in {new_member:?}; \
         {flood_messages} flood messages written, {} handled by the node",
        during.messages_received - received_before
    );
    // The flood ran throughout, and the rogue was never cut off: it only sent valid messages.
    assert!(during.messages_received - received_before > 20_000);
    assert_eq!(during.peers_connected, 3);
    assert_eq!(during.protocol_errors, 0);
    // Each honest artifact came at the first request, within its request timeout (2 s + 1 s
    // per MiB); the handle and the new member were served at once.
    assert_eq!(during.core.retries, 0, "no honest request timed out");
    let timeout = Duration::from_secs(3);
    assert!(attacked < timeout, "bulk took {attacked:?} under the flood");
    assert!(
        command < Duration::from_secs(1),
        "a command took {command:?}"
    );
    assert!(join < timeout, "the new member took {join:?} to connect");
    drop(wr);
    drain.abort();
    c.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}
