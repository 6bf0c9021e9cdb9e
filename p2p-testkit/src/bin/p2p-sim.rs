//! `p2p-sim`: runs the simulator's named or random scenarios over ranges of seeds and prints
//! summaries; `p2p-sim measure` reports the large-artifact and scale figures.
//!
//! ```text
//! p2p-sim list
//! p2p-sim run <name|all> [--seeds A..B] [--determinism] [--verbose]
//!                        [--record-node I --trace-dir DIR]
//! p2p-sim measure [--quick]
//! ```
//!
//! With `--record-node I --trace-dir DIR`, every run records node `I`'s core to
//! `DIR/<name>-<seed>-node<I>.jsonl` (each restart after a crash to
//! `DIR/<name>-<seed>-node<I>-restart<k>.jsonl`) and prints the `p2p-trace replay` command for
//! each file. A run whose node `I` is not an honest node is run without recording, with a note.

use p2p_testkit::sim::{
    LatencyStats, NORMAL, Report, Scenario, Topology, Workload, catalog, named,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  p2p-sim list\n  p2p-sim run <name|all> [--seeds A..B] [--determinism] [--verbose] [--record-node I --trace-dir DIR]\n  p2p-sim measure [--quick]\n\n--record-node I --trace-dir DIR: record node I's core in every run to DIR/<name>-<seed>-node<I>.jsonl\n  (a restart after a crash starts DIR/<name>-<seed>-node<I>-restart<k>.jsonl) and print the replay command"
    );
    ExitCode::from(2)
}

fn parse_seeds(s: &str) -> Option<std::ops::Range<u64>> {
    match s.split_once("..") {
        Some((a, b)) => Some(a.parse().ok()?..b.parse().ok()?),
        None => {
            let a: u64 = s.parse().ok()?;
            Some(a..a + 1)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for e in catalog() {
                println!("{:<22} {}", e.name, e.about);
            }
            ExitCode::SUCCESS
        }
        Some("run") => {
            let Some(name) = args.get(1) else {
                return usage();
            };
            let mut seeds = 0..10;
            let (mut determinism, mut verbose) = (false, false);
            let (mut record_node, mut trace_dir) = (None::<usize>, None::<PathBuf>);
            let mut i = 2;
            while i < args.len() {
                match args[i].as_str() {
                    "--seeds" => {
                        let Some(r) = args.get(i + 1).and_then(|s| parse_seeds(s)) else {
                            return usage();
                        };
                        seeds = r;
                        i += 1;
                    }
                    "--record-node" => {
                        let Some(n) = args.get(i + 1).and_then(|s| s.parse().ok()) else {
                            eprintln!("--record-node takes a node index");
                            return usage();
                        };
                        record_node = Some(n);
                        i += 1;
                    }
                    "--trace-dir" => {
                        let Some(d) = args.get(i + 1) else {
                            eprintln!("--trace-dir takes a directory");
                            return usage();
                        };
                        trace_dir = Some(PathBuf::from(d));
                        i += 1;
                    }
                    "--determinism" => determinism = true,
                    "--verbose" => verbose = true,
                    _ => return usage(),
                }
                i += 1;
            }
            let record = match (record_node, trace_dir) {
                (None, None) => None,
                (Some(node), Some(dir)) => {
                    if let Err(e) = std::fs::create_dir_all(&dir) {
                        eprintln!("cannot create the trace directory {}: {e}", dir.display());
                        return ExitCode::from(2);
                    }
                    Some((node, dir))
                }
                _ => {
                    eprintln!("--record-node and --trace-dir go together");
                    return usage();
                }
            };
            let names: Vec<&'static str> = if name == "all" {
                catalog().iter().map(|e| e.name).collect()
            } else if let Some(e) = catalog().into_iter().find(|e| e.name == name) {
                vec![e.name]
            } else {
                eprintln!("unknown scenario {name:?}; see `p2p-sim list`");
                return ExitCode::from(2);
            };
            let mut failed = 0;
            for n in names {
                failed += run_many(n, seeds.clone(), determinism, verbose, record.as_ref());
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("measure") => {
            measure(args.iter().any(|a| a == "--quick"));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

/// The trace file of node `node` in scenario `name` run with `seed`, in `dir`.
fn trace_path(dir: &Path, name: &str, seed: u64, node: usize) -> PathBuf {
    dir.join(format!("{name}-{seed}-node{node}.jsonl"))
}

/// Prints where `r`'s traces went and the command that replays each.
fn print_traces(r: &Report) {
    for t in &r.traces {
        let Some(path) = &t.path else { continue };
        match &t.error {
            Some(e) => println!("  trace of node {} FAILED: {e}", t.node),
            None => {
                let end = if t.ended_by_crash {
                    format!(
                        ", ended by the node's crash at {:.3}s",
                        t.ended_at.as_nanos() as f64 / 1e9
                    )
                } else {
                    String::new()
                };
                println!(
                    "  trace of {} seed {} node {} (incarnation {}): {} records{end}\n    replay: cargo run -p p2p-trace -- replay {}",
                    r.name,
                    r.seed,
                    t.node,
                    t.incarnation,
                    t.records,
                    path.display()
                );
            }
        }
    }
}

/// Runs `name` over `seeds`; prints a summary and every failing seed, and records node `I` to
/// `DIR` when `record` is `Some((I, DIR))`. Returns the failures.
fn run_many(
    name: &str,
    seeds: std::ops::Range<u64>,
    determinism: bool,
    verbose: bool,
    record: Option<&(usize, PathBuf)>,
) -> usize {
    let started = Instant::now();
    let (mut runs, mut failed, mut events) = (0usize, 0usize, 0u64);
    let (mut expected, mut delivered) = (0usize, 0usize);
    let (mut wire, mut ideal) = (0u64, 0u64);
    let mut lat = Vec::new();
    let mut max_adverts = 0usize;
    let mut max_downloads = 0usize;
    for seed in seeds {
        let mut sc = named(name, seed).expect("listed scenario");
        if determinism {
            sc = sc.check_determinism();
        }
        if let Some((node, dir)) = record {
            if sc.is_honest_node(*node) {
                sc = sc.record(*node, trace_path(dir, name, seed, *node));
            } else {
                println!(
                    "  note: node {node} is not an honest node of {name} seed {seed} ({} nodes): not recorded",
                    sc.node_count()
                );
            }
        }
        let r = sc.run();
        runs += 1;
        events += r.events;
        expected += r.expected;
        delivered += r.delivered;
        wire += r.wire_bytes;
        ideal += r.ideal_bytes;
        max_adverts = max_adverts.max(r.max_state.tracked_adverts);
        max_downloads = max_downloads.max(r.max_state.pending_downloads);
        lat.extend(r.artifacts.iter().filter_map(|a| a.complete_after));
        if !r.passed() {
            failed += 1;
            print!("{r}");
        } else if verbose {
            print!("{r}");
        }
        print_traces(&r);
    }
    let secs = started.elapsed().as_secs_f64();
    let s = LatencyStats::of(&mut lat);
    println!(
        "{name:<22} {}/{} passed  delivered {}/{} ({:.2}%)  all-hold p50 {:.0}ms p99 {:.0}ms max {:.0}ms  amplification {:.3}  max adverts {} downloads {}  {:.0} events/s",
        runs - failed,
        runs,
        delivered,
        expected,
        if expected == 0 {
            100.0
        } else {
            delivered as f64 * 100.0 / expected as f64
        },
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        if ideal == 0 {
            0.0
        } else {
            wire as f64 / ideal as f64
        },
        max_adverts,
        max_downloads,
        events as f64 / secs.max(1e-9)
    );
    failed
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn timed(sc: Scenario) -> (Report, f64) {
    let started = Instant::now();
    let r = sc.run();
    (r, started.elapsed().as_secs_f64())
}

fn measure(quick: bool) {
    const SIZE: usize = 4 << 20;
    const BPS: u64 = 300_000_000;
    let latency = Duration::from_millis(25);
    let bound = Duration::from_secs_f64(SIZE as f64 * 8.0 / BPS as f64) + 2 * latency;
    println!(
        "large artifacts: 4 MiB from one node, full mesh, 300 Mbit/s per node, 25 ms one way; lower bound {:.0} ms",
        ms(bound)
    );
    let count = if quick { 1 } else { 3 };
    for (n, design) in [(13usize, "~1 s"), (40, "~3 s")] {
        for relay in [false, true] {
            let mut sc = Scenario::new(1)
                .name("measure-large")
                .nodes(n)
                .link(latency, BPS)
                .jitter(Duration::ZERO)
                .auto_relay(relay)
                .settle(Duration::from_secs(15));
            for k in 0..count {
                sc = sc.publish(Duration::from_secs(10 * k as u64), 0, NORMAL, SIZE);
            }
            let (r, secs) = timed(sc);
            let times: Vec<String> = r
                .artifacts
                .iter()
                .map(|a| {
                    a.complete_after
                        .map_or("incomplete".into(), |d| format!("{:.0} ms", ms(d)))
                })
                .collect();
            println!(
                "  {n:>2} nodes, auto-relay {:<5}: all hold it after [{}] (design {design}); first holders p50 {:.0} ms; amplification {:.3}; {} ({} events in {:.2}s)",
                relay,
                times.join(", "),
                ms(r.latency.p50),
                r.amplification(),
                if r.passed() {
                    "checks ok"
                } else {
                    "CHECKS FAILED"
                },
                r.events,
                secs
            );
            if !r.passed() {
                print!("{r}");
            }
        }
    }
    let n = if quick { 200 } else { 1_000 };
    let sc = Scenario::new(1)
        .name("measure-scale")
        .nodes(n)
        .topology(Topology::Random { degree: 20 })
        .link(Duration::from_millis(20), 1_000_000_000)
        .jitter(Duration::from_millis(5))
        .auto_relay(true)
        .workload(Workload {
            urgent_per_node: 2,
            urgent_size: 600,
            bulk_count: 4,
            bulk_size: 1 << 20,
            start: Duration::ZERO,
            window: Duration::from_secs(2),
        })
        .sample_interval(Duration::from_millis(500))
        .settle(Duration::from_secs(20));
    let (r, secs) = timed(sc);
    println!(
        "scale: {n} nodes, random graph of degree ~20, auto-relay, {} artifacts: delivered {}/{} ({}), latency {}, amplification {:.3}",
        r.artifacts.len(),
        r.delivered,
        r.expected,
        if r.passed() {
            "checks ok"
        } else {
            "CHECKS FAILED"
        },
        r.latency,
        r.amplification()
    );
    println!(
        "  simulator: {} events, {} core inputs in {:.2} s wall = {:.0} events/s, {:.0} inputs/s; virtual end {:.2} s; peak RSS {} MiB",
        r.events,
        r.inputs,
        secs,
        r.events as f64 / secs,
        r.inputs as f64 / secs,
        r.end.as_nanos() as f64 / 1e9,
        peak_rss_kib().map_or("?".into(), |k| (k / 1024).to_string())
    );
    if !r.passed() {
        print!("{r}");
    }
}
