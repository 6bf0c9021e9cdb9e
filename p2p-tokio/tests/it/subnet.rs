//! A real subnet on loopback: TLS over TCP, delivery of small and large artifacts, late
//! joiners, priorities under load, and live trace recording.

use crate::support::*;
use bytes::Bytes;
use p2p_core::{Advert, ArtifactId, Decision, Kind, Priority, PriorityFnRef};
use p2p_tokio::NodeHandle;
use p2p_trace::{PriorityProfile, Record, Trace, replay};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_node_subnet_delivers_pushed_and_fetched_artifacts_and_a_late_node_resyncs() {
    init_log();
    let mut ids = identities(4).into_iter();
    let nodes = subnet((0..3).map(|_| config(ids.next().unwrap())).collect()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_connected(&nodes, 2).await;
    let mut rx_a = a.take_deliveries().unwrap();
    let mut rx_b = b.take_deliveries().unwrap();
    let mut rx_c = c.take_deliveries().unwrap();

    let small_a = a
        .publish(Kind(1), Bytes::new(), bytes(1, 500))
        .await
        .unwrap();
    let large_a = a
        .publish(Kind(1), Bytes::from_static(b"h=7"), bytes(2, 2 << 20))
        .await
        .unwrap();
    let small_b = b
        .publish(Kind(2), Bytes::new(), bytes(3, 700))
        .await
        .unwrap();

    let got_b = receive(&mut rx_b, 2).await;
    let got_c = receive(&mut rx_c, 3).await;
    let got_a = receive(&mut rx_a, 1).await;
    let mut want = vec![small_a, large_a];
    want.sort();
    assert_eq!(ids_of(&got_b), want);
    // The small artifact comes from its origin; the chunked one from whoever sent its last chunk.
    assert!(
        got_b
            .iter()
            .all(|d| d.from == a.node_id() || (d.artifact.id == large_a && d.from == c.node_id()))
    );
    let mut all = vec![small_a, large_a, small_b];
    all.sort();
    assert_eq!(ids_of(&got_c), all);
    assert_eq!(ids_of(&got_a), vec![small_b]);
    let large = got_c.iter().find(|d| d.artifact.id == large_a).unwrap();
    assert_eq!(large.artifact.data.len(), 2 << 20);
    assert_eq!(&large.artifact.attr[..], b"h=7");
    // The small artifacts were pushed whole; the large one was advertised and fetched.
    assert!(c.metrics().core.pushes_received >= 2);
    assert!(c.metrics().core.requests_sent >= 1);

    // A fourth node joins with registry version 2; it catches up through the resync adverts.
    let d = p2p_tokio::start(config(ids.next().unwrap()), registry(2, &[a, b, c]))
        .await
        .unwrap();
    let reg = registry(2, &[a, b, c, &d]);
    d.update_registry(reg.clone()).await.unwrap();
    for n in &nodes {
        n.update_registry(reg.clone()).await.unwrap();
    }
    let mut rx_d = d.take_deliveries().unwrap();
    let got_d = receive(&mut rx_d, 3).await;
    assert_eq!(ids_of(&got_d), all);
    wait_connected(std::slice::from_ref(&d), 3).await;

    // Exactly once: nothing was delivered twice anywhere.
    assert_eq!(a.metrics().core.delivered, 1);
    assert_eq!(b.metrics().core.delivered, 2);
    assert_eq!(c.metrics().core.delivered, 3);
    assert_eq!(d.metrics().core.delivered, 3);
    for n in nodes.iter().chain([&d]) {
        let m = n.metrics();
        assert!(m.bytes_written > 0 && m.bytes_read > 0);
        n.shutdown().await;
    }
    // The TLS bytes on the wire cover at least the large artifact's three copies.
    let written: u64 = nodes.iter().map(|n| n.metrics().bytes_written).sum();
    assert!(written > 3 * (2 << 20), "bytes written {written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_artifact_overtakes_bulk_artifacts_saturating_the_link() {
    init_log();
    const BULK: usize = 6;
    let mut ids = identities(2).into_iter();
    let configs = (0..2)
        .map(|_| {
            let mut cfg = config(ids.next().unwrap());
            // A busy link: small socket buffers, and all the bulk queued at once.
            cfg.socket_buffer = Some(16 << 10);
            cfg.mux.high_water = 56 << 20;
            cfg.core.max_in_flight_bytes_per_peer = 64 << 20;
            // Bulk waits (`Later`) until every bulk artifact is advertised.
            cfg.core.priority_fn = urgent_now_bulk_later();
            cfg
        })
        .collect();
    let nodes = subnet(configs).await;
    wait_connected(&nodes, 1).await;
    let pos = urgent_position_behind_bulk(&nodes[0], &nodes[1], BULK, 8 << 20).await;
    assert_eq!(
        pos, 0,
        "the urgent artifact was delivered after {pos} bulk artifacts"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_trace_of_a_real_transfer_replays_to_identical_outputs() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.trace");
    let mut ids = identities(2).into_iter();
    let a_cfg = config(ids.next().unwrap());
    let mut b_cfg = config(ids.next().unwrap());
    b_cfg.record_trace = Some(path.clone());
    b_cfg.record_trace_profile = Some(PriorityProfile::FetchAll);
    // Each node draws its secret seed from the operating system; the trace keeps it.
    let (a_seed, b_seed) = (a_cfg.core.seed, b_cfg.core.seed);
    assert_ne!(a_seed, b_seed, "seeds are drawn, not fixed");
    let nodes = subnet(vec![a_cfg, b_cfg]).await;
    let (a, b): (&NodeHandle, &NodeHandle) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    let mut rx = b.take_deliveries().unwrap();
    a.publish(Kind(1), Bytes::new(), bytes(1, 300))
        .await
        .unwrap();
    a.publish(Kind(1), Bytes::new(), bytes(2, 1 << 20))
        .await
        .unwrap();
    b.publish(Kind(1), Bytes::new(), bytes(3, 5000))
        .await
        .unwrap();
    receive(&mut rx, 2).await;
    b.set_priority_profile(PriorityProfile::FetchAll)
        .await
        .unwrap();
    // The trace is flushed on shutdown.
    b.shutdown().await;
    a.shutdown().await;

    let trace = Trace::read_file(&path).unwrap();
    assert_eq!(trace.header.node, b.node_id());
    assert_eq!(
        trace.header.config.seed, b_seed,
        "the trace records the secret seed"
    );
    let report = replay(&trace);
    assert!(
        report.is_identical(),
        "{}",
        report.divergence.map(|d| d.to_string()).unwrap_or_default()
    );
    // Membership, connection, messages, publish, timers: a real run, not an empty file.
    assert!(report.inputs >= 6, "only {} inputs recorded", report.inputs);
    assert!(
        report.outputs_matched >= 4,
        "only {} outputs",
        report.outputs_matched
    );
}

/// What the receiving node of [`custom_priority_run`] delivered: before the priority function
/// was swapped, and after.
struct CustomRun {
    before_swap: Vec<ArtifactId>,
    after_swap: Vec<ArtifactId>,
    kinds: HashMap<ArtifactId, u16>,
}

/// Two nodes; the second runs priority closures over state no trace can know (a captured table,
/// a call counter, an atomic priority): kind 1 is fetched at the table's priority, kind 2 is kept
/// for later and kind 3 dropped; then `set_priority_fn` swaps in a closure that fetches kind 2
/// too. Records the second node's trace to `record` if given.
async fn custom_priority_run(record: Option<PathBuf>) -> CustomRun {
    let mut ids = identities(2).into_iter();
    let a_cfg = config(ids.next().unwrap());
    let mut b_cfg = config(ids.next().unwrap());
    let table: Arc<HashMap<u16, Priority>> = Arc::new([(1, Priority(200))].into());
    let calls = Arc::new(AtomicU64::new(0));
    let first = {
        let (table, calls) = (Arc::clone(&table), Arc::clone(&calls));
        move |a: &Advert| {
            calls.fetch_add(1, Ordering::Relaxed);
            match a.kind.0 {
                k if table.contains_key(&k) => Decision::Fetch(table[&k]),
                2 => Decision::Later,
                _ => Decision::Drop,
            }
        }
    };
    b_cfg.core.priority_fn = PriorityFnRef::new(first);
    b_cfg.record_trace = record;
    let nodes = subnet(vec![a_cfg, b_cfg]).await;
    let (a, b): (&NodeHandle, &NodeHandle) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    let mut rx = b.take_deliveries().unwrap();
    let mut kinds = HashMap::new();
    let mut publish = async |kind: u16, tag: u8, len: usize| {
        let id = a
            .publish(Kind(kind), Bytes::new(), bytes(tag, len))
            .await
            .unwrap();
        kinds.insert(id, kind);
    };
    // Kinds 2 and 3 first: their adverts reach b before the kind 1 artifacts are delivered.
    // Kind 2 is advertised (over the push threshold): a push is refused only when dropped.
    publish(2, 20, 3000).await;
    publish(2, 21, 50_000).await;
    publish(3, 30, 400).await;
    publish(3, 31, 60_000).await;
    publish(1, 10, 500).await;
    publish(1, 11, 200_000).await;
    let before_swap = ids_of(&receive(&mut rx, 2).await);
    assert_eq!(
        b.metrics().core.delivered,
        2,
        "only kind 1 is fetched at first"
    );
    assert!(calls.load(Ordering::Relaxed) >= 6);

    let prio2 = Arc::new(AtomicU8::new(90));
    let second = {
        let (table, prio2) = (Arc::clone(&table), Arc::clone(&prio2));
        move |a: &Advert| match a.kind.0 {
            k if table.contains_key(&k) => Decision::Fetch(table[&k]),
            2 => Decision::Fetch(Priority(prio2.load(Ordering::Relaxed))),
            _ => Decision::Drop,
        }
    };
    b.set_priority_fn(PriorityFnRef::new(second)).await.unwrap();
    let after_swap = ids_of(&receive(&mut rx, 2).await);
    // Kind 3 was dropped: a last kind 1 artifact arrives, and nothing of kind 3 before it.
    publish(1, 12, 3000).await;
    let last = ids_of(&receive(&mut rx, 1).await);
    assert_eq!(kinds[&last[0]], 1);
    assert_eq!(b.metrics().core.delivered, 5);
    b.shutdown().await;
    a.shutdown().await;
    CustomRun {
        before_swap,
        after_swap,
        kinds,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_trace_of_custom_priority_closures_swapped_mid_run_replays_bit_for_bit() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.trace");
    let run = custom_priority_run(Some(path.clone())).await;
    assert!(run.before_swap.iter().all(|id| run.kinds[id] == 1));
    assert!(run.after_swap.iter().all(|id| run.kinds[id] == 2));

    let trace = Trace::read_file(&path).unwrap();
    assert!(trace.header.decisions, "a live trace records decisions");
    let decided: Vec<Decision> = trace
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Decisions { decisions, .. } => Some(decisions.iter().map(|d| d.decision)),
            _ => None,
        })
        .flatten()
        .collect();
    for want in [
        Decision::Fetch(Priority(200)),
        Decision::Fetch(Priority(90)),
        Decision::Later,
        Decision::Drop,
    ] {
        assert!(decided.contains(&want), "no {want:?} in {decided:?}");
    }
    let report = replay(&trace);
    assert!(
        report.is_identical(),
        "{}",
        report.divergence.map(|d| d.to_string()).unwrap_or_default()
    );
    assert!(report.outputs_matched >= 10, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_a_trace_does_not_change_what_a_custom_priority_function_gets_delivered() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let recorded = custom_priority_run(Some(dir.path().join("b.trace"))).await;
    let plain = custom_priority_run(None).await;
    assert_eq!(recorded.before_swap, plain.before_swap);
    assert_eq!(recorded.after_swap, plain.after_swap);
    assert_eq!(recorded.kinds, plain.kinds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_is_fed_at_its_own_pace_and_does_not_slow_the_others() {
    init_log();
    const COUNT: usize = 12;
    let mut ids = identities(3).into_iter();
    let mut configs = Vec::new();
    for i in 0..3 {
        let mut cfg = config(ids.next().unwrap());
        cfg.socket_buffer = Some(64 << 10);
        if i == 0 {
            // The sender: congested towards a peer past 1 MiB queued.
            cfg.mux.high_water = 1 << 20;
        }
        if i == 1 {
            // The slow peer: its application takes nothing for now, and it reads no further
            // ahead than one message.
            cfg.delivery_buffer = 1;
            cfg.event_buffer = 1;
        }
        configs.push(cfg);
    }
    let nodes = subnet(configs).await;
    let (a, slow, fast) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_connected(&nodes, 2).await;
    let mut rx_slow = slow.take_deliveries().unwrap();
    let mut rx_fast = fast.take_deliveries().unwrap();

    let data: Vec<Bytes> = (0..COUNT).map(|i| bytes(40 + i as u8, 1 << 20)).collect();
    let mut ids = Vec::new();
    for d in data {
        ids.push(a.publish(Kind(1), Bytes::new(), d).await.unwrap());
    }
    ids.sort();
    // The fast peer gets everything while the slow one holds back.
    assert_eq!(ids_of(&receive(&mut rx_fast, COUNT).await), ids);
    wait_metrics(a, "congestion towards the slow peer", |m| {
        m.congestion_events >= 1
    })
    .await;
    // The slow node stopped reading once one delivery waited in its full channel.
    let stalled = slow.metrics().core.delivered;
    assert!(stalled <= 2, "the slow peer took {stalled} deliveries");
    // Nothing was lost or cut: once the slow application reads, everything arrives.
    assert_eq!(ids_of(&receive(&mut rx_slow, COUNT).await), ids);
    let m = a.metrics();
    assert_eq!(m.send_queue_overflows, 0);
    assert_eq!(m.disconnects, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_channel_is_bounded_in_bytes_and_loses_nothing() {
    init_log();
    const COUNT: usize = 10;
    let mut ids = identities(2).into_iter();
    let a_cfg = config(ids.next().unwrap());
    let mut b_cfg = config(ids.next().unwrap());
    // Room for a thousand deliveries by count, but only two 1 MiB artifacts by bytes.
    b_cfg.delivery_buffer = 1000;
    b_cfg.delivery_buffer_bytes = 2 << 20;
    let nodes = subnet(vec![a_cfg, b_cfg]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    let mut rx = b.take_deliveries().unwrap();
    let mut ids = Vec::new();
    for i in 0..COUNT {
        let data = bytes(60 + i as u8, 1 << 20);
        ids.push(a.publish(Kind(1), Bytes::new(), data).await.unwrap());
    }
    ids.sort();
    wait_metrics(b, "two deliveries queued", |m| m.core.delivered >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two fill the byte budget, one more waits in the node task, which then stops reading.
    let held = b.metrics().core.delivered;
    assert!(
        held <= 4,
        "the node took {held} MiB of deliveries ahead of the application"
    );
    assert_eq!(ids_of(&receive(&mut rx, COUNT).await), ids);
    for n in &nodes {
        n.shutdown().await;
    }
}
