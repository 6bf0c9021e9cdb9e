//! A deterministic discrete-event simulator of many [`p2p_core::Node`]s.
//!
//! A run is a [`Scenario`] (built with a seed and a few builder calls) and gives a [`Report`]:
//! the results of the property checks (eventual delivery, exactly-once, integrity, bounded state,
//! urgent latency, optionally determinism) and the figures of the run (delivery times,
//! amplification, per-node state, events simulated).
//!
//! Everything is virtual: time is [`p2p_core::Time`], the event queue is ordered by (time,
//! sequence number), and every random draw comes from the scenario's seed. Nothing reads a clock,
//! opens a socket or spawns a thread, so the same seed replays the same run bit for bit.
//!
//! # The network model
//! - A topology ([`Topology`]): full mesh, random graph of a given degree, explicit links, or the
//!   degree-k graph the real nodes derive from the members (`p2p_transport::topology`). Each
//!   link has a one-way latency with uniform jitter; frames on one connection never reorder.
//! - Each node has an uplink and a downlink of given bandwidth. Each direction of a connection
//!   queues its messages in p2p-transport's frame scheduler (`p2p_transport::sched`), the one
//!   the real multiplexer uses, with its default class weights and interleaving and frames of
//!   at most [`FRAME_PAYLOAD`] bytes: weighted fair queuing by class, round-robin within a
//!   class, so an urgent message waits for at most one bulk frame of its connection. The
//!   uplink serves the connections with queued frames round-robin, a frame at a time, skipping
//!   those whose window (twice the bandwidth-delay product) is full, as TCP shares a link among
//!   connections. Frames then cross the link and queue FIFO at the receiver's downlink; a
//!   message is handed to the receiver when its last frame is through.
//! - Optionally ([`Scenario::cpu`]) the nodes share a machine's cores: each frame through a
//!   downlink then takes a core (the first free, from when the frame is through) for a cost per
//!   byte before its receiver has it, as node processes on one machine wait for each other's
//!   CPU. Without it (the default) nodes compute in no time.
//! - Optionally ([`Scenario::tail_drop`]) each downlink's queue is bounded: a frame that finds
//!   it full is dropped, and its connection sends it again a recovery time later, its later
//!   frames held back behind it (as TCP's in-order delivery holds them). Without it (the
//!   default) queues are unbounded and nothing is lost.
//! - Message sizes are [`wire_len`]: `p2p_transport::codec::encoded_len` plus the multiplexer's
//!   frame headers (`p2p_transport::mux`), cut into frames exactly as the scheduler cuts them.
//! - Each connection has a window (twice the bandwidth-delay product, at least 64 KiB) of bytes
//!   sent and not yet through the receiver's downlink, as TCP would: a full window lets other
//!   peers' messages go first, and keeps the receiver's queue (and so urgent latency) bounded.
//! - Connections have epochs: a message queued or in flight on a connection that closes is lost,
//!   never delivered on a later connection between the same pair.
//! - Every honest node runs p2p-transport's connection policy (`PeerPolicy`) over its links, as
//!   the real drivers do: of two nodes the lower id dials; after a connection ends it redials by
//!   the policy's back-off (with seeded jitter); a peer it cut off is banned, for longer at each
//!   repeat offence, and neither dialed nor admitted meanwhile. Crashes, dropped connections
//!   and membership changes close links at once (a closed socket); a partition silences its
//!   links without closing them: their bytes wait and go on when it heals (as TCP retransmits
//!   them), unless the idle timeout (or the write stall timeout) ended the connection first.
//!   Links come back through the same admission; a byzantine dialer reconnects after the
//!   scenario's fixed delays.
//! - Honest nodes run the connection layer's rules above the bytes on their links, with the
//!   real types where the rule is not byte-level:
//!   - the receiver closes a connection that carries a message above
//!     [`Scenario::max_message_size`] (the codec's limit), and cuts off (a misbehaviour, so
//!     the policy bans) a peer whose message travels in a class its type does not allow
//!     (`p2p_transport::codec::class_allowed`);
//!   - each honest node has a node-wide `p2p_transport::reassembly::ReassemblyBudget`
//!     ([`Scenario::reassembly_cap`]) with one slot per incoming connection: a message of
//!     several frames reserves its announced total at its first frame and gives it back at
//!     its last, within the multiplexer's `max_partial_messages` and `max_buffered_bytes`
//!     (a misbehaviour past them) and the budget's fair shares (a refusal ends the connection
//!     without a ban); a message under reassembly that had no frame for
//!     the stall timeout (`MuxConfig::partial_timeout`, [`Scenario::partial_timeout`]) is a
//!     misbehaviour;
//!   - the sending end of a direction whose bytes wait on a full window with no frame
//!     accepted for [`Scenario::write_stall_timeout`] ends the connection without a ban (the
//!     write stall rule of `ConnSender`);
//!   - each end sends its hello (the codec's `HELLO_LEN` bytes, unframed) before any frame;
//!     an honest end admits the connection by the policy's `admit` once the peer's hello is
//!     through, and only then tells its core (`PeerConnected`), as the drivers do after their
//!     hello exchange; a refusal (a churning peer, banned) closes it. A peer whose hello did
//!     not come within [`Scenario::conn_timers`]' hello timeout is cut off
//!     (`ConnError::HelloTimeout`, no ban; a dialer's policy counts a failed dial);
//!   - a sender that sent nothing for the keepalive interval sends a keepalive, an empty
//!     `Adverts` batch in the control class (real wire bytes, counted), which receivers drop;
//!     an honest receiver ends a connection that brought no byte for the idle timeout
//!     (`ConnError::Idle`, no ban). The simulated cores take every message at once, so a
//!     receiver never pauses its reading. These timers are p2p-transport's own
//!     (`conn::KeepaliveTimer`, `conn::ReceiveTimers`, the ones `ConnSender` and
//!     `ConnReceiver` run), with `ConnConfig`'s defaults (5 s, 30 s, 5 s). Byzantine actors
//!     send their hello and keepalives too, except [`ByzKind::Mute`], which sends nothing.
//!
//!   These checks are watchdog events: they do not keep a run going on their own, only while
//!   something they watch is pending (a hello awaited, a connection a partition silences);
//!   every other rule is the core's to enforce.
//!
//! # Recording a node
//! [`Scenario::record`] records any honest node's core with a [`crate::trace::TraceWriter`]:
//! every input the simulator feeds it, at its virtual time, and every output drained after it,
//! under a header with the node's id, config, seed and [`Scenario::priority_profile`] (or, when
//! [`Scenario::config`] installs a priority function no profile names, with that function's
//! decisions: the node runs it wrapped in a [`crate::trace::DecisionLog`]). Each
//! incarnation is its own trace: a crash ends the current one ([`RecordedTrace::ended_by_crash`])
//! and the restart, a fresh core with a fresh seed, starts the next ([`TraceSink`] says where it
//! goes). Recording changes nothing in the run. `p2p-trace replay` or [`crate::trace::replay`]
//! then feeds the trace to a fresh core and shows the first output that differs.
//!
//! # Example
//! ```
//! use p2p_testkit::sim::{Scenario, URGENT};
//! use std::time::Duration;
//!
//! let report = Scenario::new(7)
//!     .nodes(5)
//!     .link(Duration::from_millis(10), 100_000_000)
//!     .publish(Duration::ZERO, 0, URGENT, 500)
//!     .publish(Duration::from_millis(5), 3, URGENT, 20_000)
//!     .run();
//! report.assert_passed();
//! assert_eq!(report.delivered, 2 * 4);
//! ```

mod byz;
mod catalog;
mod checks;
mod engine;
mod faults;
mod network;
mod queue;
mod record;
mod report;
pub mod rng;
mod scenario;

pub use byz::ByzKind;
pub use catalog::{
    CatalogEntry, SWARM_4M, SWARM_BAD_TIMEOUT, SWARM_BPS, SWARM_CRASH_AFTER, SWARM_F,
    SWARM_LATENCY, SWARM_NODES, SWARM_PUBLISH_AT, SWARM_SLOW, SWARM_STREAM, SWARM_STREAM_GAP,
    catalog, named, random, swarm_bad_third_attackers, swarm_slow_nodes,
};
pub use report::{ArtifactFigure, Check, Cutoff, LatencyStats, RecordedTrace, Report};
pub use scenario::{CpuCost, Fault, LinkSpec, Scenario, Topology, TraceSink, Workload, WriterFn};

use p2p_core::{Kind, Message};

/// Largest payload of one multiplexer frame.
pub const FRAME_PAYLOAD: usize = 16 * 1024;

/// The kind the default priority table fetches urgently.
pub const URGENT: Kind = Kind(1);
/// The kind the default priority table fetches in bulk.
pub const BULK: Kind = Kind(2);
/// A kind the default priority table fetches at normal priority (as any other kind).
pub const NORMAL: Kind = Kind(3);

/// Header bytes of a message's first frame when it is not also its last.
const FIRST_FRAME_HEADER: usize = p2p_transport::mux::FIRST_FRAME_HEADER_LEN;
/// Header bytes of every other frame.
const FRAME_HEADER: usize = p2p_transport::mux::FRAME_HEADER_LEN;

/// The codec's exact encoded length of `msg`.
fn encoded_len(msg: &Message) -> usize {
    p2p_transport::codec::encoded_len(msg)
}

/// Bytes that `msg` occupies on the wire: its encoding split in frames of at most
/// [`FRAME_PAYLOAD`] bytes, each with its multiplexer header.
pub fn wire_len(msg: &Message) -> usize {
    framed_len(encoded_len(msg))
}

/// Wire bytes of an encoding of `len` bytes once framed.
fn framed_len(len: usize) -> usize {
    let frames = len.div_ceil(FRAME_PAYLOAD).max(1);
    let first = if frames > 1 {
        FIRST_FRAME_HEADER
    } else {
        FRAME_HEADER
    };
    len + first + (frames - 1) * FRAME_HEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_adds_one_header_per_frame() {
        assert_eq!(framed_len(10), 10 + FRAME_HEADER);
        assert_eq!(framed_len(FRAME_PAYLOAD), FRAME_PAYLOAD + FRAME_HEADER);
        assert_eq!(
            framed_len(FRAME_PAYLOAD + 1),
            FRAME_PAYLOAD + 1 + FIRST_FRAME_HEADER + FRAME_HEADER
        );
    }
}
