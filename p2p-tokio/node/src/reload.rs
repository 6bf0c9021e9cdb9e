//! Safe reloads of the registry file by a running node.
//!
//! The file is re-read when its modification time, size or inode changes (checked every
//! [`ReloadSettings::poll`]) and when asked (`p2p-node run` asks on SIGHUP). A re-read file is
//! installed only if all of these hold; otherwise it is refused and the registry in force is
//! kept:
//!
//! 1. It is settled: two reads [`ReloadSettings::settle`] apart return the same bytes. A file
//!    still being written is left for the next poll.
//! 2. It is complete: its `member_count` equals the number of members it lists. A writer that
//!    rewrites the file in place can be caught (or die) half-way, and when the cut falls between
//!    two members the half that was written still parses; the count is what gives it away.
//! 3. It is valid (see [`parse_registry`]).
//! 4. Its version is newer than the one in force; or it is the same version with the same
//!    members at the same addresses, and nothing changes. Other members under the same version
//!    are refused: the handshake announces only the version number, so every node of the subnet
//!    must mean the same membership by it.
//!
//! Writers should replace the file atomically: write the new version to a temporary file in the
//! same directory, fsync it, and rename it over the registry file. A reader then sees the old
//! file or the new one, never a mix; the checks above are the defence against writers that do
//! not. Host names in `addr` are resolved at each read, so a name that resolves differently
//! needs a version bump like any other address change.
//!
//! Every re-read is counted by result in `p2p_registry_reloads_total{result="..."}` and logged
//! (a refusal as a warning naming the reason); `p2p_registry_version` and
//! `p2p_registry_members` show the registry in force.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use p2p_core::NodeId;
use p2p_tokio::{NodeError, NodeHandle, Registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::sync::Notify;

use crate::config::{ConfigError, RegistryError, parse_registry, read_registry_bytes};

/// How the registry file is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadSettings {
    /// How often the file's modification time, size and inode are checked. Default 1 s: a
    /// registry change takes effect within about a second, for one metadata read per second.
    pub poll: Duration,
    /// The pause between the two reads of a changed file, which must return the same bytes.
    /// Default 200 ms: far longer than writing a registry file takes, and short next to `poll`.
    pub settle: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            poll: Duration::from_secs(1),
            settle: Duration::from_millis(200),
        }
    }
}

/// The result of one re-read of the registry file, as counted and exported (the `result`
/// label of `p2p_registry_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// A newer version was installed.
    Accepted,
    /// The file holds the registry in force.
    Unchanged,
    /// The file changed between the two reads.
    Unsettled,
    /// The file could not be read (missing, unreadable, too large).
    Unreadable,
    /// The file is not a valid registry.
    Malformed,
    /// The file has no `member_count`.
    MissingCount,
    /// The file's `member_count` differs from the members it lists.
    Torn,
    /// The file holds an older version than the one in force.
    OlderVersion,
    /// The file holds other members under the version in force.
    SameVersionChanged,
    /// The node refused the registry.
    Refused,
}

impl ReloadResult {
    /// Every result, in export order.
    pub const ALL: [ReloadResult; 10] = [
        ReloadResult::Accepted,
        ReloadResult::Unchanged,
        ReloadResult::Unsettled,
        ReloadResult::Unreadable,
        ReloadResult::Malformed,
        ReloadResult::MissingCount,
        ReloadResult::Torn,
        ReloadResult::OlderVersion,
        ReloadResult::SameVersionChanged,
        ReloadResult::Refused,
    ];

    /// The value of the `result` label.
    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Accepted => "accepted",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Unsettled => "unsettled",
            ReloadResult::Unreadable => "unreadable",
            ReloadResult::Malformed => "malformed",
            ReloadResult::MissingCount => "missing_count",
            ReloadResult::Torn => "torn",
            ReloadResult::OlderVersion => "older_version",
            ReloadResult::SameVersionChanged => "same_version_changed",
            ReloadResult::Refused => "refused",
        }
    }

    /// Whether the file was refused (anything but accepted and unchanged).
    pub fn is_rejection(self) -> bool {
        !matches!(self, ReloadResult::Accepted | ReloadResult::Unchanged)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a re-read registry file was not installed. The registry in force stays.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Unreadable {
        /// The registry file.
        path: PathBuf,
        /// The OS error (or the size bound).
        source: std::io::Error,
    },
    /// The file changed between the two reads: a write is in progress. It is read again at the
    /// next poll.
    #[error(
        "the file changed while it was read (a write in progress); read again at the next poll"
    )]
    Unsettled,
    /// The file is not a valid registry.
    #[error("{0}")]
    Malformed(ConfigError),
    /// The file has no `member_count`.
    #[error("{0}")]
    MissingCount(ConfigError),
    /// The file's `member_count` differs from the members it lists.
    #[error("{error}")]
    Torn {
        /// The count the file declares.
        declared: u64,
        /// The members it lists.
        found: usize,
        /// Where and what, as one line.
        error: ConfigError,
    },
    /// The file holds an older version than the one in force.
    #[error("version {offered} is older than version {current} in force")]
    OlderVersion {
        /// The version in the file.
        offered: u64,
        /// The version in force.
        current: u64,
    },
    /// The file holds other members (or addresses) under the version in force.
    #[error("the members differ from those of version {version} in force; bump `version`")]
    SameVersionChanged {
        /// The version in force and in the file.
        version: u64,
    },
    /// The node refused the registry.
    #[error("the node refused it: {0}")]
    Refused(NodeError),
}

impl Rejected {
    /// The result it is counted under.
    pub fn result(&self) -> ReloadResult {
        match self {
            Rejected::Unreadable { .. } => ReloadResult::Unreadable,
            Rejected::Unsettled => ReloadResult::Unsettled,
            Rejected::Malformed(_) => ReloadResult::Malformed,
            Rejected::MissingCount(_) => ReloadResult::MissingCount,
            Rejected::Torn { .. } => ReloadResult::Torn,
            Rejected::OlderVersion { .. } => ReloadResult::OlderVersion,
            Rejected::SameVersionChanged { .. } => ReloadResult::SameVersionChanged,
            Rejected::Refused(_) => ReloadResult::Refused,
        }
    }
}

impl From<RegistryError> for Rejected {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Malformed(e) => Rejected::Malformed(e),
            RegistryError::MissingCount(e) => Rejected::MissingCount(e),
            RegistryError::Torn {
                declared,
                found,
                error,
            } => Rejected::Torn {
                declared,
                found,
                error,
            },
        }
    }
}

/// What a valid file asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Install this newer version.
    Install(Registry),
    /// The file holds the registry in force.
    Unchanged,
}

/// The registry in force, as a re-read file is compared with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    version: u64,
    /// (id, address) of every member, sorted: the order in the file does not matter.
    members: Vec<(NodeId, SocketAddr)>,
}

impl InForce {
    /// The state of `registry`.
    pub fn new(registry: &Registry) -> Self {
        let mut members: Vec<(NodeId, SocketAddr)> =
            registry.members.iter().map(|m| (m.id, m.addr)).collect();
        members.sort();
        InForce {
            version: registry.version,
            members,
        }
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of members in force.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Decides about the registry file `bytes`, read from `path`, against the registry in force
    /// (which it does not change).
    pub fn evaluate(&self, path: &Path, bytes: &[u8]) -> Result<Outcome, Rejected> {
        let registry = parse_registry(path, bytes)?;
        if registry.version < self.version {
            return Err(Rejected::OlderVersion {
                offered: registry.version,
                current: self.version,
            });
        }
        if registry.version == self.version {
            return if InForce::new(&registry) == *self {
                Ok(Outcome::Unchanged)
            } else {
                Err(Rejected::SameVersionChanged {
                    version: self.version,
                })
            };
        }
        Ok(Outcome::Install(registry))
    }
}

/// Reads the registry file twice, `pause` apart, and returns its bytes if both reads agree
/// ([`Rejected::Unsettled`] if not). Reads run on tokio's blocking pool and stop at
/// [`MAX_REGISTRY_FILE`](crate::config::MAX_REGISTRY_FILE) bytes.
pub async fn read_settled(
    path: &Path,
    pause: impl Future<Output = ()>,
) -> Result<Vec<u8>, Rejected> {
    let first = read_blocking(path).await?;
    pause.await;
    let second = read_blocking(path).await?;
    if first == second {
        Ok(first)
    } else {
        Err(Rejected::Unsettled)
    }
}

async fn read_blocking(path: &Path) -> Result<Vec<u8>, Rejected> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_registry_bytes(&owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read.map_err(|source| Rejected::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// What identifies a version of a file cheaply: modification time, size and (on Unix) inode,
/// which a rename over the file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl Stamp {
    /// The stamp of the file at `path`; `None` if its metadata cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Stamp {
            modified: meta.modified().ok()?,
            len: meta.len(),
            inode,
        })
    }
}

/// The counters of re-reads by result and the registry in force, shared between the watcher
/// and the metrics endpoint.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    results: [AtomicU64; ReloadResult::ALL.len()],
    version: AtomicU64,
    members: AtomicU64,
}

impl ReloadMetrics {
    /// Metrics showing `registry` in force and no re-read yet.
    pub fn new(registry: &Registry) -> Arc<Self> {
        let m = ReloadMetrics::default();
        m.set_in_force(&InForce::new(registry));
        Arc::new(m)
    }

    /// Re-reads counted under `result`.
    pub fn count(&self, result: ReloadResult) -> u64 {
        self.results[result.index()].load(Ordering::Relaxed)
    }

    /// Re-reads that refused the file, whatever the reason.
    pub fn rejected(&self) -> u64 {
        ReloadResult::ALL
            .iter()
            .filter(|r| r.is_rejection())
            .map(|&r| self.count(r))
            .sum()
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The number of members in force.
    pub fn members(&self) -> u64 {
        self.members.load(Ordering::Relaxed)
    }

    fn record(&self, result: ReloadResult) {
        self.results[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn set_in_force(&self, state: &InForce) {
        self.version.store(state.version, Ordering::Relaxed);
        self.members
            .store(state.member_count() as u64, Ordering::Relaxed);
    }

    /// Registers `p2p_registry_reloads_total{result}`, `p2p_registry_version` and
    /// `p2p_registry_members` in `registry`, read afresh on each encoding.
    pub fn register(self: &Arc<Self>, registry: &mut MetricsRegistry) {
        registry
            .sub_registry_with_prefix("p2p")
            .register_collector(Box::new(Collector(Arc::clone(self))));
    }
}

#[derive(Debug)]
struct Collector(Arc<ReloadMetrics>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = &self.0;
        let mut family = encoder.encode_descriptor(
            "registry_reloads",
            "Re-reads of the registry file, by result (accepted, unchanged, or why it was refused).",
            None,
            MetricType::Counter,
        )?;
        for r in ReloadResult::ALL {
            let labels = [("result", r.label())];
            ConstCounter::new(m.count(r)).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "registry_version",
                "The registry version in force.",
                m.version(),
            ),
            (
                "registry_members",
                "The members of the registry version in force.",
                m.members(),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Watches the registry file and installs its valid new versions in a running node.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    settings: ReloadSettings,
    in_force: InForce,
    stamp: Option<Stamp>,
    metrics: Arc<ReloadMetrics>,
}

impl Reloader {
    /// A watcher of the registry file at `path`, of which `registry` is in force; `stamp` is the
    /// file's [`Stamp`] taken before `registry` was read from it (a change made since is picked
    /// up at the first poll).
    pub fn new(
        path: PathBuf,
        registry: &Registry,
        stamp: Option<Stamp>,
        settings: ReloadSettings,
        metrics: Arc<ReloadMetrics>,
    ) -> Self {
        let in_force = InForce::new(registry);
        metrics.set_in_force(&in_force);
        Reloader {
            path,
            settings,
            in_force,
            stamp,
            metrics,
        }
    }

    /// Re-reads the file whenever its [`Stamp`] changes (checked every
    /// [`ReloadSettings::poll`]) or `reload_now` is notified, and installs valid new versions
    /// in the node of `handle`. Returns when the node has shut down.
    pub async fn run(mut self, handle: NodeHandle, reload_now: Arc<Notify>) {
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                () = reload_now.notified() => true,
            };
            let now = Stamp::of(&self.path);
            if !forced && now == self.stamp {
                continue;
            }
            // Stamped before reading: a change made during the read is read at the next poll.
            self.stamp = now;
            match self.reload(&handle).await {
                Err(Rejected::Refused(NodeError::Closed)) => return,
                Err(Rejected::Unsettled) => {
                    self.record(&Err(Rejected::Unsettled));
                    // Read again at the next poll, whatever the stamp says then.
                    self.stamp = None;
                }
                result => self.record(&result),
            }
        }
    }

    /// Reads the file, decides, and installs a newer version in the node.
    async fn reload(&mut self, handle: &NodeHandle) -> Result<ReloadResult, Rejected> {
        let bytes = read_settled(&self.path, tokio::time::sleep(self.settings.settle)).await?;
        match self.in_force.evaluate(&self.path, &bytes)? {
            Outcome::Unchanged => Ok(ReloadResult::Unchanged),
            Outcome::Install(registry) => {
                let next = InForce::new(&registry);
                let own = handle.node_id();
                let member = registry.contains(&own);
                handle
                    .update_registry(registry)
                    .await
                    .map_err(Rejected::Refused)?;
                self.in_force = next;
                self.metrics.set_in_force(&self.in_force);
                if !member {
                    tracing::warn!(
                        node = %own.to_hex(),
                        version = self.in_force.version,
                        "this node is not a member of its registry; peers will refuse it"
                    );
                }
                Ok(ReloadResult::Accepted)
            }
        }
    }

    /// Counts and logs a re-read.
    fn record(&self, result: &Result<ReloadResult, Rejected>) {
        let path = self.path.display();
        let version = self.in_force.version;
        let outcome = match result {
            Ok(r) => *r,
            Err(e) => e.result(),
        };
        self.metrics.record(outcome);
        match result {
            Ok(ReloadResult::Accepted) => tracing::info!(
                registry = %path,
                version,
                members = self.in_force.member_count(),
                "registry file reloaded"
            ),
            Ok(_) => tracing::debug!(registry = %path, version, "registry file unchanged"),
            Err(e) => tracing::warn!(
                registry = %path,
                reason = outcome.label(),
                error = %e,
                "registry file refused; keeping version {version}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_tokio::Member;

    fn member(b: u8, port: u16) -> Member {
        Member {
            id: NodeId([b; 32]),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The text of a registry file of `version` listing `members`, declaring `count` of them.
    fn file(version: u64, count: usize, members: &[Member]) -> String {
        let mut text = format!("version = {version}\nmember_count = {count}\n");
        for m in members {
            text.push_str(&format!(
                "[[member]]\nid = \"{}\"\naddr = \"{}\"\n",
                m.id.to_hex(),
                m.addr
            ));
        }
        text
    }

    fn in_force() -> InForce {
        InForce::new(&Registry::new(5, [member(1, 10), member(2, 20)]))
    }

    fn eval(state: &InForce, text: &str) -> Result<Outcome, Rejected> {
        state.evaluate(Path::new("registry.toml"), text.as_bytes())
    }

    #[test]
    fn a_newer_complete_file_is_installed() {
        let state = in_force();
        let next = [member(1, 10), member(2, 20), member(3, 30)];
        assert_eq!(
            eval(&state, &file(6, 3, &next)).unwrap(),
            Outcome::Install(Registry::new(6, next))
        );
        // Evaluating does not change the registry in force.
        assert_eq!(state, in_force());
    }

    #[test]
    fn the_same_registry_in_another_order_is_unchanged() {
        let state = in_force();
        let text = file(5, 2, &[member(2, 20), member(1, 10)]);
        assert_eq!(eval(&state, &text).unwrap(), Outcome::Unchanged);
    }

    #[test]
    fn each_bad_file_is_refused_with_its_reason() {
        let state = in_force();
        let next = [member(1, 10), member(2, 20), member(3, 30)];
        let complete = file(6, 3, &next);
        // Cut after the second member: it parses, and its count gives it away.
        let cut_at =
            complete.find(&NodeId([3; 32]).to_hex()).unwrap() - "[[member]]\nid = \"".len();
        let cases: Vec<(String, ReloadResult)> = vec![
            (complete[..cut_at].to_owned(), ReloadResult::Torn),
            (complete[..cut_at + 20].to_owned(), ReloadResult::Malformed),
            (
                "version = 6\nmember_count = 3\n[[member]".to_owned(),
                ReloadResult::Malformed,
            ),
            (String::new(), ReloadResult::Malformed),
            (
                complete.replace("member_count = 3\n", ""),
                ReloadResult::MissingCount,
            ),
            (file(4, 3, &next), ReloadResult::OlderVersion),
            (file(5, 3, &next), ReloadResult::SameVersionChanged),
            // Same ids under the same version, one address moved.
            (
                file(5, 2, &[member(1, 10), member(2, 21)]),
                ReloadResult::SameVersionChanged,
            ),
        ];
        for (text, want) in cases {
            let e = eval(&state, &text).expect_err(&text);
            assert_eq!(e.result(), want, "{text:?}: {e}");
            assert!(want.is_rejection());
            assert!(!e.to_string().contains('\n'), "{e}");
            assert_eq!(state, in_force());
        }
    }

    #[tokio::test]
    async fn a_file_rewritten_between_the_two_reads_is_unsettled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        let complete = file(6, 2, &[member(1, 10), member(2, 20)]);
        // A writer that truncates and writes in place, caught after its first member.
        let half = &complete[..complete.rfind("[[member]]").unwrap()];
        std::fs::write(&path, half).unwrap();
        let finish = async {
            std::fs::write(&path, &complete).unwrap();
        };
        let e = read_settled(&path, finish).await.unwrap_err();
        assert_eq!(e.result(), ReloadResult::Unsettled);
        // Once the writer is done, both reads agree.
        let bytes = read_settled(&path, async {}).await.unwrap();
        assert_eq!(bytes, complete.as_bytes());
        // Had the writer died half-way instead, the settled half is refused as torn.
        std::fs::write(&path, half).unwrap();
        let bytes = read_settled(&path, async {}).await.unwrap();
        let e = in_force().evaluate(&path, &bytes).unwrap_err();
        assert_eq!(e.result(), ReloadResult::Torn);
        // A missing file cannot be read.
        let e = read_settled(&dir.path().join("none.toml"), async {})
            .await
            .unwrap_err();
        assert_eq!(e.result(), ReloadResult::Unreadable);
    }

    #[test]
    fn a_rename_over_the_file_changes_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        std::fs::write(&path, "a").unwrap();
        let before = Stamp::of(&path).unwrap();
        assert_eq!(Stamp::of(&path), Some(before));
        let tmp = dir.path().join("registry.toml.tmp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(Stamp::of(&path), Some(before));
        assert_eq!(Stamp::of(&dir.path().join("none")), None);
    }

    #[test]
    fn metrics_count_by_result_and_show_the_registry_in_force() {
        let registry = Registry::new(5, [member(1, 10), member(2, 20)]);
        let m = ReloadMetrics::new(&registry);
        m.record(ReloadResult::Torn);
        m.record(ReloadResult::Torn);
        m.record(ReloadResult::Unchanged);
        m.record(ReloadResult::SameVersionChanged);
        assert_eq!(m.count(ReloadResult::Torn), 2);
        assert_eq!(m.rejected(), 3);
        let mut reg = MetricsRegistry::default();
        m.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &reg).unwrap();
        for line in [
            "p2p_registry_reloads_total{result=\"torn\"} 2",
            "p2p_registry_reloads_total{result=\"unchanged\"} 1",
            "p2p_registry_reloads_total{result=\"same_version_changed\"} 1",
            "p2p_registry_reloads_total{result=\"accepted\"} 0",
            "p2p_registry_version 5",
            "p2p_registry_members 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE p2p_registry_reloads_total counter\n"),
            "{text}"
        );
        for r in ReloadResult::ALL {
            assert_eq!(ReloadResult::ALL[r.index()], r);
        }
    }
}
