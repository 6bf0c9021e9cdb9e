//! The driver's metrics: counters shared between its tasks, the snapshot the handle returns,
//! and their export through [`prometheus_client`].
//!
//! Each driver metric is declared once, in the list below (field, kind, exported name, help);
//! the core's metrics are declared in [`p2p_core::Metrics`]. The exporter walks both lists.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use p2p_core::{MetricInfo, MetricKind};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The prefix of every exported name (`p2p_delivered_total`, `p2p_peers_connected`).
pub(crate) const PREFIX: &str = "p2p";

/// The exported name of a metric: the field's name unless the list gives one.
macro_rules! metric_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $name:literal) => {
        $name
    };
}

/// Declares [`NodeMetrics`], the live [`Counters`] and the snapshot from one list of
/// `/// help` `field: Counter|Gauge [as "exported_name"],` entries.
macro_rules! declare_metrics {
    ($( $(#[doc = $help:literal])+ $field:ident: $kind:ident $(as $name:literal)?, )*) => {
        /// A snapshot of the node's metrics: the core's and the driver's.
        ///
        /// Counters are monotonic since start; gauges are current values. Exported with
        /// [`NodeHandle::register_metrics`](crate::NodeHandle::register_metrics) under the
        /// names given below, prefixed with `p2p_` (and suffixed with `_total` for counters).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct NodeMetrics {
            /// The core's counters and gauges (as of the node task's last step).
            pub core: p2p_core::Metrics,
            $(
                $(#[doc = $help])+
                #[doc = ""]
                #[doc = concat!("Exported as `", metric_name!($field $($name)?), "` (", stringify!($kind), ").")]
                pub $field: u64,
            )*
        }

        /// The driver's live counters (atomics), written by every task.
        #[derive(Default, Debug)]
        pub(crate) struct Counters {
            $( pub $field: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self, core: p2p_core::Metrics) -> NodeMetrics {
                NodeMetrics {
                    core,
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                }
            }
        }

        impl NodeMetrics {
            /// The description of every driver metric, in declaration order (the core's are
            /// in [`p2p_core::Metrics::INFO`]).
            pub const INFO: &'static [MetricInfo] = &[$(
                MetricInfo {
                    name: metric_name!($field $($name)?),
                    kind: MetricKind::$kind,
                    help: concat!($($help),+).trim_ascii(),
                },
            )*];

            /// Every metric with its value: the driver's in the order of
            /// [`INFO`](Self::INFO), then the core's.
            pub fn values(&self) -> impl Iterator<Item = (MetricInfo, u64)> + use<> {
                let driver = [$(self.$field),*];
                Self::INFO.iter().copied().zip(driver).chain(self.core.values())
            }
        }
    };
}

declare_metrics! {
    /// Bytes written to TCP sockets (TLS records and handshakes included).
    bytes_written: Counter as "socket_bytes_written",
    /// Bytes read from TCP sockets (TLS records and handshakes included).
    bytes_read: Counter as "socket_bytes_read",
    /// Inbound connections that completed TLS and the hello and were handed to the core.
    connections_accepted: Counter,
    /// Outbound connections that completed TLS and the hello and were handed to the core.
    connections_dialed: Counter,
    /// Connections refused: by the TLS verifiers (not a member, banned, wrong key), or after
    /// the handshake (banned, no longer a member, dialing in the wrong direction). Sockets
    /// refused before TLS are counted apart (`connections_refused_pre_tls_*`).
    connections_refused: Counter,
    /// Handshakes that failed otherwise (timeout, IO error, bad hello, TLS alert).
    handshake_failures: Counter,
    /// Inbound connections refused by the TLS verifier because the member is banned (it
    /// dialed from an address other than its own registry one).
    refused_in_tls_banned: Counter as "connections_refused_in_tls_banned",
    /// Accepted sockets refused before TLS: the source address is the registry address of
    /// exactly one member, which is banned.
    refused_pre_tls_banned: Counter as "connections_refused_pre_tls_banned",
    /// Accepted sockets refused before TLS: the source address is no member's registry
    /// address (registry-only admission).
    refused_pre_tls_not_member_address: Counter as "connections_refused_pre_tls_not_member_address",
    /// Accepted sockets refused before TLS: their source address already held its cap of
    /// pending handshakes.
    refused_pre_tls_address_full: Counter as "connections_refused_pre_tls_address_full",
    /// Accepted sockets refused before TLS: the pending pool was full and the source address
    /// is no member's.
    refused_pre_tls_pool_full: Counter as "connections_refused_pre_tls_pool_full",
    /// Pending handshakes from non-registry addresses aborted to make room for a member's.
    evicted_stranger: Counter as "handshakes_evicted_for_member_stranger",
    /// Pending handshakes of the busiest address aborted to make room for a member's.
    evicted_busiest: Counter as "handshakes_evicted_for_member_busiest",
    /// Pending handshakes aborted at the pre-authentication deadline (`handshake_timeout`);
    /// also counted in `handshake_failures`.
    evicted_deadline: Counter as "handshakes_evicted_deadline",
    /// Inbound handshakes pending (TLS and hello under way).
    pending_handshakes: Gauge,
    /// Dial attempts that did not produce a connection.
    dial_failures: Counter,
    /// Peers with an established connection.
    peers_connected: Gauge,
    /// Connected peers with an express lane beside their main connection (control and urgent
    /// messages travel on it).
    peers_express: Gauge,
    /// Express lanes attached (dialed or accepted).
    express_lanes_opened: Counter,
    /// Express lanes waiting for their main connection (at most one per member).
    express_lanes_held: Gauge,
    /// Messages handed to express lanes (part of `messages_sent`).
    messages_sent_express: Counter,
    /// Express lanes refused (wrong direction, not offered, or held past the hold timeout
    /// without their main connection) and express dials that failed.
    express_lanes_failed: Counter,
    /// Members this node connects to by its topology (its neighbours; every other member in a
    /// full mesh): `peers_connected` below it means some neighbours are not connected.
    peers_neighbours: Gauge,
    /// Established connections that ended (for any reason).
    disconnects: Counter,
    /// Connections cut because the peer broke the wire protocol (malformed frames, limits).
    protocol_errors: Counter,
    /// Connections cut because nothing was read for the idle timeout.
    idle_timeouts: Counter,
    /// Connections cut because the peer's send queue hit its hard cap.
    send_queue_overflows: Counter,
    /// Connections cut because the peer accepted none of the bytes waiting for it for the
    /// write stall timeout (it does not read).
    write_stalls: Counter,
    /// Bytes reserved node-wide for messages under reassembly (as of the last read).
    reassembly_bytes: Gauge,
    /// The most bytes ever reserved node-wide for messages under reassembly.
    reassembly_peak_bytes: Gauge,
    /// Keepalive messages sent.
    keepalives_sent: Counter,
    /// Messages received from peers and fed to the core (keepalives excluded).
    messages_received: Counter,
    /// Messages handed to the multiplexers for sending.
    messages_sent: Counter,
    /// Queued answers dropped before any of their bytes were sent, because the requester
    /// cancelled the request (the core's `Output::Cancel`).
    answers_cancelled: Counter,
    /// Queued pushes (of chunks, or of small artifacts whole) dropped before any of their
    /// bytes were sent, because their receiver said it holds them (the core's
    /// `Output::CancelPushes`).
    pushes_cancelled: Counter,
    /// Times a peer's send queue passed its high-water mark (the core was told it is congested).
    congestion_events: Counter,
    /// Artifacts handed to the application's delivery stream.
    deliveries: Counter,
    /// Deliveries discarded because the application dropped its delivery stream.
    deliveries_discarded: Counter,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Encodes a node's metrics on each scrape, from the driver's counters and the core's snapshot
/// as of the node task's last step. It holds no handle, so it does not keep the node running.
#[derive(Debug)]
struct Collector {
    counters: Arc<Counters>,
    core: Arc<Mutex<p2p_core::Metrics>>,
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let core = *self.core.lock().unwrap_or_else(PoisonError::into_inner);
        for (info, value) in self.counters.snapshot(core).values() {
            match info.kind {
                MetricKind::Counter => encode_one(&mut encoder, info, ConstCounter::new(value))?,
                MetricKind::Gauge => encode_one(&mut encoder, info, ConstGauge::new(value))?,
            }
        }
        Ok(())
    }
}

fn encode_one(
    encoder: &mut DescriptorEncoder,
    info: MetricInfo,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder =
        encoder.encode_descriptor(info.name, info.help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Registers the node's metrics in `registry`, under [`PREFIX`].
pub(crate) fn register(
    registry: &mut Registry,
    counters: Arc<Counters>,
    core: Arc<Mutex<p2p_core::Metrics>>,
) {
    registry
        .sub_registry_with_prefix(PREFIX)
        .register_collector(Box::new(Collector { counters, core }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text;
    use std::collections::HashSet;

    /// The text of a registry holding a node whose counters and core snapshot are given.
    fn text(counters: Counters, core: p2p_core::Metrics) -> String {
        let mut registry = Registry::default();
        register(
            &mut registry,
            Arc::new(counters),
            Arc::new(Mutex::new(core)),
        );
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    fn sample() -> String {
        let counters = Counters::default();
        counters.bytes_written.store(12345, Ordering::Relaxed);
        counters.peers_connected.store(3, Ordering::Relaxed);
        inc(&counters.deliveries);
        let core = p2p_core::Metrics {
            delivered: 7,
            pool_bytes: 99,
            in_flight: 2,
            ..p2p_core::Metrics::default()
        };
        text(counters, core)
    }

    #[test]
    fn every_metric_has_help_type_and_one_sample() {
        let text = sample();
        let mut names = HashSet::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 3, 0, "{text}");
        for triple in lines.chunks(3) {
            let help = triple[0].strip_prefix("# HELP ").expect("HELP line");
            let (name, help) = help.split_once(' ').unwrap();
            assert!(help.ends_with('.'), "{help}");
            let ty = triple[1]
                .strip_prefix(&format!("# TYPE {name} "))
                .expect("TYPE line of the same metric");
            assert!(ty == "counter" || ty == "gauge", "{ty}");
            assert_eq!(ty == "counter", name.ends_with("_total"), "{name}");
            let (sample_name, value) = triple[2].split_once(' ').expect("sample line");
            assert_eq!(sample_name, name);
            value.parse::<u64>().expect("integer value");
            assert!(name.starts_with("p2p_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(names.insert(name.to_owned()), "duplicate metric {name}");
        }
        // Every driver figure and every figure of the core.
        assert_eq!(
            names.len(),
            NodeMetrics::INFO.len() + p2p_core::Metrics::INFO.len()
        );
        assert_eq!(names.len(), 77);
    }

    #[test]
    fn values_are_rendered_under_their_names() {
        let text = sample();
        for line in [
            "p2p_socket_bytes_written_total 12345",
            "p2p_peers_connected 3",
            "p2p_deliveries_total 1",
            "p2p_delivered_total 7",
            "p2p_pool_bytes 99",
            "p2p_in_flight_requests 2",
            "p2p_core_connected_peers 0",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line} in:\n{text}");
        }
        assert!(text.contains(
            "# HELP p2p_artifact_bytes_served_total Artifact bytes sent in responses and pushes.\n"
        ));
    }

    #[test]
    fn snapshot_reads_every_counter() {
        let counters = Counters::default();
        inc(&counters.keepalives_sent);
        counters.bytes_read.fetch_add(10, Ordering::Relaxed);
        let m = counters.snapshot(p2p_core::Metrics::default());
        assert_eq!((m.keepalives_sent, m.bytes_read), (1, 10));
        let values: Vec<(&str, u64)> = m.values().map(|(i, v)| (i.name, v)).collect();
        assert_eq!(values.len(), 77);
        assert!(values.contains(&("keepalives_sent", 1)));
        assert!(values.contains(&("socket_bytes_read", 10)));
    }
}
