//! What the figures came from (git commit, CPU, memory, kernel) and the process's own costs
//! (CPU time, peak resident memory), read from /proc without any unsafe code.

use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The machine a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cores: usize,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
}

impl Machine {
    /// Reads the description of this machine; unknown parts stay empty or zero.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes: kib_field(&meminfo, "MemTotal:").map_or(0, |k| k * 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} cores, {:.1} GiB, Linux {}",
            self.cpu_model,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }
}

/// `model name` (x86) or `Model`/`CPU part` fallbacks of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "cpu model", "Processor"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

/// The value in KiB of a `Key:   1234 kB` line.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `git rev-parse HEAD` in the current directory, with `-dirty` when the tree has changes.
pub fn git_commit() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(head) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
            _ => head,
        },
        None => "unknown".into(),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: USER_HZ, which the kernel fixes at 100
/// for user space on every architecture Linux supports.
const USER_HZ: u64 = 100;

/// CPU time (user + system) used so far by the process `pid` ("self" for this one), to
/// 10 ms resolution.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15, counted after the command name,
/// which may itself contain spaces and parentheses).
fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// The whole machine's CPU time so far, from the `cpu` line of /proc/stat: every core's time
/// out of idle (user, nice, system, irq, softirq, steal), and of it the softirq time, where the
/// kernel does most of a packet's work (TCP, veth, bridge, tbf) outside any process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineCpu {
    /// Time all cores spent out of idle.
    pub busy: Duration,
    /// Of `busy`, time in softirq.
    pub softirq: Duration,
}

impl MachineCpu {
    /// Reads /proc/stat now.
    pub fn now() -> Option<Self> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// What was spent between `earlier` and this reading.
    pub fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
        }
    }
}

/// The `cpu` line of /proc/stat: `cpu user nice system idle iowait irq softirq steal ...` in
/// USER_HZ ticks (guest time is already counted in user).
fn parse_proc_stat(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let ms = |t: u64| Duration::from_millis(t * 1000 / USER_HZ);
    Some(MachineCpu {
        busy: ms(busy),
        softirq: ms(at(6)),
    })
}

/// Peak resident set size (VmHWM) of the process `pid` in bytes.
pub fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmHWM:").map(|k| k * 1024)
}

/// Resident anonymous memory (RssAnon: the heap and stacks, not the pages of mapped files) of
/// the process `pid` in bytes.
pub fn anon_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "RssAnon:").map(|k| k * 1024)
}

/// Resets this process's peak RSS to its current RSS (writes 5 to /proc/self/clear_refs,
/// Linux 4.0+). Returns whether it worked; if not, VmHWM stays monotonic over the run.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_time_skips_a_command_name_with_spaces_and_parens() {
        let line = "1234 (p2p (bench) x) S 1 2 3 4 5 6 7 8 9 10 250 130 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(line), Some(Duration::from_millis(3800)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn kib_fields_and_cpu_model_are_read_from_proc_text() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        let cpuinfo = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Some CPU @ 2.0GHz"));
    }

    #[test]
    fn machine_cpu_counts_every_state_but_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 30 7 40 3 0 0\ncpu0 50 2 25 4500 15 3 20 1 0 0\n";
        let m = parse_proc_stat(stat).unwrap();
        assert_eq!(m.busy, Duration::from_millis(2050));
        assert_eq!(m.softirq, Duration::from_millis(400));
        let later = MachineCpu {
            busy: Duration::from_millis(3000),
            softirq: Duration::from_millis(500),
        };
        assert_eq!(later.since(m).busy, Duration::from_millis(950));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert!(MachineCpu::now().is_some());
    }

    #[test]
    fn this_process_reports_cpu_time_and_peak_rss() {
        assert!(cpu_time("self").is_some());
        assert!(peak_rss("self").unwrap_or(0) > 0);
    }
}
