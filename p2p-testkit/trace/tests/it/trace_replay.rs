//! Record a small subnet of cores, replay every node's trace, and check divergences are found
//! where they start.

use p2p_core::{
    Advert, Artifact, ArtifactId, Config, Decision, Input, Kind, Message, NodeId, Output, Priority,
    PriorityFnRef, RequestId, Time,
};
use p2p_trace::{
    DecisionDivergence, DivergenceKind, MessageRec, OutputRec, PriorityProfile, Record, Recorder,
    Trace, replay,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const MS: u64 = 1_000_000;

/// A tiny discrete-event network of recorded cores with per-link latency.
struct Net {
    ids: Vec<NodeId>,
    nodes: Vec<Recorder<Vec<u8>>>,
    queue: BTreeMap<(u64, u64), (usize, Input)>,
    seq: u64,
    now: u64,
    delivered: Vec<(usize, ArtifactId)>,
}

impl Net {
    fn new(profiles: &[PriorityProfile]) -> Net {
        let ids: Vec<NodeId> = (0..profiles.len())
            .map(|i| NodeId([i as u8 + 1; 32]))
            .collect();
        let nodes = ids
            .iter()
            .zip(profiles)
            .enumerate()
            .map(|(i, (id, p))| {
                let cfg = Config {
                    seed: 42 + i as u64,
                    ..Config::default()
                };
                Recorder::create(*id, cfg, p.clone(), Vec::new()).unwrap()
            })
            .collect();
        Net {
            ids,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            now: 0,
            delivered: Vec::new(),
        }
    }

    /// Nodes that record their own priority functions (any closures) by their decisions.
    fn with_decisions(fns: Vec<PriorityFnRef>) -> Net {
        let ids: Vec<NodeId> = (0..fns.len()).map(|i| NodeId([i as u8 + 1; 32])).collect();
        let nodes = ids
            .iter()
            .zip(fns)
            .enumerate()
            .map(|(i, (id, f))| {
                let cfg = Config {
                    seed: 42 + i as u64,
                    priority_fn: f,
                    ..Config::default()
                };
                Recorder::with_decisions(*id, cfg, Vec::new()).unwrap()
            })
            .collect();
        Net {
            ids,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            now: 0,
            delivered: Vec::new(),
        }
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids.iter().position(|i| *i == id).unwrap()
    }

    fn at(&mut self, t: u64, dst: usize, input: Input) {
        self.seq += 1;
        self.queue.insert((t, self.seq), (dst, input));
    }

    fn feed(&mut self, dst: usize, input: Input) {
        let _ = self.nodes[dst].handle_input(Time::from_nanos(self.now), input);
        while let Some(out) = self.nodes[dst].poll_output() {
            match out {
                Output::Send { to, msg, .. } => {
                    let j = self.index(to);
                    let latency = (5 + dst as u64 + j as u64) * MS + msg.payload_len() as u64 * 100;
                    let from = self.ids[dst];
                    self.at(self.now + latency, j, Input::Message { from, msg });
                }
                Output::Deliver { artifact, .. } => self.delivered.push((dst, artifact.id)),
                Output::HashChunk { id, index, data } => {
                    // A driver hashing off the node's task: the digest comes back a little later.
                    let digest = p2p_core::chunks::sha256(&data);
                    self.at(self.now + MS, dst, Input::ChunkHashed { id, index, digest });
                }
                Output::Disconnect { .. }
                | Output::Cancel { .. }
                | Output::CancelPushes { .. }
                | Output::Event(_) => {}
            }
        }
    }

    fn run_until(&mut self, end: u64) {
        loop {
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_timer = (0..self.nodes.len())
                .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t.as_nanos(), i)))
                .min();
            let take_timer = match (next_msg, next_timer) {
                (None, None) => break,
                (Some(m), Some((t, _))) => t < m,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if take_timer {
                let (t, i) = next_timer.unwrap();
                if t > end {
                    break;
                }
                self.now = self.now.max(t);
                self.feed(i, Input::Timeout);
            } else {
                let key = *self.queue.keys().next().unwrap();
                if key.0 > end {
                    break;
                }
                let (dst, input) = self.queue.remove(&key).unwrap();
                self.now = self.now.max(key.0);
                self.feed(dst, input);
            }
        }
        self.now = self.now.max(end);
    }

    fn finish(self) -> Vec<Vec<u8>> {
        self.nodes
            .into_iter()
            .map(|r| {
                assert!(r.write_error().is_none());
                r.finish().unwrap().1
            })
            .collect()
    }
}

fn artifact(kind: u16, len: usize, fill: u8) -> Artifact {
    Artifact::new(Kind(kind), vec![fill, 1], vec![fill; len])
}

struct Run {
    traces: Vec<Vec<u8>>,
    delivered: Vec<(usize, ArtifactId)>,
    /// Published by node 1: 2000 bytes, over the default push threshold.
    medium: Artifact,
    /// Published by node 0, kind 1, which node 1's profile fetches at 255.
    urgent: Artifact,
    artifacts: Vec<ArtifactId>,
}

/// How the priority functions of [`recorded_run_with`] are recorded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Named profiles: node 1 runs `by-kind:1=255,2=0;default=fetch:128`, the others fetch all;
    /// node 0 changes to `by-kind:1=200;default=fetch:100` at 100 ms.
    Profiles,
    /// Closures recorded by their decisions. Node 1's decides kind 1 at 255 and kind 2 at 0 like
    /// the profile, but other kinds by how often it was called before (state no trace names),
    /// between 120 and 135; node 0 swaps in a closure over an atomic priority at 100 ms.
    Decisions,
}

/// `n` nodes (2 to 4) over ten seconds of virtual time: publishes of every size, a removal,
/// congestion, a rejected publish, a priority change, timers, and a protocol violation at the
/// end; with four nodes also a disconnect and reconnect.
fn recorded_run(n: usize) -> Run {
    recorded_run_with(n, Mode::Profiles)
}

fn recorded_run_with(n: usize, mode: Mode) -> Run {
    let mut net = match mode {
        Mode::Profiles => {
            let mut profiles = vec![PriorityProfile::FetchAll; n];
            profiles[1] = "by-kind:1=255,2=0;default=fetch:128".parse().unwrap();
            Net::new(&profiles)
        }
        Mode::Decisions => {
            let mut fns = vec![PriorityFnRef::fetch_all(); n];
            let calls = AtomicU64::new(0);
            fns[1] = PriorityFnRef::new(move |a: &Advert| {
                let c = calls.fetch_add(1, Ordering::Relaxed);
                match a.kind.0 {
                    1 => Decision::Fetch(Priority::URGENT),
                    2 => Decision::Fetch(Priority(0)),
                    _ => Decision::Fetch(Priority(120 + (c % 16) as u8)),
                }
            });
            Net::with_decisions(fns)
        }
    };
    let ids = net.ids.clone();
    for i in 0..n {
        net.at(
            0,
            i,
            Input::Membership {
                version: 1,
                members: ids.clone(),
            },
        );
        for (j, peer) in ids.iter().enumerate() {
            if i != j {
                net.at(0, i, Input::PeerConnected(*peer));
            }
        }
    }
    let small = artifact(0, 500, 1);
    let urgent = artifact(1, 4096, 2);
    let medium = artifact(0, 2000, 3);
    let bulk = artifact(2, 100_000, 4);
    let late = artifact(1, 3000, 5);
    net.at(MS, 0, Input::Publish(small.clone()));
    net.at(MS, 0, Input::Publish(urgent.clone()));
    net.at(2 * MS, 1, Input::Publish(medium.clone()));
    net.at(3 * MS, 1, Input::Publish(bulk.clone()));
    let mut bad = artifact(0, 10, 6);
    bad.id = ArtifactId([9; 32]);
    net.at(3 * MS, 0, Input::Publish(bad));
    net.at(
        4 * MS,
        0,
        Input::Congestion {
            peer: ids[1],
            congested: true,
        },
    );
    net.at(
        40 * MS,
        0,
        Input::Congestion {
            peer: ids[1],
            congested: false,
        },
    );
    net.at(2 * MS, 1, Input::Reevaluate);
    if n >= 4 {
        net.at(61 * MS, 0, Input::PeerDisconnected(ids[3]));
        net.at(61 * MS, 3, Input::PeerDisconnected(ids[0]));
        net.at(200 * MS, 0, Input::PeerConnected(ids[3]));
        net.at(200 * MS, 3, Input::PeerConnected(ids[0]));
    }
    net.at(300 * MS, 0, Input::Remove(small.id));
    net.run_until(100 * MS);
    match mode {
        Mode::Profiles => {
            net.nodes[0].set_priority_profile(&"by-kind:1=200;default=fetch:100".parse().unwrap())
        }
        Mode::Decisions => {
            let high = Arc::new(AtomicU64::new(200));
            net.nodes[0].set_priority_fn(PriorityFnRef::new(move |a: &Advert| {
                if a.kind.0 == 1 {
                    Decision::Fetch(Priority(high.load(Ordering::Relaxed) as u8))
                } else {
                    Decision::Fetch(Priority(100))
                }
            }));
        }
    }
    net.at(400 * MS, 0, Input::Publish(late.clone()));
    // In decisions mode node 1 publishes one more kind 1 artifact, so node 0's new function
    // decides after the swap.
    let after_swap = artifact(1, 2500, 7);
    if mode == Mode::Decisions {
        net.at(500 * MS, 1, Input::Publish(after_swap.clone()));
    }
    // Node 0 "answers" a request node 1 never made: a protocol violation.
    net.at(
        9_000 * MS,
        1,
        Input::Message {
            from: ids[0],
            msg: Message::NotFound {
                req_id: 999 as RequestId,
                id: small.id,
            },
        },
    );
    net.run_until(10_000 * MS);
    let delivered = net.delivered.clone();
    Run {
        traces: net.finish(),
        delivered,
        artifacts: match mode {
            Mode::Profiles => vec![small.id, urgent.id, medium.id, bulk.id, late.id],
            Mode::Decisions => vec![
                small.id,
                urgent.id,
                medium.id,
                bulk.id,
                late.id,
                after_swap.id,
            ],
        },
        medium,
        urgent,
    }
}

/// The first line where two traces differ, for readable failures.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let (la, lb): (Vec<&[u8]>, Vec<&[u8]>) = (
        a.split(|&c| c == b'\n').collect(),
        b.split(|&c| c == b'\n').collect(),
    );
    (0..la.len().max(lb.len()))
        .find(|&i| la.get(i) != lb.get(i))
        .map(|i| i + 1)
}

fn parse(bytes: &[u8]) -> Trace {
    Trace::parse_bytes(bytes).unwrap()
}

// The core's tables hash with a key derived from the configured seed, so their iteration order
// (which reaches the outputs once a node has several peers) is the same on every run; the
// four-node tests check it.

fn assert_every_node_replays(n: usize) {
    assert_every_node_replays_with(n, Mode::Profiles);
}

fn assert_every_node_replays_with(n: usize, mode: Mode) {
    let run = recorded_run_with(n, mode);
    // The run is worth replaying: every node got every artifact it did not publish.
    for id in &run.artifacts {
        let holders = run.delivered.iter().filter(|(_, a)| a == id).count();
        assert_eq!(
            holders,
            n - 1,
            "artifact {id:?} delivered to {holders} nodes"
        );
    }
    for (i, bytes) in run.traces.iter().enumerate() {
        let trace = parse(bytes);
        let outputs = trace
            .entries
            .iter()
            .filter(|e| e.record.is_output())
            .count();
        let inputs = trace.entries.iter().filter(|e| e.record.is_input()).count();
        assert!(
            outputs > 8 && inputs > 8,
            "node {i}: {inputs} inputs, {outputs} outputs"
        );
        let report = replay(&trace);
        assert!(
            report.is_identical(),
            "node {i}: {}",
            report.divergence.unwrap()
        );
        assert_eq!(report.outputs_matched, outputs);
        assert_eq!(report.inputs, inputs);
        assert_eq!(report.outputs_pending, 0);
    }
    // The rejected publish, the priority change (or the decisions) and the violation are in
    // the traces.
    let t0 = parse(&run.traces[0]);
    assert!(
        t0.entries
            .iter()
            .any(|e| matches!(e.record, Record::Error { .. }))
    );
    assert_eq!(t0.header.decisions, mode == Mode::Decisions);
    let swapped = |e: &p2p_trace::Entry| match (&e.record, mode) {
        (Record::Priority { .. }, Mode::Profiles) => true,
        (Record::Decisions { decisions, .. }, Mode::Decisions) => decisions
            .iter()
            .any(|d| d.decision == Decision::Fetch(Priority(200))),
        _ => false,
    };
    assert!(t0.entries.iter().any(swapped));
    let t1 = parse(&run.traces[1]);
    assert!(t1.entries.iter().any(|e| matches!(
        e.record,
        Record::Out {
            output: OutputRec::Disconnect { .. },
            ..
        }
    )));
}

fn assert_recording_is_deterministic(n: usize) {
    let (a, b) = (recorded_run(n), recorded_run(n));
    for (i, (x, y)) in a.traces.iter().zip(&b.traces).enumerate() {
        assert_eq!(
            first_difference(x, y),
            None,
            "node {i}: traces differ at this line"
        );
    }
}

#[test]
fn every_node_of_a_two_node_run_replays_to_identical_outputs() {
    assert_every_node_replays(2);
}

#[test]
fn every_node_of_a_four_node_run_replays_to_identical_outputs() {
    assert_every_node_replays(4);
}

#[test]
fn every_node_of_runs_with_closures_recorded_by_their_decisions_replays_identically() {
    assert_every_node_replays_with(2, Mode::Decisions);
    assert_every_node_replays_with(4, Mode::Decisions);
}

#[test]
fn recording_decisions_is_deterministic_and_changes_nothing_the_nodes_do() {
    let (a, b) = (
        recorded_run_with(4, Mode::Decisions),
        recorded_run_with(4, Mode::Decisions),
    );
    for (i, (x, y)) in a.traces.iter().zip(&b.traces).enumerate() {
        assert_eq!(first_difference(x, y), None, "node {i}: traces differ");
    }
    // The same closures unrecorded: the same outputs as the recorded run, one by one.
    let trace = parse(&a.traces[1]);
    let mut cfg = trace.header.config.clone();
    let calls = AtomicU64::new(0);
    cfg.priority_fn = PriorityFnRef::new(move |a: &Advert| {
        let c = calls.fetch_add(1, Ordering::Relaxed);
        match a.kind.0 {
            1 => Decision::Fetch(Priority::URGENT),
            2 => Decision::Fetch(Priority(0)),
            _ => Decision::Fetch(Priority(120 + (c % 16) as u8)),
        }
    });
    let mut node = p2p_core::Node::new(trace.header.node, cfg);
    let mut outputs = 0;
    for e in &trace.entries {
        match &e.record {
            Record::In { t, input } => {
                let _ = node.handle_input(Time::from_nanos(*t), input.to_input().unwrap());
            }
            Record::Out { output, .. } => {
                let out = node
                    .poll_output()
                    .expect("the unrecorded node produces it too");
                let inline_max = trace.header.output_payload_inline_max;
                assert_eq!(&OutputRec::from_output(&out, inline_max), output);
                outputs += 1;
            }
            _ => {}
        }
    }
    assert!(outputs > 8);
}

/// Node 1's trace of a decisions run, and the index of its first decisions record.
fn decisions_trace() -> (Trace, usize) {
    let run = recorded_run_with(2, Mode::Decisions);
    let trace = parse(&run.traces[1]);
    let k = trace
        .entries
        .iter()
        .position(
            |e| matches!(&e.record, Record::Decisions { decisions, .. } if !decisions.is_empty()),
        )
        .expect("a decisions record");
    (trace, k)
}

fn decisions_mut(trace: &mut Trace, k: usize) -> &mut Vec<p2p_trace::DecisionRec> {
    match &mut trace.entries[k].record {
        Record::Decisions { decisions, .. } => decisions,
        _ => unreachable!(),
    }
}

#[test]
fn a_tampered_decision_is_a_divergence_not_a_panic() {
    // Another answer: the node then does something else, found at that output.
    let (mut trace, k) = decisions_trace();
    decisions_mut(&mut trace, k)[0].decision = Decision::Drop;
    let d = replay(&trace)
        .divergence
        .expect("a dropped advert changes outputs");
    assert!(d.index > k, "{d}");
    assert!(
        matches!(
            d.kind,
            DivergenceKind::OutputMismatch { .. } | DivergenceKind::MissingOutput { .. }
        ),
        "{d}"
    );

    // Another advert id: found at the decisions record.
    let (mut trace, k) = decisions_trace();
    let asked = decisions_mut(&mut trace, k)[0].id;
    decisions_mut(&mut trace, k)[0].id = ArtifactId([0xee; 32]);
    let d = replay(&trace).divergence.expect("another advert");
    assert_eq!(d.index, k, "{d}");
    assert_eq!(
        d.kind,
        DivergenceKind::Decision(DecisionDivergence::Mismatch {
            expected: ArtifactId([0xee; 32]),
            actual: asked
        })
    );
    assert!(d.to_string().contains("priority function"), "{d}");

    // One answer fewer, and one more.
    let (mut trace, k) = decisions_trace();
    let last = decisions_mut(&mut trace, k).pop().unwrap();
    let d = replay(&trace).divergence.expect("an answer missing");
    assert_eq!(d.index, k);
    assert_eq!(
        d.kind,
        DivergenceKind::Decision(DecisionDivergence::Missing { actual: last.id })
    );
    let (mut trace, k) = decisions_trace();
    decisions_mut(&mut trace, k).push(last);
    let d = replay(&trace).divergence.expect("an answer too many");
    assert_eq!(d.index, k);
    assert!(matches!(
        d.kind,
        DivergenceKind::Decision(DecisionDivergence::Unused { remaining: 1, .. })
    ));

    // The whole record gone: the node asks with nothing recorded.
    let (mut trace, k) = decisions_trace();
    trace.entries.remove(k);
    let d = replay(&trace).divergence.expect("no answers");
    assert!(matches!(
        d.kind,
        DivergenceKind::Decision(DecisionDivergence::Missing { .. })
    ));
}

#[test]
fn a_decisions_trace_written_back_parses_and_replays_identically() {
    let run = recorded_run_with(2, Mode::Decisions);
    let trace = parse(&run.traces[1]);
    let mut out = Vec::new();
    trace.write_to(&mut out).unwrap();
    assert_eq!(first_difference(&out, &run.traces[1]), None);
    assert!(replay(&parse(&out)).is_identical());
}

#[test]
fn recording_a_two_node_run_is_deterministic_bit_for_bit() {
    assert_recording_is_deterministic(2);
}

#[test]
fn recording_a_four_node_run_is_deterministic_bit_for_bit() {
    assert_recording_is_deterministic(4);
}

#[test]
fn a_trace_written_back_replays_identically() {
    let run = recorded_run(2);
    let trace = parse(&run.traces[1]);
    let mut out = Vec::new();
    trace.write_to(&mut out).unwrap();
    assert_eq!(first_difference(&out, &run.traces[1]), None);
}

#[test]
fn replay_with_a_larger_push_threshold_diverges_at_the_first_output_of_the_publish() {
    let run = recorded_run(2);
    let mut trace = parse(&run.traces[1]);
    let publish = trace
        .entries
        .iter()
        .position(|e| {
            matches!(&e.record, Record::In { input: p2p_trace::InputRec::Publish { id, .. }, .. } if *id == run.medium.id)
        })
        .unwrap();
    let expected_at = publish + 1;
    assert!(trace.entries[expected_at].record.is_output());
    trace.header.config.push_threshold = 4096;
    let report = replay(&trace);
    let d = report
        .divergence
        .expect("a push threshold over the size must change the publish");
    assert_eq!(d.index, expected_at, "{d}");
    assert_eq!(d.line, trace.entries[expected_at].line);
    assert_eq!(d.preceding_input.as_ref().map(|e| e.index), Some(publish));
    assert!(d.context.len() <= 5 && d.context.last().map(|e| e.index) == Some(publish));
    match d.kind {
        DivergenceKind::OutputMismatch { expected, actual } => {
            assert!(matches!(
                expected,
                OutputRec::Send {
                    msg: MessageRec::Adverts { .. },
                    ..
                }
            ));
            assert!(matches!(
                actual,
                OutputRec::Send {
                    msg: MessageRec::Push { .. },
                    ..
                }
            ));
        }
        other => panic!("unexpected divergence {other:?}"),
    }
    // Everything before the publish matched.
    let outputs_before = trace.entries[..publish]
        .iter()
        .filter(|e| e.record.is_output())
        .count();
    assert_eq!(report.outputs_matched, outputs_before);
}

#[test]
fn replay_with_another_priority_profile_diverges_at_the_first_reprioritized_request() {
    let run = recorded_run(2);
    let mut trace = parse(&run.traces[1]);
    let expected_at = trace
        .entries
        .iter()
        .position(|e| {
            matches!(&e.record, Record::Out { output: OutputRec::Send { msg: MessageRec::Request { id, priority, .. }, .. }, .. }
                if *id == run.urgent.id && *priority == Priority::URGENT.0)
        })
        .expect("node 1 requested the kind-1 artifact at 255");
    trace.header.priority = PriorityProfile::FetchAll;
    let d = replay(&trace)
        .divergence
        .expect("fetch-all requests at 128");
    assert_eq!(d.index, expected_at, "{d}");
    match d.kind {
        DivergenceKind::OutputMismatch {
            expected:
                OutputRec::Send {
                    msg: MessageRec::Request { priority: 255, .. },
                    ..
                },
            actual:
                OutputRec::Send {
                    msg: MessageRec::Request { priority: 128, .. },
                    ..
                },
        } => {}
        other => panic!("unexpected divergence {other:?}"),
    }
}

#[test]
fn a_trace_missing_an_output_record_diverges_at_that_record() {
    let run = recorded_run(2);
    let mut trace = parse(&run.traces[0]);
    // The first output record: the node still produces it, so the next output record (the
    // first one compared after the removal) no longer matches.
    let k = trace
        .entries
        .iter()
        .position(|e| e.record.is_output())
        .unwrap();
    let removed = trace.entries.remove(k);
    let next_out = k + trace.entries[k..]
        .iter()
        .position(|e| e.record.is_output())
        .unwrap();
    let d = replay(&trace)
        .divergence
        .expect("the node still produces the removed output");
    assert_eq!(d.index, next_out);
    let Record::Out { output, .. } = removed.record else {
        unreachable!()
    };
    match d.kind {
        DivergenceKind::OutputMismatch { actual, .. } => assert_eq!(actual, output),
        other => panic!("unexpected divergence {other:?}"),
    }
}

#[test]
fn outputs_never_drained_by_the_recorder_are_counted_not_divergent() {
    let run = recorded_run(2);
    let mut trace = parse(&run.traces[0]);
    let last = trace
        .entries
        .iter()
        .rposition(|e| e.record.is_output())
        .unwrap();
    trace.entries.truncate(last);
    let report = replay(&trace);
    assert!(report.is_identical());
    assert_eq!(report.outputs_pending, 1);
}

#[test]
fn a_trace_missing_an_input_error_diverges_at_that_input() {
    let run = recorded_run(2);
    let mut trace = parse(&run.traces[0]);
    let k = trace
        .entries
        .iter()
        .position(|e| matches!(e.record, Record::Error { .. }))
        .unwrap();
    trace.entries.remove(k);
    let d = replay(&trace)
        .divergence
        .expect("the node still rejects the publish");
    assert_eq!(d.index, k);
    assert_eq!(d.preceding_input.unwrap().index, k - 1);
    match d.kind {
        DivergenceKind::InputResult {
            expected: None,
            actual: Some(e),
        } => {
            assert!(e.contains("SHA-256"), "{e}");
        }
        other => panic!("unexpected divergence {other:?}"),
    }
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/trace")
}

/// The trace fuzz target's seed corpus is replayed here so CI keeps it alive. Set
/// `P2P_WRITE_TRACE_CORPUS=1` to regenerate its version 2 seeds (`decisions-*`) from a
/// recorded two-node run; the version 1 seeds (`head-*`, `cut-*`) stay as written by version 1.
#[test]
fn trace_fuzz_corpus_parses_and_round_trips() {
    let dir = corpus_dir();
    if std::env::var_os("P2P_WRITE_TRACE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, t) in recorded_run_with(2, Mode::Decisions)
            .traces
            .iter()
            .enumerate()
        {
            // Small seeds: the header and the first records, and a copy cut mid-record.
            let head: Vec<&[u8]> = t.split_inclusive(|b| *b == b'\n').take(16).collect();
            std::fs::write(dir.join(format!("decisions-head-{i}.jsonl")), head.concat()).unwrap();
            std::fs::write(
                dir.join(format!("decisions-cut-{i}.jsonl")),
                &t[..3000.min(t.len())],
            )
            .unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        p2p_trace::fuzz_parse(&data);
        n += 1;
    }
    assert!(n >= 8, "the corpus has {n} files");
}

/// Traces of format version 1 (named profiles, no decisions) still parse and replay.
#[test]
fn version_1_traces_of_the_corpus_parse_and_replay_identically() {
    for i in 0..2 {
        let path = corpus_dir().join(format!("head-{i}.jsonl"));
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(b"{\"format\":\"p2p-trace\",\"version\":1,"));
        let trace = Trace::parse_bytes(&text).unwrap();
        assert!(!trace.header.decisions);
        assert!(trace.entries.len() >= 8);
        let report = replay(&trace);
        assert!(
            report.is_identical(),
            "{}: {}",
            path.display(),
            report.divergence.unwrap()
        );
        assert!(
            report.inputs >= 1 && report.outputs_matched >= 1,
            "{report:?}"
        );
    }
}
