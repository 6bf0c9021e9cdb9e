//! `cargo xtask`: the project's own tasks, as one small binary whose one dependency,
//! serde_json, reads `cargo metadata`.
//!
//! Each subcommand is one arm in [`main`]'s match and one module. Run `cargo xtask help` for the
//! list.

mod bench;
mod ci;
mod fuzz;
mod shell;
mod sim;
mod testbed;
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  ci                               tidy, fmt, clippy, test, doc, quick bench and testbed smoke checks,
                                   in order
  tidy                             only the tidy checks (also run by `cargo test`)
  bench [args]                     build p2p-bench in release and run it (see BENCHMARKS.md):
                                   --quick, --out PATH, --block-size N, --process-per-node,
                                   --only PARTS; `bench compare A.json B.json` prints ratios
  fuzz [target] [--seconds N]      run one cargo-fuzz target, or every target, for N seconds each
                                   (default 60); installs cargo-fuzz if missing
  sim [args...]                    the simulator: `cargo run --release -p p2p-testkit --bin p2p-sim --
                                   <args>` (default `run all --seeds 0..5`; `sim list` names the scenarios),
                                   ending with p2p-sim's exit code (1: a check failed, 2: usage)
  testbed [args] [-- bench args]   link-bound runs: nodes in network namespaces on a bridge, tc tbf
                                   links (root only; see BENCHMARKS.md): --only NAMES, --rate MBIT,
                                   --slow-fraction F, --queue-ms MS, --burst B, --cc ALGO, --prio-links,
                                   --deadline S, --repeat K,
                                   --no-sim, --sim-cpu NS_PER_BYTE,US_PER_FRAME|off, --sim-loss MS|off,
                                   --smoke (CI's short run), --cleanup [--force]
  help                             this text
";

/// What went wrong in a task, and so which exit code the process ends with.
#[derive(Debug)]
pub enum TaskError {
    /// The command line was wrong: the usage text is printed and the exit code is 2.
    Usage(String),
    /// The task ran and failed: the exit code is 1.
    Failed(String),
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Usage(msg) | TaskError::Failed(msg) => f.write_str(msg),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        "sim" => sim::run(rest),
        "ci" => no_args("ci", rest).and_then(|()| ci::run()),
        "tidy" => no_args("tidy", rest).and_then(|()| tidy::run()),
        "fuzz" => fuzz::FuzzArgs::parse(rest).and_then(|args| fuzz::run(&args)),
        "bench" => bench::run(rest),
        "testbed" => testbed::run(rest),
        // A new task is one more arm here and one module.
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(TaskError::Usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(TaskError::Usage(msg)) => {
            eprintln!("error: {msg}\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Err(TaskError::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Rejects any argument after a subcommand that takes none.
fn no_args(command: &str, rest: &[String]) -> Result<(), TaskError> {
    match rest.first() {
        None => Ok(()),
        Some(extra) => Err(TaskError::Usage(format!(
            "`{command}` takes no arguments, got `{extra}`"
        ))),
    }
}
