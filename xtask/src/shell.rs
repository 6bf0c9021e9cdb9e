//! Running commands: where the workspace is, which cargo to call, and turning exit statuses into
//! [`TaskError`]s.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::TaskError;

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// A `cargo` command of the toolchain that runs this xtask (the `CARGO` variable that
/// `cargo run` sets), started in the workspace root.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// A `cargo` command through rustup's proxy, so that `+toolchain` arguments work (the `CARGO`
/// variable names one toolchain's cargo, which does not understand them).
pub fn rustup_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// The command as a person would type it, for headers and error messages.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| value.map(|v| format!("{}={}", key.to_string_lossy(), quote(v))))
        .collect();
    let program = Path::new(cmd.get_program());
    let program = if program.file_stem() == Some(OsStr::new("cargo")) {
        OsStr::new("cargo")
    } else {
        program.as_os_str()
    };
    parts.push(quote(program));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        format!("'{}'", s.replace('\'', "'\\''"))
    } else {
        s.into_owned()
    }
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<(), TaskError> {
    flush();
    let status = cmd
        .status()
        .map_err(|e| TaskError::Failed(format!("could not start `{}`: {e}", display(cmd))))?;
    if status.success() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "`{}` failed ({status})",
            display(cmd)
        )))
    }
}

/// Runs `cmd`, echoing its stdout line by line to ours and handing each line to `on_line`;
/// stderr is inherited. Fails unless the command exits successfully.
pub fn run_watching_stdout(
    cmd: &mut Command,
    mut on_line: impl FnMut(&str),
) -> Result<(), TaskError> {
    flush();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| TaskError::Failed(format!("could not start `{}`: {e}", display(cmd))))?;
    if let Some(stdout) = child.stdout.take() {
        let out = std::io::stdout();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            on_line(&line);
            let mut out = out.lock();
            // A closed stdout must not stop the child's output from being drained.
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|e| TaskError::Failed(format!("could not wait for `{}`: {e}", display(cmd))))?;
    if status.success() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "`{}` failed ({status})",
            display(cmd)
        )))
    }
}

/// Runs `cmd` and returns its stdout; stderr is inherited.
pub fn output(cmd: &mut Command) -> Result<String, TaskError> {
    flush();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| TaskError::Failed(format!("could not start `{}`: {e}", display(cmd))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TaskError::Failed(format!(
            "`{}` failed ({})",
            display(cmd),
            out.status
        )))
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
