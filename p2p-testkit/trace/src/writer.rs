//! Writing traces: [`TraceWriter`] for drivers that own their node, [`Recorder`] around a node.

use super::record::{DecisionRec, InputRec, OutputRec, Record};
use super::{DecisionLog, Header, PriorityProfile};
use p2p_core::{
    ArtifactId, Config, Decision, Input, InputError, Node, NodeId, Output, PriorityFnRef, Time,
};
use std::io::{self, BufWriter, Write};

/// Writing a trace failed. The first failure is sticky: every later call returns it again.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("writing the trace failed ({kind}): {message}")]
pub struct TraceWriteError {
    /// The IO error's kind.
    pub kind: io::ErrorKind,
    /// The IO error's message.
    pub message: String,
}

impl From<io::Error> for TraceWriteError {
    fn from(e: io::Error) -> Self {
        TraceWriteError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Writes a trace, buffered: the header at creation, then one line per recorded input, output,
/// input error, set of decisions or priority change.
///
/// For drivers that own a [`Node`]: call [`record_input`](Self::record_input) before
/// `handle_input`, [`record_input_error`](Self::record_input_error) right after it if it fails,
/// then (for a header with `decisions`) [`record_decisions`](Self::record_decisions) with what the
/// [`DecisionLog`] wrapping the node's priority function took during the input, and
/// [`record_output`](Self::record_output) for every output drained, in the order drained. Call
/// [`flush`](Self::flush) or [`into_inner`](Self::into_inner) at the end: dropping the writer
/// flushes too but cannot report an error.
///
/// `TraceWriter<W>` is `Send` when `W` is.
pub struct TraceWriter<W: Write> {
    out: BufWriter<W>,
    inline_max: u64,
    error: Option<TraceWriteError>,
    records: u64,
}

impl<W: Write> TraceWriter<W> {
    /// A writer to `writer` that starts by writing `header`.
    pub fn new(writer: W, header: &Header) -> Result<Self, TraceWriteError> {
        let mut w = TraceWriter {
            out: BufWriter::with_capacity(64 * 1024, writer),
            inline_max: header.output_payload_inline_max,
            error: None,
            records: 0,
        };
        let line = header.to_json();
        w.write_line(line.as_bytes())?;
        Ok(w)
    }

    /// Records `input`, fed at `now`, with all its bytes.
    pub fn record_input(&mut self, now: Time, input: &Input) -> Result<(), TraceWriteError> {
        self.write_record(&Record::In {
            t: now.as_nanos(),
            input: InputRec::from(input),
        })
    }

    /// Records `output`, drained at `now`.
    pub fn record_output(&mut self, now: Time, output: &Output) -> Result<(), TraceWriteError> {
        self.write_record(&Record::Out {
            t: now.as_nanos(),
            output: OutputRec::from_output(output, self.inline_max),
        })
    }

    /// Records that the input just recorded was rejected with `error`.
    pub fn record_input_error(
        &mut self,
        now: Time,
        error: &InputError,
    ) -> Result<(), TraceWriteError> {
        self.write_record(&Record::Error {
            t: now.as_nanos(),
            error: error.to_string(),
        })
    }

    /// Records the priority function's answers during the input just recorded, in call order
    /// (nothing when it was not asked). Only for traces whose header has `decisions`.
    pub fn record_decisions(
        &mut self,
        now: Time,
        decisions: &[(ArtifactId, Decision)],
    ) -> Result<(), TraceWriteError> {
        if decisions.is_empty() {
            return self.check();
        }
        self.write_record(&Record::Decisions {
            t: now.as_nanos(),
            decisions: decisions.iter().copied().map(DecisionRec::from).collect(),
        })
    }

    /// Records that the driver replaced the node's priority function with `profile`'s.
    pub fn record_priority_profile(
        &mut self,
        now: Time,
        profile: &PriorityProfile,
    ) -> Result<(), TraceWriteError> {
        self.write_record(&Record::Priority {
            t: now.as_nanos(),
            profile: profile.clone(),
        })
    }

    /// Writes everything buffered to the underlying writer.
    pub fn flush(&mut self) -> Result<(), TraceWriteError> {
        self.check()?;
        let r = self.out.flush();
        self.sticky(r)
    }

    /// The first write error, if any happened.
    pub fn error(&self) -> Option<&TraceWriteError> {
        self.error.as_ref()
    }

    /// Records written after the header.
    pub fn records_written(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, TraceWriteError> {
        self.flush()?;
        self.out
            .into_inner()
            .map_err(|e| TraceWriteError::from(e.into_error()))
    }

    fn write_record(&mut self, record: &Record) -> Result<(), TraceWriteError> {
        self.check()?;
        let line = serde_json::to_vec(record).map_err(io::Error::from);
        let r = line.and_then(|l| {
            self.out.write_all(&l)?;
            self.out.write_all(b"\n")
        });
        self.sticky(r)?;
        self.records += 1;
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), TraceWriteError> {
        let r = self
            .out
            .write_all(line)
            .and_then(|_| self.out.write_all(b"\n"));
        self.sticky(r)
    }

    fn check(&self) -> Result<(), TraceWriteError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn sticky(&mut self, r: io::Result<()>) -> Result<(), TraceWriteError> {
        r.map_err(|e| {
            let e = TraceWriteError::from(e);
            self.error = Some(e.clone());
            e
        })
    }
}

/// A [`Node`] that records every input and output to a trace as it runs.
///
/// Use it exactly like the node: [`handle_input`](Self::handle_input), drain
/// [`poll_output`](Self::poll_output), arm [`poll_timeout`](Self::poll_timeout). Outputs are
/// recorded with the time of the last input. The node keeps running if the trace cannot be
/// written; the failure is reported by [`write_error`](Self::write_error),
/// [`flush`](Self::flush) and [`finish`](Self::finish).
///
/// [`with_decisions`](Self::with_decisions) records any priority function by its decisions and
/// leaves the node's behaviour as it is; [`new`](Self::new) and [`create`](Self::create) install
/// a named profile's function instead.
pub struct Recorder<W: Write> {
    node: Node,
    writer: TraceWriter<W>,
    now: Time,
    log: Option<DecisionLog>,
}

impl<W: Write> Recorder<W> {
    /// Records `node`, which must be fresh (no input fed yet). The recorder installs the
    /// priority function `priority` names, so that the trace names the function the node runs.
    pub fn new(
        mut node: Node,
        priority: PriorityProfile,
        writer: W,
    ) -> Result<Self, TraceWriteError> {
        let header = Header::new(node.node_id(), node.config().clone(), priority);
        node.set_priority_fn(header.priority.to_fn());
        Self::with_header(node, &header, writer)
    }

    /// A fresh node `id` with `config` and the priority function `priority` names, recorded.
    pub fn create(
        id: NodeId,
        config: Config,
        priority: PriorityProfile,
        writer: W,
    ) -> Result<Self, TraceWriteError> {
        let header = Header::new(id, config, priority);
        Self::with_header(header.build_node(), &header, writer)
    }

    /// A fresh node `id` with `config`, whose own priority function (`config.priority_fn`, any
    /// function) is recorded by its decisions; the node runs exactly as it would unrecorded.
    pub fn with_decisions(id: NodeId, config: Config, writer: W) -> Result<Self, TraceWriteError> {
        let log = DecisionLog::new();
        let header = Header::with_decisions(id, config, None);
        let mut config = header.config.clone();
        config.priority_fn = log.wrap(config.priority_fn);
        let mut r = Self::with_header(Node::new(id, config), &header, writer)?;
        r.log = Some(log);
        Ok(r)
    }

    /// Records a fresh `node` under a header given in full (for example with another
    /// `output_payload_inline_max`). The header must describe the node.
    pub fn with_header(node: Node, header: &Header, writer: W) -> Result<Self, TraceWriteError> {
        Ok(Recorder {
            node,
            writer: TraceWriter::new(writer, header)?,
            now: Time::ZERO,
            log: None,
        })
    }

    /// Records `input` (and its error, if any) and feeds it to the node.
    pub fn handle_input(&mut self, now: Time, input: Input) -> Result<(), InputError> {
        self.now = self.now.max(now);
        let _ = self.writer.record_input(now, &input);
        let result = self.node.handle_input(now, input);
        if let Err(e) = &result {
            let _ = self.writer.record_input_error(now, e);
        }
        if let Some(log) = &self.log {
            let _ = self.writer.record_decisions(now, &log.take());
        }
        result
    }

    /// The node's next output, recorded.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.node.poll_output()?;
        let _ = self.writer.record_output(self.now, &out);
        Some(out)
    }

    /// The node's next timer deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.node.poll_timeout()
    }

    /// Replaces the node's priority function with `profile`'s, and records it.
    pub fn set_priority_profile(&mut self, profile: &PriorityProfile) {
        let _ = self.writer.record_priority_profile(self.now, profile);
        match &self.log {
            Some(log) => self.node.set_priority_fn(log.wrap(profile.to_fn())),
            None => self.node.set_priority_fn(profile.to_fn()),
        }
    }

    /// Replaces the node's priority function with `f`, any function. A recorder made by
    /// [`with_decisions`](Self::with_decisions) records its decisions like the first one's; a
    /// recorder of a named profile cannot name `f`, so its trace will diverge from here (use
    /// [`set_priority_profile`](Self::set_priority_profile) there).
    pub fn set_priority_fn(&mut self, f: PriorityFnRef) {
        match &self.log {
            Some(log) => self.node.set_priority_fn(log.wrap(f)),
            None => self.node.set_priority_fn(f),
        }
    }

    /// The recorded node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The first trace write error, if any happened.
    pub fn write_error(&self) -> Option<&TraceWriteError> {
        self.writer.error()
    }

    /// Writes everything buffered to the underlying writer.
    pub fn flush(&mut self) -> Result<(), TraceWriteError> {
        self.writer.flush()
    }

    /// Flushes and returns the node and the underlying writer.
    pub fn finish(self) -> Result<(Node, W), TraceWriteError> {
        let w = self.writer.into_inner()?;
        Ok((self.node, w))
    }
}
