//! Where a node's parts put what they have to say: the outputs not yet drained and the counters.

use crate::event::{DropReason, Event, Output};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::types::{ArtifactId, Class, NodeId};
use std::collections::VecDeque;

/// The outputs not yet drained, and the node's counters.
///
/// Invariants: outputs leave in the order they were pushed, whichever part pushed them; the
/// counters only grow (the gauges of [`Metrics`] are filled in by `Node::metrics`, not here).
#[derive(Default)]
pub(crate) struct Sink {
    outputs: VecDeque<Output>,
    /// The counters.
    pub(crate) metrics: Metrics,
}

impl Sink {
    /// Queues an output.
    pub(crate) fn push(&mut self, out: Output) {
        self.outputs.push_back(out);
    }

    /// Queues `msg` for `to` in class `class`.
    pub(crate) fn send(&mut self, to: NodeId, msg: Message, class: Class) {
        self.outputs.push_back(Output::Send { to, msg, class });
    }

    /// Queues an event.
    pub(crate) fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Counts an advert (or push) not kept and tells the application why.
    pub(crate) fn dropped_advert(&mut self, id: ArtifactId, from: NodeId, reason: DropReason) {
        self.metrics.adverts_dropped += 1;
        self.event(Event::Dropped { id, from, reason });
    }

    /// The oldest output not yet drained.
    pub(crate) fn pop(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Outputs not yet drained.
    pub(crate) fn len(&self) -> usize {
        self.outputs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Sink;
    use crate::event::{DropReason, Event, Output};
    use crate::message::Message;
    use crate::types::{ArtifactId, Class, NodeId};

    #[test]
    fn outputs_leave_in_the_order_they_were_pushed() {
        let mut sink = Sink::default();
        let (a, id) = (NodeId([1; 32]), ArtifactId([2; 32]));
        sink.send(a, Message::Withdraw(id), Class::Control);
        sink.dropped_advert(id, a, DropReason::TableFull);
        assert_eq!(sink.len(), 2);
        assert!(matches!(
            sink.pop(),
            Some(Output::Send { msg: Message::Withdraw(w), .. }) if w == id
        ));
        assert!(matches!(
            sink.pop(),
            Some(Output::Event(Event::Dropped {
                reason: DropReason::TableFull,
                ..
            }))
        ));
        assert!(sink.pop().is_none());
        assert_eq!(sink.metrics.adverts_dropped, 1);
    }
}
