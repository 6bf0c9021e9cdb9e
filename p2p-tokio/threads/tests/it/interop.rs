//! Threaded nodes and tokio nodes in one subnet on 127.0.0.1: artifacts flow both ways, pushed
//! and fetched, priorities hold, and a node outside the registry is refused by both kinds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_core::{Advert, ArtifactId, Decision, Kind, NodeId, Priority, PriorityFnRef};
use p2p_threads::{Member, Registry, ThreadedConfig, ThreadedNode};
use p2p_tokio::{NodeConfig, NodeHandle};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::topology::Topology;
use tokio::runtime::Runtime;

use crate::support::{bytes, identities};

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(20);
/// A kind every node drops, and one every node fetches at the urgent priority.
const DROPPED: Kind = Kind(9);
const URGENT: Kind = Kind(7);

fn priorities() -> PriorityFnRef {
    PriorityFnRef::new(|a: &Advert| match a.kind {
        DROPPED => Decision::Drop,
        URGENT => Decision::Fetch(Priority::URGENT),
        _ => Decision::Fetch(Priority::NORMAL),
    })
}

fn localhost() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn tokio_config(identity: NodeIdentity) -> NodeConfig {
    let mut cfg = NodeConfig::new(identity, localhost());
    cfg.reconnect_backoff_min = Duration::from_millis(20);
    cfg.reconnect_backoff_max = Duration::from_millis(500);
    cfg.keepalive_interval = Duration::from_millis(500);
    cfg.idle_timeout = Duration::from_secs(5);
    cfg.core.retry_backoff_initial = Duration::from_millis(50);
    cfg.core.retry_backoff_max = Duration::from_millis(500);
    cfg.core.priority_fn = priorities();
    cfg
}

fn threaded_config(identity: NodeIdentity) -> ThreadedConfig {
    let mut cfg = ThreadedConfig::new(identity, localhost()).expect("config");
    cfg.policy.backoff_min = Duration::from_millis(20);
    cfg.policy.backoff_max = Duration::from_millis(500);
    cfg.conn.keepalive_interval = Duration::from_millis(500);
    cfg.conn.idle_timeout = Duration::from_secs(5);
    cfg.core.retry_backoff_initial = Duration::from_millis(50);
    cfg.core.retry_backoff_max = Duration::from_millis(500);
    cfg.core.priority_fn = priorities();
    cfg
}

/// One node of either kind, with what the test needs of it.
enum Any {
    Threaded(ThreadedNode),
    Tokio(NodeHandle, p2p_tokio::Deliveries),
}

impl Any {
    fn start(rt: &Runtime, identity: NodeIdentity, threaded: bool) -> Any {
        Any::start_in(rt, identity, threaded, Topology::All)
    }

    /// A node that connects to its neighbours in `topology` (relaying, if it is partial).
    fn start_in(rt: &Runtime, identity: NodeIdentity, threaded: bool, topology: Topology) -> Any {
        Any::start_at(rt, identity, threaded, topology, localhost())
    }

    /// A node listening on `listen`.
    fn start_at(
        rt: &Runtime,
        identity: NodeIdentity,
        threaded: bool,
        topology: Topology,
        listen: std::net::SocketAddr,
    ) -> Any {
        let relay = !topology.is_full();
        if threaded {
            let mut cfg = threaded_config(identity);
            cfg.listen = listen;
            cfg.policy.topology = topology;
            cfg.core.auto_relay = relay;
            let node = ThreadedNode::start(cfg, Registry::default());
            Any::Threaded(node.expect("threaded start"))
        } else {
            let mut cfg = tokio_config(identity);
            cfg.listen = listen;
            cfg.topology = topology;
            cfg.core.auto_relay = relay;
            let node = rt
                .block_on(p2p_tokio::start(cfg, p2p_tokio::Registry::default()))
                .expect("tokio start");
            let deliveries = node.take_deliveries().expect("deliveries");
            Any::Tokio(node, deliveries)
        }
    }

    fn id(&self) -> NodeId {
        match self {
            Any::Threaded(n) => n.node_id(),
            Any::Tokio(n, _) => n.node_id(),
        }
    }

    fn member(&self) -> Member {
        let addr = match self {
            Any::Threaded(n) => n.local_addr(),
            Any::Tokio(n, _) => n.local_addr(),
        };
        Member {
            id: self.id(),
            addr,
        }
    }

    fn install(&self, rt: &Runtime, version: u64, members: &[Member]) {
        match self {
            Any::Threaded(n) => n
                .update_registry(Registry::new(version, members.iter().copied()))
                .expect("registry"),
            Any::Tokio(n, _) => {
                let reg = p2p_tokio::Registry::new(
                    version,
                    members.iter().map(|m| p2p_tokio::Member {
                        id: m.id,
                        addr: m.addr,
                    }),
                );
                rt.block_on(n.update_registry(reg)).expect("registry");
            }
        }
    }

    fn publish(&self, rt: &Runtime, kind: Kind, data: Bytes) -> ArtifactId {
        match self {
            Any::Threaded(n) => n.publish(kind, Bytes::new(), data).expect("publish"),
            Any::Tokio(n, _) => rt
                .block_on(n.publish(kind, Bytes::new(), data))
                .expect("publish"),
        }
    }

    fn peers(&self, rt: &Runtime) -> Vec<NodeId> {
        match self {
            Any::Threaded(n) => n.peers().expect("peers"),
            Any::Tokio(n, _) => rt.block_on(n.connected_peers()).expect("peers"),
        }
    }

    fn refused(&self) -> u64 {
        match self {
            Any::Threaded(n) => n.stats().connections_refused,
            Any::Tokio(n, _) => n.metrics().connections_refused,
        }
    }

    /// The next delivery within `wait`: (id, sender, bytes).
    fn next_delivery(
        &mut self,
        rt: &Runtime,
        wait: Duration,
    ) -> Option<(ArtifactId, NodeId, Bytes)> {
        match self {
            Any::Threaded(n) => n
                .deliveries()
                .recv_timeout(wait)
                .ok()
                .map(|d| (d.artifact.id, d.from, d.artifact.data)),
            Any::Tokio(_, deliveries) => rt
                .block_on(async { tokio::time::timeout(wait, deliveries.recv()).await })
                .ok()
                .flatten()
                .map(|d| (d.artifact.id, d.from, d.artifact.data)),
        }
    }

    fn shutdown(self, rt: &Runtime) {
        match self {
            Any::Threaded(n) => n.shutdown(),
            Any::Tokio(n, _) => rt.block_on(n.shutdown()),
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits until `node` has exactly `peers` as its connected peers.
fn wait_peers(rt: &Runtime, node: &Any, peers: &BTreeSet<NodeId>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now: BTreeSet<NodeId> = node.peers(rt).into_iter().collect();
        if now == *peers {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} has peers {now:?}, expected {peers:?}",
            node.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Receives exactly the artifacts `expected` (id -> data) on `node`, each from `from`.
fn expect_deliveries(rt: &Runtime, node: &mut Any, expected: &[(ArtifactId, Bytes)], from: NodeId) {
    let deadline = Instant::now() + WAIT;
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((id, sender, data)) = node.next_delivery(rt, left) else {
            panic!(
                "{:?} received {} of {} artifacts in time",
                node.id(),
                got.len(),
                expected.len()
            );
        };
        let want = expected.iter().find(|(e, _)| *e == id);
        let Some((_, bytes)) = want else {
            panic!("{:?} received an unexpected artifact {id:?}", node.id());
        };
        assert_eq!(&data, bytes, "the delivered bytes are the published ones");
        if bytes.len() <= p2p_core::chunks::DEFAULT_CHUNK_SIZE as usize {
            assert_eq!(sender, from, "delivered from its publisher");
        }
        assert!(got.insert(id), "{id:?} delivered twice");
    }
}

/// Asserts that nothing more arrives on `node` within `quiet`.
fn expect_nothing(rt: &Runtime, node: &mut Any, quiet: Duration) {
    if let Some((id, from, _)) = node.next_delivery(rt, quiet) {
        panic!("{:?} received {id:?} from {from:?}", node.id());
    }
}

/// Publishes on `nodes[from]` a small and a 1 MiB artifact of a normal kind, a 64 KiB one of
/// the urgent kind, and a small and a large one of the dropped kind; every other node receives
/// exactly the first three, from the publisher.
fn publish_and_check(rt: &Runtime, nodes: &mut [Any], from: usize, tag: u8) {
    let publisher = &nodes[from];
    let wanted = [
        (Kind(1), bytes(tag, 100)),
        (Kind(1), bytes(tag + 1, 1 << 20)),
        (URGENT, bytes(tag + 2, 64 << 10)),
    ];
    let mut expected = Vec::new();
    for (kind, data) in wanted {
        expected.push((publisher.publish(rt, kind, data.clone()), data));
    }
    // The 1 MiB one is chunked: named by its manifest, it swarms between the two kinds of
    // node, and each receiver checks its bytes and receives it once (`expect_deliveries`).
    let (large_id, large) = &expected[1];
    assert_eq!(
        *large_id,
        p2p_core::chunks::content_id(large, p2p_core::chunks::DEFAULT_CHUNK_SIZE)
    );
    assert_ne!(
        *large_id,
        ArtifactId::of(large),
        "the 1 MiB artifact is chunked"
    );
    publisher.publish(rt, DROPPED, bytes(tag + 3, 100));
    publisher.publish(rt, DROPPED, bytes(tag + 4, 200 << 10));
    let origin = publisher.id();
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != from {
            expect_deliveries(rt, node, &expected, origin);
        }
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != from {
            expect_nothing(rt, node, Duration::from_millis(300));
        }
    }
}

/// Two threaded and two tokio nodes, interleaved in id order so that every kind of pair dials
/// in both directions: artifacts published on either kind reach all the others. Each listens
/// on its own loopback address and admits only registry addresses (the default), so each
/// kind's dials must leave from its listening address.
#[test]
fn threaded_and_tokio_nodes_exchange_artifacts() {
    let rt = runtime();
    let ids = identities(4);
    let mut nodes: Vec<Any> = ids
        .into_iter()
        .enumerate()
        .map(|(i, identity)| {
            let listen = std::net::SocketAddr::from(([127, 0, 0, 40 + i as u8], 0));
            Any::start_at(&rt, identity, i % 2 == 0, Topology::All, listen)
        })
        .collect();
    let members: Vec<Member> = nodes.iter().map(Any::member).collect();
    for n in &nodes {
        n.install(&rt, 1, &members);
    }
    for n in &nodes {
        let others = members.iter().map(|m| m.id).filter(|id| *id != n.id());
        wait_peers(&rt, n, &others.collect());
    }
    // Threaded (lowest id) to all, tokio to all, the other threaded node to all.
    publish_and_check(&rt, &mut nodes, 0, 10);
    publish_and_check(&rt, &mut nodes, 3, 20);
    publish_and_check(&rt, &mut nodes, 2, 30);
    // The two tokio nodes keep an express lane between them; the threaded ones offer none.
    for n in &nodes {
        if let Any::Tokio(h, _) = n {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while h.metrics().peers_express != 1 {
                assert!(std::time::Instant::now() < deadline, "no express lane");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(h.metrics().express_lanes_failed, 0);
        }
    }
    for n in nodes {
        n.shutdown(&rt);
    }
}

/// Nine nodes of both kinds, eight of them members, on the derived graph of degree 2: each
/// connects to its neighbours only, artifacts reach every member through relays, and when the
/// ninth joins both kinds rewire (prune and dial) to the new graph and deliver to it too.
#[test]
fn threaded_and_tokio_nodes_keep_a_derived_partial_mesh() {
    let rt = runtime();
    let topo = Topology::Degree(2);
    let mut nodes: Vec<Any> = identities(9)
        .into_iter()
        .enumerate()
        .map(|(i, identity)| Any::start_in(&rt, identity, i % 2 == 0, topo.clone()))
        .collect();
    let all: Vec<Member> = nodes.iter().map(Any::member).collect();
    for (version, members) in [(1, &all[..8]), (2, &all[..])] {
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        for n in &nodes[..members.len()] {
            n.install(&rt, version, members);
        }
        for n in &nodes[..members.len()] {
            wait_peers(&rt, n, &topo.neighbours(&n.id(), &ids));
        }
        let tag = version as u8;
        let data = bytes(tag, 300);
        let id = nodes[1].publish(&rt, Kind(1), data.clone());
        let origin = nodes[1].id();
        for n in nodes[..members.len()]
            .iter_mut()
            .filter(|n| n.id() != origin)
        {
            // A newcomer first catches up on what its neighbours hold.
            let wanted = |got: &(ArtifactId, NodeId, Bytes)| got.0 == id;
            let got = std::iter::from_fn(|| n.next_delivery(&rt, WAIT))
                .find(wanted)
                .expect("delivered in time");
            assert_eq!(got.2, data);
            assert!(topo.neighbours(&n.id(), &ids).contains(&got.1));
        }
    }
    for n in nodes {
        n.shutdown(&rt);
    }
}

/// Two outsiders with the lowest ids, one threaded and one tokio, list themselves with the
/// members and dial them all; the members (two of each kind) refuse them in TLS: they count the
/// refusals, never list an outsider as a peer, and never receive the outsiders' artifacts,
/// while their own artifacts still flow among them.
#[test]
fn nodes_outside_the_registry_are_refused() {
    let rt = runtime();
    let mut ids = identities(6).into_iter();
    let mut outsiders = Vec::new();
    for threaded in [true, false] {
        outsiders.push(Any::start(&rt, ids.next().expect("id"), threaded));
    }
    let mut nodes: Vec<Any> = ids
        .enumerate()
        .map(|(i, identity)| Any::start(&rt, identity, i % 2 == 1))
        .collect();
    let members: Vec<Member> = nodes.iter().map(Any::member).collect();
    for n in &nodes {
        n.install(&rt, 1, &members);
    }
    for o in &outsiders {
        let mut list = members.clone();
        list.push(o.member());
        o.install(&rt, 1, &list);
    }
    let member_ids: BTreeSet<NodeId> = members.iter().map(|m| m.id).collect();
    for n in &nodes {
        let mut others = member_ids.clone();
        others.remove(&n.id());
        wait_peers(&rt, n, &others);
    }
    for o in &outsiders {
        o.publish(&rt, Kind(1), bytes(40, 100));
        o.publish(&rt, Kind(1), bytes(41, 100 << 10));
    }
    // Every member refuses both outsiders' dials (which keep coming back after back-off).
    let deadline = Instant::now() + WAIT;
    while nodes.iter().any(|n| n.refused() < 2) {
        assert!(
            Instant::now() < deadline,
            "refusals: {:?}",
            nodes.iter().map(Any::refused).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for o in &outsiders {
        assert!(o.peers(&rt).is_empty(), "an outsider got a peer");
    }
    // The members' own gossip works; the outsiders' artifacts never arrive.
    publish_and_check(&rt, &mut nodes, 1, 50);
    for n in nodes.iter_mut() {
        expect_nothing(&rt, n, Duration::from_millis(200));
        let mut others = member_ids.clone();
        others.remove(&n.id());
        wait_peers(&rt, n, &others);
    }
    for n in nodes.into_iter().chain(outsiders) {
        n.shutdown(&rt);
    }
}
