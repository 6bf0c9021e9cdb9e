//! Express lanes on real TLS: the main connection's dialer opens a second connection for
//! control and urgent messages; urgent traffic overtakes bulk bytes already in the kernel; a
//! node without lanes keeps one connection; hostile lanes (unasked, early, orphaned) are
//! refused or dropped within their bounds while honest traffic flows.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use p2p_core::Kind;
use p2p_tokio::NodeConfig;
use p2p_transport::codec::{ConnRole, Hello};
use tokio::io::AsyncReadExt;

/// Starts two nodes and waits until they are connected and each has its express lane.
async fn pair_with_lanes(configs: Vec<NodeConfig>) -> Vec<p2p_tokio::NodeHandle> {
    let nodes = subnet(configs).await;
    wait_connected(&nodes, 1).await;
    for n in &nodes {
        wait_metrics(n, "an express lane", |m| m.peers_express == 1).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_open_an_express_lane_for_control_and_urgent_messages() {
    init_log();
    let configs = identities(2).into_iter().map(config).collect();
    let nodes = subnet(configs).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    for n in &nodes {
        wait_metrics(n, "an express lane", |m| m.peers_express == 1).await;
    }
    let mut rx = b.take_deliveries().unwrap();
    // Small artifacts are pushed in the urgent class; a large one is fetched in chunks, whose
    // answers travel in the requester's (normal) class on the main connection.
    let mut ids = Vec::new();
    for i in 0..5u8 {
        ids.push(
            a.publish(Kind(1), Bytes::new(), bytes(i, 300))
                .await
                .unwrap(),
        );
    }
    ids.push(
        a.publish(Kind(1), Bytes::new(), bytes(9, 1 << 20))
            .await
            .unwrap(),
    );
    ids.sort();
    assert_eq!(ids_of(&receive(&mut rx, 6).await), ids);
    let (ma, mb) = (a.metrics(), b.metrics());
    assert!(
        ma.messages_sent_express >= 6,
        "5 pushes and an advert on the lane: {}",
        ma.messages_sent_express
    );
    assert!(
        mb.messages_sent_express >= 2,
        "the manifest and chunk requests on the lane: {}",
        mb.messages_sent_express
    );
    assert!(
        ma.messages_sent > ma.messages_sent_express,
        "the chunks on the main connection"
    );
    assert_eq!((ma.express_lanes_opened, mb.express_lanes_opened), (1, 1));
    assert_eq!(ma.express_lanes_failed + mb.express_lanes_failed, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Bulk artifacts fill the main connection's kernel buffers (no `TCP_NOTSENT_LOWAT`, large
/// socket buffers and writes): a single TCP connection would deliver the urgent artifact's
/// request and answer behind them; the express lane carries both past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_artifact_overtakes_bulk_bytes_already_in_the_kernel() {
    init_log();
    const BULK: usize = 6;
    let configs = identities(2)
        .into_iter()
        .map(|id| {
            let mut cfg = config(id);
            cfg.tcp_notsent_lowat = None;
            cfg.socket_buffer = Some(4 << 20);
            cfg.write_chunk = 8 << 20;
            cfg.mux.high_water = 56 << 20;
            cfg.core.max_in_flight_bytes_per_peer = 64 << 20;
            cfg.core.priority_fn = urgent_now_bulk_later();
            // Whole artifacts: the bulk is six 8 MiB answers, each one message.
            whole_up_to(&mut cfg, 8 << 20);
            cfg
        })
        .collect();
    let nodes = pair_with_lanes(configs).await;
    let pos = urgent_position_behind_bulk(&nodes[0], &nodes[1], BULK, 8 << 20).await;
    assert_eq!(
        pos, 0,
        "the urgent artifact was delivered after {pos} bulk artifacts"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

/// With `express_runtime` set, each node's express lane tasks (a reader and a writer) run on
/// that runtime, a thread of its own here, and the traffic flows as on one runtime; the tasks
/// end there when the nodes shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_lanes_run_on_the_runtime_the_embedder_gives() {
    init_log();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lanes = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async {
            let _ = stopped.await;
        })
    });
    let configs = identities(2)
        .into_iter()
        .map(|id| {
            let mut cfg = config(id);
            cfg.express_runtime = Some(lanes.clone());
            cfg
        })
        .collect();
    let nodes = pair_with_lanes(configs).await;
    assert_eq!(
        lanes.metrics().num_alive_tasks(),
        4,
        "a reader and a writer per node's lane"
    );
    let mut rx = nodes[1].take_deliveries().unwrap();
    let mut ids = Vec::new();
    for (i, size) in [(1u8, 300), (2, 1 << 20)] {
        ids.push(
            nodes[0]
                .publish(Kind(1), Bytes::new(), bytes(i, size))
                .await
                .unwrap(),
        );
    }
    ids.sort();
    assert_eq!(ids_of(&receive(&mut rx, 2).await), ids);
    assert!(nodes[0].metrics().messages_sent_express >= 2);
    for n in &nodes {
        n.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lanes.metrics().num_alive_tasks() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lane tasks outlived their nodes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_express_lanes_keeps_one_connection() {
    init_log();
    let configs = identities(3)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut cfg = config(id);
            // The middle node takes no lanes: the others keep one with each other only.
            cfg.express.enabled = i != 1;
            cfg
        })
        .collect();
    let nodes = subnet(configs).await;
    wait_connected(&nodes, 2).await;
    wait_metrics(&nodes[0], "one express lane", |m| m.peers_express == 1).await;
    wait_metrics(&nodes[2], "one express lane", |m| m.peers_express == 1).await;
    let mut rx = nodes[1].take_deliveries().unwrap();
    let id = nodes[0]
        .publish(Kind(1), Bytes::new(), bytes(1, 300))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx, 1).await), [id]);
    let m = nodes[1].metrics();
    assert_eq!((m.peers_express, m.messages_sent_express), (0, 0));
    assert_eq!(m.express_lanes_failed, 0, "nobody tried");
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A member opens lanes the node never offered or before any main connection, over and over:
/// each is refused or held (one per member) and dropped after the hold timeout, and the honest
/// members' artifacts keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unasked_and_orphaned_express_lanes_are_refused_or_dropped_and_honest_traffic_flows() {
    init_log();
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member_with(|c| {
        c.express.hold_timeout = Duration::from_millis(300);
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx = b.take_deliveries().unwrap();
    let express = Hello::with_role(2, ConnRole::Express);

    // Orphans: lanes with no main connection, each held, the older replaced.
    let mut orphans = Vec::new();
    for _ in 0..5 {
        let (tls, hello) = raw_member_connection_as(&rogue, members.clone(), a, express).await;
        assert!(hello.is_ok(), "the node answers a lane's hello: {hello:?}");
        orphans.push(tls);
        let id = a
            .publish(Kind(1), Bytes::new(), bytes(orphans.len() as u8, 300))
            .await
            .unwrap();
        assert_eq!(ids_of(&receive(&mut rx, 1).await), [id]);
        assert!(a.metrics().express_lanes_held <= 1, "one held per member");
    }
    wait_metrics(a, "the orphan dropped", |m| {
        m.express_lanes_held == 0 && m.express_lanes_failed == 5
    })
    .await;
    // Every orphan's stream ends: replaced, or dropped at the hold timeout.
    for mut tls in orphans {
        let mut buf = [0u8; 64];
        let end = within(1, "an orphan lane ends", async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        end.await;
    }

    // A main connection that offers no lane, then a lane anyway: refused, the main stays.
    let (_main, hello) = raw_member_connection(&rogue, members.clone(), a).await;
    assert_eq!(
        hello.unwrap().role,
        ConnRole::Main { express: true },
        "the node offers lanes"
    );
    wait_metrics(a, "the rogue's main connection", |m| m.peers_connected == 2).await;
    let (_lane, _) = raw_member_connection_as(&rogue, members.clone(), a, express).await;
    wait_metrics(a, "the unasked lane refused", |m| {
        m.express_lanes_failed == 6
    })
    .await;
    let m = a.metrics();
    assert_eq!(
        (m.peers_connected, m.peers_express),
        (2, 1),
        "b's lane only"
    );
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(50, 300))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx, 1).await), [id]);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A lane that arrives before its main connection is attached when the main connection comes;
/// when the lane ends, its main connection ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_lane_is_attached_to_its_main_connection_and_ends_with_it() {
    init_log();
    let (rogue, members, nodes) = two_nodes_and_a_rogue_member().await;
    let a = &nodes[0];
    let express = Hello::with_role(2, ConnRole::Express);
    let (lane, _) = raw_member_connection_as(&rogue, members.clone(), a, express).await;
    wait_metrics(a, "the lane held", |m| m.express_lanes_held == 1).await;
    let offers = Hello::with_role(2, ConnRole::Main { express: true });
    let (_main, _) = raw_member_connection_as(&rogue, members.clone(), a, offers).await;
    wait_metrics(a, "the lane attached", |m| {
        m.peers_connected == 2 && m.peers_express == 2 && m.express_lanes_held == 0
    })
    .await;
    let before = a.metrics().disconnects;
    drop(lane);
    wait_metrics(a, "the main connection closed with its lane", |m| {
        m.peers_connected == 1 && m.peers_express == 1 && m.disconnects == before + 1
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Dropping a peer's connection (both links) brings both back, and artifacts published after
/// it arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_comes_back_with_its_lane() {
    init_log();
    let configs: Vec<NodeConfig> = identities(2).into_iter().map(config).collect();
    let nodes = subnet(configs).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(&nodes, 1).await;
    wait_metrics(a, "an express lane", |m| m.peers_express == 1).await;
    assert!(a.drop_connection(b.node_id()).await.unwrap());
    wait_metrics(a, "the lane back", |m| {
        m.express_lanes_opened == 2 && m.peers_express == 1 && m.peers_connected == 1
    })
    .await;
    let mut rx = b.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(7, 300))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx, 1).await), [id]);
    for n in &nodes {
        n.shutdown().await;
    }
}
