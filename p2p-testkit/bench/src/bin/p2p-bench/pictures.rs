//! `--report DIR`: the pictures of a run (see [`p2p_bench::plot`]), one HTML page for every
//! workload and each picture as an SVG file, with the bounds of the time to full delivery
//! that the run knows.

use std::path::{Path, PathBuf};

use p2p_bench::plot::{self, Bound, Section};

use crate::results::Results;
use crate::workloads::Outcome;

/// A bound given on the command line: `NAME=SECONDS` (`--bound`).
#[derive(Clone, Debug, PartialEq)]
pub struct GivenBound {
    /// The workload it is for.
    pub workload: String,
    /// Seconds from the start.
    pub seconds: f64,
}

impl std::str::FromStr for GivenBound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (workload, secs) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not workload=seconds"))?;
        let seconds: f64 = secs
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("`{secs}` is not a positive number of seconds"))?;
        if workload.is_empty() {
            return Err(format!("`{s}` names no workload"));
        }
        Ok(GivenBound {
            workload: workload.to_owned(),
            seconds,
        })
    }
}

/// The bounds of `w`'s time to full delivery that the run knows: those given for it, labelled
/// `link bound`, and with the machine's limits measured, the CPU bound: every delivered byte
/// is encrypted once and decrypted once, at best at the single-core rustls rate on every core
/// of the machine (hashing, framing and the rest only add to it).
pub fn bounds(r: &Results, w: &Outcome, given: &[GivenBound]) -> Vec<Bound> {
    let mut out: Vec<Bound> = given
        .iter()
        .filter(|g| g.workload == w.name)
        .map(|g| Bound {
            seconds: g.seconds,
            label: "link bound".into(),
        })
        .collect();
    if let Some(l) = &r.limits
        && l.tls_bytes_per_s > 0.0
        && r.machine.cores > 0
    {
        let delivered = w.payload_bytes as f64 * w.nodes.saturating_sub(1) as f64;
        out.push(Bound {
            seconds: delivered / (l.tls_bytes_per_s * r.machine.cores as f64),
            label: format!("CPU bound: rustls on {} cores", r.machine.cores),
        });
    }
    out
}

/// The figures of `w` above its pictures.
fn summary(w: &Outcome) -> Vec<String> {
    let mut lines = vec![format!(
        "{}: full delivery {}, goodput {:.1} MB/s, wire {:.1} MB, amplification {:.3}, \
         CPU {:.2} s, {} missing, {} duplicated ({})",
        w.name,
        w.full_delivery_s
            .map_or("not reached".into(), |t| format!("in {t:.3} s")),
        w.goodput_mb_s,
        w.wire_bytes as f64 / 1e6,
        w.amplification,
        w.cpu_s,
        w.missing,
        w.duplicates,
        w.mode
    )];
    for l in &w.latency {
        lines.push(format!(
            "{} latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries",
            l.class, l.p50_ms, l.p99_ms, l.max_ms, l.deliveries
        ));
    }
    lines
}

/// Writes the pictures of every workload of `r` to `dir` (with the bounds `given` and those
/// the run knows); returns the paths written.
pub fn write(r: &Results, dir: &Path, given: &[GivenBound]) -> Result<Vec<PathBuf>, String> {
    let data: Vec<_> = r
        .workloads
        .iter()
        .map(|w| {
            let mut d = w.plot.clone();
            d.bounds = bounds(r, w, given);
            (w, d, summary(w))
        })
        .collect();
    let sections: Vec<Section<'_>> = data
        .iter()
        .map(|(w, d, lines)| Section {
            name: &w.name,
            title: &w.title,
            summary: lines,
            data: d,
        })
        .collect();
    let heading = format!("p2p-bench at commit {}", r.commit);
    let mut lines = vec![format!("machine: {}", r.machine)];
    if r.quick {
        lines.push("quick form (tiny counts)".into());
    }
    if !r.malloc_env.is_empty() {
        lines.push(format!("malloc: {}", r.malloc_env.join(" ")));
    }
    plot::write_report(dir, &heading, &lines, &sections).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Limits, SCHEMA};

    #[test]
    fn bounds_are_the_given_ones_and_the_cpu_s() {
        let g: GivenBound = "W2-1=2.5".parse().unwrap();
        assert_eq!(g.seconds, 2.5);
        assert!("W2".parse::<GivenBound>().is_err());
        assert!("W2=0".parse::<GivenBound>().is_err());
        assert!("W2=x".parse::<GivenBound>().is_err());
        assert!("=1".parse::<GivenBound>().is_err());
        let w = Outcome {
            name: "W2-1".into(),
            nodes: 5,
            payload_bytes: 100_000_000,
            ..Outcome::default()
        };
        let mut r = Results {
            schema: SCHEMA,
            commit: "abc".into(),
            unix_time: 0,
            machine: crate::machine::Machine {
                cores: 2,
                ..Default::default()
            },
            quick: false,
            malloc_env: vec![],
            limits: None,
            micro: None,
            workloads: vec![w.clone()],
            targets: vec![],
            figures: vec![],
        };
        let other: GivenBound = "W3=9".parse().unwrap();
        let b = bounds(&r, &w, &[g.clone(), other.clone()]);
        assert_eq!(
            b,
            vec![Bound {
                seconds: 2.5,
                label: "link bound".into()
            }]
        );
        r.limits = Some(Limits {
            tls_bytes_per_s: 1e9,
            loopback_bytes_per_s: 1e9,
        });
        // 400 MB delivered through 2 cores of 1 GB/s: 0.2 s.
        let b = bounds(&r, &w, &[other]);
        assert_eq!(b.len(), 1);
        assert!((b[0].seconds - 0.2).abs() < 1e-12, "{b:?}");
        assert!(b[0].label.contains("2 cores"), "{b:?}");
    }
}
