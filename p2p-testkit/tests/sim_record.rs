//! Recording simulated nodes: a node recorded during a scenario with faults replays to identical
//! outputs, a changed config diverges where it first matters, a crash ends an incarnation's trace
//! and a restart starts the next one.

use p2p_core::{Decision, Priority};
use p2p_testkit::sim::{
    BULK, ByzKind, NORMAL, RecordedTrace, Report, Scenario, TraceSink, URGENT, named,
};
use p2p_testkit::trace::{
    DivergenceKind, InputRec, MessageRec, OutputRec, PriorityProfile, Record, Trace, replay,
    replay_with_node,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn parse(t: &RecordedTrace) -> Trace {
    let data = t.data.as_ref().expect("an in-memory trace keeps its bytes");
    Trace::parse_bytes(data).expect("the simulator writes a valid trace")
}

fn count(trace: &Trace, f: impl Fn(&Record) -> bool) -> usize {
    trace.entries.iter().filter(|e| f(&e.record)).count()
}

/// Asserts that `trace` replays on a fresh node with every recorded output reproduced.
fn assert_replays_identically(trace: &Trace) {
    let r = replay(trace);
    if let Some(d) = &r.divergence {
        panic!("replay diverged:\n{d}");
    }
    assert_eq!(r.inputs, count(trace, Record::is_input));
    assert_eq!(r.outputs_matched, count(trace, Record::is_output));
    assert_eq!(r.outputs_pending, 0, "the simulator drains every output");
}

fn conn_drop_recording() -> (Report, Trace) {
    let report = named("conn-drop", 0)
        .expect("conn-drop is in the catalog")
        .record(0, TraceSink::Memory)
        .run();
    report.assert_passed();
    assert_eq!(report.traces.len(), 1, "{report}");
    let trace = parse(&report.traces[0]);
    (report, trace)
}

#[test]
fn a_node_recorded_under_dropped_connections_replays_to_identical_outputs() {
    let (report, trace) = conn_drop_recording();
    let t = &report.traces[0];
    assert_eq!((t.node, t.incarnation, t.ended_by_crash), (0, 1, false));
    assert_eq!(t.records as usize, trace.entries.len());
    assert!(t.error.is_none());
    assert!(
        report.check("trace-recording").is_some_and(|c| c.ok),
        "{report}"
    );
    // The faults reached the recorded node: its connections dropped and came back.
    let disconnects = count(&trace, |r| {
        matches!(
            r,
            Record::In {
                input: InputRec::PeerDisconnected { .. },
                ..
            }
        )
    });
    assert!(disconnects > 0, "node 0 saw no dropped connection");
    let deliveries = count(&trace, |r| {
        matches!(
            r,
            Record::Out {
                output: OutputRec::Deliver { .. },
                ..
            }
        )
    });
    assert!(deliveries > 0, "node 0 received nothing");
    assert_eq!(
        trace.header.priority,
        PriorityProfile::ByKind {
            table: vec![(URGENT, Priority::URGENT), (BULK, Priority::BULK)],
            default: Decision::Fetch(Priority::NORMAL),
        }
    );
    assert_replays_identically(&trace);
}

#[test]
fn a_lower_push_threshold_diverges_at_the_first_push() {
    let (_, trace) = conn_drop_recording();
    // conn-drop publishes 600-byte urgent artifacts: under the default 1 KiB threshold their
    // origin pushes them; under 100 bytes the node must advertise its own instead, and a push
    // it receives is a protocol violation. Either way the first push is where replay departs.
    let is_push = |m: &MessageRec| matches!(m, MessageRec::Push { .. });
    let first_push = trace
        .entries
        .iter()
        .position(|e| match &e.record {
            Record::Out {
                output: OutputRec::Send { msg, .. },
                ..
            } => is_push(msg),
            Record::In {
                input: InputRec::Message { msg, .. },
                ..
            } => is_push(msg),
            _ => false,
        })
        .expect("node 0 pushed or received urgent artifacts");
    let mut header = trace.header.clone();
    header.config.push_threshold = 100;
    let r = replay_with_node(&trace, header.build_node());
    let d = r
        .divergence
        .expect("a lower push threshold changes the outputs");
    assert!(
        d.index >= first_push,
        "diverged before the first push:\n{d}"
    );
    let outputs_before = trace.entries[..first_push]
        .iter()
        .filter(|e| e.record.is_output())
        .count();
    assert_eq!(
        r.outputs_matched, outputs_before,
        "every output before the first push still matches, and none after it"
    );
    match d.kind {
        DivergenceKind::OutputMismatch { expected, actual } => {
            let pushed = matches!(&expected, OutputRec::Send { msg, .. } if is_push(msg));
            let advertised = matches!(
                &actual,
                OutputRec::Send {
                    msg: MessageRec::Adverts { .. },
                    ..
                }
            );
            let delivered = matches!(&expected, OutputRec::Deliver { .. });
            assert!(
                (pushed && advertised) || delivered,
                "expected a push turned advert, or a received push no longer delivered: \
                 {expected:?} -> {actual:?}"
            );
        }
        other => panic!("expected an output mismatch, got {other:?}"),
    }
}

/// A fresh directory for this test's files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-sim-record-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

#[test]
fn a_crash_ends_the_trace_and_the_restart_records_a_fresh_incarnation() {
    let dir = scratch_dir("crash");
    let file = dir.join("node1.jsonl");
    // crash-restart: node 5 crashes at 60 ms and restarts at 1.5 s, node 1 at 80 ms and 2 s.
    let report = named("crash-restart", 0)
        .expect("crash-restart is in the catalog")
        .record(5, TraceSink::Memory)
        .record(1, file.clone())
        .run();
    report.assert_passed();
    let of = |node: usize| -> Vec<&RecordedTrace> {
        report.traces.iter().filter(|t| t.node == node).collect()
    };
    for (node, crash, restart) in [(5, ms(60), ms(1_500)), (1, ms(80), ms(2_000))] {
        let t = of(node);
        assert_eq!(
            t.len(),
            2,
            "node {node}: one trace per incarnation\n{report}"
        );
        assert_eq!(t[0].incarnation, 1);
        assert!(t[0].ended_by_crash);
        assert_eq!(t[0].ended_at.as_nanos(), crash.as_nanos() as u64);
        assert_eq!(t[1].incarnation, 2);
        assert_eq!(t[1].started_at.as_nanos(), restart.as_nanos() as u64);
        assert!(!t[1].ended_by_crash);
    }
    let memory: Vec<Trace> = of(5).into_iter().map(parse).collect();
    let paths: Vec<PathBuf> = of(1).iter().map(|t| t.path.clone().unwrap()).collect();
    assert_eq!(paths, [file.clone(), dir.join("node1-restart1.jsonl")]);
    let files: Vec<Trace> = paths
        .iter()
        .map(|p| Trace::read_file(p).expect("the trace file parses"))
        .collect();
    for traces in [&memory, &files] {
        // A restarted node is a fresh core with its own seed.
        assert_ne!(traces[0].header.config.seed, traces[1].header.config.seed);
        assert_eq!(traces[0].header.node, traces[1].header.node);
        for t in traces {
            assert_replays_identically(t);
        }
    }
    // The first incarnation's trace stops at the crash; the second starts at the restart.
    let last_t = |t: &Trace| t.entries.last().map(|e| e.record.t()).unwrap();
    let first_t = |t: &Trace| t.entries.first().map(|e| e.record.t()).unwrap();
    assert!(last_t(&memory[0]) <= ms(60).as_nanos() as u64);
    assert_eq!(first_t(&memory[1]), ms(1_500).as_nanos() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_custom_priority_table_is_named_in_the_header_and_replays() {
    let buf = Shared::default();
    let sink = {
        let buf = buf.clone();
        TraceSink::writer(move |node, incarnation| {
            assert_eq!((node, incarnation), (2, 1));
            Ok(Box::new(buf.clone()) as Box<dyn Write + Send>)
        })
    };
    // Bulk is dropped: node 2 must never fetch the bulk artifact, and the replay must agree.
    let table = vec![(URGENT, Priority::URGENT), (NORMAL, Priority(9))];
    let report = Scenario::new(3)
        .nodes(4)
        .priorities(table.clone(), Decision::Drop)
        .publish(ms(0), 0, URGENT, 300)
        .publish(ms(1), 1, BULK, 5_000)
        .publish(ms(2), 3, NORMAL, 4_000)
        .record(2, sink)
        .check_determinism()
        .run();
    report.assert_passed();
    assert_eq!(
        report.traces.len(),
        1,
        "only the first of the two runs records"
    );
    let data = buf.0.lock().unwrap().clone();
    let trace = Trace::parse_bytes(&data).unwrap();
    assert_eq!(
        trace.header.priority,
        PriorityProfile::ByKind {
            table,
            default: Decision::Drop
        }
    );
    let delivered: Vec<u16> = trace
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Out {
                output: OutputRec::Deliver { kind, .. },
                ..
            } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered.len(),
        2,
        "urgent and normal, not bulk: {delivered:?}"
    );
    assert!(!delivered.contains(&BULK.0));
    assert_replays_identically(&trace);
}

#[test]
fn the_priority_profile_names_the_scenarios_priority_function() {
    let s = Scenario::new(0);
    assert_eq!(
        s.priority_profile(),
        PriorityProfile::ByKind {
            table: vec![(URGENT, Priority::URGENT), (BULK, Priority::BULK)],
            default: Decision::Fetch(Priority::NORMAL),
        }
    );
    let fetch_all = Scenario::new(0).priorities(Vec::new(), Decision::Fetch(Priority::NORMAL));
    assert_eq!(fetch_all.priority_profile(), PriorityProfile::FetchAll);
    let later = Scenario::new(0).priorities(Vec::new(), Decision::Later);
    assert_eq!(
        later.priority_profile(),
        PriorityProfile::ByKind {
            table: Vec::new(),
            default: Decision::Later
        }
    );
    // A kind listed twice: the function uses the first entry, and so does the profile.
    let twice = Scenario::new(0).priorities(
        vec![(URGENT, Priority(7)), (URGENT, Priority(9))],
        Decision::Drop,
    );
    assert_eq!(
        twice.priority_profile(),
        PriorityProfile::ByKind {
            table: vec![(URGENT, Priority(7))],
            default: Decision::Drop
        }
    );
}

#[test]
fn unrecordable_nodes_and_unwritable_files_fail_the_trace_recording_check() {
    let missing = std::env::temp_dir()
        .join(format!("p2p-sim-record-{}-no-such-dir", std::process::id()))
        .join("t.jsonl");
    let report = Scenario::new(5)
        .nodes(5)
        .byzantine(4, ByzKind::Silent)
        .byzantine_pace(ms(20), 20)
        .publish(ms(0), 0, URGENT, 300)
        .record(4, TraceSink::Memory)
        .record(9, TraceSink::Memory)
        .record(1, missing.clone())
        .run();
    let check = report
        .check("trace-recording")
        .expect("recording was asked for");
    assert!(!check.ok, "{report}");
    assert!(
        check.detail.contains("node 4 is a byzantine actor"),
        "{}",
        check.detail
    );
    assert!(
        check.detail.contains("node 9 does not exist"),
        "{}",
        check.detail
    );
    assert!(
        check.detail.contains(&missing.display().to_string()),
        "{}",
        check.detail
    );
    let t = &report.traces[0];
    assert_eq!((t.node, t.path.as_ref()), (1, Some(&missing)));
    assert!(t.error.is_some());
    // Every other property still held: recording never changes the run.
    assert!(
        report
            .checks
            .iter()
            .filter(|c| c.name != "trace-recording")
            .all(|c| c.ok),
        "{report}"
    );
}

#[test]
fn recording_leaves_the_run_unchanged() {
    let plain = named("conn-drop", 1).unwrap().run();
    let recorded = named("conn-drop", 1)
        .unwrap()
        .record(3, TraceSink::Memory)
        .run();
    assert_eq!(plain.output_hash, recorded.output_hash);
    assert_eq!(plain.events, recorded.events);
}

#[test]
fn restart_files_are_named_after_the_first_incarnations_file() {
    let p = PathBuf::from("/tmp/x/mesh-3-node2.jsonl");
    assert_eq!(TraceSink::incarnation_path(&p, 1), p);
    assert_eq!(
        TraceSink::incarnation_path(&p, 3),
        PathBuf::from("/tmp/x/mesh-3-node2-restart2.jsonl")
    );
    assert_eq!(
        TraceSink::incarnation_path(&PathBuf::from("t"), 2),
        PathBuf::from("t-restart1")
    );
}

#[test]
fn p2p_sim_run_writes_the_trace_files_and_prints_their_replay_commands() {
    let dir = scratch_dir("cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p2p-sim"))
        .args([
            "run",
            "crash-restart",
            "--seeds",
            "3..4",
            "--record-node",
            "1",
        ])
        .arg("--trace-dir")
        .arg(&dir)
        .output()
        .expect("p2p-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Node 1 crashes and restarts in crash-restart: two incarnations, two files.
    for file in [
        "crash-restart-3-node1.jsonl",
        "crash-restart-3-node1-restart1.jsonl",
    ] {
        let path = dir.join(file);
        let command = format!("cargo run -p p2p-trace -- replay {}", path.display());
        assert!(stdout.contains(&command), "no `{command}` in:\n{stdout}");
        // What that command does (its binary belongs to the p2p-trace package).
        let trace = Trace::read_file(&path).expect("the written trace reads back");
        let report = replay(&trace);
        if let Some(d) = &report.divergence {
            panic!("{} diverges on replay:\n{d}", path.display());
        }
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_p2p-sim"))
        .args(["run", "mesh", "--record-node", "1"])
        .output()
        .expect("p2p-sim runs");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "--record-node needs --trace-dir"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scenario `conn-drop` with a priority function no profile names: a closure over a call
/// counter shared by every honest node (state no trace can know).
fn conn_drop_with_a_closure() -> Scenario {
    named("conn-drop", 0)
        .expect("conn-drop is in the catalog")
        .config(|c| {
            let calls = std::sync::atomic::AtomicU64::new(0);
            c.priority_fn = p2p_core::PriorityFnRef::new(move |_: &p2p_core::Advert| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Decision::Fetch(Priority(100 + (n % 50) as u8))
            });
        })
}

#[test]
fn a_node_whose_priority_function_no_profile_names_is_recorded_by_its_decisions() {
    let plain = conn_drop_with_a_closure().run();
    plain.assert_passed();
    let report = conn_drop_with_a_closure()
        .record(0, TraceSink::Memory)
        .run();
    report.assert_passed();
    assert_eq!(
        report.output_hash, plain.output_hash,
        "recording decisions changed the run"
    );
    let trace = parse(&report.traces[0]);
    assert!(trace.header.decisions);
    assert!(count(&trace, |r| matches!(r, Record::Decisions { .. })) > 0);
    let r = replay(&trace);
    if let Some(d) = &r.divergence {
        panic!("replay diverged:\n{d}");
    }
    assert_eq!(r.outputs_matched, count(&trace, Record::is_output));
}

/// A node that fetched chunked artifacts from several holders (manifest, chunk requests,
/// chunks, haves, cancels), with its chunk hashing left to the driver or done by the core,
/// replays to identical outputs.
#[test]
fn a_node_fetching_chunked_artifacts_replays_to_identical_outputs() {
    for offload in [false, true] {
        let report = Scenario::new(3)
            .name("chunked-record")
            .nodes(6)
            .link(ms(10), 100_000_000)
            .auto_relay(true)
            .config(move |c| c.offload_chunk_hashing = offload)
            .publish(ms(0), 0, BULK, 1 << 20)
            .publish(ms(5), 1, NORMAL, 700 << 10)
            .publish(ms(10), 2, URGENT, 300)
            .settle(Duration::from_secs(10))
            .record(4, TraceSink::Memory)
            .run();
        report.assert_passed();
        let trace = parse(&report.traces[0]);
        let chunks = count(&trace, |r| {
            matches!(
                r,
                Record::In {
                    input: InputRec::Message {
                        msg: MessageRec::Chunk { .. },
                        ..
                    },
                    ..
                }
            )
        });
        assert!(
            chunks >= 8 + 6,
            "the recorded node fetched both artifacts' chunks: {chunks}"
        );
        let hashed = count(&trace, |r| {
            matches!(
                r,
                Record::In {
                    input: InputRec::ChunkHashed { .. },
                    ..
                }
            )
        });
        assert_eq!(
            hashed > 0,
            offload,
            "driver hashes recorded as inputs only when offloaded"
        );
        assert_replays_identically(&trace);
    }
}
