//! `p2p-trace`: inspect, filter, replay and compare p2p-core traces.
//!
//! ```text
//! p2p-trace show FILE
//! p2p-trace filter FILE [--peer HEXPREFIX] [--kind inputs|outputs] [--from-ms A] [--to-ms B] [--jsonl]
//! p2p-trace replay FILE
//! p2p-trace diff A B
//! ```
//!
//! Exit status: 0 on success (for `replay` and `diff`: identical), 1 when `replay` diverges or
//! `diff` finds a difference, 2 on a usage error or an unreadable trace.

use p2p_trace::{Entry, Header, Trace, TraceError, TraceReader, replay};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::process::ExitCode;

const USAGE: &str = "usage:
  p2p-trace show FILE
  p2p-trace filter FILE [--peer HEXPREFIX] [--kind inputs|outputs] [--from-ms A] [--to-ms B] [--jsonl]
  p2p-trace replay FILE
  p2p-trace diff A B";

/// A failure that ends the program with status 2.
enum Fail {
    Usage(String),
    Trace(String, TraceError),
    Output(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Output(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(Fail::Usage(msg)) => {
            eprintln!("p2p-trace: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Trace(file, e)) => {
            eprintln!("p2p-trace: {file}: {e}");
            ExitCode::from(2)
        }
        // A closed pipe (`p2p-trace show big | head`) is not an error.
        Err(Fail::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Fail::Output(e)) => {
            eprintln!("p2p-trace: writing output: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, Fail> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Fail::Usage("missing command".into()));
    };
    match (cmd.as_str(), rest) {
        ("show", [file]) => filter(file, &Filter::default()),
        ("filter", [file, opts @ ..]) => filter(file, &Filter::parse(opts)?),
        ("replay", [file]) => replay_file(file),
        ("diff", [a, b]) => diff(a, b),
        ("help" | "--help" | "-h", _) => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        ("show" | "filter" | "replay" | "diff", _) => {
            Err(Fail::Usage(format!("wrong arguments for `{cmd}`")))
        }
        _ => Err(Fail::Usage(format!("unknown command `{cmd}`"))),
    }
}

#[derive(Default)]
struct Filter {
    peer: Option<String>,
    inputs: Option<bool>,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
    jsonl: bool,
}

fn parse_ms(flag: &str, v: &str) -> Result<u64, Fail> {
    match v.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok((ms * 1e6).min(u64::MAX as f64) as u64),
        _ => Err(Fail::Usage(format!(
            "{flag} wants a non-negative number of milliseconds, got {v:?}"
        ))),
    }
}

impl Filter {
    fn parse(opts: &[String]) -> Result<Filter, Fail> {
        let mut f = Filter::default();
        let mut it = opts.iter();
        while let Some(flag) = it.next() {
            if flag == "--jsonl" {
                f.jsonl = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| Fail::Usage(format!("{flag} needs a value")))?;
            match flag.as_str() {
                "--peer" => {
                    let p = value.to_ascii_lowercase();
                    if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(Fail::Usage(format!(
                            "--peer wants 1 to 64 hex digits, got {value:?}"
                        )));
                    }
                    f.peer = Some(p);
                }
                "--kind" => {
                    f.inputs = Some(match value.as_str() {
                        "inputs" => true,
                        "outputs" => false,
                        _ => {
                            return Err(Fail::Usage(format!(
                                "--kind wants inputs or outputs, got {value:?}"
                            )));
                        }
                    })
                }
                "--from-ms" => f.from_ns = Some(parse_ms(flag, value)?),
                "--to-ms" => f.to_ns = Some(parse_ms(flag, value)?),
                _ => return Err(Fail::Usage(format!("unknown option {flag}"))),
            }
        }
        Ok(f)
    }

    fn matches(&self, e: &Entry) -> bool {
        let r = &e.record;
        let t = r.t();
        self.inputs
            .is_none_or(|inputs| if inputs { r.is_input() } else { r.is_output() })
            && self.from_ns.is_none_or(|a| t >= a)
            && self.to_ns.is_none_or(|b| t <= b)
            && self.peer.as_ref().is_none_or(|p| {
                r.peers()
                    .iter()
                    .any(|id| id.to_hex().starts_with(p.as_str()))
            })
    }
}

fn open(file: &str) -> Result<TraceReader<BufReader<File>>, Fail> {
    let f = File::open(file).map_err(|e| Fail::Trace(file.into(), TraceError::Io(e)))?;
    TraceReader::new(BufReader::new(f)).map_err(|e| Fail::Trace(file.into(), e))
}

fn describe(h: &Header) -> String {
    format!(
        "trace of node {} (p2p-trace {}), seed {}, priority {}, output payloads inline up to {} B",
        h.node.to_hex(),
        h.crate_version,
        h.config.seed,
        if h.decisions {
            format!("recorded decisions (named {})", h.priority)
        } else {
            h.priority.to_string()
        },
        h.output_payload_inline_max
    )
}

fn filter(file: &str, f: &Filter) -> Result<ExitCode, Fail> {
    let mut reader = open(file)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if f.jsonl {
        writeln!(out, "{}", reader.header().to_json())?;
    } else {
        writeln!(out, "{}", describe(reader.header()))?;
    }
    for entry in reader.by_ref() {
        let entry = entry.map_err(|e| Fail::Trace(file.into(), e))?;
        if !f.matches(&entry) {
            continue;
        }
        if f.jsonl {
            writeln!(out, "{}", entry.record.to_json())?;
        } else {
            writeln!(out, "{}", entry.summary())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn parse_file(file: &str) -> Result<Trace, Fail> {
    Trace::read_file(file).map_err(|e| Fail::Trace(file.into(), e))
}

fn replay_file(file: &str) -> Result<ExitCode, Fail> {
    let trace = parse_file(file)?;
    let report = replay(&trace);
    match &report.divergence {
        None => {
            println!(
                "identical: {} inputs, {} outputs replayed ({})",
                report.inputs,
                report.outputs_matched,
                describe(&trace.header)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            print!("{d}");
            println!(
                "({} inputs fed, {} outputs matched before it)",
                report.inputs, report.outputs_matched
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn diff(a: &str, b: &str) -> Result<ExitCode, Fail> {
    let (ta, tb) = (parse_file(a)?, parse_file(b)?);
    let mut differ = false;
    for d in ta.header.differences(&tb.header) {
        println!("header {d}");
        differ = true;
    }
    let n = ta.entries.len().max(tb.entries.len());
    let first = (0..n)
        .find(|&i| ta.entries.get(i).map(|e| &e.record) != tb.entries.get(i).map(|e| &e.record));
    if let Some(i) = first {
        differ = true;
        println!("first differing record: #{i}");
        for (name, t) in [(a, &ta), (b, &tb)] {
            match t.entries.get(i) {
                Some(e) => {
                    println!("  {name} line {}: {}", e.line, e.record.summary());
                    println!("    {}", e.record.to_json());
                }
                None => println!("  {name}: ends after {} records", t.entries.len()),
            }
        }
        if i > 0 {
            println!("  last common record: {}", ta.entries[i - 1].summary());
        }
    }
    if differ {
        Ok(ExitCode::from(1))
    } else {
        println!("identical: {n} records");
        Ok(ExitCode::SUCCESS)
    }
}
