//! Everything between p2p-core's [`Message`](p2p_core::Message) values and the bytes a TLS
//! stream carries, and who may be on the other end.
//!
//! Like p2p-core, this crate performs no IO: it encodes and decodes bytes, schedules frames and
//! builds rustls configurations; the driver (p2p-tokio) owns sockets and time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod codec;
pub mod conn;
pub mod express;
pub mod identity;
pub mod inbox;
pub mod mux;
pub mod peers;
pub mod reassembly;
pub mod registry;
pub mod sched;
pub mod tls;
pub mod topology;
