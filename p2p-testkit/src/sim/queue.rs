//! The event queue: what happens next, in virtual time.
//!
//! Invariants:
//! - events pop in (time, sequence number) order: the earliest first, and among events at the
//!   same time the one pushed first;
//! - `live` counts the queued events other than the watchdogs ([`EvKind::is_watchdog`]: the
//!   periodic sample, the connection deadlines and timers), so a run can stop when only those are left;
//! - `now` is the time of the last event popped and never goes back.

use p2p_core::{Class, Message};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A message in transit, carried by the event of its last frame.
pub(super) struct Delivery {
    pub(super) from: u32,
    pub(super) to: u32,
    pub(super) epoch: u32,
    pub(super) msg: Message,
}

/// A frame from `from` to `to` on the connection of `epoch`; the last frame of a message
/// carries it.
pub(super) struct FrameEv {
    pub(super) from: u32,
    pub(super) to: u32,
    pub(super) epoch: u32,
    pub(super) bytes: u32,
    /// The class its message travels in.
    pub(super) class: Class,
    /// Its message's number on this direction of the connection.
    pub(super) stream: u32,
    /// On the first frame of a message of several frames: the message's announced total.
    pub(super) first_of: Option<u32>,
    /// Whether it is the last frame of a message of several frames.
    pub(super) ends_partial: bool,
    /// Whether it is its sender's hello (unframed, before any message).
    pub(super) hello: bool,
    pub(super) last: Option<Box<Delivery>>,
}

/// What an event does.
pub(super) enum EvKind {
    /// A frame finished leaving `node`'s uplink.
    UplinkDone { node: u32, inc: u32 },
    /// A frame reached its receiver's downlink.
    Arrive(FrameEv),
    /// A frame is through the receiver's downlink: it leaves the connection's window, and the
    /// last frame hands its message to the receiver.
    Through(FrameEv),
    /// Incarnation `inc` of `node` armed its timer for this time.
    Timer { node: u32, inc: u32 },
    /// Incarnation `inc` of `node` armed its connection policy's timer for this time.
    Policy { node: u32, inc: u32 },
    /// Incarnation `inc` of the byzantine actor `node` acts on its own.
    ByzTick { node: u32, inc: u32 },
    /// The scenario's action with this index.
    Action(usize),
    /// Try to bring the connection between two nodes up again.
    Connect(u32, u32),
    /// Sample every node's state against its bounds.
    Sample,
    /// The stall check of message `stream` that `peer` started sending to honest `node` on
    /// the connection of `epoch` (at its last known frame plus `partial_timeout`).
    PartialDeadline {
        node: u32,
        peer: u32,
        epoch: u32,
        stream: u32,
    },
    /// Honest `from`'s check that its bytes queued for `to` (connection `epoch`) are accepted.
    WriteStall { from: u32, to: u32, epoch: u32 },
    /// The connection layer's timer check of the connection between `a` and `b` (of `epoch`):
    /// hello and idle deadlines, keepalives.
    ConnTimer { a: u32, b: u32, epoch: u32 },
}

impl EvKind {
    /// Whether the event only watches over the run (samples, connection deadlines) and so does
    /// not keep it going.
    pub(super) fn is_watchdog(&self) -> bool {
        matches!(
            self,
            EvKind::Sample
                | EvKind::PartialDeadline { .. }
                | EvKind::WriteStall { .. }
                | EvKind::ConnTimer { .. }
        )
    }
}

struct Ev {
    t: u64,
    seq: u64,
    kind: EvKind,
}

impl PartialEq for Ev {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ev {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, seq) must compare greatest.
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

/// The queue of future events and the virtual clock.
#[derive(Default)]
pub(super) struct Queue {
    now: u64,
    seq: u64,
    heap: BinaryHeap<Ev>,
    live: usize,
    popped: u64,
}

impl Queue {
    /// The current virtual time in nanoseconds.
    pub(super) fn now(&self) -> u64 {
        self.now
    }

    /// Events popped so far.
    pub(super) fn popped(&self) -> u64 {
        self.popped
    }

    /// Queued events other than watchdogs.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Schedules `kind` at time `t`.
    pub(super) fn push(&mut self, t: u64, kind: EvKind) {
        if !kind.is_watchdog() {
            self.live += 1;
        }
        self.seq += 1;
        self.heap.push(Ev {
            t,
            seq: self.seq,
            kind,
        });
    }

    /// Pops the next event and moves the clock to it; `None` when the queue is empty or the next
    /// event is after `until` (the run is over then, and that event is dropped).
    pub(super) fn pop(&mut self, until: u64) -> Option<EvKind> {
        let ev = self.heap.pop()?;
        if ev.t > until {
            return None;
        }
        self.now = ev.t;
        self.popped += 1;
        if !ev.kind.is_watchdog() {
            self.live -= 1;
        }
        Some(ev.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(q: &mut Queue, until: u64) -> Option<usize> {
        match q.pop(until)? {
            EvKind::Action(k) => Some(k),
            _ => None,
        }
    }

    #[test]
    fn events_pop_by_time_then_in_push_order() {
        let mut q = Queue::default();
        q.push(20, EvKind::Action(0));
        q.push(10, EvKind::Action(1));
        q.push(20, EvKind::Action(2));
        q.push(10, EvKind::Action(3));
        let order: Vec<usize> = std::iter::from_fn(|| action(&mut q, u64::MAX)).collect();
        assert_eq!(order, [1, 3, 0, 2]);
        assert_eq!(q.now(), 20);
        assert_eq!(q.popped(), 4);
    }

    #[test]
    fn samples_are_not_live_and_late_events_are_not_popped() {
        let mut q = Queue::default();
        q.push(5, EvKind::Sample);
        q.push(7, EvKind::Action(0));
        assert_eq!(q.live(), 1);
        assert!(matches!(q.pop(100), Some(EvKind::Sample)));
        assert_eq!(q.live(), 1);
        assert!(q.pop(6).is_none());
        assert_eq!(q.now(), 5);
    }
}
