//! Cheap counters and gauges that a driver can export.

/// A snapshot of the node's counters (monotonic) and gauges (current values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Adverts received (each advert of a batch counts).
    pub adverts_received: u64,
    /// Adverts and pushes not kept (unwanted, table full, duplicate, inconsistent).
    pub adverts_dropped: u64,
    /// Pushes received.
    pub pushes_received: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Responses received (valid or not).
    pub responses_received: u64,
    /// Artifact bytes received in responses and pushes.
    pub bytes_received: u64,
    /// Artifacts delivered to the application.
    pub delivered: u64,
    /// Artifacts received again after delivery (wasted bytes).
    pub duplicates: u64,
    /// Requests retried (timeout, not-found, bad data, disconnect, withdraw).
    pub retries: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Artifacts received whose bytes did not match their id or size.
    pub bad_data: u64,
    /// Peers disconnected by the core.
    pub peers_disconnected: u64,
    /// Requests answered with the artifact.
    pub requests_served: u64,
    /// Requests answered with not-found.
    pub not_found_sent: u64,
    /// Artifact bytes sent in responses and pushes.
    pub bytes_served: u64,
    /// Gauge: adverts tracked (one per advertising peer and artifact).
    pub tracked_adverts: u64,
    /// Gauge: artifacts tracked for download.
    pub pending_downloads: u64,
    /// Gauge: requests in flight (not counting timed-out ones still awaited).
    pub in_flight: u64,
    /// Gauge: bytes requested and not yet received.
    pub in_flight_bytes: u64,
    /// Gauge: artifacts in the local pool.
    pub pool_artifacts: u64,
    /// Gauge: bytes in the local pool.
    pub pool_bytes: u64,
    /// Gauge: connected peers.
    pub connected_peers: u64,
}
