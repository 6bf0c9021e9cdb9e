//! A partial mesh over real TLS: eight nodes with `Topology::Degree(3)` connect to their
//! neighbours in the derived graph only, relay artifacts to the others, survive the loss of
//! one node, and rewire when the registry drops it.

use crate::support::*;
use bytes::Bytes;
use p2p_core::{Kind, NodeId};
use p2p_tokio::{Deliveries, NodeHandle};
use p2p_transport::topology::{self, Topology};
use std::collections::BTreeSet;
use std::time::Duration;

/// Waits until every node in `nodes` is connected to exactly its neighbours among `members`.
async fn wait_for_topology(nodes: &[&NodeHandle], topo: &Topology, members: &[NodeId]) {
    for node in nodes {
        let want = topo.neighbours(&node.node_id(), members);
        // The status figure: how many neighbours the node has by its topology.
        assert_eq!(node.metrics().peers_neighbours, want.len() as u64);
        within(1, "the node's connections to match its neighbours", async {
            loop {
                let got: BTreeSet<NodeId> = node
                    .connected_peers()
                    .await
                    .expect("running")
                    .into_iter()
                    .collect();
                if got == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// Publishes one artifact on `from` and waits until every node of `to` delivered it; returns,
/// per node, the peer it came from.
async fn broadcast(
    from: &NodeHandle,
    to: &mut [(NodeId, Deliveries)],
    tag: u8,
) -> Vec<(NodeId, NodeId)> {
    let id = from
        .publish(Kind(1), Bytes::new(), bytes(tag, 2_000))
        .await
        .expect("published");
    let mut sources = Vec::new();
    for (node, rx) in to.iter_mut() {
        let got = receive(rx, 1).await;
        assert_eq!(got[0].artifact.id, id);
        sources.push((*node, got[0].from));
    }
    sources
}

/// Degree 3 joins each node to the two on each side of a ring (plus a chord ring): that
/// backbone stays connected when any one node fails, so relaying reaches every other node
/// before the registry drops the failed one; once it does, the nodes rewire to the graph of
/// the seven remaining members and deliver again; a newcomer then makes some of them prune an
/// edge (no ban) and connect to it, and delivery reaches it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degree_3_mesh_relays_to_all_survives_a_failure_and_rewires() {
    init_log();
    let topo = Topology::Degree(3);
    let configs = identities(8)
        .into_iter()
        .map(|identity| {
            let mut c = config(identity);
            c.topology = topo.clone();
            c.core.auto_relay = true;
            c
        })
        .collect();
    let nodes = subnet(configs).await;
    let refs: Vec<&NodeHandle> = nodes.iter().collect();
    let all = node_ids(&refs);
    wait_for_topology(&refs, &topo, &all).await;

    let publisher = &nodes[0];
    let own = topo.neighbours(&publisher.node_id(), &all);
    assert!(
        own.len() < 7,
        "some nodes are not the publisher's neighbours"
    );
    let mut rxs: Vec<(NodeId, Deliveries)> = nodes[1..]
        .iter()
        .map(|n| (n.node_id(), n.take_deliveries().unwrap()))
        .collect();
    // Every node gets it: the publisher's neighbours from the publisher, the others through
    // relays, from a neighbour of theirs.
    for (node, from) in broadcast(publisher, &mut rxs, 1).await {
        assert!(topo.neighbours(&node, &all).contains(&from));
        assert_eq!(from == publisher.node_id(), own.contains(&node));
    }

    // The node with the most neighbours (not the publisher) fails.
    let victim = (1..nodes.len())
        .max_by_key(|i| topo.neighbours(&nodes[*i].node_id(), &all).len())
        .unwrap();
    let victim_id = nodes[victim].node_id();
    nodes[victim].shutdown().await;
    rxs.retain(|(id, _)| *id != victim_id);
    let before_update = topo.neighbours(&publisher.node_id(), &all);
    for (node, from) in broadcast(publisher, &mut rxs, 2).await {
        assert!(from != victim_id);
        assert!(topo.neighbours(&node, &all).contains(&from));
    }
    assert!(before_update.len() >= 3);

    // The registry drops it: every node rewires to the graph over the seven left.
    let rest: Vec<&NodeHandle> = refs
        .iter()
        .copied()
        .filter(|n| n.node_id() != victim_id)
        .collect();
    let reg = registry(2, &rest);
    for n in &rest {
        n.update_registry(reg.clone()).await.unwrap();
    }
    let remaining = node_ids(&rest);
    wait_for_topology(&rest, &topo, &remaining).await;
    for (node, from) in broadcast(publisher, &mut rxs, 3).await {
        assert!(topo.neighbours(&node, &remaining).contains(&from));
    }

    // A newcomer takes places in the rings: the members it separates lose their edge (pruned,
    // no ban) and connect to it instead. Of a few fresh identities, take one that separates
    // some pair, so that the pruning shows.
    let old_edges = topology::edges(&topo.graph(&remaining).unwrap());
    let identity = std::iter::repeat_with(|| identities(1).remove(0))
        .take(64)
        .find(|i| {
            let mut m = remaining.clone();
            m.push(i.node_id());
            let new_edges = topology::edges(&topo.graph(&m).unwrap());
            old_edges.difference(&new_edges).next().is_some()
        })
        .expect("some identity separates a pair");
    let mut c = config(identity);
    c.topology = topo.clone();
    c.core.auto_relay = true;
    let newcomer = p2p_tokio::start(c, p2p_tokio::Registry::default())
        .await
        .unwrap();
    let mut with_newcomer = rest.clone();
    with_newcomer.push(&newcomer);
    let reg = registry(3, &with_newcomer);
    for n in &with_newcomer {
        n.update_registry(reg.clone()).await.unwrap();
    }
    let members = node_ids(&with_newcomer);
    wait_for_topology(&with_newcomer, &topo, &members).await;
    // It catches up on the three earlier artifacts from its neighbours' pools.
    let mut rx = newcomer.take_deliveries().unwrap();
    let caught_up = receive(&mut rx, 3).await;
    assert_eq!(ids_of(&caught_up).len(), 3);
    rxs.push((newcomer.node_id(), rx));
    for (node, from) in broadcast(publisher, &mut rxs, 4).await {
        assert!(topo.neighbours(&node, &members).contains(&from));
    }
    for n in &with_newcomer {
        let m = n.metrics();
        assert_eq!(m.protocol_errors, 0, "no one was cut off for misbehaviour");
    }
    for n in &with_newcomer {
        n.shutdown().await;
    }
}
