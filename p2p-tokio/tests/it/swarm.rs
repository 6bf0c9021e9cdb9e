//! Chunked artifacts on real TLS: a large artifact swarms to every node intact and once, with
//! the peers exchanging chunks; the origin may leave once every chunk left it; an urgent
//! artifact overtakes a bulk swarm; a swarm dropped by the priority function is cancelled on
//! the wire.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use p2p_core::{Advert, Decision, Kind, Priority, PriorityFnRef};
use p2p_tokio::{Deliveries, NodeConfig, NodeHandle};

const MIB: usize = 1 << 20;

/// The bulk kind and the urgent kind of these tests.
const BULK: Kind = Kind(1);
const URGENT: Kind = Kind(2);

/// Kind [`BULK`] at bulk priority, [`URGENT`] at urgent priority, others normal.
fn priorities() -> PriorityFnRef {
    PriorityFnRef::new(|a: &Advert| match a.kind {
        BULK => Decision::Fetch(Priority::BULK),
        URGENT => Decision::Fetch(Priority::URGENT),
        _ => Decision::Fetch(Priority::NORMAL),
    })
}

/// `n` connected nodes with the test configuration, `tune` applied to each with its index.
async fn mesh(n: usize, tune: impl Fn(usize, &mut NodeConfig)) -> Vec<NodeHandle> {
    let configs = identities(n)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = config(id);
            c.core.priority_fn = priorities();
            tune(i, &mut c);
            c
        })
        .collect();
    let nodes = subnet(configs).await;
    wait_connected(&nodes, n as u64 - 1).await;
    nodes
}

/// The number of chunks of an artifact of `size` bytes on `node` (cut into chunks of
/// `chunk_size_for` its size).
fn chunk_count(node: &NodeHandle, size: usize) -> u64 {
    let chunk = p2p_core::chunks::chunk_size_for(size as u64, node.chunk_size());
    (size as u64).div_ceil(u64::from(chunk))
}

/// Receives exactly one artifact, checks its id and bytes, and that nothing else follows
/// within `quiet`.
async fn receive_once(
    rx: &mut Deliveries,
    id: p2p_core::ArtifactId,
    data: &Bytes,
    quiet: Duration,
) {
    let got = receive(rx, 1).await.remove(0);
    assert_eq!(got.artifact.id, id);
    assert!(got.artifact.data == *data, "the delivered bytes differ");
    tokio::time::sleep(quiet).await;
    assert!(rx.try_recv().is_none(), "a second delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_artifact_reaches_every_node_once_and_the_peers_exchange_its_chunks() {
    init_log();
    let nodes = mesh(5, |_, _| {}).await;
    let mut rxs: Vec<Deliveries> = nodes[1..]
        .iter()
        .map(|n| n.take_deliveries().unwrap())
        .collect();
    let size = 4 * MIB;
    let data = bytes(1, size);
    let start = Instant::now();
    let id = nodes[0]
        .publish(BULK, Bytes::new(), data.clone())
        .await
        .unwrap();
    assert_ne!(
        id,
        p2p_core::ArtifactId::of(&data),
        "the artifact is chunked"
    );
    let mut times = Vec::new();
    for rx in &mut rxs {
        receive_once(rx, id, &data, Duration::ZERO).await;
        times.push(start.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for rx in &mut rxs {
        assert!(rx.try_recv().is_none(), "a second delivery");
    }
    let count = chunk_count(&nodes[0], size);
    let origin = nodes[0].metrics().core;
    let others: Vec<p2p_core::Metrics> = nodes[1..].iter().map(|n| n.metrics().core).collect();
    let served_by_peers: u64 = others.iter().map(|m| m.chunks_served).sum();
    eprintln!(
        "4 MiB to 4 nodes: all in {:?}; origin served {} chunks, {} bytes ({:.2} x the size); \
         peers served {:?} chunks",
        times.iter().max().unwrap(),
        origin.chunks_served,
        origin.bytes_served,
        origin.bytes_served as f64 / size as f64,
        others.iter().map(|m| m.chunks_served).collect::<Vec<_>>()
    );
    for m in &others {
        assert_eq!((m.delivered, m.duplicates, m.bad_data), (1, 0, 0));
        assert!(m.chunks_received >= count, "every chunk was received");
    }
    // Without swarming the origin would serve 4 x the size; the stripes make it about 1 x, and
    // a node that passed its patience may still ask the origin for a chunk in flight elsewhere.
    assert!(
        origin.bytes_served <= 2 * size as u64,
        "the origin served {} bytes of a {size}-byte artifact",
        origin.bytes_served
    );
    assert!(
        served_by_peers >= count,
        "the peers exchanged only {served_by_peers} chunks"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_may_leave_once_every_chunk_left_it() {
    init_log();
    // Relaying nodes (the application validates and republishes). A patience longer than the
    // test: the origin serves each node its stripe only, so each chunk leaves it once, and its
    // count of chunks served says that every chunk left it. The other nodes serve each peer at
    // 1 MiB/s, so that the exchange of the 3 MiB each node lacks after its stripe takes about
    // 0.8 s (within the 2 s chunk request timeout): the origin leaves in the middle of it.
    let nodes = mesh(5, |i, c| {
        c.core.auto_relay = true;
        c.core.swarm_patience = Duration::from_secs(60);
        if i > 0 {
            c.core.serve_rate = 1 << 20;
            c.core.serve_burst = 256 << 10;
        }
    })
    .await;
    let mut rxs: Vec<Deliveries> = nodes[1..]
        .iter()
        .map(|n| n.take_deliveries().unwrap())
        .collect();
    let size = 4 * MIB;
    let data = bytes(2, size);
    let count = chunk_count(&nodes[0], size);
    let id = nodes[0]
        .publish(BULK, Bytes::new(), data.clone())
        .await
        .unwrap();
    wait_metrics(&nodes[0], "every chunk served once", |m| {
        m.core.chunks_served >= count
    })
    .await;
    // Every answer queued has left: the origin's socket writes stop (keepalives aside), and
    // a margin for the receivers to read them.
    within(1, "the origin's writes settle", async {
        let mut last = nodes[0].metrics().bytes_written;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = nodes[0].metrics().bytes_written;
            if now == last {
                break;
            }
            last = now;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let origin = nodes[0].metrics().core;
    let received_then: u64 = nodes[1..].iter().map(|n| n.metrics().core.delivered).sum();
    let start = Instant::now();
    nodes[0].shutdown().await;
    for rx in &mut rxs {
        receive_once(rx, id, &data, Duration::ZERO).await;
    }
    let after = start.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (rx, n) in rxs.iter_mut().zip(&nodes[1..]) {
        assert!(rx.try_recv().is_none(), "a second delivery");
        let m = n.metrics().core;
        assert_eq!((m.delivered, m.duplicates, m.bad_data), (1, 0, 0));
    }
    eprintln!(
        "origin left after serving {} of {count} chunks ({} bytes), {received_then} of 4 nodes \
         complete then; all completed {after:?} later",
        origin.chunks_served, origin.bytes_served
    );
    assert_eq!(
        origin.chunks_served, count,
        "within its patience each node asks the origin for its own stripe only"
    );
    assert_eq!(
        received_then, 0,
        "the origin left before any node completed"
    );
    for n in &nodes[1..] {
        n.shutdown().await;
    }
}

/// Publishes `n` urgent artifacts of 8 KiB on `from`, one at a time, and returns the longest
/// time from a publish to its delivery at `rx`.
async fn urgent_latency(from: &NodeHandle, rx: &mut Deliveries, n: u8, tag: u8) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..n {
        let start = Instant::now();
        let id = from
            .publish(URGENT, Bytes::new(), bytes(tag + i, 8 << 10))
            .await
            .unwrap();
        let got = receive(rx, 1).await.remove(0);
        assert_eq!(
            got.artifact.id, id,
            "the urgent artifact overtook the bulk one"
        );
        worst = worst.max(start.elapsed());
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_artifact_overtakes_a_bulk_swarm() {
    init_log();
    let nodes = mesh(3, |_, _| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_b = b.take_deliveries().unwrap();
    let mut rx_c = nodes[2].take_deliveries().unwrap();
    let quiet = urgent_latency(a, &mut rx_b, 5, 10).await;
    receive(&mut rx_c, 5).await;

    let size = 16 * MIB;
    let bulk = bytes(3, size);
    let id = a.publish(BULK, Bytes::new(), bulk.clone()).await.unwrap();
    wait_metrics(b, "the swarm under way", |m| m.core.chunks_received >= 4).await;
    let swarming = b.metrics().core;
    let loaded = urgent_latency(a, &mut rx_b, 5, 20).await;
    let after = b.metrics().core;
    receive_once(&mut rx_b, id, &bulk, Duration::ZERO).await;
    let mut got_c = receive(&mut rx_c, 6).await;
    got_c.retain(|d| d.artifact.id == id);
    assert_eq!(got_c.len(), 1);
    assert!(got_c[0].artifact.data == bulk);
    eprintln!(
        "urgent 8 KiB: worst {quiet:?} quiet, {loaded:?} during a 16 MiB bulk swarm \
         ({} of {} chunks at b before, {} after)",
        swarming.chunks_received,
        chunk_count(a, size),
        after.chunks_received
    );
    // The request timeout of an 8 KiB artifact is about 2 s: the urgent one never waited for
    // the bulk chunks queued before it (16 MiB at b's share of the link would take longer).
    assert!(
        loaded < Duration::from_secs(2),
        "urgent took {loaded:?} under bulk"
    );
    assert_eq!(b.metrics().core.retries, 0, "no urgent request timed out");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_dropped_by_the_priority_function_is_cancelled_on_the_wire() {
    init_log();
    let nodes = mesh(3, |_, _| {}).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut rx_b = b.take_deliveries().unwrap();
    let mut rx_c = c.take_deliveries().unwrap();
    let size = 16 * MIB;
    let bulk = bytes(4, size);
    let count = chunk_count(a, size);
    let id = a.publish(BULK, Bytes::new(), bulk.clone()).await.unwrap();
    wait_metrics(b, "the swarm under way", |m| m.core.chunks_received >= 8).await;
    b.set_priority_fn(PriorityFnRef::new(|a: &Advert| match a.kind {
        BULK => Decision::Drop,
        _ => Decision::Fetch(Priority::NORMAL),
    }))
    .await
    .unwrap();
    b.reevaluate().await.unwrap();
    wait_metrics(b, "the swarm ended", |m| {
        m.core.swarms == 0 && m.core.chunks_in_flight == 0
    })
    .await;
    let dropped = b.metrics().core;
    assert!(
        dropped.chunks_received < count,
        "the drop came before the swarm completed"
    );
    assert!(
        dropped.chunks_cancelled > 0,
        "the requests in flight were cancelled"
    );
    // The other receiver still completes, intact and once.
    receive_once(&mut rx_c, id, &bulk, Duration::ZERO).await;
    // b asks for no more chunks and never delivers the artifact.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = b.metrics().core;
    assert_eq!(later.chunks_requested, dropped.chunks_requested);
    assert!(rx_b.try_recv().is_none(), "b delivered a dropped artifact");
    assert_eq!(later.delivered, 0);
    // Every cancel sent reached its holder; a holder drops the queued answers it has not
    // started (how many is up to timing), never more than the cancels it received.
    let sent: u64 = nodes
        .iter()
        .map(|n| n.metrics().core.chunks_cancelled)
        .sum();
    within(1, "every cancel arrives", async {
        while nodes
            .iter()
            .map(|n| n.metrics().core.cancels_received)
            .sum::<u64>()
            < sent
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let (ma, mc) = (a.metrics(), c.metrics());
    for n in &nodes {
        let m = n.metrics();
        assert!(m.answers_cancelled <= m.core.cancels_received);
    }
    eprintln!(
        "b dropped the swarm at {} of {count} chunks: {} requests cancelled; a received {} \
         cancels and dropped {} queued answers, c received {} and dropped {}",
        dropped.chunks_received,
        dropped.chunks_cancelled,
        ma.core.cancels_received,
        ma.answers_cancelled,
        mc.core.cancels_received,
        mc.answers_cancelled
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
