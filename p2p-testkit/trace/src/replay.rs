//! Replay: feed a trace's inputs to a fresh node and compare its outputs with the recorded ones.

use super::decisions::{DecisionDivergence, ReplayPriorityFn};
use super::reader::{Entry, Trace};
use super::record::{OutputRec, Record};
use p2p_core::{Node, Time};
use std::fmt;

/// Records of context kept before a divergence.
const CONTEXT: usize = 5;

/// The outcome of a replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// Inputs fed.
    pub inputs: usize,
    /// Outputs compared equal.
    pub outputs_matched: usize,
    /// Outputs the node still held after the last record: the recorder stopped before draining
    /// them. Not a divergence: a trace says nothing about outputs it never drained.
    pub outputs_pending: usize,
    /// The first divergence, if any; the replay stopped there.
    pub divergence: Option<Divergence>,
}

impl ReplayReport {
    /// Whether the node reproduced every recorded output exactly.
    pub fn is_identical(&self) -> bool {
        self.divergence.is_none()
    }
}

/// Where and how a replay first differed from its trace.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Index of the record where the difference shows (the number of records if the node
    /// produced outputs after the trace's end).
    pub index: usize,
    /// Its 1-based line (one past the last line at the trace's end).
    pub line: usize,
    /// What differed.
    pub kind: DivergenceKind,
    /// The last input fed before the divergence.
    pub preceding_input: Option<Entry>,
    /// The records just before the divergence (up to five), oldest first.
    pub context: Vec<Entry>,
}

/// What a replay found different.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DivergenceKind {
    /// The node produced a different output than recorded.
    OutputMismatch {
        /// The recorded output.
        expected: OutputRec,
        /// The node's output.
        actual: OutputRec,
    },
    /// The trace records an output that the node did not produce.
    MissingOutput {
        /// The recorded output.
        expected: OutputRec,
    },
    /// The node accepted an input the trace says was rejected, or the reverse, or another error.
    InputResult {
        /// The recorded error, if any.
        expected: Option<String>,
        /// The node's error, if any.
        actual: Option<String>,
    },
    /// An input record cannot be fed (a payload recorded only as a digest).
    UnreplayableInput {
        /// Why.
        reason: String,
    },
    /// The node asked its priority function other questions than the trace recorded (traces
    /// with decisions only): about another advert, more often, or less often.
    Decision(DecisionDivergence),
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "divergence at record #{} (line {}):",
            self.index, self.line
        )?;
        let json = |o: &OutputRec| serde_json::to_string(o).unwrap_or_else(|e| e.to_string());
        match &self.kind {
            DivergenceKind::OutputMismatch { expected, actual } => {
                writeln!(f, "  expected output: {}", json(expected))?;
                writeln!(f, "  actual output:   {}", json(actual))?;
            }
            DivergenceKind::MissingOutput { expected } => {
                writeln!(f, "  expected output: {}", json(expected))?;
                writeln!(f, "  actual: the node produced no further output")?;
            }
            DivergenceKind::InputResult { expected, actual } => {
                let show = |e: &Option<String>| e.clone().unwrap_or_else(|| "accepted".into());
                writeln!(f, "  expected input result: {}", show(expected))?;
                writeln!(f, "  actual input result:   {}", show(actual))?;
            }
            DivergenceKind::UnreplayableInput { reason } => {
                writeln!(f, "  cannot feed the input: {reason}")?;
            }
            DivergenceKind::Decision(d) => {
                writeln!(f, "  {d}")?;
            }
        }
        if let Some(input) = &self.preceding_input {
            writeln!(f, "  after input: {}", input.summary())?;
        }
        if !self.context.is_empty() {
            writeln!(f, "  last records before it:")?;
            for e in &self.context {
                writeln!(f, "    {}", e.summary())?;
            }
        }
        Ok(())
    }
}

/// Replays `trace` on a fresh node built from its header (id, config, seed, priority profile;
/// recorded decisions instead of the profile when the header has `decisions`).
pub fn replay(trace: &Trace) -> ReplayReport {
    replay_with_node(trace, trace.header.build_node())
}

/// Replays `trace` on `node`, which should be fresh: every input is fed at its recorded time and
/// every output record is compared with the node's next output (output times are not
/// compared). The node's outputs form one ordered queue, so a recorder may drain after every
/// input or less often: the order of the whole output sequence is what must match. An input's
/// error must be recorded right after it. Stops at the first divergence.
///
/// When the header has `decisions`, the node's priority function is replaced by a
/// [`ReplayPriorityFn`] that answers from the trace's `decisions` records: each input's
/// decisions follow it (after its error record, if any), and the node must ask about exactly
/// those adverts in that order. `priority` records are then not replayed.
pub fn replay_with_node(trace: &Trace, mut node: Node) -> ReplayReport {
    let answers = trace.header.decisions.then(|| {
        let r = ReplayPriorityFn::new();
        node.set_priority_fn(r.to_fn());
        r
    });
    let inline_max = trace.header.output_payload_inline_max;
    let entries = &trace.entries;
    let mut report = ReplayReport {
        inputs: 0,
        outputs_matched: 0,
        outputs_pending: 0,
        divergence: None,
    };
    let mut preceding: Option<usize> = None;
    let diverge = |at: usize, preceding: Option<usize>, kind: DivergenceKind| {
        let line = match entries.get(at) {
            Some(e) => e.line,
            None => entries.last().map_or(2, |e| e.line + 1),
        };
        Divergence {
            index: at,
            line,
            kind,
            preceding_input: preceding.map(|i| entries[i].clone()),
            context: entries[at.saturating_sub(CONTEXT)..at.min(entries.len())].to_vec(),
        }
    };
    let mut i = 0;
    while i < entries.len() {
        match &entries[i].record {
            Record::In { t, input } => {
                let input = match input.to_input() {
                    Ok(input) => input,
                    Err(e) => {
                        let kind = DivergenceKind::UnreplayableInput {
                            reason: e.to_string(),
                        };
                        report.divergence = Some(diverge(i, preceding, kind));
                        return report;
                    }
                };
                preceding = Some(i);
                report.inputs += 1;
                // This input's recorded decisions: right after it, or after its error.
                let errored = matches!(
                    entries.get(i + 1).map(|e| &e.record),
                    Some(Record::Error { .. })
                );
                let at = i + 1 + usize::from(errored);
                let decided = match (&answers, entries.get(at).map(|e| &e.record)) {
                    (Some(r), Some(Record::Decisions { decisions, .. })) => {
                        r.load(decisions.iter().map(|d| (d.id, d.decision)));
                        true
                    }
                    _ => false,
                };
                let actual = node
                    .handle_input(Time::from_nanos(*t), input)
                    .err()
                    .map(|e| e.to_string());
                if let Some(Err(d)) = answers.as_ref().map(ReplayPriorityFn::finish_input) {
                    report.divergence = Some(diverge(at, preceding, DivergenceKind::Decision(d)));
                    return report;
                }
                i += 1;
                let expected = match entries.get(i).map(|e| &e.record) {
                    Some(Record::Error { error, .. }) => Some(error.clone()),
                    _ => None,
                };
                if expected != actual {
                    let kind = DivergenceKind::InputResult { expected, actual };
                    report.divergence = Some(diverge(i, preceding, kind));
                    return report;
                }
                if expected.is_some() {
                    i += 1;
                }
                if decided {
                    i += 1;
                }
            }
            Record::Out { output, .. } => {
                let kind = match node.poll_output() {
                    None => DivergenceKind::MissingOutput {
                        expected: output.clone(),
                    },
                    Some(out) => {
                        let actual = OutputRec::from_output(&out, inline_max);
                        if actual == *output {
                            report.outputs_matched += 1;
                            i += 1;
                            continue;
                        }
                        DivergenceKind::OutputMismatch {
                            expected: output.clone(),
                            actual,
                        }
                    }
                };
                report.divergence = Some(diverge(i, preceding, kind));
                return report;
            }
            Record::Error { error, .. } => {
                let kind = DivergenceKind::InputResult {
                    expected: Some(error.clone()),
                    actual: None,
                };
                report.divergence = Some(diverge(i, preceding, kind));
                return report;
            }
            Record::Priority { profile, .. } => {
                if answers.is_none() {
                    node.set_priority_fn(profile.to_fn());
                }
                i += 1;
            }
            Record::Decisions { decisions, .. } => {
                // Decisions not right after an input: nothing asked for them.
                let kind = match decisions.first() {
                    Some(d) => DivergenceKind::Decision(DecisionDivergence::Unused {
                        next: d.id,
                        remaining: decisions.len(),
                    }),
                    None => {
                        i += 1;
                        continue;
                    }
                };
                report.divergence = Some(diverge(i, preceding, kind));
                return report;
            }
        }
    }
    while node.poll_output().is_some() {
        report.outputs_pending += 1;
    }
    report
}
