//! The registry file's reloads on a running node, in process: a node whose registry follows a
//! file keeps the registry in force through a torn, a malformed, an older and a same-version
//! changed file, counts each of them, and installs a valid bump.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_node::reload::{ReloadMetrics, ReloadResult, ReloadSettings, Reloader, Stamp};
use p2p_tokio::{Member, NodeConfig, NodeHandle, NodeIdentity, Registry};
use tokio::sync::Notify;

/// Generous bound for anything the watcher does (it polls every 50 ms).
const DEADLINE: Duration = Duration::from_secs(15);

fn config(identity: NodeIdentity) -> NodeConfig {
    let mut cfg = NodeConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.reconnect_backoff_min = Duration::from_millis(50);
    cfg.reconnect_backoff_max = Duration::from_millis(200);
    cfg
}

fn member(node: &NodeHandle) -> Member {
    Member {
        id: node.node_id(),
        addr: node.local_addr(),
    }
}

/// The text of a registry file of `version` listing `members`.
fn text(version: u64, members: &[Member]) -> String {
    let mut t = format!("version = {version}\nmember_count = {}\n", members.len());
    for m in members {
        t.push_str(&format!(
            "[[member]]\nid = \"{}\"\naddr = \"{}\"\n",
            m.id.to_hex(),
            m.addr
        ));
    }
    t
}

/// Replaces the file atomically: a temporary file in the same directory, fsync, rename.
fn replace(path: &Path, text: &str) {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `result` was counted `n` times; returns how long it took.
async fn counted(metrics: &ReloadMetrics, result: ReloadResult, n: u64) -> Duration {
    let start = Instant::now();
    while metrics.count(result) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "{result} not counted {n} times within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn wait_peers(node: &NodeHandle, want: &[p2p_core::NodeId], what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if node.connected_peers().await.unwrap() == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{what}: peers not {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two nodes, A and B, connected under version 2 = {A, B}; A follows `path` through a watcher
/// polling every 50 ms.
struct Fixture {
    a: NodeHandle,
    b: NodeHandle,
    ma: Member,
    mb: Member,
    path: std::path::PathBuf,
    metrics: Arc<ReloadMetrics>,
    settings: ReloadSettings,
    reload_now: Arc<Notify>,
    watcher: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let a = p2p_tokio::start(
            config(NodeIdentity::generate().unwrap()),
            Registry::default(),
        )
        .await
        .unwrap();
        let b = p2p_tokio::start(
            config(NodeIdentity::generate().unwrap()),
            Registry::default(),
        )
        .await
        .unwrap();
        let (ma, mb) = (member(&a), member(&b));

        // A follows its registry file; it starts alone in version 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        let v1 = Registry::new(1, [ma]);
        replace(&path, &text(1, &[ma]));
        let stamp = Stamp::of(&path);
        a.update_registry(v1.clone()).await.unwrap();
        let metrics = ReloadMetrics::new(&v1);
        let settings = ReloadSettings {
            poll: Duration::from_millis(50),
            settle: Duration::from_millis(20),
        };
        let reload_now = Arc::new(Notify::new());
        let watcher = tokio::spawn(
            Reloader::new(path.clone(), &v1, stamp, settings, Arc::clone(&metrics))
                .run(a.clone(), Arc::clone(&reload_now)),
        );

        // A valid bump to {A, B}: A connects to B.
        b.update_registry(Registry::new(2, [ma, mb])).await.unwrap();
        replace(&path, &text(2, &[ma, mb]));
        let took = counted(&metrics, ReloadResult::Accepted, 1).await;
        eprintln!("bump to version 2 installed {took:?} after the rename");
        let took = wait_peers(&a, &[b.node_id()], "after the bump to version 2").await;
        eprintln!("A connected to B {took:?} after the bump was installed");
        assert_eq!((metrics.version(), metrics.members()), (2, 2));
        Fixture {
            a,
            b,
            ma,
            mb,
            path,
            metrics,
            settings,
            reload_now,
            watcher,
            _dir: dir,
        }
    }

    /// Shuts both nodes down and checks that the watcher ends with A.
    async fn stop(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        // The watcher ends with its node, at its next re-read.
        replace(&self.path, &text(9, &[self.ma]));
        tokio::time::timeout(DEADLINE, self.watcher)
            .await
            .expect("the watcher ends once its node is shut down")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registry_files_are_refused_and_counted_while_the_registry_in_force_holds() {
    let f = Fixture::start().await;
    let (a, b, ma, mb, path, metrics) = (&f.a, &f.b, f.ma, f.mb, &f.path, &f.metrics);

    // Each file below would drop B if it were installed.
    let v3 = text(3, &[ma, mb]);
    let torn = &v3[..v3.rfind("[[member]]").unwrap()];
    let bad: [(&str, String, ReloadResult); 4] = [
        // A writer rewriting the file in place died after the first member.
        ("torn", torn.to_owned(), ReloadResult::Torn),
        (
            "malformed",
            "version = 3\nmember_count = 1\n[[member]]\nid = ".to_owned(),
            ReloadResult::Malformed,
        ),
        ("older", text(1, &[ma]), ReloadResult::OlderVersion),
        (
            "same version, other members",
            text(2, &[ma]),
            ReloadResult::SameVersionChanged,
        ),
    ];
    let mut refused = 0;
    for (what, file, result) in bad {
        // Written in place, as a careless writer would (the torn file stays as it was left).
        let before = metrics.count(result);
        std::fs::write(path, &file).unwrap();
        let took = counted(metrics, result, before + 1).await;
        eprintln!("{what} file refused {took:?} after the write");
        // Refused, and version 2 stays in force: B is still connected. A poll may also have
        // caught an in-place write half done and refused that too (torn or malformed).
        assert!(metrics.rejected() > refused, "{what}");
        refused = metrics.rejected();
        assert_eq!(metrics.count(ReloadResult::Accepted), 1, "{what}");
        assert_eq!((metrics.version(), metrics.members()), (2, 2), "{what}");
        assert_eq!(
            a.connected_peers().await.unwrap(),
            vec![b.node_id()],
            "{what}"
        );
    }
    // A refused file is not re-read until it changes.
    let refused = metrics.rejected();
    tokio::time::sleep(f.settings.poll * 5).await;
    assert_eq!(metrics.rejected(), refused);
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);

    // A valid bump to {A}: B is dropped.
    replace(path, &text(3, &[ma]));
    let took = counted(metrics, ReloadResult::Accepted, 2).await;
    eprintln!("bump to version 3 installed {took:?} after the rename");
    wait_peers(a, &[], "after the bump to version 3").await;
    assert_eq!((metrics.version(), metrics.members()), (3, 1));

    // A forced re-read (SIGHUP in `p2p-node run`) of the same file changes nothing.
    f.reload_now.notify_one();
    counted(metrics, ReloadResult::Unchanged, 1).await;
    assert_eq!((metrics.version(), metrics.members()), (3, 1));
    assert_eq!(metrics.rejected(), refused);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_writer_in_place_never_gets_a_partial_registry_installed() {
    let f = Fixture::start().await;
    let (a, b, metrics) = (&f.a, &f.b, &f.metrics);
    // Version 3 adds eight members (unreachable: A's dials to them fail, harmlessly).
    let mut v3 = vec![f.ma, f.mb];
    v3.extend((1..=8u8).map(|k| Member {
        id: p2p_core::NodeId([k; 32]),
        addr: SocketAddr::from(([127, 0, 0, 1], 9)),
    }));
    let file = text(3, &v3);
    // The writer truncates the file and writes it line by line, 30 ms apart: the watcher
    // (polling every 50 ms, settling 20 ms) reads many partial files, some of them settled, some
    // of those cut between two members.
    let path = f.path.clone();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::fs::File::create(&path).unwrap();
        for line in file.split_inclusive('\n') {
            out.write_all(line.as_bytes()).unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        file.len()
    });
    // While it writes, version 2 stays in force and B stays connected.
    let mut seen_members = std::collections::BTreeSet::new();
    while !writer.is_finished() {
        seen_members.insert(metrics.members());
        if metrics.count(ReloadResult::Accepted) == 1 {
            assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
            assert_eq!(metrics.version(), 2);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let len = writer.join().unwrap();
    // The complete file is installed soon after the last piece.
    let took = counted(metrics, ReloadResult::Accepted, 2).await;
    seen_members.insert(metrics.members());
    let refused = metrics.rejected();
    eprintln!(
        "{len}-byte file written in {:?}; complete version installed {took:?} after the writer finished; \
         partial reads refused: {refused} (unsettled {}, torn {}, malformed {})",
        started.elapsed() - took,
        metrics.count(ReloadResult::Unsettled),
        metrics.count(ReloadResult::Torn),
        metrics.count(ReloadResult::Malformed),
    );
    assert_eq!((metrics.version(), metrics.members()), (3, 10));
    // Only the two complete versions were ever in force.
    assert_eq!(seen_members, [2, 10].into_iter().collect());
    assert!(refused >= 1, "the watcher read no partial file");
    assert_eq!(metrics.count(ReloadResult::OlderVersion), 0);
    assert_eq!(metrics.count(ReloadResult::SameVersionChanged), 0);
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    f.stop().await;
}
