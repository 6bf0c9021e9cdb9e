//! `p2p-sim`: runs the simulator's named or random scenarios over ranges of seeds and prints
//! summaries; `p2p-sim measure` reports the large-artifact and scale figures.
//!
//! ```text
//! p2p-sim list
//! p2p-sim run <name|all> [--seeds A..B] [--determinism] [--verbose]
//!                        [--record-node I --trace-dir DIR]
//! p2p-sim measure [--quick | --chunks]
//! ```
//!
//! With `--record-node I --trace-dir DIR`, every run records node `I`'s core to
//! `DIR/<name>-<seed>-node<I>.jsonl` (each restart after a crash to
//! `DIR/<name>-<seed>-node<I>-restart<k>.jsonl`) and prints the `p2p-trace replay` command for
//! each file. A run whose node `I` is not an honest node is run without recording, with a note.

use p2p_core::Config;
use p2p_testkit::sim::{
    LatencyStats, NORMAL, Report, SWARM_BPS, SWARM_LATENCY, SWARM_PUBLISH_AT, Scenario, Topology,
    Workload, catalog, named,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  p2p-sim list\n  p2p-sim run <name|all> [--seeds A..B] [--determinism] [--verbose] [--record-node I --trace-dir DIR]\n  p2p-sim measure [--quick | --chunks]\n\n--record-node I --trace-dir DIR: record node I's core in every run to DIR/<name>-<seed>-node<I>.jsonl\n  (a restart after a crash starts DIR/<name>-<seed>-node<I>-restart<k>.jsonl) and print the replay command"
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
            if args.iter().any(|a| a == "--chunks") {
                measure_chunks();
            } else {
                measure(args.iter().any(|a| a == "--quick"));
            }
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
        if verbose {
            for a in r.artifacts.iter().filter(|a| a.chunks > 0) {
                let per_node: Vec<String> = a
                    .delivered_after
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| d.map(|d| format!("{i}:{:.0}", ms(d))))
                    .collect();
                println!(
                    "  artifact #{} delivered (node:ms) {}",
                    a.index,
                    per_node.join(" ")
                );
            }
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

/// One swarming run of `measure`: `size` bytes from node 0 to `nodes` relaying nodes in a full
/// mesh, 300 Mbit/s per node, 25 ms one way, no jitter, with `tune` applied to the config,
/// published once the connections are up (`SWARM_PUBLISH_AT`).
fn swarm_run(
    nodes: usize,
    size: usize,
    tune: impl Fn(&mut Config) + Send + Sync + 'static,
) -> (Report, f64) {
    let sc = Scenario::new(1)
        .name("measure-swarm")
        .nodes(nodes)
        .link(SWARM_LATENCY, SWARM_BPS)
        .jitter(Duration::ZERO)
        .auto_relay(true)
        .config(tune)
        .publish(SWARM_PUBLISH_AT, 0, NORMAL, size)
        .expect_complete()
        .settle(Duration::from_secs(15));
    timed(sc)
}

/// The physical lower bound of a broadcast of `size` bytes: its time on one 300 Mbit/s link
/// plus two one-way latencies (the request and the first byte's way back).
fn swarm_bound(size: usize) -> Duration {
    Duration::from_secs_f64(size as f64 * 8.0 / SWARM_BPS as f64) + 2 * SWARM_LATENCY
}

/// Formats an optional duration in milliseconds.
fn ms_or(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.0} ms", ms(d)))
}

/// Prints the swarming targets (issue 12) beside their bounds; with `quick`, without the
/// 64 MiB run (13 s and 2.6 GB of simulator memory).
fn measure_swarm(quick: bool) {
    let c = p2p_core::chunks::DEFAULT_CHUNK_SIZE;
    println!(
        "swarming targets: one artifact from node 0, full mesh, 300 Mbit/s per node, 25 ms one way, auto-relay, default config (chunk size {} KiB: 4 MiB travels in chunks of {} KiB, 64 MiB in {} KiB); bound = size / bandwidth + 2 x latency",
        c >> 10,
        p2p_core::chunks::chunk_size_for(4 << 20, c) >> 10,
        p2p_core::chunks::chunk_size_for(64 << 20, c) >> 10,
    );
    let mut cases = vec![(4usize << 20, 13usize, 1.5), (4 << 20, 40, 1.5)];
    if !quick {
        cases.push((64 << 20, 40, 1.2));
    }
    for (size, nodes, target) in cases {
        let (r, secs) = swarm_run(nodes, size, |_| {});
        let bound = swarm_bound(size);
        let a = &r.artifacts[0];
        let x = a
            .complete_after
            .map(|d| d.as_secs_f64() / bound.as_secs_f64());
        println!(
            "  {:>2} MiB to {nodes:>2} nodes: all hold it after {} = {} the {:.0} ms bound (target <= {target} x: {}); first chunk out of the origin {}, every chunk {}; origin sent {} chunk messages for {} chunks; amplification {:.3} (target <= 1.05: {}); {} ({} events in {:.1} s)",
            size >> 20,
            ms_or(a.complete_after),
            x.map_or("-".into(), |x| format!("{x:.2} x")),
            ms(bound),
            if x.is_some_and(|x| x <= target) {
                "met"
            } else {
                "missed"
            },
            ms_or(a.first_chunk_out),
            ms_or(a.all_chunks_out),
            a.origin_chunk_sends,
            a.chunks,
            r.amplification(),
            if r.amplification() <= 1.05 {
                "met"
            } else {
                "missed"
            },
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

/// Prints the sweeps of chunk size, `Have` interval, pushes, in-flight limits and swarm patience
/// behind the defaults: 4 MiB and 64 MiB from one node to 40 (as [`measure_swarm`]).
fn measure_chunks() {
    let row = |label: String, size: usize, tune: Box<dyn Fn(&mut Config) + Send + Sync>| {
        let (r, secs) = swarm_run(40, size, tune);
        let a = &r.artifacts[0];
        let bound = swarm_bound(size);
        println!(
            "    {label:<28} {:>2} MiB: all hold {:>9} ({}), first chunk out {:>7}, every chunk out {:>8}, origin chunk sends {:>4}/{:<4} amplification {:.3}{} ({:.1} s)",
            size >> 20,
            ms_or(a.complete_after),
            a.complete_after.map_or("-".into(), |d| format!(
                "{:.2} x bound",
                d.as_secs_f64() / bound.as_secs_f64()
            )),
            ms_or(a.first_chunk_out),
            ms_or(a.all_chunks_out),
            a.origin_chunk_sends,
            a.chunks,
            r.amplification(),
            if r.passed() { "" } else { ", CHECKS FAILED" },
            secs
        );
    };
    println!(
        "chunk sweeps: 40 nodes, full mesh, 300 Mbit/s, 25 ms, auto-relay; one setting changed at a time"
    );
    println!(
        "  subnet chunk size (in-flight limits 64 / 8 per peer, patience 100 ms; 4 MiB is cut into {} KiB chunks whatever it is, chunk_size_for):",
        p2p_core::chunks::chunk_size_for(4 << 20, p2p_core::chunks::DEFAULT_CHUNK_SIZE) >> 10
    );
    for chunk in [64u32 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20] {
        row(
            format!("chunk_size {} KiB", chunk >> 10),
            64 << 20,
            Box::new(move |c| c.chunk_size = chunk),
        );
    }
    println!("  Have interval (new chunks announced at most this often per swarm):");
    for size in [4usize << 20, 64 << 20] {
        for ms_ in [0u64, 1, 2, 5, 10, 20] {
            row(
                format!("have_interval {ms_} ms"),
                size,
                Box::new(move |c| c.have_interval = Duration::from_millis(ms_)),
            );
        }
    }
    println!("  pushes (push_chunks, off by default):");
    for size in [4usize << 20, 64 << 20] {
        row(
            "push_chunks on".into(),
            size,
            Box::new(|c| c.push_chunks = true),
        );
    }
    println!("  chunk requests in flight per peer (global 64):");
    for size in [4usize << 20, 64 << 20] {
        for per_peer in [2usize, 4, 8, 16] {
            row(
                format!("per peer {per_peer}"),
                size,
                Box::new(move |c| c.max_chunks_in_flight_per_peer = per_peer),
            );
        }
    }
    println!("  chunk requests in flight in all (8 per peer):");
    for size in [4usize << 20, 64 << 20] {
        for all in [16usize, 32, 64, 128] {
            row(
                format!("in all {all}"),
                size,
                Box::new(move |c| c.max_chunks_in_flight = all),
            );
        }
    }
    println!("  swarm patience (full holders asked only for the own stripe until it passes):");
    for size in [4usize << 20, 64 << 20] {
        for patience in [0u64, 50, 100, 200, 400] {
            row(
                format!("swarm_patience {patience} ms"),
                size,
                Box::new(move |c| c.swarm_patience = Duration::from_millis(patience)),
            );
        }
    }
}

fn measure(quick: bool) {
    measure_swarm(quick);
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
