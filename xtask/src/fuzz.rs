//! `cargo xtask fuzz [target] [--seconds N]`: runs cargo-fuzz targets for a bounded time each.
//!
//! Installs cargo-fuzz when it is missing, lists the targets of the `fuzz/` crate, and runs the
//! chosen one (or all of them in turn) on nightly, seeded from the committed corpus
//! `fuzz/corpus/<target>`; new inputs go to the ignored `fuzz/corpus-work/<target>`.

use std::fs;
use std::path::Path;
use std::process::Stdio;

use crate::{TaskError, shell};

/// Seconds each target runs when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 60;

/// The parsed command line of `cargo xtask fuzz`.
#[derive(Debug, PartialEq, Eq)]
pub struct FuzzArgs {
    /// The one target to run; every target when `None`.
    pub target: Option<String>,
    /// libFuzzer's `-max_total_time` for each target.
    pub seconds: u64,
}

impl FuzzArgs {
    /// Parses `[target] [--seconds N]` (also `--seconds=N`), in any order.
    pub fn parse(args: &[String]) -> Result<Self, TaskError> {
        let mut target = None;
        let mut seconds = DEFAULT_SECONDS;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let value = if arg == "--seconds" {
                Some(iter.next().map(String::as_str).ok_or_else(|| {
                    TaskError::Usage("`--seconds` needs a number of seconds".to_owned())
                })?)
            } else {
                arg.strip_prefix("--seconds=")
            };
            if let Some(value) = value {
                seconds = match value.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(TaskError::Usage(format!(
                            "`--seconds` takes a positive whole number, got `{value}`"
                        )));
                    }
                };
            } else if arg.starts_with('-') {
                return Err(TaskError::Usage(format!("unknown fuzz option `{arg}`")));
            } else if let Some(first) = &target {
                return Err(TaskError::Usage(format!(
                    "one fuzz target at most, got `{first}` and `{arg}`"
                )));
            } else {
                target = Some(arg.clone());
            }
        }
        Ok(FuzzArgs { target, seconds })
    }
}

/// Runs the chosen target, or every target, for `args.seconds` each; fails if any run fails.
pub fn run(args: &FuzzArgs) -> Result<(), TaskError> {
    let fuzz_dir = shell::workspace_root().join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        return Err(TaskError::Failed(format!(
            "no fuzz crate: {} does not exist (the fuzz targets have not been added yet)",
            fuzz_dir.join("Cargo.toml").display()
        )));
    }
    ensure_cargo_fuzz()?;

    let mut list = shell::rustup_cargo();
    list.current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "list"]);
    let available: Vec<String> = shell::output(&mut list)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if available.is_empty() {
        return Err(TaskError::Failed(
            "`cargo +nightly fuzz list` lists no targets".to_owned(),
        ));
    }
    let targets = match &args.target {
        Some(t) if available.contains(t) => vec![t.clone()],
        Some(t) => {
            return Err(TaskError::Failed(format!(
                "no fuzz target `{t}`; the targets are: {}",
                available.join(", ")
            )));
        }
        None => available,
    };

    let mut failed = Vec::new();
    for target in &targets {
        println!(
            "\n==> fuzz {target} for {}s (seeds fuzz/corpus/{target}, new inputs fuzz/corpus-work/{target})",
            args.seconds
        );
        if let Err(e) = run_target(&fuzz_dir, target, args.seconds) {
            eprintln!("fuzz {target}: {e}");
            failed.push(target.as_str());
        }
    }
    if failed.is_empty() {
        println!(
            "\nfuzz: {} target(s) ran {}s each without a failure",
            targets.len(),
            args.seconds
        );
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "fuzz target(s) failed: {} (crashing inputs are under fuzz/artifacts/<target>/)",
            failed.join(", ")
        )))
    }
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<(), TaskError> {
    // New inputs go to an ignored work corpus; the committed seed corpus is only read, so a
    // campaign never floods the repository. Promote a finding by copying it into
    // fuzz/corpus/<target>/ with a name that says what it caught.
    let seeds = fuzz_dir.join("corpus").join(target);
    let work = fuzz_dir.join("corpus-work").join(target);
    for dir in [&seeds, &work] {
        fs::create_dir_all(dir).map_err(|e| {
            TaskError::Failed(format!("cannot create corpus dir {}: {e}", dir.display()))
        })?;
    }
    let mut cmd = shell::rustup_cargo();
    cmd.current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"));
    shell::run(&mut cmd)
}

/// Installs cargo-fuzz with `cargo install cargo-fuzz --locked` unless `cargo +nightly fuzz`
/// already answers.
fn ensure_cargo_fuzz() -> Result<(), TaskError> {
    let installed = || {
        shell::rustup_cargo()
            .args(["+nightly", "fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if installed() {
        return Ok(());
    }
    println!("==> cargo-fuzz is missing: installing it");
    let mut install = shell::rustup_cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    shell::run(&mut install)?;
    if installed() {
        Ok(())
    } else {
        Err(TaskError::Failed(
            "cargo-fuzz was installed but `cargo +nightly fuzz --version` still fails: \
             is the nightly toolchain installed (`rustup toolchain list`)?"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<FuzzArgs, TaskError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        FuzzArgs::parse(&args)
    }

    #[test]
    fn no_arguments_mean_every_target_for_the_default_time() {
        let args = parse(&[]).expect("valid");
        assert_eq!(
            args,
            FuzzArgs {
                target: None,
                seconds: DEFAULT_SECONDS
            }
        );
    }

    #[test]
    fn target_and_seconds_are_read_in_either_order_and_form() {
        let expected = FuzzArgs {
            target: Some("wire_decode".to_owned()),
            seconds: 5,
        };
        assert_eq!(
            parse(&["wire_decode", "--seconds", "5"]).expect("valid"),
            expected
        );
        assert_eq!(
            parse(&["--seconds=5", "wire_decode"]).expect("valid"),
            expected
        );
    }

    #[test]
    fn bad_fuzz_arguments_are_usage_errors() {
        for bad in [
            &["--seconds"][..],
            &["--seconds", "0"],
            &["--seconds", "ten"],
            &["--seconds=-1"],
            &["--verbose"],
            &["a", "b"],
        ] {
            match parse(bad) {
                Err(TaskError::Usage(_)) => {}
                other => panic!("{bad:?} gave {other:?}, expected a usage error"),
            }
        }
    }
}
