//! The `p2p-node` binary's commands that end by themselves: keygen, configuration errors, demo.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use p2p_transport::identity::NodeIdentity;

const BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// Runs the binary to completion, killing it if it outlives `limit`.
pub(crate) fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn p2p-node");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "p2p-node {args:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keygen(dir: &Path) -> String {
    let out = run(
        &["keygen", "--out", dir.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn keygen_writes_loadable_pems_and_prints_their_id() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ident");
    let printed = keygen(&out_dir);
    assert_eq!(printed.len(), 64, "{printed}");
    assert!(printed.chars().all(|c| c.is_ascii_hexdigit()));
    let key = std::fs::read_to_string(out_dir.join("key.pem")).unwrap();
    let cert = std::fs::read_to_string(out_dir.join("cert.pem")).unwrap();
    let identity = NodeIdentity::from_pem(&cert, &key).unwrap();
    assert_eq!(identity.node_id().to_hex(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
}

#[test]
fn keygen_writes_a_key_that_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    let key = dir.path().join("key.pem");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    match Command::new("openssl")
        .args(["pkey", "-in", key.to_str().unwrap(), "-noout"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "openssl pkey refused the key: {}",
            text(&out.stderr)
        ),
        Err(e) => println!("openssl is not available ({e}); skipped its check of the key"),
    }
}

#[test]
fn a_node_config_loads_a_key_in_the_version_2_pkcs8_form_ring_writes() {
    let dir = tempfile::tempdir().unwrap();
    // ring's PKCS#8 v2 (with the public key), as rcgen writes it.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["n.node.p2p".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    let id = NodeIdentity::from_pem(&cert.pem(), &key.serialize_pem())
        .unwrap()
        .node_id();
    std::fs::write(
        dir.path().join("registry.toml"),
        format!(
            "version = 1\nmember_count = 1\n[[member]]\nid = \"{}\"\naddr = \"127.0.0.1:9\"\n",
            id.to_hex()
        ),
    )
    .unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, format!("{GOOD}api = \"off\"\n")).unwrap();
    let node = p2p_node::config::load_node(&path).unwrap();
    assert_eq!(node.identity.node_id(), id);
    assert_eq!(node.api, None);
}

#[test]
fn a_non_loopback_api_address_is_refused_unless_allowed() {
    for addr in ["0.0.0.0:9000", "192.0.2.1:9000", "[::]:9000"] {
        let (_dir, config) = config_dir(&format!("{GOOD}api = \"{addr}\"\n"));
        let line = bad_config_line(&config);
        assert!(line.contains(&format!("{config}:5: key `api`")), "{line}");
        assert!(line.contains("api_allow_remote = true"), "{line}");
    }
    let (dir, config) = config_dir(&format!(
        "{GOOD}api = \"192.0.2.1:9000\"\napi_allow_remote = true\n"
    ));
    let node = p2p_node::config::load_node(Path::new(&config)).unwrap();
    assert_eq!(node.api, Some("192.0.2.1:9000".parse().unwrap()));
    drop(dir);
    for addr in ["127.0.0.2:0", "[::1]:0"] {
        let (_dir, config) = config_dir(&format!("{GOOD}api = \"{addr}\"\n"));
        let node = p2p_node::config::load_node(Path::new(&config)).unwrap();
        assert_eq!(node.api, Some(addr.parse().unwrap()));
    }
    let (_dir, config) = config_dir(GOOD);
    let node = p2p_node::config::load_node(Path::new(&config)).unwrap();
    assert_eq!(node.api, Some(p2p_node::config::DEFAULT_API));
}

#[test]
fn human_readable_sizes_and_durations_are_read_and_bad_ones_named() {
    let (_dir, config) = config_dir(&format!(
        "{GOOD}[tuning]\nmax_artifact_size = \"64 MiB\"\nidle_timeout_ms = \"1.5s\"\n\
         socket_buffer = 65536\nconnect_timeout_ms = 250\n"
    ));
    let node = p2p_node::config::load_node(Path::new(&config)).unwrap();
    assert_eq!(node.tuning.max_artifact_size, Some(64 << 20));
    assert_eq!(node.tuning.idle_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(node.tuning.socket_buffer, Some(65536));
    assert_eq!(
        node.tuning.connect_timeout,
        Some(Duration::from_millis(250))
    );
    let (_dir, config) = config_dir(&format!("{GOOD}[tuning]\nchunk_size = \"64 mib\"\n"));
    let line = bad_config_line(&config);
    assert!(line.contains("key `tuning.chunk_size`"), "{line}");
    assert!(line.contains("unknown size unit"), "{line}");
    let (_dir, config) = config_dir(&format!("{GOOD}[tuning]\nchunk_size = \"8 GiB\"\n"));
    let line = bad_config_line(&config);
    assert!(line.contains(":6: key `tuning.chunk_size`"), "{line}");
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = keygen(dir.path());
    let again = run(
        &["keygen", "--out", dir.path().to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("--force"));
    let cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
    let key = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert_eq!(
        NodeIdentity::from_pem(&cert, &key)
            .unwrap()
            .node_id()
            .to_hex(),
        first
    );
    let forced = run(
        &["keygen", "--out", dir.path().to_str().unwrap(), "--force"],
        Duration::from_secs(20),
    );
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(text(&forced.stdout).trim(), first);
}

/// A directory with an identity, a valid registry listing it, and `node.toml` made of `body`.
fn config_dir(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let id = keygen(dir.path());
    std::fs::write(
        dir.path().join("registry.toml"),
        format!(
            "version = 1\nmember_count = 1\n[[member]]\nid = \"{id}\"\naddr = \"127.0.0.1:4100\"\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, body).unwrap();
    let p = path.to_str().unwrap().to_owned();
    (dir, p)
}

const GOOD: &str = "listen = \"127.0.0.1:0\"\nkey = \"key.pem\"\ncert = \"cert.pem\"\n\
                    registry = \"registry.toml\"\n";

/// Runs `run --config` and checks: exit code 2, exactly one line on stderr; returns that line.
fn bad_config_line(config: &str) -> String {
    let out = run(&["run", "--config", config], Duration::from_secs(20));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    lines[0].to_owned()
}

#[test]
fn unknown_key_gives_one_line_with_file_line_and_key_and_exit_2() {
    let (_dir, config) = config_dir(&format!("{GOOD}lisen = \"127.0.0.1:1\"\n"));
    let line = bad_config_line(&config);
    assert!(line.contains(&format!("{config}:5")), "{line}");
    assert!(line.contains("lisen"), "{line}");
}

#[test]
fn bad_address_names_the_key_and_line() {
    let body = GOOD.replace("127.0.0.1:0", "nowhere");
    let (_dir, config) = config_dir(&body);
    let line = bad_config_line(&config);
    assert!(
        line.contains(&format!("{config}:1: key `listen`")),
        "{line}"
    );
}

#[test]
fn wrong_type_in_a_table_names_the_dotted_key() {
    let (_dir, config) = config_dir(&format!("{GOOD}[tuning]\nidle_timeout_ms = \"soon\"\n"));
    let line = bad_config_line(&config);
    assert!(
        line.contains(&format!("{config}:6: key `tuning.idle_timeout_ms`")),
        "{line}"
    );
}

#[test]
fn missing_key_file_names_the_key() {
    let body = GOOD.replace("key.pem", "absent.pem");
    let (_dir, config) = config_dir(&body);
    let line = bad_config_line(&config);
    assert!(line.contains(":2: key `key`: cannot read"), "{line}");
    assert!(line.contains("absent.pem"), "{line}");
}

#[test]
fn invalid_registry_names_the_registry_file() {
    let (dir, config) = config_dir(GOOD);
    std::fs::write(
        dir.path().join("registry.toml"),
        "version = 1\n[[member]]\nid = \"12\"\naddr = \"127.0.0.1:4100\"\n",
    )
    .unwrap();
    let line = bad_config_line(&config);
    assert!(
        line.contains("registry.toml:3: key `member[0].id`"),
        "{line}"
    );
}

#[test]
fn registry_without_or_disagreeing_with_its_member_count_is_refused_at_start() {
    let (dir, config) = config_dir(GOOD);
    let path = dir.path().join("registry.toml");
    let complete = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, complete.replace("member_count = 1\n", "")).unwrap();
    let line = bad_config_line(&config);
    assert!(line.contains("registry.toml: key `member_count`"), "{line}");
    assert!(line.contains("member_count = 1"), "{line}");
    std::fs::write(
        &path,
        complete.replace("member_count = 1", "member_count = 2"),
    )
    .unwrap();
    let line = bad_config_line(&config);
    assert!(
        line.contains("registry.toml:2: key `member_count`"),
        "{line}"
    );
    assert!(line.contains("torn"), "{line}");
}

#[test]
fn missing_config_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.toml");
    let line = bad_config_line(path.to_str().unwrap());
    assert!(line.contains("cannot read the file"), "{line}");
}

#[test]
fn demo_on_four_nodes_delivers_everything_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let out = run(
        &[
            "demo",
            "--nodes",
            "4",
            "--small",
            "40",
            "--large",
            "2",
            "--large-size",
            "262144",
            "--spread",
            "0.5",
            "--timeout",
            "60",
            "--report",
            pics.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    // 42 artifacts, each to the 3 nodes other than its origin.
    assert!(
        stdout
            .contains("126/126 (artifact, node) pairs (100.0%): every artifact reached every node"),
        "{stdout}"
    );
    for needle in [
        "time to full delivery",
        "goodput",
        "bytes on the wire",
        "amplification",
        "duplicates              0 deliveries",
        "small/urgent",
        "large/bulk",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    assert!(!stdout.contains("missing:"), "{stdout}");
    // The pictures: the page with the three SVGs inline, each also a file.
    let page = std::fs::read_to_string(pics.join("report.html")).unwrap();
    for part in ["latency", "progress", "traffic"] {
        let svg = std::fs::read_to_string(pics.join(format!("demo-{part}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.len() > 2_000,
            "{part}: {svg}"
        );
        assert!(page.contains(&svg), "{part} is inline in the page");
    }
    let latency = std::fs::read_to_string(pics.join("demo-latency.svg")).unwrap();
    for class in ["urgent (120 deliveries)", "bulk (6 deliveries)"] {
        assert!(latency.contains(class), "{class} in {latency}");
    }
}

#[test]
fn demo_refuses_a_bad_workload_with_exit_2() {
    let out = run(&["demo", "--small-size", "9..3"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["demo", "--small", "0", "--large", "0"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("publishes nothing"));
}
