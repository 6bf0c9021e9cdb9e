//! The property checkers: what the engine saw go wrong during a run, the largest state sampled,
//! the run hash of the determinism check, and the pieces of the end-of-run assessment.
//!
//! Invariants:
//! - a [`Violations`] counts every violation and keeps the details of the first [`DETAILS`];
//! - [`Checks::max_state`] is, table by table, the largest size any honest node was sampled at;
//! - [`Checks::hash`] mixes every output of every honest node, with its time and node, in the
//!   order the engine drained them, so two runs of one seed hash alike exactly when they do the
//!   same.

use super::report::{ArtifactFigure, Check, LatencyStats};
use super::rng::RunHash;
use p2p_core::{Config, Kind, Message, Node, Output, TableSizes};
use std::time::Duration;

/// Violations kept in detail per check.
const DETAILS: usize = 5;

/// The violations of one property.
#[derive(Default)]
pub(super) struct Violations {
    count: usize,
    details: Vec<String>,
}

impl Violations {
    /// Counts a violation; `detail` describes it and is called only while details are kept.
    pub(super) fn add(&mut self, detail: impl FnOnce() -> String) {
        self.count += 1;
        if self.details.len() < DETAILS {
            self.details.push(detail());
        }
    }

    /// The check `name`: passed with `ok_detail`, or failed with the violations seen.
    pub(super) fn check(&self, name: &'static str, ok_detail: String) -> Check {
        Check {
            name,
            ok: self.count == 0,
            detail: if self.count == 0 {
                ok_detail
            } else {
                format!("{} violations: {}", self.count, self.details.join("; "))
            },
        }
    }
}

/// Everything the checkers gather during a run.
#[derive(Default)]
pub(super) struct Checks {
    /// An artifact delivered twice to one incarnation of a node.
    pub(super) once: Violations,
    /// A delivery whose bytes, size or kind do not match an honest publish.
    pub(super) integrity: Violations,
    /// A sampled table past its bound, or outputs left undrained.
    pub(super) bounds: Violations,
    /// A timer that did not advance past the time it fired at.
    pub(super) timer: Violations,
    /// An application input the core rejected.
    pub(super) app: Violations,
    /// A recorded trace that could not be written.
    pub(super) trace: Violations,
    /// Messages lost on a closed connection.
    pub(super) lost: u64,
    /// The largest table sizes sampled.
    pub(super) max_state: TableSizes,
    /// The run hash of the honest nodes' outputs.
    pub(super) hash: RunHash,
}

impl Checks {
    /// Samples honest node `i` at `now`: its table sizes against `cfg`'s bounds.
    pub(super) fn sample(&mut self, i: usize, node: &Node, cfg: &Config, now: u64) {
        let t = node.table_sizes();
        let peers = node.connected_peers().count().max(1);
        raise(&mut self.max_state, &t);
        let mut bounds = t.exceeded(cfg, peers);
        if t.outputs > 0 {
            bounds.push(("undrained outputs", t.outputs as u64, 0));
        }
        for (what, value, bound) in bounds {
            self.bounds
                .add(|| format!("node {i} at {now}ns: {what} = {value} > bound {bound}"));
        }
    }

    /// Mixes output `o` of `node` at `now` into the run hash.
    pub(super) fn output(&mut self, now: u64, node: u32, o: &Output) {
        hash_output(&mut self.hash, now, node, o);
    }

    /// The checks every run makes, after the eventual-delivery one.
    pub(super) fn results(&self, delivery: Check) -> Vec<Check> {
        vec![
            delivery,
            self.once
                .check("exactly-once", "no artifact delivered twice".into()),
            self.integrity.check(
                "integrity",
                "every delivery hashes to its id and was published by an honest node".into(),
            ),
            self.bounds.check(
                "bounded-state",
                "every sampled table within its configured bound".into(),
            ),
            self.timer
                .check("timer-progress", "every timer advanced".into()),
            self.app
                .check("application-inputs", "every publish accepted".into()),
        ]
    }
}

/// Raises every size in `m` to at least the one in `t`.
fn raise(m: &mut TableSizes, t: &TableSizes) {
    m.tracked_adverts = m.tracked_adverts.max(t.tracked_adverts);
    m.max_adverts_of_one_peer = m.max_adverts_of_one_peer.max(t.max_adverts_of_one_peer);
    m.max_queued_requests_of_one_peer = m
        .max_queued_requests_of_one_peer
        .max(t.max_queued_requests_of_one_peer);
    m.pending_downloads = m.pending_downloads.max(t.pending_downloads);
    m.requests = m.requests.max(t.requests);
    m.in_flight = m.in_flight.max(t.in_flight);
    m.in_flight_bytes = m.in_flight_bytes.max(t.in_flight_bytes);
    m.delivered_memory = m.delivered_memory.max(t.delivered_memory);
    m.dropped_memory = m.dropped_memory.max(t.dropped_memory);
    m.outputs = m.outputs.max(t.outputs);
}

/// The urgent-latency check: some urgent deliveries, and their p99 within `max`.
pub(super) fn urgent_latency(urgent: LatencyStats, max: Duration) -> Check {
    Check {
        name: "urgent-latency",
        ok: urgent.count > 0 && urgent.p99 <= max,
        detail: format!(
            "urgent {urgent}, bound p99 <= {:.1}ms",
            max.as_secs_f64() * 1e3
        ),
    }
}

/// The connected components of a graph on nodes `0..n`.
pub(super) struct Components(Vec<usize>);

impl Components {
    /// The components of the graph with these edges (endpoints below `n`).
    pub(super) fn of(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        let mut parent: Vec<usize> = (0..n).collect();
        for (a, b) in edges {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[ra] = rb;
        }
        let roots = (0..n).map(|i| find(&mut parent, i)).collect();
        Components(roots)
    }

    /// The name of `i`'s component: equal for two nodes exactly when they are connected.
    pub(super) fn root(&self, i: usize) -> usize {
        self.0[i]
    }
}

/// One artifact's outcome at the end of a run, for [`Deliveries::add`].
pub(super) struct Outcome<'a> {
    pub(super) figure: ArtifactFigure,
    /// Per node: first delivery latency in nanoseconds plus one (0: never).
    pub(super) first: &'a [u64],
}

/// The eventual-delivery assessment of every artifact, and the latency figures.
#[derive(Default)]
pub(super) struct Deliveries {
    /// Expected deliveries that did not happen.
    pub(super) missed: Violations,
    pub(super) expected: usize,
    pub(super) delivered: usize,
    /// Bytes the expected deliveries would take if each crossed the network once.
    pub(super) ideal: u64,
    pub(super) figures: Vec<ArtifactFigure>,
    all: Vec<Duration>,
    by_kind: Vec<(Kind, Vec<Duration>)>,
}

impl Deliveries {
    /// Adds an artifact's outcome.
    pub(super) fn add(&mut self, o: Outcome<'_>) {
        let f = o.figure;
        self.expected += f.expected;
        self.delivered += f.holders;
        self.ideal += f.size as u64 * f.expected as u64;
        for &first in o.first {
            if first > 0 {
                let d = Duration::from_nanos(first - 1);
                self.all.push(d);
                match self.by_kind.iter_mut().find(|(k, _)| *k == f.kind) {
                    Some((_, v)) => v.push(d),
                    None => self.by_kind.push((f.kind, vec![d])),
                }
            }
        }
        self.figures.push(f);
    }

    /// The eventual-delivery check.
    pub(super) fn check(&self) -> Check {
        self.missed.check(
            "eventual-delivery",
            format!("{}/{} expected deliveries", self.delivered, self.expected),
        )
    }

    /// Latency of every first delivery.
    pub(super) fn latency(&mut self) -> LatencyStats {
        LatencyStats::of(&mut self.all)
    }

    /// Latency of first deliveries per kind, by kind.
    pub(super) fn latency_by_kind(&mut self) -> Vec<(Kind, LatencyStats)> {
        let mut by_kind = std::mem::take(&mut self.by_kind);
        by_kind.sort_by_key(|(k, _)| *k);
        by_kind
            .into_iter()
            .map(|(k, mut v)| (k, LatencyStats::of(&mut v)))
            .collect()
    }
}

fn id8(b: &[u8; 32]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

fn hash_message(h: &mut RunHash, msg: &Message) {
    match msg {
        Message::Push { advert, data } => {
            h.u64(11);
            h.u64(id8(&advert.id.0));
            h.u64(data.len() as u64);
        }
        Message::Adverts(v) => {
            h.u64(12);
            h.u64(v.len() as u64);
            for a in v {
                h.u64(id8(&a.id.0) ^ a.size);
            }
        }
        Message::Withdraw(id) => {
            h.u64(13);
            h.u64(id8(&id.0));
        }
        Message::Request {
            req_id,
            id,
            priority,
        } => {
            h.u64(14);
            h.u64(*req_id);
            h.u64(id8(&id.0));
            h.u64(priority.0 as u64);
        }
        Message::Response { req_id, id, data } => {
            h.u64(15);
            h.u64(*req_id);
            h.u64(id8(&id.0));
            h.u64(data.len() as u64);
        }
        Message::NotFound { req_id, id } => {
            h.u64(16);
            h.u64(*req_id);
            h.u64(id8(&id.0));
        }
        Message::ChunkRequest {
            req_id,
            id,
            index,
            priority,
        } => {
            h.u64(17);
            h.u64(*req_id);
            h.u64(id8(&id.0));
            h.u64(u64::from(*index));
            h.u64(u64::from(priority.0));
        }
        Message::Chunk {
            req_id,
            id,
            index,
            data,
        } => {
            h.u64(18);
            h.u64(*req_id);
            h.u64(id8(&id.0));
            h.u64(u64::from(*index));
            h.u64(data.len() as u64);
        }
        Message::Have { id, ranges } => {
            h.u64(19);
            h.u64(id8(&id.0));
            h.u64(ranges.len() as u64);
            for r in ranges {
                h.u64(u64::from(r.start) << 32 | u64::from(r.end));
            }
        }
        Message::Cancel { req_id } => {
            h.u64(20);
            h.u64(*req_id);
        }
        Message::Fetching(advert) => {
            h.u64(22);
            h.u64(id8(&advert.id.0));
            h.u64(advert.size);
        }
        Message::Decline { id, ranges } => {
            h.u64(21);
            h.u64(id8(&id.0));
            h.u64(ranges.len() as u64);
            for r in ranges {
                h.u64(u64::from(r.start) << 32 | u64::from(r.end));
            }
        }
    }
}

fn hash_output(h: &mut RunHash, now: u64, node: u32, o: &Output) {
    h.u64(now);
    h.u64(node as u64);
    match o {
        Output::Send { to, msg, class } => {
            h.u64(1);
            h.u64(id8(&to.0));
            h.u64(*class as u64);
            hash_message(h, msg);
        }
        Output::Deliver { artifact, from } => {
            h.u64(2);
            h.u64(id8(&artifact.id.0));
            h.u64(id8(&from.0));
        }
        Output::Disconnect { peer, reason } => {
            h.u64(3);
            h.u64(id8(&peer.0));
            h.bytes(reason.to_string().as_bytes());
        }
        Output::HashChunk { id, index, data } => {
            h.u64(6);
            h.u64(id8(&id.0));
            h.u64(u64::from(*index));
            h.u64(data.len() as u64);
        }
        Output::Cancel { to, req_id } => {
            h.u64(5);
            h.u64(id8(&to.0));
            h.u64(*req_id);
        }
        Output::CancelPushes { to, id, ranges } => {
            h.u64(7);
            h.u64(id8(&to.0));
            h.u64(id8(&id.0));
            for r in ranges {
                h.u64(u64::from(r.start) << 32 | u64::from(r.end));
            }
        }
        Output::Event(e) => {
            h.u64(4);
            h.bytes(format!("{e:?}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_core::{ArtifactId, Class, NodeId, Time};

    #[test]
    fn violations_count_all_and_keep_the_first_details() {
        let mut v = Violations::default();
        assert_eq!(v.check("p", "fine".into()).detail, "fine");
        for i in 0..8 {
            v.add(|| format!("v{i}"));
        }
        let c = v.check("p", "fine".into());
        assert!(!c.ok);
        assert_eq!(c.detail, "8 violations: v0; v1; v2; v3; v4");
    }

    #[test]
    fn components_join_connected_nodes_only() {
        let c = Components::of(6, [(0, 1), (2, 1), (4, 5)]);
        assert_eq!(c.root(0), c.root(2));
        assert_eq!(c.root(4), c.root(5));
        assert_ne!(c.root(0), c.root(4));
        assert_ne!(c.root(3), c.root(0));
        assert_ne!(c.root(3), c.root(5));
    }

    #[test]
    fn sampling_keeps_the_largest_sizes_and_flags_nothing_for_an_idle_node() {
        let mut checks = Checks::default();
        let node = Node::new(NodeId([1; 32]), Config::default());
        checks.sample(0, &node, &Config::default(), 5);
        assert_eq!(checks.max_state, node.table_sizes());
        assert_eq!(checks.bounds.count, 0);
        let mut m = TableSizes {
            requests: 9,
            ..TableSizes::default()
        };
        raise(
            &mut m,
            &TableSizes {
                requests: 3,
                outputs: 2,
                ..TableSizes::default()
            },
        );
        assert_eq!((m.requests, m.outputs), (9, 2));
    }

    #[test]
    fn the_run_hash_tells_outputs_apart() {
        let send = |id: u8| Output::Send {
            to: NodeId([2; 32]),
            msg: Message::Withdraw(ArtifactId([id; 32])),
            class: Class::Control,
        };
        let hash = |outs: &[(u64, Output)]| {
            let mut c = Checks::default();
            for (t, o) in outs {
                c.output(*t, 0, o);
            }
            c.hash.value()
        };
        let a = hash(&[(1, send(1)), (2, send(2))]);
        assert_eq!(a, hash(&[(1, send(1)), (2, send(2))]));
        assert_ne!(a, hash(&[(1, send(2)), (2, send(1))]));
        assert_ne!(a, hash(&[(1, send(1)), (3, send(2))]));
    }

    #[test]
    fn deliveries_add_up_artifacts_and_latencies_by_kind() {
        let figure = |kind: Kind, expected, holders| ArtifactFigure {
            index: 0,
            kind,
            size: 10,
            origin: 0,
            published_at: Time::ZERO,
            expected,
            holders,
            complete_after: None,
            delivered_after: Vec::new(),
            chunks: 0,
            origin_chunk_sends: 0,
            first_chunk_out: None,
            all_chunks_out: None,
        };
        let mut d = Deliveries::default();
        d.add(Outcome {
            figure: figure(Kind(2), 2, 2),
            first: &[0, 5_000_001, 7_000_001],
        });
        d.add(Outcome {
            figure: figure(Kind(1), 2, 1),
            first: &[0, 1_000_001, 0],
        });
        assert_eq!((d.expected, d.delivered, d.ideal), (4, 3, 40));
        assert_eq!(d.check().detail, "3/4 expected deliveries");
        let by_kind = d.latency_by_kind();
        assert_eq!(by_kind[0].0, Kind(1));
        assert_eq!(by_kind[1].1.max, Duration::from_millis(7));
        assert_eq!(d.latency().count, 3);
    }
}
