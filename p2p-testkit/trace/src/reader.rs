//! Reading traces: typed errors with line numbers, bounded lines, never a panic.

use super::record::{InputRec, Record};
use super::{FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSION_1, Header, HeaderRec};
use std::io::{self, BufRead};
use std::path::Path;

/// Longest trace line read by default (64 MiB: a 16 MiB artifact in base64 plus room).
pub const DEFAULT_MAX_LINE_LEN: usize = 64 << 20;

/// A trace could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The underlying reader failed.
    #[error("reading the trace: {0}")]
    Io(#[from] io::Error),
    /// There is no header line.
    #[error("the trace is empty: expected a header on line 1")]
    Empty,
    /// A line is not UTF-8.
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A line is longer than the reader's limit.
    #[error("line {line}: longer than the limit of {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// The first line is not a p2p-trace header.
    #[error("line {line}: not a p2p-trace header: {what}")]
    NotATrace {
        /// 1-based line number.
        line: usize,
        /// What was found instead.
        what: String,
    },
    /// The trace has a format version this build cannot read.
    #[error(
        "line {line}: trace format version {found} is not supported (this build reads {FORMAT_VERSION_1} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// 1-based line number.
        line: usize,
        /// The version found.
        found: u64,
    },
    /// The header's JSON does not match the format.
    #[error("line {line}, column {column}: invalid header: {reason}")]
    Header {
        /// 1-based line number.
        line: usize,
        /// 1-based column in the line.
        column: usize,
        /// What was wrong.
        reason: String,
    },
    /// A record's JSON does not match the format.
    #[error("line {line}, column {column}: invalid record: {reason}")]
    Record {
        /// 1-based line number.
        line: usize,
        /// 1-based column in the line.
        column: usize,
        /// What was wrong.
        reason: String,
    },
    /// A record is well-formed JSON but cannot be replayed.
    #[error("line {line}: {reason}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

impl TraceError {
    /// The 1-based line the error is on, if it concerns one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            TraceError::Io(_) | TraceError::Empty => None,
            TraceError::NotUtf8 { line }
            | TraceError::LineTooLong { line, .. }
            | TraceError::NotATrace { line, .. }
            | TraceError::UnsupportedVersion { line, .. }
            | TraceError::Header { line, .. }
            | TraceError::Record { line, .. }
            | TraceError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// serde_json's message without its " at line L column C" suffix (lines are ours).
fn reason_of(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// One record of a trace with its place in the file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// 0-based index among the records (the header is not a record).
    pub index: usize,
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    /// The record.
    pub record: Record,
}

impl Entry {
    /// A one-line summary: index, line, time in milliseconds and the record's summary.
    pub fn summary(&self) -> String {
        let t = self.record.t();
        format!(
            "#{:<6} L{:<6} {:>6}.{:06}ms  {}",
            self.index,
            self.line,
            t / 1_000_000,
            t % 1_000_000,
            self.record.summary()
        )
    }
}

/// Streams the records of a trace after reading and checking its header.
///
/// Yields `Err` once at the first bad line and then ends.
pub struct TraceReader<R: BufRead> {
    reader: R,
    header: Header,
    line: usize,
    index: usize,
    max_line_len: usize,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> TraceReader<R> {
    /// Reads the header of the trace in `reader`, with lines up to [`DEFAULT_MAX_LINE_LEN`].
    pub fn new(reader: R) -> Result<Self, TraceError> {
        Self::with_max_line_len(reader, DEFAULT_MAX_LINE_LEN)
    }

    /// Reads the header, refusing any line longer than `max_line_len` bytes before buffering it.
    pub fn with_max_line_len(reader: R, max_line_len: usize) -> Result<Self, TraceError> {
        let mut r = TraceReader {
            reader,
            header: Header::new(
                p2p_core::NodeId::default(),
                p2p_core::Config::default(),
                super::PriorityProfile::FetchAll,
            ),
            line: 0,
            index: 0,
            max_line_len,
            buf: Vec::new(),
            done: false,
        };
        if !r.next_line()? {
            return Err(TraceError::Empty);
        }
        r.header = parse_header(r.line, &r.buf)?;
        Ok(r)
    }

    /// The trace's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next non-blank line into `buf`; false at the end.
    fn next_line(&mut self) -> Result<bool, TraceError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let mut got_any = false;
            loop {
                let chunk = self.reader.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                got_any = true;
                let (part, found_nl) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => (&chunk[..i], true),
                    None => (chunk, false),
                };
                if self.buf.len() + part.len() > self.max_line_len {
                    return Err(TraceError::LineTooLong {
                        line: self.line,
                        max: self.max_line_len,
                    });
                }
                self.buf.extend_from_slice(part);
                let used = part.len() + usize::from(found_nl);
                self.reader.consume(used);
                if found_nl {
                    break;
                }
            }
            if !got_any {
                return Ok(false);
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(true);
            }
        }
    }

    fn next_entry(&mut self) -> Result<Option<Entry>, TraceError> {
        if !self.next_line()? {
            return Ok(None);
        }
        let line = self.line;
        let text = std::str::from_utf8(&self.buf).map_err(|_| TraceError::NotUtf8 { line })?;
        let record: Record = serde_json::from_str(text).map_err(|e| TraceError::Record {
            line,
            column: e.column(),
            reason: reason_of(&e),
        })?;
        match &record {
            Record::In { input, .. } => check_input(line, input)?,
            Record::Decisions { .. } if !self.header.decisions => {
                return Err(TraceError::Invalid {
                    line,
                    reason: "a decisions record in a trace whose header does not record \
                             decisions"
                        .to_owned(),
                });
            }
            _ => {}
        }
        let entry = Entry {
            index: self.index,
            line,
            record,
        };
        self.index += 1;
        Ok(Some(entry))
    }
}

fn check_input(line: usize, input: &InputRec) -> Result<(), TraceError> {
    input
        .to_input()
        .map(|_| ())
        .map_err(|e| TraceError::Invalid {
            line,
            reason: format!("input record: {e}"),
        })
}

fn parse_header(line: usize, buf: &[u8]) -> Result<Header, TraceError> {
    let text = std::str::from_utf8(buf).map_err(|_| TraceError::NotUtf8 { line })?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| TraceError::NotATrace {
            line,
            what: format!("not JSON ({})", reason_of(&e)),
        })?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT_NAME) => {}
        Some(other) => {
            return Err(TraceError::NotATrace {
                line,
                what: format!("format is {other:?}, expected {FORMAT_NAME:?}"),
            });
        }
        None => {
            return Err(TraceError::NotATrace {
                line,
                what: "no \"format\" field".to_owned(),
            });
        }
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    match version {
        Some(v) if v == u64::from(FORMAT_VERSION) || v == u64::from(FORMAT_VERSION_1) => {}
        Some(found) => return Err(TraceError::UnsupportedVersion { line, found }),
        None => {
            return Err(TraceError::Header {
                line,
                column: 1,
                reason: "missing or non-numeric field `version`".to_owned(),
            });
        }
    }
    let rec: HeaderRec = serde_json::from_str(text).map_err(|e| TraceError::Header {
        line,
        column: e.column(),
        reason: reason_of(&e),
    })?;
    if rec.decisions && version == Some(u64::from(FORMAT_VERSION_1)) {
        return Err(TraceError::Header {
            line,
            column: 1,
            reason: format!("`decisions` needs format version {FORMAT_VERSION}"),
        });
    }
    Ok(rec.into())
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Entry, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A whole trace in memory.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The header.
    pub header: Header,
    /// The records, in file order.
    pub entries: Vec<Entry>,
}

impl Trace {
    /// Parses a whole trace from `reader`.
    pub fn parse(reader: impl BufRead) -> Result<Trace, TraceError> {
        let mut r = TraceReader::new(reader)?;
        let entries = r.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok(Trace {
            header: r.header,
            entries,
        })
    }

    /// Parses a whole trace from bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
        Trace::parse(bytes)
    }

    /// Reads and parses the trace file at `path`.
    pub fn read_file(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        let f = std::fs::File::open(path)?;
        Trace::parse(io::BufReader::new(f))
    }

    /// Writes the trace in its JSON Lines form.
    pub fn write_to(&self, mut w: impl io::Write) -> io::Result<()> {
        writeln!(w, "{}", self.header.to_json())?;
        for e in &self.entries {
            serde_json::to_writer(&mut w, &e.record)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }
}
