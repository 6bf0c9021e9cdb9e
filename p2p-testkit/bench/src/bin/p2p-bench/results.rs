//! The results of one run: every figure, the targets beside them, the table printed, the JSON
//! written, and the comparison of two JSON files.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::micro::Micro;
use crate::workloads::{BASE_RSS, Outcome};

/// Version of the JSON layout (bumped when a field changes meaning).
pub const SCHEMA: u32 = 1;

/// The machine's limits, in bytes per second.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// rustls in memory, one core, TLS 1.3 AES-128-GCM (encrypt + decrypt on one thread).
    pub tls_bytes_per_s: f64,
    /// One TCP stream on 127.0.0.1.
    pub loopback_bytes_per_s: f64,
}

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Larger is better (throughput).
    Higher,
    /// Smaller is better (time, bytes, latency).
    Lower,
}

/// One named figure, the unit of comparison between runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// `<section>.<measure>`, stable across commits.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
}

/// A target reported beside the figures (never asserted, except that nothing is missing or
/// duplicated, which fails the run).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// What is aimed at, in words.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Whether it was met (`None`: could not be judged, e.g. a workload that did not run).
    pub met: Option<bool>,
}

/// Everything one run of p2p-bench measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `git rev-parse HEAD` (`-dirty` with uncommitted changes).
    pub commit: String,
    /// Seconds since the Unix epoch when the run ended.
    pub unix_time: u64,
    /// The machine.
    pub machine: Machine,
    /// Whether this was the quick form.
    pub quick: bool,
    /// The malloc settings in the environment (`MALLOC_*` variables), as `K=V` strings.
    pub malloc_env: Vec<String>,
    /// The machine's limits (absent if skipped).
    pub limits: Option<Limits>,
    /// The micro figures (absent in quick mode or if skipped).
    pub micro: Option<Micro>,
    /// The workload outcomes, in the order they ran.
    pub workloads: Vec<Outcome>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Every figure, flat, for `compare`.
    pub figures: Vec<Figure>,
}

impl Results {
    /// Fills [`Results::targets`] and [`Results::figures`] from the measurements.
    pub fn finish(&mut self) {
        self.targets = targets(self);
        self.figures = figures(self);
    }

    /// The outcome of workload `name`.
    pub fn workload(&self, name: &str) -> Option<&Outcome> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// Whether any artifact was missing or delivered twice in any workload.
    pub fn lost_or_duplicated(&self) -> bool {
        self.workloads
            .iter()
            .any(|w| w.missing > 0 || w.duplicates > 0 || w.full_delivery_s.is_none())
    }

    /// Writes the JSON to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self).map_err(|e| format!("JSON: {e}"))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads a JSON file written by [`Results::write`].
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: Results = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a p2p-bench result: {e}", path.display()))?;
        if r.schema != SCHEMA {
            return Err(format!(
                "{} has schema {}, this p2p-bench reads {SCHEMA}",
                path.display(),
                r.schema
            ));
        }
        Ok(r)
    }
}

const MB: f64 = 1e6;

fn figures(r: &Results) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut fig = |name: String, value: f64, unit: &str, better: Better| {
        out.push(Figure {
            name,
            value,
            unit: unit.into(),
            better,
        })
    };
    use Better::{Higher, Lower};
    if let Some(l) = &r.limits {
        fig("limits.tls".into(), l.tls_bytes_per_s / MB, "MB/s", Higher);
        fig(
            "limits.loopback".into(),
            l.loopback_bytes_per_s / MB,
            "MB/s",
            Higher,
        );
    }
    if let Some(m) = &r.micro {
        fig(
            "core.adverts".into(),
            m.core_adverts_per_s,
            "adverts/s",
            Higher,
        );
        fig("wire.1KiB".into(), m.wire_1kib_msgs_per_s, "msgs/s", Higher);
        fig(
            "wire.1MiB".into(),
            m.wire_1mib_bytes_per_s / 1e9,
            "GB/s",
            Higher,
        );
    }
    for w in &r.workloads {
        let n = &w.name;
        if let Some(t) = w.full_delivery_s {
            fig(format!("{n}.time"), t, "s", Lower);
        }
        fig(format!("{n}.goodput"), w.goodput_mb_s, "MB/s", Higher);
        fig(format!("{n}.wire"), w.wire_bytes as f64 / MB, "MB", Lower);
        fig(format!("{n}.amplification"), w.amplification, "x", Lower);
        fig(format!("{n}.cpu"), w.cpu_s, "s", Lower);
        if w.cpu_s > 0.0 {
            // Goodput per CPU-second: steadier than goodput on a machine shared with others.
            let per_cpu = w.goodput_mb_s * w.full_delivery_s.unwrap_or(w.elapsed_s) / w.cpu_s;
            fig(format!("{n}.goodput_per_cpu"), per_cpu, "MB/cpu-s", Higher);
        }
        fig(
            format!("{n}.peak_rss"),
            w.peak_rss_bytes as f64 / MB,
            "MB",
            Lower,
        );
        if let Some(max) = w.node_peak_rss_bytes.iter().max() {
            fig(
                format!("{n}.node_peak_rss_max"),
                *max as f64 / MB,
                "MB",
                Lower,
            );
        }
        fig(format!("{n}.missing"), w.missing as f64, "pairs", Lower);
        fig(
            format!("{n}.duplicates"),
            w.duplicates as f64,
            "deliveries",
            Lower,
        );
        for l in &w.latency {
            fig(format!("{n}.{}_p50", l.class), l.p50_ms, "ms", Lower);
            fig(format!("{n}.{}_p99", l.class), l.p99_ms, "ms", Lower);
        }
    }
    out
}

fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let amp = |name: &str, max: f64, out: &mut Vec<Target>| {
        let w = r.workload(name);
        out.push(Target {
            target: format!("{name} amplification <= {max}"),
            measured: w.map_or("not run".into(), |w| format!("{:.3}", w.amplification)),
            met: w.map(|w| w.amplification <= max),
        });
    };
    amp("W2", 1.05, &mut out);
    amp("W1", 1.6, &mut out);
    let w2 = r.workload("W2");
    let tls = r.limits.as_ref().map(|l| l.tls_bytes_per_s / MB);
    out.push(Target {
        target: "W2 goodput >= 30% of the single-core rustls limit".into(),
        measured: match (w2, tls) {
            (Some(w), Some(t)) => format!(
                "{:.0} MB/s = {:.0}% of {t:.0} MB/s ({:.0} MB per CPU-second)",
                w.goodput_mb_s,
                100.0 * w.goodput_mb_s / t,
                w.goodput_mb_s * w.full_delivery_s.unwrap_or(w.elapsed_s) / w.cpu_s.max(1e-9)
            ),
            _ => "not run".into(),
        },
        met: match (w2, tls) {
            (Some(w), Some(t)) => Some(w.goodput_mb_s >= 0.3 * t),
            _ => None,
        },
    });
    let p99 = |name: &str| {
        r.workload(name)
            .and_then(|w| w.latency("urgent"))
            .map(|l| l.p99_ms)
    };
    out.push(Target {
        target: "W4 urgent p99 with bulk <= 3x without".into(),
        measured: match (p99("W4-bulk"), p99("W4-idle")) {
            (Some(b), Some(i)) => format!(
                "{b:.2} ms vs {i:.2} ms = {:.2}x",
                b / i.max(f64::MIN_POSITIVE)
            ),
            _ => "not run".into(),
        },
        met: match (p99("W4-bulk"), p99("W4-idle")) {
            (Some(b), Some(i)) => Some(b <= 3.0 * i),
            _ => None,
        },
    });
    for w in r.workloads.iter().filter(|w| w.node_rss_bound_bytes > 0) {
        let Some(max) = w.node_peak_rss_bytes.iter().max() else {
            continue;
        };
        out.push(Target {
            target: format!("{} peak RSS per node <= the code's bound", w.name),
            measured: format!(
                "{:.0} MB max vs {:.0} MB",
                *max as f64 / MB,
                w.node_rss_bound_bytes as f64 / MB
            ),
            met: Some(*max <= w.node_rss_bound_bytes),
        });
    }
    for w in r.workloads.iter().filter(|w| w.file_storage) {
        let Some(max) = w.node_peak_anon_bytes.iter().max() else {
            continue;
        };
        out.push(Target {
            target: format!("{} anonymous memory per node <= 128 MiB (files)", w.name),
            measured: format!(
                "{:.0} MB max vs {:.0} MB",
                *max as f64 / MB,
                BASE_RSS as f64 / MB
            ),
            met: Some(*max <= BASE_RSS),
        });
    }
    let missing: u64 = r.workloads.iter().map(|w| w.missing).sum();
    let dups: u64 = r.workloads.iter().map(|w| w.duplicates).sum();
    out.push(Target {
        target: "no artifact missing or delivered twice".into(),
        measured: format!("{missing} missing, {dups} duplicated (artifact, node) pairs"),
        met: (!r.workloads.is_empty()).then_some(!r.lost_or_duplicated()),
    });
    out
}

fn mb_s(bytes_per_s: f64) -> String {
    format!("{:.0} MB/s", bytes_per_s / MB)
}

/// The readable table of a run.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "p2p-bench  commit {}", r.commit);
    let _ = writeln!(s, "machine    {}", r.machine);
    if !r.malloc_env.is_empty() {
        let _ = writeln!(s, "malloc     {}", r.malloc_env.join(" "));
    }
    if let Some(l) = &r.limits {
        let _ = writeln!(s, "\nlimits of this machine");
        let _ = writeln!(
            s,
            "  rustls TLS 1.3 AES-128-GCM, 1 core, in memory  {:>12}",
            mb_s(l.tls_bytes_per_s)
        );
        let _ = writeln!(
            s,
            "  TCP loopback, one stream                     {:>12}",
            mb_s(l.loopback_bytes_per_s)
        );
    }
    if let Some(m) = &r.micro {
        let _ = writeln!(s, "\ncore and transport, one core");
        let _ = writeln!(
            s,
            "  core: adverts handled (advert -> request)      {:>12.0} /s",
            m.core_adverts_per_s
        );
        let _ = writeln!(
            s,
            "  wire: 1 KiB messages (encode+mux+demux+decode) {:>12.0} /s",
            m.wire_1kib_msgs_per_s
        );
        let _ = writeln!(
            s,
            "  wire: 1 MiB messages                            {:>10.2} GB/s",
            m.wire_1mib_bytes_per_s / 1e9
        );
    }
    if !r.workloads.is_empty() {
        let _ = writeln!(
            s,
            "\nworkloads on real nodes over TLS (127.0.0.1, or the addresses of `--netns`)"
        );
        for w in &r.workloads {
            let _ = writeln!(s, "  {:<8} {} [{}]", w.name, w.title, w.mode);
        }
        let _ = writeln!(
            s,
            "\n  {:<8}{:>10}{:>11}{:>11}{:>8}{:>9}{:>10}{:>9}{:>6}{:>12}{:>12}",
            "",
            "time",
            "goodput",
            "wire",
            "ampl",
            "cpu",
            "peak RSS",
            "missing",
            "dup",
            "urgent p50",
            "urgent p99"
        );
        for w in &r.workloads {
            let lat = |f: fn(&crate::workloads::Latency) -> f64| {
                w.latency("urgent")
                    .map_or("-".to_string(), |l| format!("{:.2} ms", f(l)))
            };
            let _ = writeln!(
                s,
                "  {:<8}{:>10}{:>11}{:>11}{:>8.3}{:>9}{:>10}{:>9}{:>6}{:>12}{:>12}",
                w.name,
                w.full_delivery_s
                    .map_or("DNF".to_string(), |t| format!("{t:.3} s")),
                format!("{:.1} MB/s", w.goodput_mb_s),
                format!("{:.1} MB", w.wire_bytes as f64 / MB),
                w.amplification,
                format!("{:.2} s", w.cpu_s),
                format!("{:.0} MB", w.peak_rss_bytes as f64 / MB),
                w.missing,
                w.duplicates,
                lat(|l| l.p50_ms),
                lat(|l| l.p99_ms),
            );
        }
        for w in r
            .workloads
            .iter()
            .filter(|w| !w.node_peak_rss_bytes.is_empty())
        {
            let _ = writeln!(s, "{}", node_rss_line(w));
        }
        for w in &r.workloads {
            if let Some(b) = w.latency("bulk") {
                let _ = writeln!(
                    s,
                    "  {} bulk latency: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
                    w.name, b.p50_ms, b.p99_ms, b.max_ms
                );
            }
        }
    }
    let _ = writeln!(s, "\ntargets (reported, not asserted)");
    for t in &r.targets {
        let mark = match t.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        let _ = writeln!(s, "  [{mark}] {:<52} {}", t.target, t.measured);
    }
    s
}

/// The comparison of two runs, figure by figure: B / A and whether B is better.
/// The peak RSS of each node process of `w`, against its largest artifact and the bound.
fn node_rss_line(w: &Outcome) -> String {
    let mut peaks = w.node_peak_rss_bytes.clone();
    peaks.sort_unstable();
    let (min, max) = (peaks[0], peaks[peaks.len() - 1]);
    let median = peaks[peaks.len() / 2];
    let size = w.largest_artifact_bytes.max(1) as f64;
    let mut line = format!(
        "  {} peak RSS per node: min {:.0} MB, median {:.0} MB, max {:.0} MB = {:.2} x the \
         largest artifact ({:.0} MB)",
        w.name,
        min as f64 / MB,
        median as f64 / MB,
        max as f64 / MB,
        max as f64 / size,
        size / MB
    );
    if w.node_rss_bound_bytes > 0 {
        let _ = write!(
            line,
            "; bound {:.0} MB (the artifacts' bytes, each held once, + 128 MiB)",
            w.node_rss_bound_bytes as f64 / MB
        );
    }
    let mut anon = w.node_peak_anon_bytes.clone();
    anon.sort_unstable();
    if let (Some(min), Some(max)) = (anon.first(), anon.last()) {
        let _ = write!(
            line,
            "\n  {} peak anonymous memory per node (RssAnon, without mapped files): min {:.0} MB, \
             median {:.0} MB, max {:.0} MB{}",
            w.name,
            *min as f64 / MB,
            anon[anon.len() / 2] as f64 / MB,
            *max as f64 / MB,
            if w.file_storage {
                "; artifacts in files, bound 128 MiB"
            } else {
                ""
            }
        );
    }
    line
}

pub fn compare(a: &Results, b: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "A: {}  ({})", a.commit, a.machine);
    let _ = writeln!(s, "B: {}  ({})", b.commit, b.machine);
    if a.machine != b.machine {
        let _ = writeln!(s, "note: the machines differ; ratios compare machines too");
    }
    if a.quick != b.quick {
        let _ = writeln!(s, "note: one run is quick, the other full; counts differ");
    }
    let _ = writeln!(
        s,
        "\n{:<26}{:>14}{:>14}  {:<11}{:>8}  verdict",
        "figure", "A", "B", "unit", "B/A"
    );
    for fb in &b.figures {
        let Some(fa) = a.figures.iter().find(|f| f.name == fb.name) else {
            continue;
        };
        let ratio = if fa.value == 0.0 {
            if fb.value == 0.0 { 1.0 } else { f64::INFINITY }
        } else {
            fb.value / fa.value
        };
        let verdict = verdict(ratio, fb.better);
        let _ = writeln!(
            s,
            "{:<26}{:>14}{:>14}  {:<11}{:>8}  {verdict}",
            fb.name,
            num(fa.value),
            num(fb.value),
            fb.unit,
            if ratio.is_finite() {
                format!("{ratio:.3}")
            } else {
                "inf".into()
            },
        );
    }
    let only = |x: &Results, y: &Results| -> Vec<String> {
        x.figures
            .iter()
            .filter(|f| !y.figures.iter().any(|g| g.name == f.name))
            .map(|f| f.name.clone())
            .collect()
    };
    for (label, names) in [("only in A", only(a, b)), ("only in B", only(b, a))] {
        if !names.is_empty() {
            let _ = writeln!(s, "{label}: {}", names.join(", "));
        }
    }
    s
}

/// `better`/`worse` outside +-5 %, else `same`.
fn verdict(ratio: f64, better: Better) -> &'static str {
    if (0.95..=1.05).contains(&ratio) {
        return "same";
    }
    match (ratio > 1.0, better) {
        (true, Better::Higher) | (false, Better::Lower) => "better",
        _ => "worse",
    }
}

fn num(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::Latency;

    fn outcome(name: &str, amp: f64, p99: f64, missing: u64) -> Outcome {
        Outcome {
            name: name.into(),
            nodes: 13,
            full_delivery_s: (missing == 0).then_some(1.0),
            goodput_mb_s: 500.0,
            amplification: amp,
            missing,
            latency: vec![Latency {
                class: "urgent".into(),
                deliveries: 10,
                p50_ms: p99 / 2.0,
                p99_ms: p99,
                max_ms: p99,
            }],
            ..Outcome::default()
        }
    }

    #[test]
    fn per_node_peaks_are_reported_against_the_bound() {
        let mut w = outcome("W5", 1.0, 1.0, 0);
        w.node_peak_rss_bytes = vec![300_000_000, 100_000_000, 200_000_000];
        w.largest_artifact_bytes = 100_000_000;
        w.node_rss_bound_bytes = 250_000_000;
        let line = node_rss_line(&w);
        assert!(
            line.contains("min 100 MB, median 200 MB, max 300 MB = 3.00 x"),
            "{line}"
        );
        let r = results(vec![w]);
        let t = r
            .targets
            .iter()
            .find(|t| t.target.starts_with("W5 peak RSS"))
            .unwrap();
        assert_eq!(t.met, Some(false));
        assert!(r.figures.iter().any(|f| f.name == "W5.node_peak_rss_max"));
    }

    fn results(workloads: Vec<Outcome>) -> Results {
        let mut r = Results {
            schema: SCHEMA,
            commit: "abc".into(),
            unix_time: 0,
            machine: Machine::default(),
            quick: false,
            malloc_env: vec![],
            limits: Some(Limits {
                tls_bytes_per_s: 1000e6,
                loopback_bytes_per_s: 3000e6,
            }),
            micro: None,
            workloads,
            targets: vec![],
            figures: vec![],
        };
        r.finish();
        r
    }

    #[test]
    fn targets_are_judged_from_the_figures() {
        let r = results(vec![
            outcome("W1", 1.7, 1.0, 0),
            outcome("W2", 1.01, 1.0, 0),
            outcome("W4-idle", 1.0, 2.0, 0),
            outcome("W4-bulk", 1.0, 5.0, 0),
        ]);
        let met: Vec<Option<bool>> = r.targets.iter().map(|t| t.met).collect();
        // W2 amp met, W1 amp missed, W2 goodput 500 >= 300 met, W4 5 <= 6 met, none lost.
        assert_eq!(
            met,
            vec![Some(true), Some(false), Some(true), Some(true), Some(true)]
        );
        assert!(!r.lost_or_duplicated());
        let text = table(&r);
        assert!(text.contains("[MISSED] W1 amplification <= 1.6"), "{text}");
    }

    #[test]
    fn a_missing_pair_fails_the_run_and_targets_without_data_are_not_judged() {
        let r = results(vec![outcome("W3", 1.0, 1.0, 2)]);
        assert!(r.lost_or_duplicated());
        assert_eq!(r.targets[0].met, None);
        assert_eq!(r.targets.last().unwrap().met, Some(false));
    }

    #[test]
    fn json_round_trips_and_compare_prints_ratios_with_direction() {
        let a = results(vec![outcome("W1", 1.5, 4.0, 0)]);
        let mut b = results(vec![outcome("W1", 1.2, 8.0, 0)]);
        b.commit = "def".into();
        b.finish();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.json");
        a.write(&path).unwrap();
        assert_eq!(Results::read(&path).unwrap(), a);
        let text = compare(&a, &b);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        assert!(
            line("W1.amplification ").contains("0.800  better"),
            "{text}"
        );
        assert!(line("W1.urgent_p99 ").contains("2.000  worse"), "{text}");
        assert!(line("limits.tls ").contains("1.000  same"), "{text}");
    }

    #[test]
    fn reading_something_else_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "{\"hello\": 1}").unwrap();
        let err = Results::read(&path).unwrap_err();
        assert!(err.contains("is not a p2p-bench result"), "{err}");
        assert!(Results::read(&dir.path().join("none.json")).is_err());
    }
}
