//! `p2p-bench`: measures, in one run, the machine's limits (rustls on one core, loopback TCP),
//! the core's and the wire's costs, and end-to-end workloads on real p2p-tokio nodes over TLS
//! on 127.0.0.1; prints one table and writes the same figures as JSON. `p2p-bench compare A B`
//! prints the ratio of every figure of two such files.
//!
//! Run it through `cargo xtask bench` (release build, malloc settings); BENCHMARKS.md at the
//! workspace root explains every workload and measure.

mod limits;
mod machine;
mod micro;
mod pictures;
mod process;
mod results;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::results::Results;
use crate::workloads::{Sizes, Tuning};

#[derive(Parser, Debug)]
#[command(
    name = "p2p-bench",
    about = "Benchmarks of p2p-tokio nodes on 127.0.0.1 against the machine's limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Tiny counts (4 to 6 nodes, 200 small, 4 large): checks that every part still works,
    /// in seconds (W5 is left out). Fails if anything is missing or duplicated, like the full
    /// run.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Size of a W2 block in bytes (1 MiB by default; 4194304 for 4 MiB blocks).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(16..=(15 << 20)))]
    block_size: u64,
    /// Run every node in its own process (this binary's hidden `node` command) instead of all
    /// nodes in this process.
    #[arg(long)]
    process_per_node: bool,
    /// The nodes' settings.
    #[command(flatten)]
    tuning: TuningArgs,
    /// W5's nodes (a process each).
    #[arg(long, default_value_t = workloads::W5_DEFAULT.0 as u64, value_parser = clap::value_parser!(u64).range(2..=64))]
    w5_nodes: u64,
    /// W5's number of artifacts, all published by one node at t=0.
    #[arg(long, default_value_t = workloads::W5_DEFAULT.1 as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    w5_blocks: u64,
    /// Size of a W5 artifact in bytes (64 MiB by default; at most 4 GiB, the benchmark nodes'
    /// `max_artifact_size`).
    #[arg(long, default_value_t = workloads::W5_DEFAULT.2 as u64, value_parser = clap::value_parser!(u64).range(16..=workloads::MAX_ARTIFACT_SIZE))]
    w5_block_size: u64,
    /// Run only these parts, comma-separated: limits, micro, W1, W2, W3, W4, W5.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// A workload of its own instead of W1..W5, with a process per node (repeatable):
    /// `name=NAME,nodes=N,small=COUNT,small_size=BYTES,large=COUNT,large_size=BYTES,origins=N,
    /// spread_ms=MS,large_every_ms=MS,timeout_s=S` (the large ones `large_every_ms` apart from
    /// the start, all at once by default). Limits and micro run only if `--only` names them.
    #[arg(long)]
    custom: Vec<String>,
    /// Runs node `i` in network namespace `NS_i` (through `ip netns exec`, so as root),
    /// listening on `ADDR_i` there: comma-separated `NS=ADDR` pairs, at least one per node.
    /// Implies `--process-per-node`. `cargo xtask testbed` sets the namespaces up.
    #[arg(long, value_delimiter = ',')]
    netns: Vec<process::Placement>,
    /// Also draw the run's pictures into DIR: `report.html` (self-contained, every workload)
    /// and `<workload>-latency.svg`, `-progress.svg`, `-traffic.svg` (latency distribution per
    /// class, delivery progress against the expected total and the known bounds, socket bytes
    /// per node).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// A lower bound of a workload's time to full delivery, drawn on its progress picture as
    /// the link bound (repeatable): `NAME=SECONDS`. `cargo xtask testbed` passes its physical
    /// bound.
    #[arg(long, value_name = "NAME=SECONDS")]
    bound: Vec<pictures::GivenBound>,
}

/// The nodes' settings a run may change, given to the benchmark and passed on to each node
/// process as the same flags ([`process::node_args`]).
#[derive(clap::Args, Debug, Clone, Copy)]
struct TuningArgs {
    /// SO_SNDBUF and SO_RCVBUF of every node's connections, bytes (default: the OS's, which
    /// autotunes up to megabytes on loopback).
    #[arg(long)]
    socket_buffer: Option<usize>,
    /// The subnet's chunk size in bytes (default 128 KiB): artifacts larger than it swarm in
    /// chunks, smaller ones travel whole.
    #[arg(long, value_parser = clap::value_parser!(u32).range(4096..))]
    chunk_size: Option<u32>,
    /// TCP_NOTSENT_LOWAT of every node's connections, bytes (default: the node's, 128 KiB;
    /// 0 turns it off).
    #[arg(long)]
    notsent_lowat: Option<u32>,
    /// Bytes every node's writers take from the multiplexer per socket write (default: the
    /// node's, 64 KiB).
    #[arg(long)]
    write_chunk: Option<usize>,
    /// The nodes' `swarm_patience` in ms (default: the core's, 100 ms).
    #[arg(long)]
    swarm_patience_ms: Option<u64>,
    /// The nodes' `push_patience` in ms (default: the core's, 500 ms).
    #[arg(long)]
    push_patience_ms: Option<u64>,
    /// Turn the nodes' chunk pushes on (`push_chunks`; off by default).
    #[arg(long)]
    push_chunks: bool,
    /// Every node connects to about K others (the topology's degree, at least 2; see
    /// `p2p_transport::topology`) and relays what it receives (default: a full mesh).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..))]
    peers: Option<u64>,
    /// Turn the nodes' express lanes off: control and urgent messages share each peer's one
    /// connection with the bulk.
    #[arg(long)]
    no_express: bool,
    /// The nodes assemble (and the origins make) large artifacts in files mapped into memory
    /// (`p2p_store::FileStorage`, in `p2p-bench-storage` under the temporary directory), not
    /// in memory: their anonymous memory stays bounded whatever the artifacts' size.
    #[arg(long)]
    file_storage: bool,
    /// Run the nodes' express lanes on a thread of their own (one per process, so one for all
    /// nodes in-process), not among the bulk connections' tasks on the nodes' runtime.
    #[arg(long)]
    express_thread: bool,
}

impl TuningArgs {
    fn tuning(&self) -> Tuning {
        Tuning {
            socket_buffer: self.socket_buffer,
            chunk_size: self.chunk_size,
            notsent_lowat: self.notsent_lowat,
            write_chunk: self.write_chunk,
            swarm_patience_ms: self.swarm_patience_ms,
            push_patience_ms: self.push_patience_ms,
            push_chunks: self.push_chunks,
            peers: self.peers.map(|k| k as usize),
            no_express: self.no_express,
            file_storage: self.file_storage,
            express_thread: self.express_thread,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Limits,
    Micro,
    #[value(name = "W1", alias = "w1")]
    W1,
    #[value(name = "W2", alias = "w2")]
    W2,
    #[value(name = "W3", alias = "w3")]
    W3,
    #[value(name = "W4", alias = "w4")]
    W4,
    #[value(name = "W5", alias = "w5")]
    W5,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prints, figure by figure, B's value over A's and whether B is better.
    Compare {
        /// The baseline JSON.
        a: PathBuf,
        /// The JSON compared with it.
        b: PathBuf,
    },
    /// One node of a `--process-per-node` run, driven over stdin/stdout by the parent.
    #[command(hide = true)]
    Node {
        /// The address the node listens on (port chosen by the OS).
        #[arg(long, default_value = "127.0.0.1")]
        listen: std::net::IpAddr,
        /// The node's settings.
        #[command(flatten)]
        tuning: TuningArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Cmd::Compare { a, b }) => Results::read(a)
            .and_then(|a| Results::read(b).map(|b| (a, b)))
            .map(|(a, b)| {
                print!("{}", results::compare(&a, &b));
                ExitCode::SUCCESS
            }),
        Some(Cmd::Node { listen, tuning }) => {
            process::node_main(*listen, tuning.tuning()).map(|()| ExitCode::SUCCESS)
        }
        None => run(&cli),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("p2p-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wants(cli: &Cli, part: Part) -> bool {
    (cli.only.is_empty() && cli.custom.is_empty()) || cli.only.contains(&part)
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    let quick = cli.quick;
    let machine = machine::Machine::detect();
    eprintln!("p2p-bench on {machine}");
    let limits = if wants(cli, Part::Limits) {
        eprintln!("measuring the machine's limits (rustls, loopback TCP)");
        let (tls_bytes, loop_bytes, runs) = if quick {
            (16 << 20, 64 << 20, 1)
        } else {
            (256 << 20, 1 << 30, 3)
        };
        Some(results::Limits {
            tls_bytes_per_s: limits::tls(tls_bytes, runs)?,
            loopback_bytes_per_s: limits::loopback(loop_bytes, runs)?,
        })
    } else {
        None
    };
    let micro = if wants(cli, Part::Micro) {
        eprintln!("timing the core and the wire path");
        Some(if quick {
            micro::measure(20, 1)?
        } else {
            micro::measure(1, 5)?
        })
    } else {
        None
    };
    let tuning = cli.tuning.tuning();
    let sizes = Sizes {
        quick,
        block_size: cli.block_size as usize,
        tuning,
        w5: (
            cli.w5_nodes as usize,
            cli.w5_blocks as usize,
            cli.w5_block_size as usize,
        ),
    };
    let mut specs: Vec<_> = workloads::specs(sizes)
        .into_iter()
        .filter(|s| {
            let part = match s.name.as_str() {
                "W1" => Part::W1,
                "W2" => Part::W2,
                "W3" => Part::W3,
                "W5" => Part::W5,
                _ => Part::W4,
            };
            wants(cli, part)
        })
        .collect();
    for text in &cli.custom {
        specs.push(workloads::custom(text, tuning)?);
    }
    if let Some(k) = tuning.peers {
        for s in &mut specs {
            s.title.push_str(&format!(", {k} peers per node, relaying"));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let mut outcomes = Vec::with_capacity(specs.len());
    for spec in &specs {
        eprintln!("running {}: {}", spec.name, spec.title);
        let outcome = if cli.process_per_node || spec.process_per_node || !cli.netns.is_empty() {
            process::run(spec, &cli.netns)?
        } else {
            runtime.block_on(workloads::run_in_process(spec))?
        };
        outcomes.push(outcome);
    }
    drop(runtime);
    let mut results = Results {
        schema: results::SCHEMA,
        commit: machine::git_commit(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine,
        quick,
        malloc_env: std::env::vars()
            .filter(|(k, _)| k.starts_with("MALLOC_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        limits,
        micro,
        workloads: outcomes,
        targets: Vec::new(),
        figures: Vec::new(),
    };
    results.finish();
    print!("{}", results::table(&results));
    results.write(&cli.out)?;
    println!("\nwritten to {}", cli.out.display());
    if let Some(dir) = &cli.report {
        let written = pictures::write(&results, dir, &cli.bound)?;
        println!("pictures: {}", written[0].display());
    }
    if results.lost_or_duplicated() {
        eprintln!("p2p-bench: an artifact was missing or delivered twice (see the table)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_tokio::{NodeConfig, NodeIdentity};
    use p2p_transport::topology::Topology;

    #[test]
    fn peers_reach_every_node_process_and_its_config() {
        let cli = Cli::try_parse_from([
            "p2p-bench",
            "--peers",
            "4",
            "--write-chunk",
            "16384",
            "--no-express",
        ])
        .unwrap();
        let tuning = cli.tuning.tuning();
        assert_eq!(tuning.peers, Some(4));
        assert!(tuning.no_express);
        // What the parent hands each node process parses back to the same settings.
        let addr: std::net::IpAddr = "10.99.0.3".parse().unwrap();
        let mut argv = vec!["p2p-bench".to_owned()];
        argv.extend(process::node_args(Some(addr), tuning));
        let node = Cli::try_parse_from(argv).unwrap().command.unwrap();
        let Cmd::Node { listen, tuning: t } = node else {
            panic!("not the node command");
        };
        assert_eq!((listen, t.tuning()), (addr, tuning));
        let identity = NodeIdentity::generate().unwrap();
        let mut cfg = NodeConfig::new(identity, std::net::SocketAddr::new(addr, 0));
        workloads::tune(&mut cfg, tuning);
        assert_eq!(cfg.topology, Topology::Degree(4));
        assert!(!cfg.express.enabled);
        assert!(cfg.core.auto_relay, "a partial mesh relays");
        cfg.validate().expect("a node of a partial mesh can start");
        // Without --peers: a full mesh, not relaying, and no --peers for the nodes.
        let full = Cli::try_parse_from(["p2p-bench"]).unwrap().tuning.tuning();
        assert_eq!(full.peers, None);
        assert!(!process::node_args(None, full).contains(&"--peers".to_owned()));
        let mut cfg = NodeConfig::new(
            NodeIdentity::generate().unwrap(),
            std::net::SocketAddr::new(addr, 0),
        );
        workloads::tune(&mut cfg, full);
        assert_eq!(cfg.topology, Topology::All);
        assert!(!cfg.core.auto_relay);
        assert!(Cli::try_parse_from(["p2p-bench", "--peers", "1"]).is_err());
        assert!(cfg.express_runtime.is_none());
    }

    #[test]
    fn the_express_thread_reaches_every_node_process_and_its_config() {
        let cli = Cli::try_parse_from(["p2p-bench", "--express-thread"]).unwrap();
        let tuning = cli.tuning.tuning();
        assert!(tuning.express_thread);
        let mut argv = vec!["p2p-bench".to_owned()];
        argv.extend(process::node_args(None, tuning));
        let Cmd::Node { tuning: t, .. } = Cli::try_parse_from(argv).unwrap().command.unwrap()
        else {
            panic!("not the node command");
        };
        assert_eq!(t.tuning(), tuning);
        let mut cfg = NodeConfig::new(
            NodeIdentity::generate().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        workloads::tune(&mut cfg, tuning);
        let lanes = cfg.express_runtime.expect("the lanes' runtime");
        // One runtime for the whole process, running on its own thread.
        let again = workloads::express_runtime().unwrap();
        assert_eq!(lanes.id(), again.id());
        let (tx, rx) = std::sync::mpsc::channel();
        lanes.spawn(async move { tx.send(std::thread::current().name().map(str::to_owned)) });
        let name = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(name.as_deref(), Some("express-lanes"));
    }
}
