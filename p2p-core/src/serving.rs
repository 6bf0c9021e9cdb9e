//! Serving: answering peers' requests from the pool, holding them while a peer is congested or
//! past its byte budget, and refusing repeated requests of one artifact.

use crate::config::Config;
use crate::message::{Message, RequestId};
use crate::pool::Pool;
use crate::sink::Sink;
use crate::swarm::Swarms;
use crate::types::{ArtifactId, Class, NodeId, Priority, Time};
use bytes::Bytes;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A request to serve: (request id, artifact, the requester's priority, the chunk asked for or
/// `None` for the whole artifact, or its manifest if it is chunked).
pub(crate) type Pending = (RequestId, ArtifactId, Priority, Option<u32>);

/// One peer's serving state, for one connection: whether the driver reports its send queue
/// full, the requests held meanwhile or while the peer's byte budget is spent, when each
/// artifact was last answered (or held) for it and how often it repeated early, and its byte
/// budget.
///
/// Invariants: requests are held in arrival order, at most the bound given to
/// [`offer`](ServeQueue::offer), and at most one per artifact; a pooled artifact is answered
/// (or held) for the peer at most once per half of its request timeout; `tokens` never
/// exceeds `serve_burst`, and goes below zero by at most one artifact.
#[derive(Default)]
pub(crate) struct ServeQueue {
    congested: bool,
    held: VecDeque<Pending>,
    /// Per pooled artifact asked for on this connection: when it was last answered (or held),
    /// and the early repeats since the connection began. At most
    /// `max_queued_requests_per_peer` artifacts are remembered (past it the memory starts
    /// over: the byte budget still bounds what the peer gets).
    asked: BTreeMap<ArtifactId, (Time, u32)>,
    /// The byte budget: bytes that may be sent now (`None`: a full bucket), as of `refilled`.
    /// In cells, so that a chunk pushed to the peer is charged through a shared reference.
    tokens: Cell<Option<i64>>,
    refilled: Cell<Time>,
}

/// What to do with a request just offered to a [`ServeQueue`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Answer it now (its bytes are charged to the budget).
    Serve,
    /// It waits for the congestion to clear or the budget to refill.
    Held,
    /// The peer is past the bound of held requests.
    Full,
    /// Answer it with not-found: the artifact was answered (or held) for this peer less than
    /// half its request timeout ago (an early repeat), or a request of it is held already
    /// (that one will be answered, and a late answer still counts at the requester).
    NotFound,
    /// The peer repeated requests of one artifact early more than `max_early_repeats` times
    /// on this connection.
    Repeated,
}

impl ServeQueue {
    /// Offers a request at `now` for an artifact of `size` bytes (`None`: not pooled, which
    /// costs nothing to answer): held while congested, while older requests are held or while
    /// the byte budget does not cover it (at most `cfg.max_queued_requests_per_peer` of them),
    /// else served at once.
    pub(crate) fn offer(
        &mut self,
        request: Pending,
        size: Option<u64>,
        now: Time,
        cfg: &Config,
    ) -> Offer {
        let (id, chunk) = (request.1, request.3);
        // Early repeats are judged per artifact: a swarm asks one peer for many chunks of one
        // artifact, which the byte budget bounds instead.
        if let Some(size) = size.filter(|_| chunk.is_none()) {
            if !self.asked.contains_key(&id) && self.asked.len() >= cfg.max_queued_requests_per_peer
            {
                self.asked.clear();
            }
            let gap = cfg.request_timeout(size) / 2;
            match self.asked.get_mut(&id) {
                Some((last, early)) if now < *last + gap => {
                    *early = early.saturating_add(1);
                    if *early > cfg.max_early_repeats {
                        return Offer::Repeated;
                    }
                    return Offer::NotFound;
                }
                Some((last, _)) => *last = now,
                None => {
                    self.asked.insert(id, (now, 0));
                }
            }
        }
        if self.held.iter().any(|h| h.1 == id && h.3 == chunk) {
            return Offer::NotFound;
        }
        if !self.congested && self.held.is_empty() && self.take(size.unwrap_or(0), now, cfg) {
            return Offer::Serve;
        }
        if self.held.len() >= cfg.max_queued_requests_per_peer {
            return Offer::Full;
        }
        self.held.push_back(request);
        Offer::Held
    }

    /// Charges `size` bytes to the budget at `now` if it covers them (an artifact larger than
    /// the burst passes on a full bucket); returns whether it did.
    fn take(&self, size: u64, now: Time, cfg: &Config) -> bool {
        let burst = i64::try_from(cfg.serve_burst).unwrap_or(i64::MAX);
        let tokens = self.refill(now, cfg);
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        if tokens < size.min(burst) {
            return false;
        }
        self.tokens.set(Some(tokens.saturating_sub(size)));
        true
    }

    /// Charges a chunk of `size` bytes pushed to the peer at `now`, if it may be sent now (not
    /// congested, no request held, the budget covers it): pushes spend the same byte budget as
    /// answers; returns whether it did.
    pub(crate) fn take_push(&self, size: u64, now: Time, cfg: &Config) -> bool {
        !self.congested && self.held.is_empty() && self.take(size, now, cfg)
    }

    /// The budget at `now`, refilled at `cfg.serve_rate` bytes a second up to the burst.
    fn refill(&self, now: Time, cfg: &Config) -> i64 {
        let burst = i64::try_from(cfg.serve_burst).unwrap_or(i64::MAX);
        let Some(tokens) = self.tokens.get() else {
            self.refilled.set(now);
            return burst;
        };
        let elapsed = u128::from(now.saturating_since(self.refilled.get()).as_nanos() as u64);
        let add = elapsed * u128::from(cfg.serve_rate) / 1_000_000_000;
        if add > 0 {
            self.refilled.set(now);
        }
        let add = i64::try_from(add).unwrap_or(i64::MAX);
        let tokens = tokens.saturating_add(add).min(burst);
        self.tokens.set((tokens < burst).then_some(tokens));
        tokens
    }

    /// Records the driver's report of congestion.
    pub(crate) fn set_congested(&mut self, congested: bool) {
        self.congested = congested;
    }

    /// The held requests that may be answered at `now`, oldest first, their bytes charged:
    /// none while congested, and each only once the budget covers its artifact (`size` gives
    /// the pooled size, `None` when it is gone). The first held request stops the release.
    pub(crate) fn release(
        &mut self,
        now: Time,
        cfg: &Config,
        size: impl Fn(&Pending) -> Option<u64>,
    ) -> Vec<Pending> {
        let mut out = Vec::new();
        while !self.congested {
            let Some(head) = self.held.front() else {
                break;
            };
            if !self.take(size(head).unwrap_or(0), now, cfg) {
                break;
            }
            out.extend(self.held.pop_front());
        }
        out
    }

    /// When the budget will cover the first held request (`None`: nothing held, or congested:
    /// the congestion report wakes the node instead).
    pub(crate) fn next_release(
        &self,
        cfg: &Config,
        size: impl Fn(&Pending) -> Option<u64>,
    ) -> Option<Time> {
        if self.congested {
            return None;
        }
        let head = self.held.front()?;
        let burst = i64::try_from(cfg.serve_burst).unwrap_or(i64::MAX);
        let need = i64::try_from(size(head).unwrap_or(0))
            .unwrap_or(i64::MAX)
            .min(burst);
        let tokens = self.tokens.get().unwrap_or(burst);
        let missing = u128::try_from(need.saturating_sub(tokens)).unwrap_or(0);
        // Round up, so the budget covers it when the node runs.
        let nanos = (missing * 1_000_000_000).div_ceil(u128::from(cfg.serve_rate.max(1)));
        Some(self.refilled.get() + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// Whether the driver reports the peer's send queue full.
    pub(crate) fn is_congested(&self) -> bool {
        self.congested
    }

    /// Forgets a held request the peer cancelled; returns whether it was held.
    pub(crate) fn cancel(&mut self, req_id: RequestId) -> bool {
        let before = self.held.len();
        self.held.retain(|h| h.0 != req_id);
        self.held.len() != before
    }

    /// Requests held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// The bytes an answer to `request` carries, if this node can answer it: the pooled
/// artifact's root (its bytes, or its manifest if it is chunked), or a chunk from the pool or
/// from an incomplete artifact's swarm.
pub(crate) fn answer_bytes(pool: &Pool, swarms: &Swarms, request: &Pending) -> Option<Bytes> {
    let id = &request.1;
    match request.3 {
        None => pool.root(id).or_else(|| swarms.root(id)),
        Some(i) => pool.chunk(id, i).or_else(|| swarms.chunk(id, i)),
    }
}

/// Answers `request` of `to`: the bytes in the class of the requester's priority, or
/// not-found in class Control.
pub(crate) fn respond(pool: &Pool, swarms: &Swarms, sink: &mut Sink, to: NodeId, request: Pending) {
    let (req_id, id, priority, chunk) = request;
    let Some(data) = answer_bytes(pool, swarms, &request) else {
        return not_found(sink, to, req_id, id);
    };
    sink.metrics.bytes_served += data.len() as u64;
    let msg = match chunk {
        None => {
            sink.metrics.requests_served += 1;
            Message::Response { req_id, id, data }
        }
        Some(index) => {
            sink.metrics.chunks_served += 1;
            Message::Chunk {
                req_id,
                id,
                index,
                data,
            }
        }
    };
    sink.send(to, msg, priority.class());
}

/// Answers request `req_id` of `to` for `id` with not-found, in class Control.
pub(crate) fn not_found(sink: &mut Sink, to: NodeId, req_id: RequestId, id: ArtifactId) {
    sink.metrics.not_found_sent += 1;
    sink.send(to, Message::NotFound { req_id, id }, Class::Control);
}

#[cfg(test)]
mod tests {
    use super::{Offer, ServeQueue, respond};
    use crate::config::Config;
    use crate::event::Output;
    use crate::hash::{FastState, SaltedState};
    use crate::message::Message;
    use crate::pool::Pool;
    use crate::sink::Sink;
    use crate::swarm::Swarms;
    use crate::types::{ArtifactId, Class, NodeId, Priority, Time};

    fn cfg() -> Config {
        Config {
            max_queued_requests_per_peer: 2,
            max_early_repeats: 2,
            serve_burst: 100,
            serve_rate: 10_000, // 10 bytes a millisecond
            ..Config::default()
        }
    }

    fn a(i: u8) -> ArtifactId {
        ArtifactId([i; 32])
    }

    #[test]
    fn requests_are_held_while_congested_within_the_bound_and_released_oldest_first() {
        let (cfg, now) = (cfg(), Time::ZERO);
        let mut q = ServeQueue::default();
        assert_eq!(
            q.offer((1, a(1), Priority(0), None), None, now, &cfg),
            Offer::Serve
        );
        q.set_congested(true);
        assert_eq!(
            q.offer((2, a(2), Priority(0), None), None, now, &cfg),
            Offer::Held
        );
        assert_eq!(
            q.offer((3, a(3), Priority(0), None), None, now, &cfg),
            Offer::Held
        );
        assert_eq!(
            q.offer((4, a(4), Priority(0), None), None, now, &cfg),
            Offer::Full
        );
        assert_eq!(q.len(), 2);
        assert!(q.release(now, &cfg, |_| None).is_empty(), "still congested");
        assert_eq!(q.next_release(&cfg, |_| None), None);
        q.set_congested(false);
        let released: Vec<u64> = q.release(now, &cfg, |_| None).iter().map(|p| p.0).collect();
        assert_eq!(released, [2, 3], "oldest first");
        assert_eq!(q.len(), 0);
        assert_eq!(
            q.offer((5, a(5), Priority(0), None), None, now, &cfg),
            Offer::Serve
        );
    }

    #[test]
    fn early_repeats_of_one_artifact_are_refused_then_a_violation() {
        let cfg = cfg();
        // A 1-byte artifact times out after 2 s at the requester: a repeat within 1 s is early.
        let gap = cfg.request_timeout(1) / 2;
        let mut q = ServeQueue::default();
        let at = |ms| Time::from_millis(ms);
        assert_eq!(
            q.offer((0, a(1), Priority(0), None), Some(1), at(0), &cfg),
            Offer::Serve
        );
        let offers: Vec<Offer> = (1..4)
            .map(|r| q.offer((r, a(1), Priority(0), None), Some(1), at(r), &cfg))
            .collect();
        assert_eq!(offers, [Offer::NotFound, Offer::NotFound, Offer::Repeated]);
        // A repeat after the requester's own timeout is honest: served again.
        let mut q = ServeQueue::default();
        assert_eq!(
            q.offer((0, a(1), Priority(0), None), Some(1), at(0), &cfg),
            Offer::Serve
        );
        let later = Time::ZERO + gap;
        assert_eq!(
            q.offer((1, a(1), Priority(0), None), Some(1), later, &cfg),
            Offer::Serve
        );
        // Requests of artifacts not pooled are never counted.
        for r in 0..10 {
            assert_eq!(
                q.offer((r, a(3), Priority(0), None), None, later, &cfg),
                Offer::Serve
            );
        }
        // While one request of an artifact is held, another one of it is answered not-found.
        q.set_congested(true);
        assert_eq!(
            q.offer((9, a(2), Priority(0), None), None, later, &cfg),
            Offer::Held
        );
        assert_eq!(
            q.offer((10, a(2), Priority(0), None), None, later, &cfg),
            Offer::NotFound
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn the_byte_budget_holds_requests_until_it_refills() {
        let cfg = cfg();
        let ms = Time::from_millis;
        let mut q = ServeQueue::default();
        let size = |r: &super::Pending| Some(u64::from(r.1.0[0]) * 10);
        // 60 and 30 bytes of a 100-byte burst; then 70 must wait until 60 more refilled (6 ms).
        assert_eq!(
            q.offer(
                (1, a(6), Priority(0), None),
                Some(u64::from(a(6).0[0]) * 10),
                ms(0),
                &cfg
            ),
            Offer::Serve
        );
        assert_eq!(
            q.offer(
                (2, a(3), Priority(0), None),
                Some(u64::from(a(3).0[0]) * 10),
                ms(0),
                &cfg
            ),
            Offer::Serve
        );
        assert_eq!(
            q.offer(
                (3, a(7), Priority(0), None),
                Some(u64::from(a(7).0[0]) * 10),
                ms(0),
                &cfg
            ),
            Offer::Held
        );
        // A smaller request behind it waits its turn.
        assert_eq!(
            q.offer(
                (4, a(1), Priority(0), None),
                Some(u64::from(a(1).0[0]) * 10),
                ms(0),
                &cfg
            ),
            Offer::Held
        );
        assert_eq!(q.next_release(&cfg, size), Some(ms(6)));
        assert!(q.release(ms(5), &cfg, size).is_empty());
        let released: Vec<u64> = q.release(ms(6), &cfg, size).iter().map(|p| p.0).collect();
        assert_eq!(released, [3]);
        assert_eq!(q.next_release(&cfg, size), Some(ms(7)), "10 more bytes");
        assert_eq!(q.release(ms(7), &cfg, size).len(), 1);
        assert_eq!(q.next_release(&cfg, size), None);
        // An artifact larger than the burst passes on a full bucket.
        let big = |_: &ArtifactId| Some(1_000);
        assert_eq!(
            q.offer((5, a(9), Priority(0), None), big(&a(9)), ms(100), &cfg),
            Offer::Serve
        );
        assert_eq!(
            q.offer((6, a(8), Priority(0), None), big(&a(8)), ms(100), &cfg),
            Offer::Held
        );
    }

    #[test]
    fn a_request_is_answered_from_the_pool_or_with_not_found() {
        let pool = Pool::new(SaltedState::new(1));
        let swarms = Swarms::new(SaltedState::new(1), FastState(1));
        let mut sink = Sink::default();
        let (to, id) = (NodeId([1; 32]), ArtifactId([2; 32]));
        respond(&pool, &swarms, &mut sink, to, (7, id, Priority(3), None));
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
