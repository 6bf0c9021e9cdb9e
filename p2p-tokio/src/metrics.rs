//! Counters of the driver, shared between its tasks, and the snapshot the handle returns.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the node's metrics: the core's and the driver's.
///
/// Counters are monotonic since start; gauges are current values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// The core's counters and gauges (as of the node task's last step).
    pub core: p2p_core::Metrics,
    /// Bytes written to TCP sockets (TLS records and handshakes included).
    pub bytes_written: u64,
    /// Bytes read from TCP sockets (TLS records and handshakes included).
    pub bytes_read: u64,
    /// Inbound connections that completed TLS and the hello and were handed to the core.
    pub connections_accepted: u64,
    /// Outbound connections that completed TLS and the hello and were handed to the core.
    pub connections_dialed: u64,
    /// Connections refused: by the TLS verifiers (not a member, wrong key), or after the
    /// handshake (banned, no longer a member, dialing in the wrong direction).
    pub connections_refused: u64,
    /// Handshakes that failed otherwise (timeout, IO error, bad hello, TLS alert).
    pub handshake_failures: u64,
    /// Dial attempts that did not produce a connection.
    pub dial_failures: u64,
    /// Gauge: peers with an established connection.
    pub peers_connected: u64,
    /// Established connections that ended (for any reason).
    pub disconnects: u64,
    /// Connections cut because the peer broke the wire protocol (malformed frames, limits).
    pub protocol_errors: u64,
    /// Connections cut because nothing was read for `idle_timeout`.
    pub idle_timeouts: u64,
    /// Connections cut because the peer's send queue hit its hard cap.
    pub send_queue_overflows: u64,
    /// Keepalive messages sent.
    pub keepalives_sent: u64,
    /// Messages received from peers and fed to the core (keepalives excluded).
    pub messages_received: u64,
    /// Messages handed to the multiplexers for sending.
    pub messages_sent: u64,
    /// Times a peer's send queue passed its high-water mark (the core was told it is congested).
    pub congestion_events: u64,
    /// Artifacts delivered to the application.
    pub deliveries: u64,
    /// Deliveries discarded because the application dropped its [`Deliveries`](crate::Deliveries).
    pub deliveries_discarded: u64,
}

/// The driver's live counters (atomics), written by every task.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub bytes_written: AtomicU64,
    pub bytes_read: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_dialed: AtomicU64,
    pub connections_refused: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub dial_failures: AtomicU64,
    pub peers_connected: AtomicU64,
    pub disconnects: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub send_queue_overflows: AtomicU64,
    pub keepalives_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub congestion_events: AtomicU64,
    pub deliveries: AtomicU64,
    pub deliveries_discarded: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, core: p2p_core::Metrics) -> NodeMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeMetrics {
            core,
            bytes_written: g(&self.bytes_written),
            bytes_read: g(&self.bytes_read),
            connections_accepted: g(&self.connections_accepted),
            connections_dialed: g(&self.connections_dialed),
            connections_refused: g(&self.connections_refused),
            handshake_failures: g(&self.handshake_failures),
            dial_failures: g(&self.dial_failures),
            peers_connected: g(&self.peers_connected),
            disconnects: g(&self.disconnects),
            protocol_errors: g(&self.protocol_errors),
            idle_timeouts: g(&self.idle_timeouts),
            send_queue_overflows: g(&self.send_queue_overflows),
            keepalives_sent: g(&self.keepalives_sent),
            messages_received: g(&self.messages_received),
            messages_sent: g(&self.messages_sent),
            congestion_events: g(&self.congestion_events),
            deliveries: g(&self.deliveries),
            deliveries_discarded: g(&self.deliveries_discarded),
        }
    }
}
