//! `cargo xtask ci`: every check a change must pass, in order, stopping at the first failure.
//!
//! To add a step, add one entry to [`steps`]; the header, timing and summary come for free.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{TaskError, bench, shell, testbed, tidy};

/// How a step does its work.
enum Action {
    /// A check that runs inside this process.
    InProcess(fn() -> Result<(), TaskError>),
    /// An external command, built fresh for each run.
    Command(fn() -> Command),
    /// `cargo test`-like command whose `test result:` lines are added up for the summary.
    Tests(fn() -> Command),
}

/// One named step of the pipeline.
struct Step {
    name: &'static str,
    action: Action,
}

/// The pipeline, in the order it runs.
fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "tidy",
            action: Action::InProcess(tidy::run),
        },
        Step {
            name: "fmt",
            action: Action::Command(|| {
                let mut cmd = shell::cargo();
                cmd.args(["fmt", "--all", "--", "--check"]);
                cmd
            }),
        },
        Step {
            // Also the rules of the clippy.toml files: no placeholder macros anywhere, and
            // p2p-core's sans-IO rule (p2p-core/clippy.toml).
            name: "clippy",
            action: Action::Command(|| {
                let mut cmd = shell::cargo();
                cmd.args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]);
                cmd
            }),
        },
        Step {
            // The driver library as an embedder builds it: default features, so without the
            // `trace` feature that the workspace build turns on.
            name: "clippy-driver",
            action: Action::Command(|| {
                let mut cmd = shell::cargo();
                cmd.args(["clippy", "-p", "p2p-tokio", "--", "-D", "warnings"]);
                cmd
            }),
        },
        Step {
            // The fuzz crate, its own workspace: its targets build against the crates'
            // `fuzzing` features, under the root clippy.toml. libfuzzer-sys compiles libFuzzer,
            // so this step needs a C++ compiler. It shares the workspace's target directory, so
            // the dependencies the clippy step checked are not checked again.
            name: "clippy-fuzz",
            action: Action::Command(|| {
                let mut cmd = shell::cargo();
                cmd.args([
                    "clippy",
                    "--manifest-path",
                    "fuzz/Cargo.toml",
                    "--target-dir",
                    "target",
                    "--",
                    "-D",
                    "warnings",
                ]);
                cmd
            }),
        },
        Step {
            name: "test",
            action: Action::Tests(|| {
                let mut cmd = shell::cargo();
                cmd.args(["test", "--workspace"]);
                cmd
            }),
        },
        Step {
            name: "doc",
            action: Action::Command(|| {
                let mut cmd = shell::cargo();
                cmd.args(["doc", "--workspace", "--no-deps"])
                    .env("RUSTDOCFLAGS", "-D warnings");
                cmd
            }),
        },
        Step {
            // `cargo xtask bench --quick` on the debug build: tiny counts, every workload on
            // real TLS nodes; fails if any artifact is missing or delivered twice, asserts no
            // timing.
            name: "bench",
            action: Action::Command(bench::quick_command),
        },
        Step {
            // `cargo xtask testbed --smoke`: 4 node processes in network namespaces on a bridge,
            // tbf-shaped links, real TLS, a few seconds; fails if anything is missing or
            // delivered twice or a namespace is left behind; skipped (with the reason) when not
            // root or without iproute2.
            name: "testbed",
            action: Action::InProcess(testbed::ci_smoke),
        },
        // Later steps go here, each as one more entry, for example:
        //   `sim`:   `cargo xtask sim --ci`      (the deterministic simulator's seed sweep)
        // An xtask subcommand as a step: `Action::InProcess(sim::run_ci)` or an
        // `Action::Command` that runs `shell::cargo()` with `["xtask", "sim", "--ci"]`.
    ]
}

/// How a step ended.
enum Outcome {
    Passed(Duration),
    Failed(Duration),
    NotRun,
}

/// Test counts added up over every `test result:` line.
#[derive(Default, Debug, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one libtest summary line such as
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// `cmd` without incremental compilation: ci builds from scratch, where writing the incremental
/// caches only costs time.
fn from_scratch(mut cmd: Command) -> Command {
    cmd.env("CARGO_INCREMENTAL", "0");
    cmd
}

/// Runs every step; prints a summary table of the outcomes and times at the end.
pub fn run() -> Result<(), TaskError> {
    let steps = steps();
    let total = steps.len();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(total);
    let mut counts: Option<TestCounts> = None;
    let mut failure = None;
    for (index, step) in steps.iter().enumerate() {
        if failure.is_some() {
            outcomes.push(Outcome::NotRun);
            continue;
        }
        let what = match &step.action {
            Action::InProcess(_) => format!("cargo xtask {}", step.name),
            Action::Command(build) | Action::Tests(build) => shell::display(&build()),
        };
        println!("\n==> [{}/{total}] {}: {what}", index + 1, step.name);
        let started = Instant::now();
        let result = match &step.action {
            Action::InProcess(check) => check(),
            Action::Command(build) => shell::run(&mut from_scratch(build())),
            Action::Tests(build) => {
                let tally = counts.get_or_insert_with(TestCounts::default);
                shell::run_watching_stdout(&mut from_scratch(build()), |line| tally.add_line(line))
            }
        };
        let elapsed = started.elapsed();
        match result {
            Ok(()) => outcomes.push(Outcome::Passed(elapsed)),
            Err(e) => {
                outcomes.push(Outcome::Failed(elapsed));
                failure = Some((step.name, e));
            }
        }
    }
    print_summary(&steps, &outcomes, counts.as_ref());
    match failure {
        None => Ok(()),
        Some((name, e)) => Err(TaskError::Failed(format!("ci step `{name}` failed: {e}"))),
    }
}

fn print_summary(steps: &[Step], outcomes: &[Outcome], counts: Option<&TestCounts>) {
    let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(5);
    println!("\n==> summary");
    println!("{:<width$}  {:<7}  {:>9}", "step", "result", "time");
    let mut sum = Duration::ZERO;
    for (step, outcome) in steps.iter().zip(outcomes) {
        let (result, time) = match outcome {
            Outcome::Passed(d) => ("ok", Some(*d)),
            Outcome::Failed(d) => ("FAILED", Some(*d)),
            Outcome::NotRun => ("not run", None),
        };
        let time = match time {
            Some(d) => {
                sum += d;
                format!("{:.1}s", d.as_secs_f64())
            }
            None => "-".to_owned(),
        };
        println!("{:<width$}  {result:<7}  {time:>9}", step.name);
    }
    println!(
        "{:<width$}  {:<7}  {:>9}",
        "total",
        "",
        format!("{:.1}s", sum.as_secs_f64())
    );
    if let Some(c) = counts {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            c.passed, c.failed, c.ignored
        );
    }
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn test_counts_add_up_libtest_summary_lines() {
        let mut counts = TestCounts::default();
        counts.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        counts.add_line("running 3 tests");
        counts.add_line(
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        assert_eq!(
            counts,
            TestCounts {
                passed: 14,
                failed: 1,
                ignored: 1
            }
        );
    }

    #[test]
    fn lines_that_are_not_libtest_summaries_count_nothing() {
        let mut counts = TestCounts::default();
        counts.add_line("test parser_rejects_long_frames ... ok");
        counts.add_line("note: test result: 5 passed");
        assert_eq!(counts, TestCounts::default());
    }

    #[test]
    fn every_step_has_a_distinct_name() {
        let steps = super::steps();
        let mut names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), steps.len());
        assert_eq!(steps[0].name, "tidy", "tidy runs first: it is the cheapest");
    }
}
