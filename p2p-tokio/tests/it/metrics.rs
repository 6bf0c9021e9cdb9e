//! The metrics of running nodes, scraped through their registries as traffic flows.

use crate::support::*;
use bytes::Bytes;
use p2p_core::Kind;
use p2p_tokio::{NodeHandle, NodeMetrics};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// A node's own registry.
fn registry_of(node: &NodeHandle) -> Registry {
    let mut registry = Registry::default();
    node.register_metrics(&mut registry);
    registry
}

/// The registry's text.
fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).unwrap();
    text
}

/// The value of the sample `name` in `text`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_move_as_artifacts_flow() {
    init_log();
    let mut ids = identities(2).into_iter();
    let nodes = subnet((0..2).map(|_| config(ids.next().unwrap())).collect()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (reg_a, reg_b) = (registry_of(a), registry_of(b));
    wait_connected(&nodes, 1).await;
    let mut rx_b = b.take_deliveries().unwrap();

    let before_a = scrape(&reg_a);
    let before_b = scrape(&reg_b);
    assert_eq!(sample(&before_a, "p2p_peers_connected"), 1);
    assert_eq!(sample(&before_b, "p2p_delivered_total"), 0);
    // One artifact pushed whole, one advertised and fetched.
    a.publish(Kind(1), Bytes::new(), bytes(1, 300))
        .await
        .unwrap();
    a.publish(Kind(1), Bytes::new(), bytes(2, 1 << 20))
        .await
        .unwrap();
    receive(&mut rx_b, 2).await;
    wait_metrics(b, "deliveries counted", |m| m.deliveries == 2).await;

    let after_a = scrape(&reg_a);
    let after_b = scrape(&reg_b);
    assert_eq!(sample(&after_b, "p2p_delivered_total"), 2);
    assert_eq!(sample(&after_b, "p2p_deliveries_total"), 2);
    assert_eq!(sample(&after_b, "p2p_pushes_received_total"), 1);
    assert!(sample(&after_b, "p2p_requests_sent_total") >= 1);
    assert!(sample(&after_b, "p2p_artifact_bytes_received_total") >= 300 + (1 << 20));
    assert!(sample(&after_a, "p2p_requests_served_total") >= 1);
    assert_eq!(sample(&after_a, "p2p_pool_artifacts"), 2);
    for (text_before, text_after, name) in [
        (&before_a, &after_a, "p2p_socket_bytes_written_total"),
        (&before_a, &after_a, "p2p_messages_sent_total"),
        (&before_b, &after_b, "p2p_socket_bytes_read_total"),
        (&before_b, &after_b, "p2p_messages_received_total"),
    ] {
        assert!(
            sample(text_after, name) > sample(text_before, name),
            "{name} did not move"
        );
    }
    // The scrape and the handle's snapshot report the same figures under the same names.
    let snapshot: NodeMetrics = b.metrics();
    assert_eq!(sample(&after_b, "p2p_pool_bytes"), snapshot.core.pool_bytes);
    for n in &nodes {
        n.shutdown().await;
    }
    // A registry outlives its node and keeps its last figures.
    assert_eq!(sample(&scrape(&reg_b), "p2p_delivered_total"), 2);
}
