//! Serving: answering peers' requests from the pool, and holding them while a peer is congested.

use crate::message::{Message, RequestId};
use crate::pool::Pool;
use crate::sink::Sink;
use crate::types::{ArtifactId, Class, NodeId, Priority};
use std::collections::VecDeque;

/// A request to serve: (request id, artifact, the requester's priority).
pub(crate) type Pending = (RequestId, ArtifactId, Priority);

/// One peer's serving state: whether the driver reports its send queue full, and the requests
/// held meanwhile.
///
/// Invariants: requests are held only while the peer is congested, in arrival order, and at
/// most the bound given to [`offer`](ServeQueue::offer); releasing the congestion hands them
/// all back at once.
#[derive(Default)]
pub(crate) struct ServeQueue {
    congested: bool,
    held: VecDeque<Pending>,
}

/// What to do with a request just offered to a [`ServeQueue`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Answer it now.
    Serve,
    /// It waits for the congestion to clear.
    Held,
    /// The peer is past the bound of held requests.
    Full,
}

impl ServeQueue {
    /// Offers a request: held while congested (at most `limit` of them), else served at once.
    pub(crate) fn offer(&mut self, request: Pending, limit: usize) -> Offer {
        if !self.congested {
            return Offer::Serve;
        }
        if self.held.len() >= limit {
            return Offer::Full;
        }
        self.held.push_back(request);
        Offer::Held
    }

    /// Records the driver's report; once the congestion clears, returns the held requests to
    /// serve, oldest first (empty otherwise).
    pub(crate) fn set_congested(&mut self, congested: bool) -> VecDeque<Pending> {
        self.congested = congested;
        if congested {
            VecDeque::new()
        } else {
            std::mem::take(&mut self.held)
        }
    }

    /// Whether the driver reports the peer's send queue full.
    pub(crate) fn is_congested(&self) -> bool {
        self.congested
    }

    /// Requests held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// Answers request `req_id` of `to` for `id` from the pool: the artifact in the class of the
/// requester's priority, or not-found in class Control.
pub(crate) fn respond(pool: &Pool, sink: &mut Sink, to: NodeId, (req_id, id, priority): Pending) {
    let (msg, class) = match pool.get(&id) {
        Some(artifact) => {
            sink.metrics.requests_served += 1;
            sink.metrics.bytes_served += artifact.data.len() as u64;
            let data = artifact.data.clone();
            (Message::Response { req_id, id, data }, priority.class())
        }
        None => {
            sink.metrics.not_found_sent += 1;
            (Message::NotFound { req_id, id }, Class::Control)
        }
    };
    sink.send(to, msg, class);
}

#[cfg(test)]
mod tests {
    use super::{Offer, ServeQueue, respond};
    use crate::event::Output;
    use crate::hash::SaltedState;
    use crate::message::Message;
    use crate::pool::Pool;
    use crate::sink::Sink;
    use crate::types::{ArtifactId, Class, NodeId, Priority};

    #[test]
    fn requests_are_held_only_while_congested_and_within_the_bound() {
        let mut q = ServeQueue::default();
        let id = ArtifactId([1; 32]);
        assert_eq!(q.offer((1, id, Priority(0)), 2), Offer::Serve);
        assert!(q.set_congested(true).is_empty());
        assert_eq!(q.offer((2, id, Priority(0)), 2), Offer::Held);
        assert_eq!(q.offer((3, id, Priority(0)), 2), Offer::Held);
        assert_eq!(q.offer((4, id, Priority(0)), 2), Offer::Full);
        assert_eq!(q.len(), 2);
        let released: Vec<u64> = q.set_congested(false).iter().map(|p| p.0).collect();
        assert_eq!(released, [2, 3], "oldest first");
        assert_eq!(q.len(), 0);
        assert_eq!(q.offer((5, id, Priority(0)), 2), Offer::Serve);
    }

    #[test]
    fn a_request_is_answered_from_the_pool_or_with_not_found() {
        let pool = Pool::new(SaltedState::new(1));
        let mut sink = Sink::default();
        let (to, id) = (NodeId([1; 32]), ArtifactId([2; 32]));
        respond(&pool, &mut sink, to, (7, id, Priority(3)));
        match sink.pop() {
            Some(Output::Send {
                to: t,
                msg: Message::NotFound { req_id: 7, id: i },
                class: Class::Control,
            }) => assert_eq!((t, i), (to, id)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sink.metrics.not_found_sent, 1);
    }
}
