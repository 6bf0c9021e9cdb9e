//! `p2p-node run` as a process: the Prometheus endpoint, the registry reload and a clean stop.
//! Its helpers (a node process, its files) serve the API tests too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p2p_transport::identity::NodeIdentity;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// A running `p2p-node run`, killed when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: SocketAddr,
    /// The API address, if the node announced one.
    pub(crate) api: Option<SocketAddr>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts `p2p-node run --config config` and waits for it to announce its addresses.
    pub(crate) fn start(config: &Path) -> Node {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--log-level",
                "info",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn p2p-node");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            child,
            lines,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            api: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut listen, mut metrics) = (None, None);
        while listen.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = node
                .lines
                .recv_timeout(left)
                .expect("the node announces its addresses within 20 s");
            if let Some(rest) = line.strip_prefix("node ") {
                let addr = rest.rsplit(' ').next().unwrap();
                listen = Some(addr.parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("metrics on http://") {
                metrics = Some(rest.trim_end_matches("/metrics").parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("api on http://") {
                node.api = Some(rest.trim_end_matches("/v1/").parse().unwrap());
            }
        }
        node.listen = listen.unwrap();
        node.metrics = metrics.unwrap();
        node
    }
}

/// One HTTP/1.1 request on its own connection, closed after the response (a
/// `Connection: close` header is added to a head without one); returns (status line, headers,
/// body).
pub(crate) fn http(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap_or((request, ""));
    let request = if head.to_ascii_lowercase().contains("\r\nconnection:") {
        request.to_owned()
    } else {
        format!("{head}\r\nConnection: close\r\n\r\n{body}")
    };
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// The value of an unlabelled sample in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

pub(crate) fn write_identity(dir: &Path) -> NodeIdentity {
    let id = NodeIdentity::generate().unwrap();
    std::fs::write(dir.join("key.pem"), id.key_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), id.cert_pem()).unwrap();
    id
}

fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("node.toml"),
        "listen = \"127.0.0.1:0\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\n\
         registry = \"registry.toml\"\nmetrics = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n\
         [tuning]\nreconnect_backoff_min_ms = 50\nreconnect_backoff_max_ms = 200\n",
    )
    .unwrap();
}

pub(crate) fn write_registry(dir: &Path, version: u64, members: &[(String, SocketAddr)]) {
    let mut text = format!("version = {version}\nmember_count = {}\n", members.len());
    for (id, addr) in members {
        text.push_str(&format!("[[member]]\nid = \"{id}\"\naddr = \"{addr}\"\n"));
    }
    // Write then rename, as an operator's tooling would, so the reader never sees half a file.
    let tmp = dir.join("registry.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("registry.toml")).unwrap();
}

#[test]
fn metrics_endpoint_answers_in_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_identity(dir.path());
    write_config(dir.path());
    // The node's own listen port is not known before it starts; it is alone in its registry.
    write_registry(
        dir.path(),
        1,
        &[(id.node_id().to_hex(), "127.0.0.1:9".parse().unwrap())],
    );
    let node = Node::start(&dir.path().join("node.toml"));

    let (status, headers, body) = get(node.metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    for name in [
        "p2p_socket_bytes_written_total",
        "p2p_delivered_total",
        "p2p_peers_connected",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} HELP in:\n{body}"
        );
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} TYPE in:\n{body}"
        );
        assert!(sample(&body, name).is_some(), "{name} sample in:\n{body}");
    }
    assert_eq!(sample(&body, "p2p_peers_connected"), Some(0));

    let (status, _, _) = get(node.metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http(node.metrics, "POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

#[test]
fn registry_file_change_connects_a_new_member() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| write_identity(d.path()).node_id().to_hex())
        .collect();
    for (i, d) in dirs.iter().enumerate() {
        write_config(d.path());
        write_registry(
            d.path(),
            1,
            &[(ids[i].clone(), "127.0.0.1:9".parse().unwrap())],
        );
    }
    let a = Node::start(&dirs[0].path().join("node.toml"));
    let b = Node::start(&dirs[1].path().join("node.toml"));
    let members = vec![(ids[0].clone(), a.listen), (ids[1].clone(), b.listen)];
    for d in &dirs {
        write_registry(d.path(), 2, &members);
    }
    // Each node polls its registry file every second; the pair must connect soon after.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pa = sample(&get(a.metrics, "/metrics").2, "p2p_peers_connected");
        let pb = sample(&get(b.metrics, "/metrics").2, "p2p_peers_connected");
        if pa == Some(1) && pb == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not connected after the registry change: {pa:?} {pb:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection's traffic shows in the scraped counters of both ends.
    for node in [&a, &b] {
        let body = get(node.metrics, "/metrics").2;
        assert!(
            sample(&body, "p2p_socket_bytes_written_total") > Some(0),
            "{body}"
        );
        assert!(
            sample(&body, "p2p_socket_bytes_read_total") > Some(0),
            "{body}"
        );
        let handed_to_core = sample(&body, "p2p_connections_dialed_total").unwrap()
            + sample(&body, "p2p_connections_accepted_total").unwrap();
        assert!(handed_to_core >= 1, "{body}");
        assert_eq!(sample(&body, "p2p_core_connected_peers"), Some(1), "{body}");
        // The reload was counted, and the registry in force is version 2 with both members.
        assert_eq!(
            sample(&body, "p2p_registry_reloads_total{result=\"accepted\"}"),
            Some(1),
            "{body}"
        );
        assert_eq!(sample(&body, "p2p_registry_version"), Some(2), "{body}");
        assert_eq!(sample(&body, "p2p_registry_members"), Some(2), "{body}");
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_identity(dir.path());
    write_config(dir.path());
    write_registry(
        dir.path(),
        1,
        &[(id.node_id().to_hex(), "127.0.0.1:9".parse().unwrap())],
    );
    let mut node = Node::start(&dir.path().join("node.toml"));
    let pid = node.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the node ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}
