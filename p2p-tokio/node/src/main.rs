//! `p2p-node`: a gossip node on real sockets, its key generator, and a local demo subnet.
//!
//! - `p2p-node keygen --out DIR` writes `key.pem` and `cert.pem` and prints the node id.
//! - `p2p-node run --config node.toml` runs one node of a subnet spread over machines.
//! - `p2p-node demo` runs a whole subnet in this process under a mixed workload and reports.
//! - `p2p-node publish|remove|get|list|watch|status|reevaluate` talk to a running node's local
//!   API (`--api ADDR` or `--config FILE`; default 127.0.0.1:9000).
//!
//! Exit codes: 0 success, 1 failure at run time (or an incomplete demo), 2 bad usage or
//! configuration (one line on stderr says what and where).

mod cli;
mod demo;
mod keygen;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a bad command line or configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code of a failure at run time.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "p2p-node",
    version,
    about = "IC-style artifact gossip node",
    long_about = "IC-style artifact gossip node.\n\n\
        `run` starts a node from a configuration file. A running node serves a local HTTP API \
        (by default on 127.0.0.1:9000, key `api` of its configuration; see docs/node-api.md): \
        `publish`, `remove`, `get`, `list`, `watch`, `status` and `reevaluate` are its \
        command-line client, pointed at a node with --api ADDR or --config FILE."
)]
struct Cli {
    /// Log filter (e.g. `info`, `p2p_tokio=debug`); overrides RUST_LOG and the config file.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a node identity: DIR/key.pem (secret) and DIR/cert.pem; print the node id.
    Keygen {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing key.pem / cert.pem.
        #[arg(long)]
        force: bool,
    },
    /// Run a node from a configuration file; it serves the local API (see `api` in the file).
    Run {
        /// The node's configuration (see examples/node.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Record the core's inputs and outputs to FILE (overrides `record_trace` in the file).
        #[arg(long, value_name = "FILE")]
        record_trace: Option<PathBuf>,
    },
    /// Run a local subnet in this process under a mixed workload and report on delivery.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    Api(cli::ApiCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Keygen { out, force } => keygen::run(&out, force),
        Command::Run {
            config,
            record_trace,
        } => run::main(&config, record_trace, cli.log_level.as_deref()),
        Command::Demo(args) => demo::main(&args, cli.log_level.as_deref()),
        Command::Api(cmd) => cli::main(cmd),
    };
    ExitCode::from(code)
}

/// Sets up structured logs on stderr: `cli` filter first, then RUST_LOG, then `file`, then
/// `default`.
fn init_logs(cli: Option<&str>, file: Option<&str>, default: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let (source, spec) = match (cli, env.as_deref(), file) {
        (Some(c), _, _) => ("--log-level", c),
        (None, Some(e), _) => ("RUST_LOG", e),
        (None, None, Some(f)) => ("log_level", f),
        (None, None, None) => ("default", default),
    };
    let filter = EnvFilter::try_new(spec)
        .map_err(|e| format!("{source}: invalid log filter `{spec}`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}

/// Prints the one-line error of a failed command.
fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    eprintln!("p2p-node: error: {message}");
    code
}
