//! The core's configuration: every bound a peer could push against, and the priority function.

use crate::storage::StorageRef;
use crate::types::{Advert, Kind, Priority};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the application wants done with an advert.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Download it now, at this priority.
    Fetch(Priority),
    /// Keep the advert; ask again at the next re-evaluation.
    Later,
    /// Not wanted: forget the advert (later adverts of it are dropped while the decision holds).
    Drop,
}

/// The application's priority function (the IC's "bouncer").
///
/// It must be deterministic in its inputs and the application's state for runs to be
/// reproducible; replace it with [`Node::set_priority_fn`](crate::Node::set_priority_fn) and
/// re-arm it with [`Input::Reevaluate`](crate::Input::Reevaluate) as the application's state moves.
pub trait PriorityFn: Send + Sync {
    /// Decides what to do with `advert`.
    fn decide(&self, advert: &Advert) -> Decision;
}

impl<F> PriorityFn for F
where
    F: Fn(&Advert) -> Decision + Send + Sync,
{
    fn decide(&self, advert: &Advert) -> Decision {
        self(advert)
    }
}

/// A shared handle to a priority function.
#[derive(Clone)]
pub struct PriorityFnRef(pub Arc<dyn PriorityFn>);

impl PriorityFnRef {
    /// Wraps a priority function.
    pub fn new(f: impl PriorityFn + 'static) -> Self {
        PriorityFnRef(Arc::new(f))
    }

    /// The default: fetch everything at [`Priority::NORMAL`].
    pub fn fetch_all() -> Self {
        PriorityFnRef::new(|_: &Advert| Decision::Fetch(Priority::NORMAL))
    }

    /// Fetch each kind at the priority the table gives it; other kinds get `default`.
    pub fn by_kind(table: Vec<(Kind, Priority)>, default: Decision) -> Self {
        PriorityFnRef::new(move |a: &Advert| {
            table
                .iter()
                .find(|(k, _)| *k == a.kind)
                .map_or(default, |(_, p)| Decision::Fetch(*p))
        })
    }
}

impl fmt::Debug for PriorityFnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PriorityFn")
    }
}

/// Configuration of a [`Node`](crate::Node). Every table a peer can grow has a bound here.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seed of the node's generator (source tie-breaks, salts). Same seed and inputs, same outputs.
    pub seed: u64,
    /// Artifacts at or under this size are pushed whole by their origin; larger ones are advertised.
    /// A push above it from a peer is a protocol violation, so every member of a subnet must use
    /// the same value.
    pub push_threshold: u64,
    /// Maximum length of an advert's `attr`.
    pub max_attr_len: usize,
    /// Largest artifact accepted in an advert, push or response.
    pub max_artifact_size: u64,
    /// Artifacts larger than this are chunked (named by their manifest, fetched chunk by chunk
    /// from every peer holding chunks; see [`chunks`](crate::chunks)); a manifest with another
    /// chunk size is refused as bad data, so every member of a subnet must use the same value.
    /// Default [`DEFAULT_CHUNK_SIZE`](crate::chunks::DEFAULT_CHUNK_SIZE) (128 KiB).
    pub chunk_size: u32,
    /// Bytes of incomplete chunked artifacts held at once: a chunked download starts only
    /// while its whole size fits (default 1 GiB).
    pub max_incomplete_bytes: u64,
    /// Chunk requests awaiting answers, over all peers (default 64), counted in chunks of
    /// `chunk_size`: a swarm in smaller chunks ([`chunk_size_for`](crate::chunks::chunk_size_for))
    /// may have `chunk_size / its chunk size` times as many requests in flight, so that its
    /// window holds as many bytes (at most `chunk_size / SMALL_CHUNK_SIZE` = 4 times as many
    /// with the defaults).
    pub max_chunks_in_flight: usize,
    /// Chunk requests awaiting answers from one peer (default 8: 1 MiB at the default chunk
    /// size; 4 to 16 made little difference in the simulator, `BENCHMARKS.md`, "Swarming"),
    /// counted in chunks of `chunk_size` as `max_chunks_in_flight`.
    pub max_chunks_in_flight_per_peer: usize,
    /// Most chunk ranges in one `Have` message (default 1024).
    pub max_have_ranges: usize,
    /// How long a swarm asks full holders (the origin) only for its own stripe of the chunks
    /// and leaves the rest to the partial holders, before it asks full holders for any chunk
    /// (default 100 ms; see `BENCHMARKS.md`, "Swarming").
    pub swarm_patience: Duration,
    /// Owners push the chunks of their stripe to the peers that fetch the artifact, and those
    /// peers wait for the pushes (`push_patience`) instead of asking (default `false`: a hop
    /// then costs one latency instead of three, which the simulator rewards, but on real links
    /// pushes crossed the fallback requests of peers that could not wait and up to 40 % more
    /// bytes were sent; `BENCHMARKS.md`, "Swarming"). Every member of a subnet must use the
    /// same value.
    pub push_chunks: bool,
    /// How long a node waits for a chunk it expects its stripe's owner to push (someone
    /// announced it and the owner said it fetches the artifact) before it asks any holder for
    /// it; the wait lasts while other chunks keep arriving, and at least this long after the
    /// last one (default 500 ms: an owner pushes each chunk to every fetching peer at once,
    /// 133 ms for 128 KiB to 38 peers at 300 Mbit/s, 420 ms to 12 peers at 30 Mbit/s; shorter
    /// waits made nodes fetch slow owners' chunks twice: `BENCHMARKS.md`, "Swarming").
    pub push_patience: Duration,
    /// Bytes of pushed chunks, in chunks of `chunk_size`, that may be on their way to one peer
    /// at a time: pushed and not yet announced back by the peer (`Have`) or declined. A push
    /// beyond it waits until one is, so that an owner's pushes go at the pace its peers verify
    /// them and do not queue ahead of their answers for seconds (default 4; a completed
    /// swarm's waiting pushes all go out when it ends).
    pub max_pushes_in_flight_per_peer: usize,
    /// Least time between two `Have`s of newly verified chunks of one swarm in chunks smaller
    /// than `chunk_size` (see [`chunk_size_for`](crate::chunks::chunk_size_for)) to the peers:
    /// the chunks verified meanwhile go out in one `Have` (default 5 ms: with chunks of 16 KiB
    /// a downlink at 300 Mbit/s verifies one every 0.44 ms, and a `Have` of one chunk to each
    /// of 39 peers costs about 12 % of the chunk's bytes, 6 % at 32 KiB; simulated 4 MiB to 40
    /// nodes in 16 KiB chunks: amplification 1.128 without it, 1.029 with it, and 12 ms sooner;
    /// a pull waits for it at most this long). A swarm in chunks of `chunk_size` announces each input's chunks at once.
    pub have_interval: Duration,
    /// Pushed chunks a peer may send that this node cannot use (no active swarm lacks them),
    /// net of the useful ones it pushed, before it is cut off (default 256: an honest peer pushes
    /// only to peers that said they fetch the artifact and lack the chunk, so only races with
    /// other holders and budget waits make its pushes useless).
    pub max_unwanted_pushes: u32,
    /// Leave the SHA-256 of received chunks to the driver: the node emits
    /// [`Output::HashChunk`](crate::Output::HashChunk) and waits for
    /// [`Input::ChunkHashed`](crate::Input::ChunkHashed) before it judges the chunk, so that a
    /// driver can hash bulk data off the task that moves urgent traffic (default `false`: the
    /// node hashes chunks itself).
    pub offload_chunk_hashing: bool,
    /// How long a node that completed a chunked artifact without pooling it (no relay) still
    /// serves its chunks, so that peers that learnt of them (or are owed a chunk it fetched for
    /// them from the origin) find them (default 500 ms: a few round trips).
    pub swarm_linger: Duration,
    /// Publish every delivered artifact automatically (relay), for simple embedders.
    pub auto_relay: bool,
    /// Bound on the local pool's artifact count when auto-relaying: past it, delivered artifacts are
    /// not relayed. Publishes by the application are not limited.
    pub max_auto_relay_pool: usize,
    /// Bound on the local pool's bytes when auto-relaying (same rule as the count).
    pub max_auto_relay_pool_bytes: u64,
    /// Period of the automatic re-evaluation of `Later` and queued adverts.
    pub reevaluate_interval: Duration,
    /// The priority function.
    pub priority_fn: PriorityFnRef,
    /// Where chunked artifacts are assembled ([`crate::storage`]); default: memory.
    pub storage: StorageRef,
    /// Adverts tracked per peer (all kinds); a peer past it is disconnected.
    pub max_adverts_per_peer: usize,
    /// Adverts tracked per peer and kind; a peer past it is disconnected.
    pub max_adverts_per_peer_per_kind: usize,
    /// Artifacts tracked for download overall; further adverts are dropped (not fatal: a peer cannot
    /// tell how full the table is). Half of it is reserved in equal shares for the other members
    /// (each download is charged to its first advertiser), so peers that fill the table cannot
    /// keep out the adverts of the others.
    pub max_pending_downloads: usize,
    /// Adverts per message when sending batches; also the resync of a new connection (an
    /// advert of every pooled artifact) goes out at most one such batch per peer and input.
    pub advert_batch_size: usize,
    /// While a connected peer that is not congested still has resync adverts to receive, the
    /// node asks to run again this soon to send the next batch (default 1 ms: 256 adverts a
    /// millisecond, a 200,000-artifact pool in under a second, while a peer that connects and
    /// leaves costs at most one batch per input it stays for).
    pub resync_interval: Duration,
    /// Adverts accepted in one received batch; more is a protocol violation.
    pub max_adverts_per_message: usize,
    /// Requests in flight overall. Half of it is reserved in equal shares for the connected
    /// peers, so peers that answer slowly cannot hold every slot.
    pub max_in_flight: usize,
    /// Requests in flight to one peer (timed-out requests count until the peer answers).
    pub max_in_flight_per_peer: usize,
    /// Bytes requested and not yet received overall (an artifact larger than it may still be
    /// fetched alone). Shared like `max_in_flight`.
    pub max_in_flight_bytes: u64,
    /// Bytes requested from one peer and not yet received (same exception).
    pub max_in_flight_bytes_per_peer: u64,
    /// Artifacts at or above this size may be requested from several peers at once.
    pub parallel_fetch_min_size: u64,
    /// Concurrent requests for one artifact at or above `parallel_fetch_min_size` (1 = off).
    pub max_parallel_requests: usize,
    /// Request timeout for an empty artifact.
    pub request_timeout_base: Duration,
    /// Added to the timeout per MiB of artifact size.
    pub request_timeout_per_mib: Duration,
    /// First back-off after every source of a download has failed.
    pub retry_backoff_initial: Duration,
    /// Largest back-off.
    pub retry_backoff_max: Duration,
    /// Bad artifacts (hash or size mismatch) tolerated from one peer before disconnecting it.
    pub max_bad_data_per_peer: u32,
    /// Requests from one peer held while the driver reports it congested; past it the peer is cut off.
    pub max_queued_requests_per_peer: usize,
    /// Early repeats tolerated per peer, artifact and connection before the peer is cut off
    /// (default 64). A request of an artifact that was answered (or held) for the same peer
    /// less than half its request timeout (`request_timeout(size) / 2`) before is an early
    /// repeat and is answered not-found: an honest requester asks the same peer again only
    /// after its own timeout, so only a peer that asks again and again repeats early.
    pub max_early_repeats: u32,
    /// Bytes a second of artifacts served to one peer, on average (default 1 GiB/s, about the
    /// rate of one TLS connection on one core and 13 times one receiver's share in the bulk
    /// benchmark); requests past the budget wait in the serving queue.
    pub serve_rate: u64,
    /// Bytes that may be served to one peer at once (default 64 MiB: twice the default
    /// `max_in_flight_bytes_per_peer`, so an honest requester's whole window of requests is
    /// answered at once). An artifact larger than it is served on a full budget.
    pub serve_burst: u64,
    /// Delivered ids remembered to keep delivery exactly-once (and their known holders).
    pub max_delivered_memory: usize,
    /// Ids remembered as dropped by the priority function until the next re-evaluation.
    pub max_dropped_memory: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            push_threshold: 1024,
            max_attr_len: 64,
            max_artifact_size: 1 << 30,
            chunk_size: crate::chunks::DEFAULT_CHUNK_SIZE,
            max_incomplete_bytes: 1 << 30,
            max_chunks_in_flight: 64,
            max_chunks_in_flight_per_peer: 8,
            max_have_ranges: 1024,
            swarm_patience: Duration::from_millis(100),
            push_chunks: false,
            push_patience: Duration::from_millis(500),
            max_pushes_in_flight_per_peer: 4,
            have_interval: Duration::from_millis(5),
            max_unwanted_pushes: 256,
            offload_chunk_hashing: false,
            swarm_linger: Duration::from_millis(500),
            auto_relay: false,
            max_auto_relay_pool: 100_000,
            max_auto_relay_pool_bytes: 1 << 30,
            reevaluate_interval: Duration::from_secs(3),
            priority_fn: PriorityFnRef::fetch_all(),
            storage: StorageRef::memory(),
            max_adverts_per_peer: 100_000,
            max_adverts_per_peer_per_kind: 50_000,
            max_pending_downloads: 200_000,
            advert_batch_size: 256,
            resync_interval: Duration::from_millis(1),
            max_adverts_per_message: 1024,
            max_in_flight: 1024,
            max_in_flight_per_peer: 128,
            max_in_flight_bytes: 256 << 20,
            max_in_flight_bytes_per_peer: 32 << 20,
            parallel_fetch_min_size: 1 << 20,
            max_parallel_requests: 1,
            request_timeout_base: Duration::from_secs(2),
            request_timeout_per_mib: Duration::from_secs(1),
            retry_backoff_initial: Duration::from_millis(250),
            retry_backoff_max: Duration::from_secs(30),
            max_bad_data_per_peer: 3,
            max_queued_requests_per_peer: 1024,
            max_early_repeats: 64,
            serve_rate: 1 << 30,
            serve_burst: 64 << 20,
            max_delivered_memory: 200_000,
            max_dropped_memory: 100_000,
        }
    }
}

/// A [`Config`] that a node cannot run with, from [`Config::validate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or period that must be at least one (or non-zero) is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Two settings contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
}

impl Config {
    /// How many requests for chunks of `chunk` bytes count as one chunk of `chunk_size` in the
    /// chunk request limits (`max_chunks_in_flight`, `max_chunks_in_flight_per_peer`).
    pub fn chunk_window_scale(&self, chunk: u32) -> usize {
        (self.chunk_size / chunk.max(1)).max(1) as usize
    }

    /// The largest [`Config::chunk_window_scale`] of any swarm: that of the smallest chunks a
    /// manifest may have ([`SMALL_CHUNK_SIZE`](crate::chunks::SMALL_CHUNK_SIZE)).
    pub fn max_chunk_window_scale(&self) -> usize {
        self.chunk_window_scale(crate::chunks::SMALL_CHUNK_SIZE.min(self.chunk_size))
    }

    /// Checks the settings a node cannot work with: zero limits and periods, and settings that
    /// contradict each other. Drivers call it before starting a node; a node given an invalid
    /// configuration still never panics, but may refuse every advert or request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero: [(&'static str, u64); 18] = [
            ("max_incomplete_bytes", self.max_incomplete_bytes),
            ("max_chunks_in_flight", self.max_chunks_in_flight as u64),
            (
                "max_chunks_in_flight_per_peer",
                self.max_chunks_in_flight_per_peer as u64,
            ),
            ("max_have_ranges", self.max_have_ranges as u64),
            (
                "max_pushes_in_flight_per_peer",
                self.max_pushes_in_flight_per_peer as u64,
            ),
            ("serve_rate", self.serve_rate),
            ("serve_burst", self.serve_burst),
            ("advert_batch_size", self.advert_batch_size as u64),
            (
                "max_adverts_per_message",
                self.max_adverts_per_message as u64,
            ),
            ("max_adverts_per_peer", self.max_adverts_per_peer as u64),
            (
                "max_adverts_per_peer_per_kind",
                self.max_adverts_per_peer_per_kind as u64,
            ),
            ("max_pending_downloads", self.max_pending_downloads as u64),
            ("max_in_flight", self.max_in_flight as u64),
            ("max_in_flight_per_peer", self.max_in_flight_per_peer as u64),
            ("max_in_flight_bytes", self.max_in_flight_bytes),
            (
                "max_in_flight_bytes_per_peer",
                self.max_in_flight_bytes_per_peer,
            ),
            ("max_parallel_requests", self.max_parallel_requests as u64),
            (
                "max_queued_requests_per_peer",
                self.max_queued_requests_per_peer as u64,
            ),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        let periods = [
            ("reevaluate_interval", self.reevaluate_interval),
            ("request_timeout_base", self.request_timeout_base),
            ("retry_backoff_initial", self.retry_backoff_initial),
            ("resync_interval", self.resync_interval),
        ];
        if let Some((name, _)) = periods.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Zero(name));
        }
        if self.advert_batch_size > self.max_adverts_per_message {
            return Err(ConfigError::Inconsistent(
                "advert_batch_size exceeds max_adverts_per_message: peers with this config would cut each other off",
            ));
        }
        if self.retry_backoff_initial > self.retry_backoff_max {
            return Err(ConfigError::Inconsistent(
                "retry_backoff_initial exceeds retry_backoff_max",
            ));
        }
        if self.chunk_size < crate::chunks::MIN_CHUNK_SIZE {
            return Err(ConfigError::Inconsistent(
                "chunk_size is below the minimum chunk size (4 KiB)",
            ));
        }
        if self.push_threshold >= self.chunk_size as u64 {
            return Err(ConfigError::Inconsistent(
                "push_threshold must be below chunk_size: chunked artifacts are never pushed",
            ));
        }
        if self.push_threshold > self.max_artifact_size {
            return Err(ConfigError::Inconsistent(
                "push_threshold exceeds max_artifact_size",
            ));
        }
        Ok(())
    }

    /// The request timeout for an artifact of `size` bytes.
    pub fn request_timeout(&self, size: u64) -> Duration {
        let per_mib = self.request_timeout_per_mib.as_nanos() as u64;
        let extra = (size as u128 * per_mib as u128 / (1u128 << 20)) as u64;
        self.request_timeout_base + Duration::from_nanos(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, ConfigError};
    use std::time::Duration;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn zero_limits_and_contradictions_are_typed_errors() {
        let zero = Config {
            max_in_flight: 0,
            ..Config::default()
        };
        assert_eq!(zero.validate(), Err(ConfigError::Zero("max_in_flight")));
        let no_period = Config {
            reevaluate_interval: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            no_period.validate(),
            Err(ConfigError::Zero("reevaluate_interval"))
        );
        let batch = Config {
            advert_batch_size: 2000,
            ..Config::default()
        };
        assert!(matches!(
            batch.validate(),
            Err(ConfigError::Inconsistent(_))
        ));
        let backoff = Config {
            retry_backoff_initial: Duration::from_secs(60),
            ..Config::default()
        };
        assert!(matches!(
            backoff.validate(),
            Err(ConfigError::Inconsistent(_))
        ));
        let serving = [
            (
                Config {
                    serve_rate: 0,
                    ..Config::default()
                },
                Err(ConfigError::Zero("serve_rate")),
            ),
            (
                Config {
                    serve_burst: 0,
                    ..Config::default()
                },
                Err(ConfigError::Zero("serve_burst")),
            ),
            (
                Config {
                    resync_interval: Duration::ZERO,
                    ..Config::default()
                },
                Err(ConfigError::Zero("resync_interval")),
            ),
        ];
        for (cfg, err) in serving {
            assert_eq!(cfg.validate(), err);
        }
    }
}
