//! Helpers shared by the integration tests: identities, fast configurations, subnets, waits.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use p2p_core::{ArtifactId, Decision, Kind, Message, NodeId, Priority, PriorityFnRef};
use p2p_tokio::{Delivered, Deliveries, Member, NodeConfig, NodeHandle, NodeMetrics, Registry};
use p2p_transport::codec::{self, HELLO_LEN, Hello};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::MuxConfig;
use p2p_transport::tls::{self, Members, Membership, server_name_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Upper bound of any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test output when RUST_LOG is set.
pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `n` fresh identities in ascending node-id order (the first dials all others).
pub fn identities(n: usize) -> Vec<NodeIdentity> {
    let mut ids: Vec<NodeIdentity> = (0..n)
        .map(|_| NodeIdentity::generate().expect("identity"))
        .collect();
    ids.sort_by_key(|i| i.node_id());
    ids
}

/// A configuration on 127.0.0.1:0 with short back-off and keepalive, for tests.
pub fn config(identity: NodeIdentity) -> NodeConfig {
    let mut cfg = NodeConfig::new(identity, "127.0.0.1:0".parse().expect("addr"));
    cfg.reconnect_backoff_min = Duration::from_millis(20);
    cfg.reconnect_backoff_max = Duration::from_millis(500);
    cfg.keepalive_interval = Duration::from_millis(500);
    cfg.idle_timeout = Duration::from_secs(5);
    cfg.core.retry_backoff_initial = Duration::from_millis(50);
    cfg.core.retry_backoff_max = Duration::from_millis(500);
    cfg
}

/// The registry of `version` listing `nodes`.
pub fn registry(version: u64, nodes: &[&NodeHandle]) -> Registry {
    Registry::new(
        version,
        nodes.iter().map(|n| Member {
            id: n.node_id(),
            addr: n.local_addr(),
        }),
    )
}

/// Starts one node per configuration (with an empty registry), then installs the registry of
/// all of them (version 1) everywhere.
pub async fn subnet(configs: Vec<NodeConfig>) -> Vec<NodeHandle> {
    let mut nodes = Vec::new();
    for cfg in configs {
        nodes.push(
            p2p_tokio::start(cfg, Registry::default())
                .await
                .expect("start"),
        );
    }
    let refs: Vec<&NodeHandle> = nodes.iter().collect();
    let reg = registry(1, &refs);
    for n in &nodes {
        n.update_registry(reg.clone()).await.expect("registry");
    }
    nodes
}

/// Polls `cond` on `node`'s metrics until it holds, failing the test after [`WAIT`].
pub async fn wait_metrics(node: &NodeHandle, what: &str, cond: impl Fn(&NodeMetrics) -> bool) {
    let r = tokio::time::timeout(WAIT, async {
        loop {
            if cond(&node.metrics()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "timed out waiting for {what} on {:?}: {:#?}",
        node.node_id(),
        node.metrics()
    );
}

/// Waits until every node has `n` connected peers.
pub async fn wait_connected(nodes: &[NodeHandle], n: u64) {
    for node in nodes {
        wait_metrics(node, "connections", |m| m.peers_connected == n).await;
    }
}

/// Receives `n` deliveries within [`WAIT`].
pub async fn receive(deliveries: &mut Deliveries, n: usize) -> Vec<Delivered> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while got.len() < n {
            match deliveries.recv().await {
                Some(d) => got.push(d),
                None => break,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out with {} of {n} deliveries", got.len());
    assert_eq!(got.len(), n, "the delivery stream ended early");
    got
}

/// The ids of `deliveries`, sorted.
pub fn ids_of(deliveries: &[Delivered]) -> Vec<ArtifactId> {
    let mut ids: Vec<ArtifactId> = deliveries.iter().map(|d| d.artifact.id).collect();
    ids.sort();
    ids
}

/// Runs `f` within [`WAIT`] times `factor`, failing with `what` on timeout.
pub async fn within<T>(factor: u32, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT * factor, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Deterministic filler bytes, distinct per `tag`.
pub fn bytes(tag: u8, len: usize) -> bytes::Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect::<Vec<u8>>()
        .into()
}

/// The node ids of `nodes`.
pub fn node_ids(nodes: &[&NodeHandle]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    v.sort();
    v
}

/// A raw TLS client with a member's identity: TLS handshake, then our hello and the node's.
#[allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]
pub async fn raw_member_connection(
    identity: &NodeIdentity,
    members: Members,
    target: &p2p_tokio::NodeHandle,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    std::io::Result<Hello>,
) {
    raw_member_connection_as(identity, members, target, Hello::new(1)).await
}

/// [`raw_member_connection`] announcing `ours` (a role other than a plain main connection).
#[allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]
pub async fn raw_member_connection_as(
    identity: &NodeIdentity,
    members: Members,
    target: &p2p_tokio::NodeHandle,
    ours: Hello,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    std::io::Result<Hello>,
) {
    let cfg = tls::client_config(identity, &Membership::new(members)).unwrap();
    let tcp = TcpStream::connect(target.local_addr()).await.unwrap();
    let mut tls = TlsConnector::from(cfg)
        .connect(server_name_for(target.node_id()), tcp)
        .await
        .unwrap();
    let mut hello = BytesMut::new();
    codec::encode_hello(&ours, &mut hello);
    tls.write_all(&hello).await.unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    let hello = match tls.read_exact(&mut theirs).await {
        Ok(_) => codec::decode_hello(&theirs)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) => Err(e),
    };
    (tls, hello)
}

/// Two honest nodes, connected, and a registry (version 2) that also lists a rogue member with
/// the lowest id (so dialing is its role) that no node runs: the test speaks for it.
pub async fn two_nodes_and_a_rogue_member() -> (NodeIdentity, Members, Vec<p2p_tokio::NodeHandle>) {
    two_nodes_and_a_rogue_member_with(|_| {}).await
}

/// [`two_nodes_and_a_rogue_member`] with `tune` applied to the honest nodes' configurations.
pub async fn two_nodes_and_a_rogue_member_with(
    tune: impl Fn(&mut p2p_tokio::NodeConfig),
) -> (NodeIdentity, Members, Vec<p2p_tokio::NodeHandle>) {
    let (mut rogues, members, nodes) = nodes_and_rogues(1, tune).await;
    (rogues.remove(0), members, nodes)
}

/// Two honest nodes and `rogues` more members that no node runs (the tests speak for them),
/// with the lowest ids so that dialing them is their role; registry version 2. `tune` applies
/// to the honest nodes' configurations.
pub async fn nodes_and_rogues(
    rogues: usize,
    tune: impl Fn(&mut NodeConfig),
) -> (Vec<NodeIdentity>, Members, Vec<NodeHandle>) {
    let mut ids = identities(rogues + 2);
    ids.sort_by_key(|i| i.node_id());
    let honest = ids.split_off(rogues);
    let configs = honest
        .into_iter()
        .map(|id| {
            let mut c = config(id);
            tune(&mut c);
            c
        })
        .collect();
    let nodes = subnet(configs).await;
    let mut reg = registry(2, &[&nodes[0], &nodes[1]]);
    for r in &ids {
        reg.members.push(Member {
            id: r.node_id(),
            addr: "127.0.0.1:9".parse().unwrap(),
        });
    }
    for n in &nodes {
        n.update_registry(reg.clone()).await.unwrap();
    }
    wait_connected(&nodes, 1).await;
    let members = Members::new(2, reg.members.iter().map(|m| m.id));
    (ids, members, nodes)
}

/// Encodes `msgs` as the multiplexer would send them.
#[allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]
pub fn frames(msgs: &[(p2p_core::Class, Message)]) -> BytesMut {
    let mut mux = p2p_transport::mux::MuxSender::new(MuxConfig::default()).unwrap();
    let mut out = BytesMut::new();
    for (class, msg) in msgs {
        mux.push(*class, msg).unwrap();
        while mux.poll_transmit(&mut out, 1 << 20) > 0 {}
    }
    out
}

/// Artifacts up to `size` bytes travel whole (one message): the chunk size, and the codec
/// limits that follow from it.
pub fn whole_up_to(c: &mut NodeConfig, size: u32) {
    c.core.chunk_size = size;
    c.mux.limits = NodeConfig::codec_limits(&c.core);
}

/// The priority function of the urgent-against-bulk races: kind 1 urgent, the rest kept for
/// later, so that the bulk waits until every bulk advert is in.
pub fn urgent_now_bulk_later() -> PriorityFnRef {
    PriorityFnRef::by_kind(vec![(Kind(1), Priority::URGENT)], Decision::Later)
}

/// Races an urgent artifact against bulk ones from `a` to `b` (both configured with
/// [`urgent_now_bulk_later`]): `a` publishes `bulk` artifacts of kind 2 and `bulk_size` bytes,
/// `b` then fetches them all at bulk priority, and once `a` has every request queued it
/// publishes a 4 KiB urgent artifact (above the push threshold: advertised, requested and
/// answered). Returns the position of the urgent artifact among `b`'s deliveries, after
/// checking that every bulk artifact arrived too.
pub async fn urgent_position_behind_bulk(
    a: &NodeHandle,
    b: &NodeHandle,
    bulk: usize,
    bulk_size: usize,
) -> usize {
    let mut rx = b.take_deliveries().unwrap();
    let mut ids = Vec::new();
    for i in 0..bulk {
        let data = bytes(10 + i as u8, bulk_size);
        ids.push(a.publish(Kind(2), bytes::Bytes::new(), data).await.unwrap());
    }
    wait_metrics(b, "bulk adverts kept", |m| {
        m.core.pending_downloads == bulk as u64
    })
    .await;
    b.set_priority_fn(PriorityFnRef::by_kind(
        vec![(Kind(1), Priority::URGENT), (Kind(2), Priority::BULK)],
        Decision::Drop,
    ))
    .await
    .unwrap();
    wait_metrics(a, "bulk requests served", |m| {
        m.core.requests_served == bulk as u64
    })
    .await;
    assert_eq!(
        b.metrics().core.delivered,
        0,
        "the bulk finished before the test could race it"
    );
    let urgent = a
        .publish(Kind(1), bytes::Bytes::new(), bytes(99, 4096))
        .await
        .unwrap();
    let got = receive(&mut rx, bulk + 1).await;
    let pos = got.iter().position(|d| d.artifact.id == urgent).unwrap();
    let mut rest: Vec<Delivered> = got;
    rest.remove(pos);
    ids.sort();
    assert_eq!(ids_of(&rest), ids, "every bulk artifact");
    pos
}
