//! Reconnect churn and repeated requests on real TLS: a member that reconnects as fast as it
//! can, or asks for a 4 MiB artifact again and again, while honest artifacts keep flowing.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use crate::support::*;
use bytes::{Bytes, BytesMut};
use p2p_core::{ArtifactId, Class, Kind, Message, Priority};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound on each honest delivery while an attack runs: the default request timeout.
const HONEST_BOUND: Duration = Duration::from_secs(2);

/// Distinguishes the honest artifacts of successive flows.
static NEXT_TAG: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(100);

/// Publishes `n` artifacts of 50 KB on `from`, one every 100 ms, and returns the longest time
/// from a publish to its delivery at `rx`.
async fn honest_flow(
    from: &p2p_tokio::NodeHandle,
    rx: &mut p2p_tokio::Deliveries,
    n: u8,
) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        let tag = NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = from
            .publish(Kind(1), Bytes::new(), bytes(tag, 50_000))
            .await
            .unwrap();
        let got = receive(rx, 1).await;
        assert_eq!(ids_of(&got), vec![id]);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reconnecting_as_fast_as_it_can_is_refused_after_the_limit_while_honest_artifacts_flow()
 {
    init_log();
    // The pool's artifacts (kind 2) are not wanted: b only takes their adverts.
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member_with(|c| {
        c.core.priority_fn = p2p_core::PriorityFnRef::by_kind(
            vec![(Kind(1), Priority::NORMAL)],
            p2p_core::Decision::Drop,
        );
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // A large pool at a: every new connection is owed 5,000 adverts.
    for i in 0..5_000u32 {
        let data: Vec<u8> = i.to_le_bytes().repeat(400);
        a.publish(Kind(2), Bytes::new(), Bytes::from(data))
            .await
            .unwrap();
    }
    wait_metrics(b, "b got a's adverts", |m| m.core.adverts_received >= 5_000).await;
    let mut rx_a = a.take_deliveries().unwrap();
    let quiet = honest_flow(b, &mut rx_a, 5).await;
    let before = a.metrics();

    // The churner: TLS, hello, leave, as fast as it can, for 3 s.
    let churn = {
        let (rogue, members, target) = (rogue, members.clone(), a.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut attempts = 0u64;
            while start.elapsed() < Duration::from_secs(3) {
                let (tls, _hello) = raw_member_connection(&rogue, members.clone(), &target).await;
                drop(tls);
                attempts += 1;
            }
            (attempts, start.elapsed())
        })
    };
    // Meanwhile b's artifacts flow to a.
    let worst = honest_flow(b, &mut rx_a, 20).await;
    let (attempts, took) = churn.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = a.metrics();
    let admitted = after.connections_accepted - before.connections_accepted;
    let resync = after.core.adverts_sent - before.core.adverts_sent;
    eprintln!(
        "churn: {attempts} attempts in {took:?}, {admitted} admitted, {} refused, \
         {resync} adverts sent to the churner, worst honest delivery {worst:?} \
         (without the attack: {quiet:?})",
        after.connections_refused - before.connections_refused
    );
    let policy = p2p_transport::peers::PolicyConfig::default();
    assert!(worst <= HONEST_BOUND, "honest delivery took {worst:?}");
    assert!(
        attempts > u64::from(policy.churn_burst),
        "the churner outran the limit"
    );
    // The first ten were admitted; the next one was refused and banned for 60 s, so every
    // later attempt was refused too.
    assert_eq!(admitted, u64::from(policy.churn_burst));
    assert_eq!(
        after.connections_refused - before.connections_refused,
        attempts - admitted
    );
    // Each admission is owed at most the pool: the node's resync work is bounded by the limit
    // (at most 5,000 x 10 adverts in all; a churner that leaves at once gets far fewer).
    assert!(resync <= 5_000 * admitted, "{resync} adverts");
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Encodes `msgs` as the multiplexer would send them.
fn frames(msgs: &[(Class, Message)]) -> BytesMut {
    let mut mux =
        p2p_transport::mux::MuxSender::new(p2p_transport::mux::MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    for (class, msg) in msgs {
        mux.push(*class, msg).unwrap();
        while mux.poll_transmit(&mut out, 1 << 20) > 0 {}
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asking_for_a_4_mib_artifact_1000_times_gets_bounded_bytes_while_honest_fetches_flow()
 {
    init_log();
    // The 4 MiB artifact travels whole: the rogue repeats requests for the whole of it.
    let (rogue, members, nodes) =
        two_nodes_and_a_rogue_member_with(|c| whole_up_to(c, 8 << 20)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let big = bytes(7, 4 << 20);
    let big_id = a.publish(Kind(1), Bytes::new(), big.clone()).await.unwrap();
    assert_eq!(big_id, ArtifactId::of(&big));
    let mut rx_b = b.take_deliveries().unwrap();
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![big_id]);
    let before = a.metrics();

    let (mut tls, hello) = raw_member_connection(&rogue, members.clone(), a).await;
    hello.unwrap();
    wait_metrics(a, "rogue admitted", |m| m.peers_connected == 2).await;
    let requests: Vec<(Class, Message)> = (0..1_000u64)
        .map(|r| {
            let msg = Message::Request {
                req_id: r,
                id: big_id,
                priority: Priority::NORMAL,
            };
            (Class::Control, msg)
        })
        .collect();
    tls.write_all(&frames(&requests)).await.unwrap();
    // The rogue reads everything it is sent until the node cuts it off.
    let drain = tokio::spawn(async move {
        let (mut total, mut sink) = (0u64, vec![0u8; 1 << 16]);
        while let Ok(n) = tls.read(&mut sink).await {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    // Meanwhile a's artifacts flow to b.
    let worst = honest_flow(a, &mut rx_b, 10).await;
    let read = within(1, "the rogue is cut off", drain).await.unwrap();
    wait_metrics(a, "rogue gone", |m| m.peers_connected == 1).await;
    let after = a.metrics();
    let served = after.core.bytes_served - before.core.bytes_served - 10 * 50_000;
    let cfg = p2p_core::Config::default();
    eprintln!(
        "repeat: rogue read {read} bytes, {served} artifact bytes served to it, \
         {} refused, worst honest delivery {worst:?}",
        after.core.requests_refused - before.core.requests_refused
    );
    assert!(worst <= HONEST_BOUND, "honest delivery took {worst:?}");
    // Before: 1,000 x 4 MiB = 4 GiB queued for the rogue. After: one serve (a repeat within
    // half the request timeout is early), 64 early repeats answered not-found, then cut off.
    assert_eq!(served, 4 << 20, "{served} bytes served");
    assert!(read <= served + (1 << 20), "{read} bytes read");
    let refused = after.core.requests_refused - before.core.requests_refused;
    assert_eq!(refused, u64::from(cfg.max_early_repeats));
    assert_eq!(after.protocol_errors - before.protocol_errors, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}
