//! Recording honest nodes' cores (see "Recording a node" in the module docs of [`super`]).
//!
//! Invariants:
//! - every incarnation of a recorded node has one [`RecordedTrace`], pushed when it starts, in
//!   start order, and numbered 1, 2, ... per node;
//! - a write error is sticky in its writer and reported once, as a violation of the
//!   trace-recording check, when its trace ends (or when the writer cannot be opened);
//! - recording changes nothing in the run: a node whose priority function no profile names
//!   runs it wrapped in a [`DecisionLog`], which decides as the function does.

use super::checks::Violations;
use super::report::RecordedTrace;
use super::scenario::TraceSink;
use crate::trace::{DecisionLog, Header, PriorityProfile, TraceWriteError, TraceWriter};
use p2p_core::{Config, Input, Node, NodeId, Output, Time};
use std::io::Write;

/// The writer of a recorded incarnation.
enum TraceOut {
    Memory(TraceWriter<Vec<u8>>),
    Stream(TraceWriter<Box<dyn Write + Send>>),
}

/// A recorded incarnation: its writer, its entry in the recorder's traces, and the log of the
/// wrapper around its priority function when it is recorded by its decisions.
pub(super) struct ActiveTrace {
    out: TraceOut,
    index: usize,
    decisions: Option<DecisionLog>,
}

// Write errors are sticky in the writer and reported when the trace ends.
impl ActiveTrace {
    /// Writes the decisions the priority function took during the input just fed.
    pub(super) fn decisions(&mut self, now: Time) {
        let Some(log) = &self.decisions else {
            return;
        };
        let d = log.take();
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_decisions(now, &d),
            TraceOut::Stream(w) => w.record_decisions(now, &d),
        };
    }

    /// Writes an input about to be fed.
    pub(super) fn input(&mut self, now: Time, input: &Input) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_input(now, input),
            TraceOut::Stream(w) => w.record_input(now, input),
        };
    }

    /// Writes the error the core returned for the input just fed.
    pub(super) fn input_error(&mut self, now: Time, e: &p2p_core::InputError) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_input_error(now, e),
            TraceOut::Stream(w) => w.record_input_error(now, e),
        };
    }

    /// Writes an output drained after the input.
    pub(super) fn output(&mut self, now: Time, o: &Output) {
        let _ = match &mut self.out {
            TraceOut::Memory(w) => w.record_output(now, o),
            TraceOut::Stream(w) => w.record_output(now, o),
        };
    }

    /// Flushes and closes the writer: the records written, the in-memory trace and the error.
    fn finish(self) -> (u64, Option<Vec<u8>>, Option<TraceWriteError>) {
        match self.out {
            TraceOut::Memory(w) => {
                let n = w.records_written();
                match w.into_inner() {
                    Ok(data) => (n, Some(data), None),
                    Err(e) => (n, None, Some(e)),
                }
            }
            TraceOut::Stream(w) => {
                let n = w.records_written();
                (n, None, w.into_inner().err())
            }
        }
    }
}

/// The traces of a run.
pub(super) struct Recorder {
    /// The profile naming the honest nodes' priority function; `None` when the scenario's
    /// config replaced it with a function no profile names (recorded by its decisions then).
    profile: Option<PriorityProfile>,
    traces: Vec<RecordedTrace>,
}

impl Recorder {
    /// A recorder of nodes whose priority function `profile` names, if one does.
    pub(super) fn new(profile: Option<PriorityProfile>) -> Self {
        Recorder {
            profile,
            traces: Vec::new(),
        }
    }

    /// The traces so far.
    pub(super) fn traces(&self) -> &[RecordedTrace] {
        &self.traces
    }

    /// The traces, for the report.
    pub(super) fn into_traces(self) -> Vec<RecordedTrace> {
        self.traces
    }

    /// Opens the trace of node `i`'s incarnation that just started as `node` (with id `id`
    /// and config `cfg`) at `now`, into `sink`; `None` when it cannot be opened (a violation).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        i: usize,
        id: NodeId,
        node: &mut Node,
        cfg: Config,
        now: Time,
        sink: &TraceSink,
        v: &mut Violations,
    ) -> Option<Box<ActiveTrace>> {
        let incarnation = self.traces.iter().filter(|t| t.node == i).count() as u32 + 1;
        let mut rec = RecordedTrace {
            node: i,
            incarnation,
            started_at: now,
            ended_at: now,
            ended_by_crash: false,
            records: 0,
            path: None,
            data: None,
            error: None,
        };
        let index = self.traces.len();
        // A function no profile names is recorded by its decisions: the node runs it wrapped,
        // deciding exactly as it would unrecorded.
        let (header, decisions) = match self.profile.clone() {
            Some(profile) => (Header::new(id, cfg, profile), None),
            None => (
                Header::with_decisions(id, cfg, None),
                Some(DecisionLog::new()),
            ),
        };
        let out = open_writer(sink, i, incarnation, &header, &mut rec);
        let active = match out {
            Ok(out) => {
                if let Some(log) = &decisions {
                    node.set_priority_fn(log.wrap(header.config.priority_fn.clone()));
                }
                Some(Box::new(ActiveTrace {
                    out,
                    index,
                    decisions,
                }))
            }
            Err(e) => {
                v.add(|| format!("node {i} incarnation {incarnation}: {e}"));
                rec.error = Some(e);
                None
            }
        };
        self.traces.push(rec);
        active
    }

    /// Closes a recorded incarnation's trace at `now`, at a crash or at the end of the run.
    pub(super) fn close(&mut self, t: ActiveTrace, now: Time, crash: bool, v: &mut Violations) {
        let index = t.index;
        let (records, data, error) = t.finish();
        let rec = &mut self.traces[index];
        rec.ended_at = now;
        rec.ended_by_crash = crash;
        rec.records = records;
        rec.data = data;
        if let Some(e) = error {
            let e = match &rec.path {
                Some(p) => format!("{}: {e}", p.display()),
                None => e.to_string(),
            };
            let (node, inc) = (rec.node, rec.incarnation);
            v.add(|| format!("node {node} incarnation {inc}: {e}"));
            rec.error = Some(e);
        }
    }
}

/// Opens the writer of incarnation `incarnation` of node `i` into `sink` and writes `header`;
/// sets the path of `rec` for a file.
fn open_writer(
    sink: &TraceSink,
    i: usize,
    incarnation: u32,
    header: &Header,
    rec: &mut RecordedTrace,
) -> Result<TraceOut, String> {
    match sink {
        TraceSink::Memory => TraceWriter::new(Vec::new(), header)
            .map(TraceOut::Memory)
            .map_err(|e| e.to_string()),
        TraceSink::File(path) => {
            let path = TraceSink::incarnation_path(path, incarnation);
            let out = std::fs::File::create(&path)
                .map_err(TraceWriteError::from)
                .and_then(|f| TraceWriter::new(Box::new(f) as Box<dyn Write + Send>, header))
                .map(TraceOut::Stream)
                .map_err(|e| format!("{}: {e}", path.display()));
            rec.path = Some(path);
            out
        }
        TraceSink::Writer(open) => open(i, incarnation)
            .map_err(TraceWriteError::from)
            .and_then(|w| TraceWriter::new(w, header))
            .map(TraceOut::Stream)
            .map_err(|e| e.to_string()),
    }
}
