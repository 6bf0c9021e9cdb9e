//! The node's metrics in the Prometheus text exposition format 0.0.4, as `prometheus-client`
//! encodes its registry ([`encode`]); the API serves them at `/metrics`.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the Prometheus text format.
pub use prometheus_text::CONTENT_TYPE;

/// The metrics of `registry` in the Prometheus text exposition format 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(8 << 10);
    // Writing to a String cannot fail, and the node's collector only fails when its writer does.
    let _ = prometheus_text::encode(&mut text, registry);
    text
}
