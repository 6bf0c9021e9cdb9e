//! The simulator's prediction for one run of the link-bound testbed (`cargo xtask testbed`):
//! the same nodes (a full mesh, or with `--peers K` the degree-`K` graph the nodes derive,
//! relaying), per-node rates and publishes as p2p-bench's `--custom`
//! workload, no added latency and no jitter; prints one JSON line.
//!
//! ```text
//! cargo run --release -p p2p-testkit --example testbed_sim -- \
//!     --custom name=W2,nodes=13,large=50,large_size=1048576,origins=1 \
//!     --rate-bps 286920000 [--slow-nodes 9,10,11 --slow-rate-bps 28692000] [--peers 4] \
//!     [--cpu-ns-per-byte 5 --cpu-us-per-frame 20 [--cpu-cores 2]] [--per-artifact]
//! ```
//!
//! With `--peers K` the graph is built as the nodes build theirs, from the simulated nodes' ids,
//! which are not the testbed's (those are fresh keys every run): the same kind of graph, not the
//! same edges.
//!
//! `--cpu-ns-per-byte NS --cpu-us-per-frame US [--cpu-cores N]` models the machine the
//! testbed's node processes share (`Scenario::cpu`): every frame received costs NS nanoseconds
//! per byte plus US microseconds of one of N cores (default 2), for the work it causes at both
//! ends.
//!
//! `--queue-ms Q [--recovery-ms R]` bounds every downlink's queue as the testbed's tbf does
//! (Q ms at its rate plus one 64 KiB packet, `Scenario::tail_drop`): a frame that finds it full
//! is dropped and arrives again R ms later (default 20), with the frames its connection sent
//! after it.
//!
//! `--breakdown` also prints, to stderr, the wire bytes per message type and the counters
//! that say how often each node received each artifact.
//!
//! The line also gives the chunk messages the artifacts' origins sent (`origin_chunk_sends`,
//! against `chunks`, the artifacts' chunks in all) and the chunk requests made to full holders
//! outside a node's stripe (`chunks_asked_handed_over`, `chunks_asked_idle`, `chunks_asked_overdue`: the core's
//! metrics).
//!
//! `--congestion` turns on the drivers' congestion marks (8 MiB / 4 MiB queued to a peer);
//! `--max-chunks-in-flight N`, `--max-chunks-in-flight-per-peer N` and `--swarm-patience-ms MS`
//! change the core's settings of those names; `--push-chunks` turns `Config::push_chunks` on. `--latency-us` and `--jitter-us` add one-way latency and jitter to every link (default 0,
//! as on the testbed). `--per-artifact` also prints, to stderr, when each artifact's first and last chunk left
//! its origin and when every node held it.
//!
//! The publishes follow p2p-bench's plan (`p2p_bench::subnet::Workload::plan`): the large
//! artifacts from t=0, `large_every_ms` apart (all at once by default), round-robin over the first `origins` nodes, fetched at bulk priority;
//! the small ones evenly over `spread_ms`, round-robin over every node, urgent. Nodes relay
//! only with `--peers` (as the bench's nodes). Rates are both directions of a node's link, as the
//! testbed shapes both ends of each veth pair.

use std::process::ExitCode;
use std::time::Duration;

use p2p_testkit::sim::{BULK, CpuCost, Scenario, Topology, URGENT};

/// The workload fields of p2p-bench's `--custom` text that shape the publishes.
#[derive(Debug)]
struct Shape {
    nodes: usize,
    small: usize,
    small_size: usize,
    large: usize,
    large_size: usize,
    origins: usize,
    spread: Duration,
    large_every: Duration,
}

fn parse_custom(text: &str) -> Result<Shape, String> {
    let mut s = Shape {
        nodes: 13,
        small: 0,
        small_size: 256,
        large: 0,
        large_size: 1 << 20,
        origins: 1,
        spread: Duration::ZERO,
        large_every: Duration::ZERO,
    };
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        if key == "name" {
            continue;
        }
        let n: u64 = value
            .parse()
            .map_err(|_| format!("`{value}` for `{key}` is not a number"))?;
        let n_usize = n as usize;
        match key {
            "nodes" => s.nodes = n_usize,
            "small" => s.small = n_usize,
            "small_size" => s.small_size = n_usize,
            "large" => s.large = n_usize,
            "large_size" => s.large_size = n_usize,
            "origins" => s.origins = n_usize.max(1),
            "spread_ms" => s.spread = Duration::from_millis(n),
            "large_every_ms" => s.large_every = Duration::from_millis(n),
            "timeout_s" => {}
            _ => return Err(format!("unknown key `{key}`")),
        }
    }
    Ok(s)
}

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(args: &[String]) -> Result<String, String> {
    let shape = parse_custom(value(args, "--custom").ok_or("--custom is required")?)?;
    let rate: u64 = value(args, "--rate-bps")
        .ok_or("--rate-bps is required")?
        .parse()
        .map_err(|_| "--rate-bps is not a number")?;
    let slow_rate: u64 = match value(args, "--slow-rate-bps") {
        Some(v) => v.parse().map_err(|_| "--slow-rate-bps is not a number")?,
        None => rate / 10,
    };
    let slow: Vec<usize> = match value(args, "--slow-nodes") {
        Some(list) if !list.is_empty() => list
            .split(',')
            .map(|n| n.parse().map_err(|_| format!("bad node index `{n}`")))
            .collect::<Result<_, String>>()?,
        _ => Vec::new(),
    };
    let micros = |name: &str| -> Result<Duration, String> {
        value(args, name).map_or(Ok(Duration::ZERO), |v| {
            v.parse()
                .map(Duration::from_micros)
                .map_err(|_| format!("{name} is not a number"))
        })
    };
    let (latency, jitter) = (micros("--latency-us")?, micros("--jitter-us")?);
    // Publishes start once the mesh is up.
    let start = Duration::from_millis(100) + 4 * latency;
    let peers: Option<usize> = value(args, "--peers")
        .map(|v| v.parse().map_err(|_| "--peers is not a number"))
        .transpose()?;
    let mut s = Scenario::new(1)
        .name("testbed")
        .nodes(shape.nodes)
        .link(latency, rate)
        .jitter(jitter)
        .auto_relay(peers.is_some())
        .expect_complete()
        .settle(Duration::from_secs(60));
    if let Some(k) = peers {
        s = s.topology(Topology::Degree(k));
    }
    if args.iter().any(|a| a == "--congestion") {
        // The drivers' marks: the multiplexer's high water (8 MiB) and half of it.
        s = s.congestion(8 << 20, 4 << 20);
    }
    let num = |name: &str| -> Result<Option<u64>, String> {
        value(args, name)
            .map(|v| v.parse().map_err(|_| format!("{name} is not a number")))
            .transpose()
    };
    let in_flight = num("--max-chunks-in-flight")?;
    let per_peer = num("--max-chunks-in-flight-per-peer")?;
    let patience = num("--swarm-patience-ms")?;
    let push = args.iter().any(|a| a == "--push-chunks");
    s = s.config(move |c| {
        c.push_chunks |= push;
        if let Some(n) = in_flight {
            c.max_chunks_in_flight = n as usize;
        }
        if let Some(n) = per_peer {
            c.max_chunks_in_flight_per_peer = n as usize;
        }
        if let Some(ms) = patience {
            c.swarm_patience = Duration::from_millis(ms);
        }
    });
    for &node in &slow {
        s = s.node_bandwidth(node, slow_rate);
    }
    let float = |name: &str| -> Result<Option<f64>, String> {
        value(args, name)
            .map(|v| v.parse().map_err(|_| format!("{name} is not a number")))
            .transpose()
    };
    let (per_byte, per_frame) = (float("--cpu-ns-per-byte")?, float("--cpu-us-per-frame")?);
    if let Some(queue) = float("--queue-ms")? {
        let recovery = float("--recovery-ms")?.unwrap_or(20.0);
        s = s.tail_drop(
            Duration::from_secs_f64(queue / 1e3),
            64 << 10,
            Duration::from_secs_f64(recovery / 1e3),
        );
    }
    if per_byte.is_some() || per_frame.is_some() {
        let cores = num("--cpu-cores")?.unwrap_or(2) as usize;
        let cost = CpuCost::new(per_byte.unwrap_or(0.0), per_frame.unwrap_or(0.0));
        s = s.cpu(cores, cost);
    }
    for i in 0..shape.large {
        let at = start + shape.large_every * i as u32;
        s = s.publish(at, i % shape.origins, BULK, shape.large_size);
    }
    for i in 0..shape.small {
        let at = shape.spread.mul_f64(i as f64 / shape.small.max(1) as f64);
        s = s.publish(start + at, i % shape.nodes, URGENT, shape.small_size);
    }
    let report = s.run();
    let all_hold = report
        .artifacts
        .iter()
        .map(|a| {
            a.complete_after
                .map(|c| Duration::from_nanos(a.published_at.as_nanos()) + c)
                .unwrap_or(Duration::MAX)
        })
        .max()
        .unwrap_or(Duration::ZERO);
    let complete = all_hold != Duration::MAX;
    if args.iter().any(|a| a == "--per-artifact") {
        for a in &report.artifacts {
            let done = a.complete_after.map_or(-1.0, |c| {
                ms(Duration::from_nanos(a.published_at.as_nanos()) + c - start)
            });
            let first = a.first_chunk_out.map_or(-1.0, ms);
            let out = a.all_chunks_out.map_or(-1.0, ms);
            eprintln!(
                "artifact {} from {}: first chunk out {first:.1} ms, all out {out:.1} ms, all hold {done:.1} ms, origin chunk sends {} of {}",
                a.index, a.origin, a.origin_chunk_sends, a.chunks
            );
        }
    }
    let lat = |kind| {
        report
            .latency_by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, l)| {
                format!(
                    "{{\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max)
                )
            })
            .unwrap_or_else(|| "null".into())
    };
    let counter = |name: &str| {
        report
            .counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    if args.iter().any(|a| a == "--breakdown") {
        let ideal = report.ideal_bytes.max(1) as f64;
        for (name, n, bytes) in &report.wire_by_message {
            eprintln!(
                "{name:>13}: {n:>9} messages {bytes:>12} wire bytes ({:.4} of the ideal)",
                *bytes as f64 / ideal
            );
        }
        for name in [
            "delivered",
            "pushes_received",
            "responses_received",
            "duplicates",
            "adverts_sent",
            "adverts_received",
            "requests_sent",
            "timeouts",
            "retries",
        ] {
            eprintln!("{name:>18}: {}", counter(name));
        }
    }
    let chunks: u64 = report.artifacts.iter().map(|a| u64::from(a.chunks)).sum();
    let origin_sends: u64 = report.artifacts.iter().map(|a| a.origin_chunk_sends).sum();
    Ok(format!(
        "{{\"all_hold_ms\":{},\"urgent\":{},\"bulk\":{},\"amplification\":{:.4},\"origin_chunk_sends\":{origin_sends},\"chunks\":{chunks},\"chunks_asked_handed_over\":{},\"chunks_asked_idle\":{},\"chunks_asked_overdue\":{},\"frames_dropped\":{},\"delivered\":{},\"expected\":{},\"passed\":{},\"events\":{}}}",
        if complete {
            format!("{:.3}", ms(all_hold.saturating_sub(start)))
        } else {
            "null".into()
        },
        lat(URGENT),
        lat(BULK),
        report.amplification(),
        counter("chunks_asked_handed_over"),
        counter("chunks_asked_idle"),
        counter("chunks_asked_overdue"),
        report.frames_dropped,
        report.delivered,
        report.expected,
        report.passed(),
        report.events
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("testbed_sim: {e}");
            ExitCode::from(2)
        }
    }
}
