//! Whole subnets of real [`p2p_tokio`] nodes in one process, for the `p2p-node demo` and the
//! benchmarks.
//!
//! [`subnet::LocalSubnet`] starts N nodes on 127.0.0.1 (real TLS, fresh identities), publishes a
//! [`subnet::Workload`] into them and reports what reached whom and when. The `p2p-bench` binary
//! of this package measures the machine's limits, the core's and the wire's costs and end-to-end
//! workloads on such subnets (see BENCHMARKS.md); [`plot`] draws the pictures of a run.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod plot;
pub mod subnet;
