//! `cargo xtask sim [args...]`: runs the deterministic simulator's command line, `p2p-sim`, in
//! release mode, and ends with its exit code.
//!
//! With no arguments it runs every named scenario over five seeds (`run all --seeds 0..5`).
//! Other arguments go to `p2p-sim` unchanged, for example
//! `cargo xtask sim run conn-drop --seeds 0..3 --record-node 2 --trace-dir target/traces`.

use std::io::Write;
use std::process::Command;

use crate::{TaskError, shell};

/// The arguments `p2p-sim` gets when none are given.
pub const DEFAULT_ARGS: [&str; 4] = ["run", "all", "--seeds", "0..5"];

/// The command that runs `p2p-sim` with `args`, or with [`DEFAULT_ARGS`] when `args` is empty.
pub fn command(args: &[String]) -> Command {
    let mut cmd = shell::cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "p2p-testkit",
        "--bin",
        "p2p-sim",
        "--",
    ]);
    if args.is_empty() {
        cmd.args(DEFAULT_ARGS);
    } else {
        cmd.args(args);
    }
    cmd
}

/// Runs `p2p-sim`. When it exits with a non-zero code (1: a check failed, 2: a usage error), this
/// process exits with the same code, so scripts see what `p2p-sim` said.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    let mut cmd = command(args);
    println!("$ {}", shell::display(&cmd));
    let _ = std::io::stdout().flush();
    let status = cmd.status().map_err(|e| {
        TaskError::Failed(format!("could not start `{}`: {e}", shell::display(&cmd)))
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => {
            eprintln!("error: `{}` exited with code {code}", shell::display(&cmd));
            std::process::exit(code)
        }
        None => Err(TaskError::Failed(format!(
            "`{}` was stopped by a signal ({status})",
            shell::display(&cmd)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn no_arguments_run_every_scenario_over_five_seeds_in_release() {
        assert_eq!(
            args(&command(&[])),
            [
                "run",
                "--release",
                "-p",
                "p2p-testkit",
                "--bin",
                "p2p-sim",
                "--",
                "run",
                "all",
                "--seeds",
                "0..5"
            ]
        );
    }

    #[test]
    fn given_arguments_are_passed_to_p2p_sim_unchanged() {
        let given: Vec<String> = ["run", "mesh", "--record-node", "2", "--trace-dir", "t"]
            .map(String::from)
            .to_vec();
        let a = args(&command(&given));
        assert_eq!(
            a[..7],
            [
                "run",
                "--release",
                "-p",
                "p2p-testkit",
                "--bin",
                "p2p-sim",
                "--"
            ]
        );
        assert_eq!(a[7..], given[..]);
    }
}
