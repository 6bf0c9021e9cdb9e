//! Record a small subnet of cores, replay every node's trace, and check divergences are found
//! where they start.

use p2p_core::{
    Artifact, ArtifactId, Config, Input, Kind, Message, NodeId, Output, Priority, RequestId, Time,
};
use p2p_trace::{
    DivergenceKind, MessageRec, OutputRec, PriorityProfile, Record, Recorder, Trace, replay,
};
use std::collections::BTreeMap;

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
                Output::Disconnect { .. } | Output::Event(_) => {}
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

/// `n` nodes (2 to 4) over ten seconds of virtual time: publishes of every size, a removal,
/// congestion, a rejected publish, a priority change, timers, and a protocol violation at the
/// end; with four nodes also a disconnect and reconnect.
fn recorded_run(n: usize) -> Run {
    let mut profiles = vec![PriorityProfile::FetchAll; n];
    profiles[1] = "by-kind:1=255,2=0;default=fetch:128".parse().unwrap();
    let mut net = Net::new(&profiles);
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
    net.nodes[0].set_priority_profile(&"by-kind:1=200;default=fetch:100".parse().unwrap());
    net.at(400 * MS, 0, Input::Publish(late.clone()));
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
        artifacts: vec![small.id, urgent.id, medium.id, bulk.id, late.id],
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
    let run = recorded_run(n);
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
    // The rejected publish, the priority change and the violation are in the traces.
    let t0 = parse(&run.traces[0]);
    assert!(
        t0.entries
            .iter()
            .any(|e| matches!(e.record, Record::Error { .. }))
    );
    assert!(
        t0.entries
            .iter()
            .any(|e| matches!(e.record, Record::Priority { .. }))
    );
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

/// The trace fuzz target's seed corpus is replayed here so CI keeps it alive. Set
/// `P2P_WRITE_TRACE_CORPUS=1` to regenerate the corpus from a recorded two-node run.
#[test]
fn trace_fuzz_corpus_parses_and_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/trace");
    if std::env::var_os("P2P_WRITE_TRACE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, t) in recorded_run(2).traces.iter().enumerate() {
            // Small seeds: the header and the first records, and a copy cut mid-record.
            let head: Vec<&[u8]> = t.split_inclusive(|b| *b == b'\n').take(12).collect();
            std::fs::write(dir.join(format!("head-{i}.jsonl")), head.concat()).unwrap();
            std::fs::write(dir.join(format!("cut-{i}.jsonl")), &t[..3000.min(t.len())]).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        p2p_trace::fuzz_parse(&data);
        n += 1;
    }
    assert!(n >= 4, "the corpus has {n} files");
}
