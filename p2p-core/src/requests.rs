//! The requests this node sent and awaits answers to, with their deadlines.

use crate::hash::{FastMap, FastState};
use crate::message::RequestId;
use crate::types::{ArtifactId, NodeId, Time};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A request awaiting its answer.
pub(crate) struct Req {
    /// The peer asked.
    pub(crate) peer: NodeId,
    /// The artifact asked for.
    pub(crate) id: ArtifactId,
    /// Its advertised size.
    pub(crate) size: u64,
    /// Counted in the global in-flight limits (false once timed out or detached from its download).
    pub(crate) counted: bool,
    /// When it times out; `None` once timed out or detached.
    pub(crate) deadline: Option<Time>,
}

/// The requests awaiting an answer, by id, and a heap of their deadlines.
///
/// Invariants: request ids are handed out in increasing order and never reused; every request
/// with a deadline has an entry `(deadline, id)` in the heap. Heap entries whose request ended
/// or no longer has that deadline are stale: they are skipped when they surface, and
/// [`prune`](Requests::prune) keeps the heap's top live and the stale entries from piling up.
pub(crate) struct Requests {
    map: FastMap<RequestId, Req>,
    deadlines: BinaryHeap<Reverse<(Time, RequestId)>>,
    next_id: RequestId,
}

impl Requests {
    /// No requests; the table hashes with `fast`.
    pub(crate) fn new(fast: FastState) -> Self {
        Requests {
            map: FastMap::with_hasher(fast),
            deadlines: BinaryHeap::new(),
            next_id: 1,
        }
    }

    /// Requests awaiting an answer.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The request `id`.
    pub(crate) fn get(&self, id: &RequestId) -> Option<&Req> {
        self.map.get(id)
    }

    /// The request `id`, to change.
    pub(crate) fn get_mut(&mut self, id: &RequestId) -> Option<&mut Req> {
        self.map.get_mut(id)
    }

    /// Whether `id` was handed out (it may have ended since).
    pub(crate) fn issued(&self, id: RequestId) -> bool {
        id != 0 && id < self.next_id
    }

    /// Ends the request `id`.
    pub(crate) fn remove(&mut self, id: &RequestId) -> Option<Req> {
        self.map.remove(id)
    }

    /// Records a counted request to `peer` for `id`, due by `deadline`; returns its id.
    pub(crate) fn start(
        &mut self,
        peer: NodeId,
        id: ArtifactId,
        size: u64,
        deadline: Time,
    ) -> RequestId {
        let req_id = self.next_id;
        self.next_id += 1;
        let req = Req {
            peer,
            id,
            size,
            counted: true,
            deadline: Some(deadline),
        };
        self.map.insert(req_id, req);
        self.deadlines.push(Reverse((deadline, req_id)));
        req_id
    }

    /// The requests awaiting `peer`'s answer.
    pub(crate) fn of_peer(&self, peer: NodeId) -> Vec<RequestId> {
        self.map
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether one of `active` awaits `peer`'s answer.
    pub(crate) fn any_to(&self, active: &[RequestId], peer: NodeId) -> bool {
        active
            .iter()
            .any(|r| self.map.get(r).is_some_and(|q| q.peer == peer))
    }

    fn live(map: &FastMap<RequestId, Req>, t: Time, r: RequestId) -> bool {
        map.get(&r).is_some_and(|q| q.deadline == Some(t))
    }

    /// The earliest deadline (exact after [`prune`](Requests::prune)).
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the next request whose deadline is at or before `now`, skipping stale entries.
    pub(crate) fn pop_expired(&mut self, now: Time) -> Option<RequestId> {
        while let Some(&Reverse((t, req_id))) = self.deadlines.peek() {
            if t > now {
                return None;
            }
            self.deadlines.pop();
            if Self::live(&self.map, t, req_id) {
                return Some(req_id);
            }
        }
        None
    }

    /// Drops stale deadlines from the top of the heap (so that the next deadline is exact) and
    /// rebuilds the heap when they make up most of it.
    pub(crate) fn prune(&mut self) {
        while let Some(&Reverse((t, r))) = self.deadlines.peek() {
            if Self::live(&self.map, t, r) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.deadlines
                .retain(|Reverse((t, r))| Self::live(map, *t, *r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Requests;
    use crate::hash::FastState;
    use crate::types::{ArtifactId, NodeId, Time};
    use std::time::Duration;

    fn at(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn ids_increase_and_expired_requests_surface_in_deadline_order() {
        let mut r = Requests::new(FastState(3));
        let (p, id) = (NodeId([1; 32]), ArtifactId([2; 32]));
        let late = r.start(p, id, 10, at(20));
        let early = r.start(p, id, 10, at(10));
        assert!(late < early);
        assert_eq!(r.next_deadline(), Some(at(10)));
        assert_eq!(r.pop_expired(at(5)), None);
        assert_eq!(r.pop_expired(at(25)), Some(early));
        assert_eq!(r.pop_expired(at(25)), Some(late));
        assert_eq!(r.pop_expired(at(25)), None);
        assert_eq!(r.len(), 2, "expiry does not end a request");
        assert_eq!(r.of_peer(p).len(), 2);
        assert!(r.any_to(&[late], p) && !r.any_to(&[late], NodeId([9; 32])));
    }

    #[test]
    fn stale_deadlines_are_skipped_and_pruned() {
        let mut r = Requests::new(FastState(3));
        let (p, id) = (NodeId([1; 32]), ArtifactId([2; 32]));
        let ended = r.start(p, id, 1, at(1));
        let detached = r.start(p, id, 1, at(2));
        let live = r.start(p, id, 1, at(3));
        assert!(r.remove(&ended).is_some());
        r.get_mut(&detached).expect("exists").deadline = None;
        r.prune();
        assert_eq!(r.next_deadline(), Some(at(3)));
        assert_eq!(r.pop_expired(at(3)), Some(live));
        for _ in 0..200 {
            let q = r.start(p, id, 1, at(100));
            r.remove(&q);
        }
        r.prune();
        assert_eq!(
            r.next_deadline(),
            None,
            "a heap of stale entries is emptied"
        );
        assert!(r.get(&live).is_some());
    }
}
