//! Cheap counters and gauges that a driver can export.
//!
//! Each metric is declared once, in the list below: its field of [`Metrics`], its kind, the name
//! a driver exports it under and its help text (the field's doc comment). [`Metrics::values`]
//! walks the list, so an exporter needs no list of its own.

/// Whether a metric only grows (a counter) or is a current value (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic since start.
    Counter,
    /// A current value.
    Gauge,
}

/// The description of one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricInfo {
    /// The name it is exported under: lowercase snake case, without a prefix or the `_total`
    /// that some formats append to counters.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// One sentence saying what it counts.
    pub help: &'static str,
}

/// The exported name of a metric: the field's name unless the list gives one.
macro_rules! metric_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $name:literal) => {
        $name
    };
}

/// Declares [`Metrics`] and its descriptions from one list of
/// `/// help` `field: Counter|Gauge [as "exported_name"],` entries.
macro_rules! declare_metrics {
    ($( $(#[doc = $help:literal])+ $field:ident: $kind:ident $(as $name:literal)?, )*) => {
        /// A snapshot of the node's counters (monotonic) and gauges (current values).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Metrics {
            $(
                $(#[doc = $help])+
                #[doc = ""]
                #[doc = concat!("Exported as `", metric_name!($field $($name)?), "` (", stringify!($kind), ").")]
                pub $field: u64,
            )*
        }

        impl Metrics {
            /// Every metric's description, in declaration order.
            pub const INFO: &'static [MetricInfo] = &[$(
                MetricInfo {
                    name: metric_name!($field $($name)?),
                    kind: MetricKind::$kind,
                    help: concat!($($help),+).trim_ascii(),
                },
            )*];

            /// Each metric's value, in the order of [`INFO`](Self::INFO).
            pub fn values(&self) -> impl ExactSizeIterator<Item = (MetricInfo, u64)> + use<> {
                let values = [$(self.$field),*];
                Self::INFO.iter().copied().zip(values)
            }
        }
    };
}

declare_metrics! {
    /// Adverts received (each advert of a batch counts).
    adverts_received: Counter,
    /// Adverts sent (each advert of a batch counts): announcements and new connections'
    /// resyncs.
    adverts_sent: Counter,
    /// Adverts and pushes not kept (unwanted, table full, duplicate, inconsistent).
    adverts_dropped: Counter,
    /// Pushed artifacts received.
    pushes_received: Counter,
    /// Requests sent.
    requests_sent: Counter,
    /// Responses received (valid or not).
    responses_received: Counter,
    /// Artifact bytes received in responses and pushes.
    bytes_received: Counter as "artifact_bytes_received",
    /// Artifacts delivered to the application.
    delivered: Counter,
    /// Artifacts or chunks received and not needed (wasted bytes): again after delivery, after
    /// their request was cancelled, or pushed while no active swarm lacked them.
    duplicates: Counter,
    /// Requests retried (timeout, not-found, bad data, disconnect, withdraw).
    retries: Counter,
    /// Requests that timed out.
    timeouts: Counter,
    /// Artifacts received whose bytes did not match their id or size.
    bad_data: Counter,
    /// Peers disconnected by the core.
    peers_disconnected: Counter,
    /// Requests answered with the artifact.
    requests_served: Counter,
    /// Requests answered with not-found.
    not_found_sent: Counter,
    /// Requests answered with not-found although the artifact is pooled: asked for too often on
    /// one connection, or while a request of it was held (counted in `not_found_sent` too).
    requests_refused: Counter,
    /// Artifact bytes sent in responses and pushes.
    bytes_served: Counter as "artifact_bytes_served",
    /// Chunks of chunked artifacts requested.
    chunks_requested: Counter,
    /// Chunk requests to a full holder for a chunk of another member's stripe handed over to
    /// this node: `swarm_patience` passed and no taker before it in the stripes' order said it
    /// fetches the artifact (counted in `chunks_requested` too).
    chunks_asked_handed_over: Counter,
    /// Chunk requests to a full holder for a chunk of another member's stripe handed over to
    /// this node because its owner answers slowly (counted in `chunks_requested` too).
    chunks_asked_slow_owner: Counter,
    /// Chunk requests to a full holder for a chunk of another member's stripe because the
    /// swarm had nothing in flight and gained no chunk for `swarm_patience` (counted in
    /// `chunks_requested` too).
    chunks_asked_idle: Counter,
    /// Chunk requests to a full holder for a chunk of another member's stripe because the
    /// swarm was overdue (counted in `chunks_requested` too).
    chunks_asked_overdue: Counter,
    /// Chunks received, requested or pushed (verified or not).
    chunks_received: Counter,
    /// Chunks sent: chunk requests answered with the chunk, and chunks of this node's stripe
    /// pushed to peers that fetch the artifact.
    chunks_served: Counter,
    /// Pushed chunks no active swarm lacked (counted in `duplicates` too): the receiver got
    /// them otherwise first, or does not fetch the artifact (any more).
    pushes_unwanted: Counter,
    /// Chunk requests cancelled on the wire (the artifact completed or was dropped).
    chunks_cancelled: Counter,
    /// Requests cancelled on the wire because the artifact arrived from another peer first.
    requests_cancelled: Counter,
    /// `Cancel` messages received: a peer no longer wanted an answer.
    cancels_received: Counter,
    /// Chunked downloads set back to wait because no chunk arrived for two chunk request
    /// timeouts while others waited for the memory budget.
    swarms_stalled: Counter,
    /// Adverts tracked (one per advertising peer and artifact).
    tracked_adverts: Gauge,
    /// Artifacts tracked for download.
    pending_downloads: Gauge,
    /// Requests in flight (not counting timed-out ones still awaited).
    in_flight: Gauge as "in_flight_requests",
    /// Bytes requested and not yet received.
    in_flight_bytes: Gauge,
    /// Artifacts in the local pool.
    pool_artifacts: Gauge,
    /// Bytes in the local pool.
    pool_bytes: Gauge,
    /// Chunked artifacts being fetched (active or waiting for the memory budget).
    swarms: Gauge,
    /// Bytes reserved by the chunked artifacts being fetched.
    incomplete_bytes: Gauge,
    /// Chunk requests awaiting answers.
    chunks_in_flight: Gauge,
    /// Peers the core counts as connected.
    connected_peers: Gauge as "core_connected_peers",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_values_follow_the_fields() {
        let mut names: Vec<&str> = Metrics::INFO.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metrics::INFO.len());
        let m = Metrics {
            bytes_received: 5,
            connected_peers: 2,
            ..Metrics::default()
        };
        let values: Vec<(&str, MetricKind, u64)> =
            m.values().map(|(i, v)| (i.name, i.kind, v)).collect();
        assert!(values.contains(&("artifact_bytes_received", MetricKind::Counter, 5)));
        assert!(values.contains(&("core_connected_peers", MetricKind::Gauge, 2)));
        assert_eq!(
            Metrics::INFO[0].help,
            "Adverts received (each advert of a batch counts)."
        );
    }
}
