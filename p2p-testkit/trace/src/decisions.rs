//! Recording the priority function's decisions, and answering from them in a replay.
//!
//! The core calls its priority function synchronously inside `Node::handle_input`, in an order
//! that the seed and the inputs fix. So the answers given during one input, in call order, are
//! all a replay needs to decide exactly as the recorded node did, whatever the function was.

use p2p_core::{Advert, ArtifactId, Decision, PriorityFn, PriorityFnRef};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The decisions a recorded node's priority function took, in call order, until taken.
///
/// [`wrap`](Self::wrap) a priority function to record it: the wrapper returns exactly what the
/// function returns and appends `(advert id, decision)` here. The recorder
/// [`take`](Self::take)s the log after every input and writes it as that input's
/// [`Record::Decisions`](crate::Record::Decisions). Clones share one log.
#[derive(Clone, Default)]
pub struct DecisionLog(Arc<Mutex<Vec<(ArtifactId, Decision)>>>);

impl DecisionLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// `f`, recording each of its decisions in this log. Wrap every function the node runs,
    /// including those swapped in later, so that the recorded decisions stay the truth.
    pub fn wrap(&self, f: PriorityFnRef) -> PriorityFnRef {
        PriorityFnRef::new(RecordingPriorityFn {
            inner: f,
            log: self.clone(),
        })
    }

    /// The decisions recorded since the last call, in call order.
    pub fn take(&self) -> Vec<(ArtifactId, Decision)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "DecisionLog({n} pending)")
    }
}

/// A priority function that records every decision of the function it wraps (see
/// [`DecisionLog::wrap`]).
pub struct RecordingPriorityFn {
    inner: PriorityFnRef,
    log: DecisionLog,
}

impl PriorityFn for RecordingPriorityFn {
    fn decide(&self, advert: &Advert) -> Decision {
        let d = self.inner.0.decide(advert);
        self.log
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((advert.id, d));
        d
    }
}

/// How a replayed node's questions to its priority function differed from the recorded ones.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DecisionDivergence {
    /// The node asked about `actual` where the trace recorded a decision about `expected`.
    Mismatch {
        /// The advert the recorded node was asked about.
        expected: ArtifactId,
        /// The advert the replayed node asked about.
        actual: ArtifactId,
    },
    /// The node asked about `actual` after every decision recorded for the input was used.
    Missing {
        /// The advert the replayed node asked about.
        actual: ArtifactId,
    },
    /// The node did not ask about `remaining` recorded decisions, the first about `next`.
    Unused {
        /// The first advert not asked about.
        next: ArtifactId,
        /// How many recorded decisions were not used.
        remaining: usize,
    },
}

impl fmt::Display for DecisionDivergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionDivergence::Mismatch { expected, actual } => write!(
                f,
                "the priority function was asked about art:{actual}, the trace recorded a \
                 decision about art:{expected}"
            ),
            DecisionDivergence::Missing { actual } => write!(
                f,
                "the priority function was asked about art:{actual} after every decision \
                 recorded for the input was used"
            ),
            DecisionDivergence::Unused { next, remaining } => write!(
                f,
                "the priority function was not asked {remaining} recorded time(s), first \
                 about art:{next}"
            ),
        }
    }
}

#[derive(Default)]
struct ReplayState {
    answers: VecDeque<(ArtifactId, Decision)>,
    divergence: Option<DecisionDivergence>,
}

/// The priority function of a replay: it answers each call from the recorded decisions, in
/// order, checking that the node asks about the recorded advert.
///
/// It never panics: a call about another advert, or one past the recorded answers, is noted as
/// a [`DecisionDivergence`] (reported by [`finish_input`](Self::finish_input)) and answered
/// [`Decision::Later`], which keeps the advert and changes nothing else; so are all calls after
/// a divergence. Clones share one state; install [`to_fn`](Self::to_fn) in the node.
#[derive(Clone, Default)]
pub struct ReplayPriorityFn(Arc<Mutex<ReplayState>>);

impl ReplayPriorityFn {
    /// A function with no answers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The priority function to install in the replayed node.
    pub fn to_fn(&self) -> PriorityFnRef {
        PriorityFnRef::new(self.clone())
    }

    /// Queues the recorded answers of the next input, in call order.
    pub fn load(&self, decisions: impl IntoIterator<Item = (ArtifactId, Decision)>) {
        self.lock().answers.extend(decisions);
    }

    /// After an input: the first divergence since the last call, or recorded answers the node
    /// did not ask for. Clears the state for the next input.
    pub fn finish_input(&self) -> Result<(), DecisionDivergence> {
        let mut s = self.lock();
        let unused = s.answers.len();
        let next = s.answers.front().map(|(id, _)| *id);
        s.answers.clear();
        match (s.divergence.take(), next) {
            (Some(d), _) => Err(d),
            (None, Some(next)) => Err(DecisionDivergence::Unused {
                next,
                remaining: unused,
            }),
            (None, None) => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PriorityFn for ReplayPriorityFn {
    fn decide(&self, advert: &Advert) -> Decision {
        let mut s = self.lock();
        if s.divergence.is_some() {
            return Decision::Later;
        }
        match s.answers.pop_front() {
            Some((id, d)) if id == advert.id => d,
            Some((expected, _)) => {
                s.divergence = Some(DecisionDivergence::Mismatch {
                    expected,
                    actual: advert.id,
                });
                Decision::Later
            }
            None => {
                s.divergence = Some(DecisionDivergence::Missing { actual: advert.id });
                Decision::Later
            }
        }
    }
}

impl fmt::Debug for ReplayPriorityFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().answers.len();
        write!(f, "ReplayPriorityFn({n} answers queued)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_core::{Bytes, Kind, Priority};

    fn advert(b: u8) -> Advert {
        Advert {
            id: ArtifactId([b; 32]),
            kind: Kind(u16::from(b)),
            size: 1,
            attr: Bytes::new(),
        }
    }

    #[test]
    fn the_wrapper_returns_and_logs_what_the_function_decides() {
        let log = DecisionLog::new();
        let f = log.wrap(PriorityFnRef::new(|a: &Advert| match a.kind.0 {
            1 => Decision::Fetch(Priority(9)),
            2 => Decision::Later,
            _ => Decision::Drop,
        }));
        let got: Vec<Decision> = (1..=3).map(|b| f.0.decide(&advert(b))).collect();
        assert_eq!(
            got,
            [
                Decision::Fetch(Priority(9)),
                Decision::Later,
                Decision::Drop
            ]
        );
        let logged = log.take();
        assert_eq!(logged.len(), 3);
        assert_eq!(logged[0], (advert(1).id, Decision::Fetch(Priority(9))));
        assert!(log.take().is_empty(), "take empties the log");
    }

    #[test]
    fn the_replay_function_answers_in_order_and_reports_every_kind_of_divergence() {
        let r = ReplayPriorityFn::new();
        let f = r.to_fn();
        r.load([
            (advert(1).id, Decision::Drop),
            (advert(2).id, Decision::Later),
        ]);
        assert_eq!(f.0.decide(&advert(1)), Decision::Drop);
        assert_eq!(f.0.decide(&advert(2)), Decision::Later);
        assert_eq!(r.finish_input(), Ok(()));

        r.load([(advert(1).id, Decision::Drop)]);
        assert_eq!(f.0.decide(&advert(2)), Decision::Later);
        assert_eq!(
            r.finish_input(),
            Err(DecisionDivergence::Mismatch {
                expected: advert(1).id,
                actual: advert(2).id
            })
        );

        assert_eq!(f.0.decide(&advert(3)), Decision::Later);
        assert_eq!(
            r.finish_input(),
            Err(DecisionDivergence::Missing {
                actual: advert(3).id
            })
        );

        r.load([
            (advert(4).id, Decision::Drop),
            (advert(5).id, Decision::Drop),
        ]);
        assert_eq!(
            r.finish_input(),
            Err(DecisionDivergence::Unused {
                next: advert(4).id,
                remaining: 2
            })
        );
        assert_eq!(r.finish_input(), Ok(()));
    }
}
