//! `docs/guide.md`, followed literally: every `sh` block of the guide runs with `bash` on the
//! machine(s) its first line names. A machine is a directory used as `$HOME` with its own
//! loopback address (`127.0.0.101`..), so eight separate `p2p-node run` processes form a
//! partial mesh (`peers = 3`) over real TLS. After the first file, the node with the most
//! neighbours (other than the publisher) is killed and a second file must still reach every
//! running node; a ninth machine joins and catches up, and the dead one is removed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bin_run::BIN;

/// Machines before the one that joins.
const MACHINES: usize = 8;
/// The limit of one block (and of every wait).
const LIMIT: Duration = Duration::from_secs(90);

/// One `sh` block of the guide.
struct Block {
    /// The `## N.` section it belongs to (0 before the first).
    section: u32,
    /// Its first line, without `# `.
    header: String,
    /// The whole block.
    body: String,
}

fn blocks(guide: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = 0;
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if let Some((n, _)) = line.strip_prefix("## ").and_then(|r| r.split_once('.')) {
            section = n.parse().unwrap_or(section);
        }
        if line.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let header = body[0]
                .strip_prefix("# ")
                .unwrap_or_else(|| panic!("a guide block without a header: {body:?}"))
                .to_string();
            out.push(Block {
                section,
                header,
                body: body.join("\n") + "\n",
            });
        }
    }
    out
}

/// A process kept running by a block, killed when dropped, with its stdout lines.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits for a line containing `text`.
    fn wait_for(&mut self, text: &str, what: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "{what}: no line with {text:?} within {LIMIT:?}: {:?}",
                    self.seen
                ),
            }
        }
    }
}

struct Machine {
    n: usize,
    home: PathBuf,
    addr: String,
    node: Option<Running>,
    watch: Option<Running>,
    dead: bool,
}

impl Machine {
    fn new(root: &Path, n: usize) -> Machine {
        let home = root.join(format!("machine{n}"));
        std::fs::create_dir_all(&home).unwrap();
        Machine {
            n,
            home,
            addr: format!("127.0.0.{}", 100 + n),
            node: None,
            watch: None,
            dead: false,
        }
    }

    fn p2p(&self) -> PathBuf {
        self.home.join("p2p")
    }

    fn api(&self) -> String {
        format!("{}:9000", self.addr)
    }

    fn command(&self, body: &str, vars: &HashMap<&str, String>) -> Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c", body])
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("PATH", path)
            .env("ADDR", &self.addr)
            .env("API", self.api())
            .env_remove("RUST_LOG");
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    /// Runs `body` to completion; returns its stdout.
    fn run(&self, body: &str, vars: &HashMap<&str, String>) -> String {
        let mut child = self
            .command(body, vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "machine {}: block failed ({:?}):\n{body}\nstdout:\n{stdout}\nstderr:\n{}",
            self.n,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Starts `body` and keeps it running; its stdout and stderr lines are collected.
    fn spawn(&self, body: &str, vars: &HashMap<&str, String>) -> Running {
        let mut child = self
            .command(body, vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The node's status, through the CLI.
    fn status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--api", &self.api()])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the node is connected to every neighbour the topology gives it.
    fn wait_meshed(&self) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let s = self.status();
            let peers = s["peers"].as_array().map_or(0, Vec::len);
            let want = s["topology"]["neighbours"].as_array().map_or(0, Vec::len);
            if want > 0 && peers == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "machine {} not meshed: {s}",
                self.n
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn copy_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("copying");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn the_guide_runs_as_written_over_a_partial_mesh_of_eight_nodes() {
    let guide_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    let guide = std::fs::read_to_string(&guide_path).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut ms: Vec<Machine> = (1..=MACHINES)
        .map(|n| Machine::new(root.path(), n))
        .collect();
    let mut vars: HashMap<&str, String> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut killed = None;
    let mut status_text = String::new();
    for b in blocks(&guide) {
        if b.section == 8 && killed.is_none() {
            // A machine fails: the one with the most neighbours besides the publisher.
            let victim = (1..ms.len())
                .max_by_key(|&i| {
                    let s = ms[i].status();
                    (
                        s["topology"]["neighbours"].as_array().map_or(0, Vec::len),
                        usize::MAX - i,
                    )
                })
                .unwrap();
            ms[victim].node = None;
            ms[victim].watch = None;
            ms[victim].dead = true;
            killed = Some(victim);
        }
        let h = b.header.as_str();
        let keeps = h.contains("(keeps running)");
        let targets: Vec<usize> = if h.starts_with("build") || h.starts_with("environment") {
            continue;
        } else if h.starts_with("copy member.txt from every machine to machine 1") {
            let all: String = ms
                .iter()
                .map(|m| std::fs::read_to_string(m.p2p().join("member.txt")).unwrap())
                .collect();
            std::fs::write(ms[0].p2p().join("members.txt"), all).unwrap();
            continue;
        } else if h.starts_with("copy member.txt from the new machine to machine 1") {
            let line =
                std::fs::read_to_string(ms.last().unwrap().p2p().join("member.txt")).unwrap();
            let path = ms[0].p2p().join("members.txt");
            let all = std::fs::read_to_string(&path).unwrap() + &line;
            std::fs::write(path, all).unwrap();
            continue;
        } else if h.starts_with("copy registry.toml from machine 1 to every other machine") {
            let from = ms[0].p2p().join("registry.toml");
            for m in &ms[1..] {
                copy_file(&from, &m.p2p().join("registry.toml"));
            }
            continue;
        } else if h.starts_with("on every machine") {
            (0..ms.len()).collect()
        } else if h.starts_with("on machine 1") {
            vec![0]
        } else if h.starts_with("on every other machine") {
            (1..ms.len()).filter(|&i| !ms[i].dead).collect()
        } else if h.starts_with("on the new machine") {
            if ms.len() == MACHINES {
                ms.push(Machine::new(root.path(), MACHINES + 1));
            }
            vec![ms.len() - 1]
        } else {
            panic!("the test does not know where to run a block headed {h:?}");
        };
        if h.contains("with ID set to") {
            vars.insert("ID", ids.last().expect("an id was printed").clone());
        }
        if h.contains("with GONE set to") {
            vars.insert("GONE", ms[killed.expect("a machine failed")].addr.clone());
        }
        for i in targets {
            if keeps {
                let mut r = ms[i].spawn(&b.body, &vars);
                if b.body.contains("p2p-node run") {
                    r.wait_for("api on http://", "the node starts");
                    ms[i].node = Some(r);
                } else {
                    r.wait_for("watching deliveries", "the watch starts");
                    ms[i].watch = Some(r);
                }
                continue;
            }
            if let (Some(id), Some(w)) = (vars.get("ID"), ms[i].watch.as_mut()) {
                // As a reader would: once `watch` has shown the artifact.
                w.wait_for(&id[..12], "watch shows the artifact");
            }
            let out = ms[i].run(&b.body, &vars);
            if let Some(id) = out.lines().last().filter(|l| is_id(l)) {
                ids.push(id.to_string());
            }
            if b.body.contains("p2p-node status") {
                status_text = out;
            }
        }
        if keeps && b.body.contains("p2p-node run") {
            if killed.is_none() {
                // As a reader would, before going on: every node has its neighbours.
                for m in &ms {
                    m.wait_meshed();
                }
            } else {
                // The new machine: its neighbours but the failed one.
                let m = ms.last().unwrap();
                let deadline = Instant::now() + LIMIT;
                while m.status()["peers"].as_array().is_none_or(Vec::is_empty) {
                    assert!(Instant::now() < deadline, "the new machine found no peer");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    let victim = killed.expect("a machine failed");
    eprintln!(
        "guide: {} machines, machine {} ({}) failed after the first file; files {ids:?}",
        ms.len(),
        victim + 1,
        ms[victim].addr
    );
    // The first file arrived byte-identical everywhere (the failed machine got it before it
    // failed); the second on every running machine; the new machine caught up on both.
    assert_eq!(ids.len(), 2, "two files published: {ids:?}");
    let block = std::fs::read(ms[0].p2p().join("block.bin")).unwrap();
    let second = std::fs::read(ms[0].p2p().join("second.bin")).unwrap();
    assert_eq!((block.len(), second.len()), (3_000_000, 500_000));
    for m in &ms[1..MACHINES] {
        assert_eq!(
            std::fs::read(m.p2p().join("block.bin")).unwrap(),
            block,
            "machine {}",
            m.n
        );
        if !m.dead {
            assert_eq!(
                std::fs::read(m.p2p().join("second.bin")).unwrap(),
                second,
                "machine {}",
                m.n
            );
        }
    }
    let new = ms.last().unwrap();
    let deadline = Instant::now() + LIMIT;
    for (id, bytes) in ids.iter().zip([&block, &second]) {
        let path = new.p2p().join("received").join(id);
        while std::fs::read(&path).ok().as_ref() != Some(bytes) {
            assert!(
                Instant::now() < deadline,
                "the new machine did not catch up on {id}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The status showed a connected partial mesh; after the removal, the registry in force is
    // version 3 with the eight running members, and every running node is meshed again.
    assert!(status_text.contains("topology   degree 3"), "{status_text}");
    assert!(status_text.contains(", connected"), "{status_text}");
    let deadline = Instant::now() + LIMIT;
    for m in ms.iter().filter(|m| !m.dead) {
        loop {
            let s = m.status();
            if s["registry"]["version"] == 3 && s["registry"]["members"] == MACHINES as u64 {
                assert_eq!(s["topology"]["graph"]["connected"], true, "{s}");
                break;
            }
            assert!(Instant::now() < deadline, "machine {}: {s}", m.n);
            std::thread::sleep(Duration::from_millis(100));
        }
        m.wait_meshed();
    }
}
