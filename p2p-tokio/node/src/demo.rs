//! `p2p-node demo`: a local subnet under a mixed workload, with progress and a report.
//!
//! Everything it needs is built in: fresh identities, 127.0.0.1 sockets, real TLS. The engine is
//! [`p2p_bench::subnet`]; this module only parses flags and prints.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use p2p_bench::plot::{self, Section};
use p2p_bench::subnet::{LocalSubnet, Report, Workload, workload_priority_fn};

use crate::{EXIT_CONFIG, EXIT_FAILURE, fail, init_logs};

/// Flags of `p2p-node demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Nodes in the subnet (13, as an IC application subnet).
    #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u16).range(2..=200))]
    nodes: u16,
    /// Small urgent artifacts (kind 0), published round-robin by every node.
    #[arg(long, default_value_t = 1300)]
    small: usize,
    /// Size of a small artifact: N or MIN..MAX bytes (suffixes K, KiB, M, MiB accepted).
    #[arg(long, default_value = "256..1024", value_parser = parse_size_range)]
    small_size: RangeInclusive<usize>,
    /// Large bulk artifacts (kind 1).
    #[arg(long, default_value_t = 8)]
    large: usize,
    /// Size of a large artifact in bytes (suffixes K, KiB, M, MiB accepted).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    large_size: usize,
    /// Nodes that publish the large artifacts (the first ones).
    #[arg(long, default_value_t = 3)]
    large_origins: usize,
    /// Seconds over which the small artifacts are published (the large ones go at the start).
    #[arg(long, default_value_t = 2.0, value_parser = parse_secs)]
    spread: f64,
    /// Seed of the workload's contents and sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds allowed for full delivery; the demo fails (exit 1) past it.
    #[arg(long, default_value_t = 60.0, value_parser = parse_secs)]
    timeout: f64,
    /// Also draw the run's pictures into DIR: `report.html` (self-contained) and
    /// `demo-latency.svg`, `demo-progress.svg`, `demo-traffic.svg` (latency distribution per
    /// class, delivery progress against the expected total, socket bytes per node).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds in 0..=86400")),
    }
}

/// Parses `N` with an optional binary suffix: `K`/`KiB` (x1024) or `M`/`MiB` (x1024^2).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512, 4KiB, 1MiB)"))?;
    let mult: usize = match suffix.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        _ => return Err(format!("`{s}` has an unknown unit (use K, KiB, M or MiB)")),
    };
    let v = n
        .checked_mul(mult)
        .filter(|&v| v <= 1 << 30)
        .ok_or_else(|| format!("`{s}` is larger than 1 GiB"))?;
    Ok(v)
}

/// Parses `N` or `MIN..MAX` (sizes as in [`parse_size`]).
pub fn parse_size_range(s: &str) -> Result<RangeInclusive<usize>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_size(a)?, parse_size(b.trim_start_matches('='))?);
            if a > b {
                return Err(format!("`{s}`: the range is empty"));
            }
            Ok(a..=b)
        }
        None => parse_size(s).map(|v| v..=v),
    }
}

/// Runs the demo; the exit code is 0 only if everything was delivered in time.
pub fn main(args: &DemoArgs, log_level: Option<&str>) -> u8 {
    if let Err(e) = init_logs(log_level, None, "warn") {
        return fail(EXIT_CONFIG, e);
    }
    let workload = Workload {
        small: args.small,
        small_size: args.small_size.clone(),
        large: args.large,
        large_size: args.large_size,
        large_origins: args.large_origins,
        spread: Duration::from_secs_f64(args.spread),
        large_every: Duration::ZERO,
        seed: args.seed,
    };
    if let Err(e) = workload.validate() {
        return fail(EXIT_CONFIG, e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(demo(args, workload))
}

async fn demo(args: &DemoArgs, workload: Workload) -> u8 {
    let nodes = usize::from(args.nodes);
    let timeout = Duration::from_secs_f64(args.timeout);
    println!(
        "p2p-node demo: starting {nodes} nodes on 127.0.0.1 (fresh identities, TLS), seed {}",
        args.seed
    );
    let started = Instant::now();
    let mesh_timeout = Duration::from_secs(10).max(timeout / 4);
    let subnet =
        match LocalSubnet::start(nodes, workload_priority_fn(), mesh_timeout, |_, _| {}).await {
            Ok(s) => s,
            Err(e) => return fail(EXIT_FAILURE, e),
        };
    println!(
        "full mesh of {} connections in {:.0} ms; publishing {} small + {} large artifacts, timeout {:.0} s",
        nodes * (nodes - 1) / 2,
        started.elapsed().as_secs_f64() * 1e3,
        workload.small,
        workload.large,
        timeout.as_secs_f64()
    );
    let result = subnet
        .run(&workload, timeout, Duration::from_secs(1), |p| {
            println!("{p}")
        })
        .await;
    subnet.shutdown().await;
    match result {
        Ok(report) => {
            println!();
            print!("{report}");
            if let Some(dir) = &args.report {
                match pictures(dir, &report) {
                    Ok(page) => println!("\npictures: {}", page.display()),
                    Err(e) => return fail(EXIT_FAILURE, e),
                }
            }
            if report.is_complete() && report.duplicate_deliveries == 0 {
                0
            } else {
                fail(
                    EXIT_FAILURE,
                    format!(
                        "{} of {} (artifact, node) pairs delivered within {:.1} s, {} duplicate deliveries",
                        report.delivered,
                        report.expected,
                        timeout.as_secs_f64(),
                        report.duplicate_deliveries
                    ),
                )
            }
        }
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

/// Draws the pictures of the demo's run into `dir`; returns the page's path.
fn pictures(dir: &Path, report: &Report) -> Result<PathBuf, plot::PlotError> {
    let text = report.to_string();
    // The report's lines but its heading, above the pictures.
    let lines: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let w = &report.workload;
    let title = format!(
        "p2p-node demo: {} nodes, {} small + {} large artifacts, seed {}",
        report.nodes, w.small, w.large, w.seed
    );
    let section = Section {
        name: "demo",
        title: &title,
        summary: &lines,
        data: &report.plot,
    };
    let written = plot::write_report(dir, "p2p-node demo", &[], &[section])?;
    Ok(written[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_units_and_ranges() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("2048M").is_err());
        assert_eq!(parse_size_range("256..1024"), Ok(256..=1024));
        assert_eq!(parse_size_range("1K..=2K"), Ok(1024..=2048));
        assert_eq!(parse_size_range("300"), Ok(300..=300));
        assert!(parse_size_range("9..3").is_err());
    }
}
