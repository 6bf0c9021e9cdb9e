//! `cargo xtask bench [args]`: builds `p2p-bench` in release and runs it with the malloc settings
//! below; every argument goes to it (`--quick`, `--out PATH`, `--block-size N`,
//! `--process-per-node`, `--chunk-size N`, `--only PARTS`, W5's `--w5-nodes`, `--w5-blocks`,
//! `--w5-block-size`, or `compare A.json B.json`). See BENCHMARKS.md.

use std::path::PathBuf;
use std::process::Command;

use crate::{TaskError, shell};

/// glibc malloc settings for every bench run. With the defaults, each 1 MiB reassembly buffer
/// is mmapped and unmapped per message and page zeroing dominates the large-artifact workloads;
/// these keep buffers up to 64 MiB on the heap and the heap from being trimmed below 256 MiB.
/// A variable already set in the environment wins.
pub const MALLOC_ENV: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "67108864"),
    ("MALLOC_TRIM_THRESHOLD_", "268435456"),
];

/// Adds [`MALLOC_ENV`] to `cmd`, except where the environment already sets a variable.
pub fn with_malloc_env(cmd: &mut Command) -> &mut Command {
    for (key, value) in MALLOC_ENV {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    cmd
}

/// The command CI runs: the quick form on the debug build (no second, release build on CI's
/// two cores). It fails if any artifact is missing or delivered twice.
pub fn quick_command() -> Command {
    let mut cmd = shell::cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "p2p-bench",
        "--bin",
        "p2p-bench",
        "--",
        "--quick",
        "--out",
        "target/bench/quick.json",
    ]);
    with_malloc_env(&mut cmd);
    cmd
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shell::workspace_root().join("target"))
}

/// Builds p2p-bench in release, then runs it with `args` from the workspace root.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    let mut build = shell::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "p2p-bench",
        "--bin",
        "p2p-bench",
    ]);
    println!("==> {}", shell::display(&build));
    shell::run(&mut build)?;
    let mut bench = Command::new(target_dir().join("release").join("p2p-bench"));
    bench.current_dir(shell::workspace_root()).args(args);
    with_malloc_env(&mut bench);
    println!("==> {}", shell::display(&bench));
    shell::run(&mut bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_command_runs_the_debug_build_with_the_malloc_settings() {
        let cmd = quick_command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a == "--release"), "{args:?}");
        assert!(args.ends_with(&[
            "--quick".into(),
            "--out".into(),
            "target/bench/quick.json".into()
        ]));
        let shown = shell::display(&cmd);
        for (key, _) in MALLOC_ENV {
            assert!(
                std::env::var_os(key).is_some() || shown.contains(key),
                "{shown}"
            );
        }
    }
}
