//! The local application API and its CLI, end to end: three `p2p-node run` processes on
//! loopback (real TLS between them), driven by `p2p-node publish|watch|get|status|list|remove`
//! processes and by raw HTTP for the bad requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bin_cli::run as cli;
use crate::bin_run::{BIN, Node, http, write_identity, write_registry};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a CLI command against the API at `api`, requiring exit code `code`; returns its
/// stdout and stderr.
fn expect_exit(api: SocketAddr, args: &[&str], code: i32) -> (String, String) {
    let api = api.to_string();
    let mut all = args.to_vec();
    all.extend(["--api", &api]);
    let out = cli(&all, Duration::from_secs(60));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "p2p-node {all:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Runs a CLI command against the API at `api` and requires success; returns its stdout.
fn ok(api: SocketAddr, args: &[&str]) -> String {
    expect_exit(api, args, 0).0
}

/// Runs a CLI command against the API at `api` that must fail with exit code 1; returns its
/// stderr.
fn fails(api: SocketAddr, args: &[&str]) -> String {
    expect_exit(api, args, 1).1
}

fn status_json(api: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&ok(api, &["status", "--json"])).unwrap()
}

/// A `p2p-node watch` process, killed when dropped.
struct Watcher {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    /// Starts `watch --count n` and waits until it is subscribed.
    fn start(api: SocketAddr, n: u64) -> Watcher {
        let mut child = Command::new(BIN)
            .args([
                "watch",
                "--count",
                &n.to_string(),
                "--api",
                &api.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p2p-node watch");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.starts_with("watching deliveries at"), "{line}");
        Watcher { child, stdout }
    }

    /// The lines printed once the watcher exits by itself (within `limit`).
    fn finish(mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the watcher did not see its deliveries"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
        let mut lines = Vec::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            lines.push(l);
        }
        lines
    }
}

/// Bytes that differ from one position to the next (a file of zeros would hide an offset bug).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_node(dir: &Path, extra: &str, tuning: &str) {
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\n\
             registry = \"registry.toml\"\napi = \"127.0.0.1:0\"\n{extra}\
             [tuning]\nreconnect_backoff_min_ms = \"50ms\"\nreconnect_backoff_max_ms = 200\n\
             {tuning}"
        ),
    )
    .unwrap();
}

#[test]
fn three_nodes_publish_watch_get_status_and_remove_through_the_cli() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| write_identity(d.path()).node_id().to_hex())
        .collect();
    // a publishes and refuses uploads over 3 MiB; b relays (keeps what it receives in its
    // pool); c writes deliveries into a directory. a and b keep large artifacts in files.
    write_node(
        dirs[0].path(),
        "storage_dir = \"parts\"\n",
        "max_artifact_size = \"3 MiB\"\n",
    );
    write_node(
        dirs[1].path(),
        "storage_dir = \"parts\"\n",
        "auto_relay = true\n",
    );
    write_node(dirs[2].path(), "deliveries_dir = \"delivered\"\n", "");
    for (d, id) in dirs.iter().zip(&ids) {
        write_registry(d.path(), 1, &[(id.clone(), "127.0.0.1:9".parse().unwrap())]);
    }
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|d| Node::start(&d.path().join("node.toml")))
        .collect();
    let apis: Vec<SocketAddr> = nodes
        .iter()
        .map(|n| n.api.expect("api announced"))
        .collect();
    let members: Vec<(String, SocketAddr)> = ids
        .iter()
        .cloned()
        .zip(nodes.iter().map(|n| n.listen))
        .collect();
    for d in &dirs {
        write_registry(d.path(), 2, &members);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers: Vec<usize> = apis
            .iter()
            .map(|&a| status_json(a)["peers"].as_array().unwrap().len())
            .collect();
        if peers == [2, 2, 2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no full mesh after the registry change: {peers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = status_json(apis[0]);
    assert_eq!(status["registry"]["version"], 2, "{status}");
    assert_eq!(status["registry"]["members"], 3, "{status}");
    assert_eq!(status["node_id"], ids[0].as_str(), "{status}");
    for rate in [
        "deliveries_per_s",
        "artifact_bytes_in_per_s",
        "socket_bytes_in_per_s",
        "socket_bytes_out_per_s",
    ] {
        assert!(status["rates"][rate].is_number(), "{status}");
    }
    // The human status names both peers of a.
    let status = ok(apis[0], &["status"]);
    assert!(status.contains("peers      2: "), "{status}");
    for id in &ids[1..] {
        assert!(status.contains(&id[..12]), "{status}");
    }
    assert!(
        status.contains(&format!("node       {}", ids[0])),
        "{status}"
    );

    let watchers = [Watcher::start(apis[1], 2), Watcher::start(apis[2], 2)];
    let files = dirs[0].path();
    let small = pattern(1000, 1);
    let large = pattern(3 << 19, 2); // 1.5 MiB: chunked at the default 128 KiB
    std::fs::write(files.join("small.bin"), &small).unwrap();
    std::fs::write(files.join("large.bin"), &large).unwrap();
    let small_path = files.join("small.bin");
    let large_path = files.join("large.bin");
    let small_id = ok(
        apis[0],
        &["publish", small_path.to_str().unwrap(), "--kind", "0"],
    )
    .trim()
    .to_owned();
    let large_id = ok(
        apis[0],
        &[
            "publish",
            large_path.to_str().unwrap(),
            "--kind",
            "1",
            "--attr",
            "big",
        ],
    )
    .trim()
    .to_owned();
    assert_eq!(small_id.len(), 64, "{small_id}");
    assert_eq!(large_id.len(), 64, "{large_id}");

    for (w, me) in watchers.into_iter().zip(1..) {
        let lines = w.finish(Duration::from_secs(60));
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (id, kind, size) in [(&small_id, 0, "1000 B"), (&large_id, 1, "1.5 MiB")] {
            let line = lines
                .iter()
                .find(|l| l.starts_with(&id[..12]))
                .unwrap_or_else(|| panic!("{id} not in {lines:?}"));
            assert!(line.contains(&format!("kind {kind:>5}")), "{line}");
            assert!(line.contains(size), "{line}");
            // From a, or for c possibly from b, which relays.
            let from = line.split("from ").nth(1).unwrap().get(..12).unwrap();
            assert!(
                ids.iter()
                    .enumerate()
                    .any(|(i, p)| i != me && p.starts_with(from)),
                "{line}"
            );
        }
    }

    // Byte-identical on both receivers: b from its pool, c from its deliveries directory.
    for (i, api) in apis.iter().enumerate().skip(1) {
        for (id, data) in [(&small_id, &small), (&large_id, &large)] {
            let out = dirs[i].path().join(format!("got-{}", &id[..8]));
            ok(*api, &["get", id, "--out", out.to_str().unwrap()]);
            assert_eq!(&std::fs::read(&out).unwrap(), data, "node {i}, {id}");
        }
    }
    // a's upload and b's download of the large artifact each went into a file (named
    // nowhere: the directory stays empty); c has no storage.
    for (i, files) in [(0, 1), (1, 1)] {
        let storage = &status_json(apis[i])["storage"];
        assert_eq!(storage["files"], files, "node {i}: {storage}");
        assert_eq!(storage["bytes"], large.len(), "node {i}: {storage}");
        assert_eq!(storage["fallbacks"], 0, "node {i}: {storage}");
        let parts = dirs[i].path().join("parts");
        assert_eq!(std::fs::read_dir(parts).unwrap().count(), 0, "node {i}");
    }
    assert!(status_json(apis[2])["storage"].is_null());
    let delivered = dirs[2].path().join("delivered");
    assert_eq!(std::fs::read(delivered.join(&large_id)).unwrap(), large);
    assert_eq!(
        std::fs::read_dir(&delivered).unwrap().count(),
        2,
        "no temporary file is left"
    );

    let list = ok(apis[0], &["list"]);
    assert!(
        list.contains(&small_id) && list.contains(&large_id),
        "{list}"
    );
    let list: serde_json::Value = serde_json::from_str(&ok(apis[0], &["list", "--json"])).unwrap();
    let big = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == large_id.as_str())
        .unwrap();
    assert_eq!(big["attr_hex"], hex::encode("big"));
    assert_eq!(big["size"], large.len());

    // Bad requests get a 4xx and change nothing.
    let pool_before = status_json(apis[0])["pool"].clone();
    assert_eq!(pool_before["artifacts"], 2);
    let e = fails(apis[0], &["get", "not-an-id"]);
    assert!(e.contains("400") && e.contains("64 hex digits"), "{e}");
    let e = fails(apis[0], &["remove", "abcd"]);
    assert!(e.contains("400"), "{e}");
    let absent = "ab".repeat(32);
    let e = fails(apis[0], &["get", &absent]);
    assert!(e.contains("404") && e.contains("not held"), "{e}");
    let oversize = files.join("oversize.bin");
    std::fs::write(&oversize, pattern((3 << 20) + 1, 3)).unwrap();
    let e = fails(
        apis[0],
        &["publish", oversize.to_str().unwrap(), "--kind", "1"],
    );
    assert!(e.contains("413") && e.contains("max_artifact_size"), "{e}");
    // A Content-Length over the limit is refused before any body byte is sent.
    let (line, _, body) = http(
        apis[0],
        "POST /v1/artifacts?kind=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n",
    );
    assert_eq!(line, "HTTP/1.1 413 Payload Too Large", "{body}");
    for (request, needle) in [
        (
            "POST /v1/artifacts HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            "missing",
        ),
        (
            "POST /v1/artifacts?kind=abc HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            "kind",
        ),
        (
            "POST /v1/artifacts?kind=1&attr_hex=zz HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            "attr_hex",
        ),
        (
            "GET /v1/artifacts?limit=0 HTTP/1.1\r\nHost: t\r\n\r\n",
            "limit",
        ),
        (
            "DELETE /v1/artifacts/xyz HTTP/1.1\r\nHost: t\r\n\r\n",
            "64 hex digits",
        ),
    ] {
        let (line, _, body) = http(apis[0], request);
        assert_eq!(line, "HTTP/1.1 400 Bad Request", "{request}: {body}");
        assert!(body.contains(needle), "{request}: {body}");
    }
    let (line, _, _) = http(apis[0], "GET /v2/nothing HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(line, "HTTP/1.1 404 Not Found");
    assert_eq!(status_json(apis[0])["pool"], pool_before);

    // Re-evaluation, and metrics on the API's address.
    assert!(ok(apis[0], &["reevaluate"]).contains("re-evaluated"));
    let (line, _, metrics) = http(apis[0], "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert!(metrics.contains("p2p_peers_connected 2"), "{metrics}");

    // Remove: gone from a's pool and its API; the others keep their copies.
    assert!(ok(apis[0], &["remove", &large_id]).contains(&large_id));
    let e = fails(apis[0], &["get", &large_id]);
    assert!(e.contains("404"), "{e}");
    let e = fails(apis[0], &["remove", &large_id]);
    assert!(e.contains("404"), "{e}");
    let pool = &status_json(apis[0])["pool"];
    assert_eq!(pool["artifacts"], 1);
    assert_eq!(pool["bytes"], small.len());
    let list = ok(apis[0], &["list"]);
    assert!(
        list.contains(&small_id) && !list.contains(&large_id),
        "{list}"
    );
    let out = dirs[1].path().join("again");
    ok(apis[1], &["get", &large_id, "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), large);
}

#[test]
fn the_cli_reads_the_api_address_from_a_node_config() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_identity(dir.path());
    write_node(dir.path(), "", "");
    write_registry(
        dir.path(),
        1,
        &[(id.node_id().to_hex(), "127.0.0.1:9".parse().unwrap())],
    );
    let node = Node::start(&dir.path().join("node.toml"));
    let api = node.api.unwrap();
    // A config naming the bound address, as an operator's would name a fixed one.
    let client_config = dir.path().join("client.toml");
    std::fs::write(&client_config, format!("api = \"{api}\"\n")).unwrap();
    let out = cli(
        &["status", "--config", client_config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&id.node_id().to_hex()), "{stdout}");
    assert!(stdout.contains("peers      0"), "{stdout}");
    // No node there: a failure that says where it looked.
    std::fs::write(&client_config, "api = \"127.0.0.1:9\"\n").unwrap();
    let out = cli(
        &["status", "--config", client_config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot reach the node's API at 127.0.0.1:9"));
}

#[test]
fn an_api_address_in_use_stops_the_node_at_start_with_one_line_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = write_identity(dir.path());
    write_registry(
        dir.path(),
        1,
        &[(id.node_id().to_hex(), "127.0.0.1:9".parse().unwrap())],
    );
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\n\
             registry = \"registry.toml\"\napi = \"{addr}\"\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("node.toml");
    let out = cli(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("p2p-node: error:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains(&format!("key `api`: cannot listen on {addr}")),
        "{line}"
    );
}
