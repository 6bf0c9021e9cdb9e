//! The `p2p-trace` command line: show, filter, replay and diff on trace files.

use p2p_core::{Artifact, Config, Input, Kind, NodeId, Output, Time};
use p2p_trace::{PriorityProfile, Recorder, Trace};
use std::path::PathBuf;
use std::process::Command;

/// Two recorded nodes exchanging two artifacts (one pushed, one fetched); returns both traces.
fn two_node_traces(push_threshold: u64) -> Vec<Vec<u8>> {
    let ids = [NodeId([0xa1; 32]), NodeId([0xb2; 32])];
    let mut nodes: Vec<Recorder<Vec<u8>>> = ids
        .iter()
        .map(|id| {
            let cfg = Config {
                push_threshold,
                ..Config::default()
            };
            Recorder::create(*id, cfg, PriorityProfile::FetchAll, Vec::new()).unwrap()
        })
        .collect();
    let mut now = Time::ZERO;
    for i in 0..2 {
        nodes[i]
            .handle_input(
                now,
                Input::Membership {
                    version: 1,
                    members: ids.to_vec(),
                },
            )
            .unwrap();
        nodes[i]
            .handle_input(now, Input::PeerConnected(ids[1 - i]))
            .unwrap();
    }
    now = Time::from_millis(1);
    nodes[0]
        .handle_input(
            now,
            Input::Publish(Artifact::new(Kind(0), &b""[..], vec![1u8; 100])),
        )
        .unwrap();
    nodes[0]
        .handle_input(
            now,
            Input::Publish(Artifact::new(Kind(1), &b""[..], vec![2u8; 5000])),
        )
        .unwrap();
    loop {
        let mut moved = false;
        for i in 0..2 {
            now = now + std::time::Duration::from_millis(3);
            let mut sends = Vec::new();
            while let Some(out) = nodes[i].poll_output() {
                if let Output::Send { msg, .. } = out {
                    sends.push(msg);
                }
            }
            for msg in sends {
                nodes[1 - i]
                    .handle_input(now, Input::Message { from: ids[i], msg })
                    .unwrap();
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    nodes.into_iter().map(|r| r.finish().unwrap().1).collect()
}

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-trace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn cli(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2p-trace"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn show_prints_one_line_per_record_after_the_header() {
    let traces = two_node_traces(1024);
    let path = write_tmp("show.jsonl", &traces[1]);
    let records = Trace::parse_bytes(&traces[1]).unwrap().entries.len();
    let (code, out, err) = cli(&["show".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), records + 1);
    assert!(out.lines().next().unwrap().contains(&"b2".repeat(32)));
    assert!(out.contains("deliver"), "{out}");
}

#[test]
fn filter_keeps_only_matching_peer_kind_and_time() {
    let traces = two_node_traces(1024);
    let path = write_tmp("filter.jsonl", &traces[1]);
    let (code, out, err) = cli(&[
        "filter".as_ref(),
        path.as_os_str(),
        "--peer".as_ref(),
        "A1A1".as_ref(),
        "--kind".as_ref(),
        "outputs".as_ref(),
        "--from-ms".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    let body: Vec<&str> = out.lines().skip(1).collect();
    assert!(!body.is_empty());
    assert!(
        body.iter()
            .all(|l| l.contains(" out ") && l.contains("a1a1a1")),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "filter".as_ref(),
        path.as_os_str(),
        "--to-ms".as_ref(),
        "0".as_ref(),
        "--jsonl".as_ref(),
    ]);
    assert_eq!(code, 0);
    // The filtered JSON Lines are a trace again: header plus the records at time zero.
    let t = Trace::parse_bytes(out.as_bytes()).unwrap();
    assert!(!t.entries.is_empty() && t.entries.iter().all(|e| e.record.t() == 0));
    let (code, _, err) = cli(&[
        "filter".as_ref(),
        path.as_os_str(),
        "--peer".as_ref(),
        "xyz".as_ref(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--peer"), "{err}");
}

#[test]
fn replay_exits_0_when_identical_and_1_with_the_divergence() {
    let traces = two_node_traces(1024);
    let good = write_tmp("replay-good.jsonl", &traces[0]);
    let (code, out, err) = cli(&["replay".as_ref(), good.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("identical"), "{out}");
    // Node 0 recorded with a push threshold of 1024 replays with 8192: the 5000-byte publish
    // is pushed instead of advertised.
    let mut trace = Trace::parse_bytes(&traces[0]).unwrap();
    trace.header.config.push_threshold = 8192;
    let mut bytes = Vec::new();
    trace.write_to(&mut bytes).unwrap();
    let bad = write_tmp("replay-bad.jsonl", &bytes);
    let (code, out, _) = cli(&["replay".as_ref(), bad.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("divergence at record #"), "{out}");
    assert!(out.contains("\"type\":\"push\""), "{out}");
    assert!(out.contains("after input:"), "{out}");
    let broken = write_tmp(
        "replay-broken.jsonl",
        b"{\"format\":\"p2p-trace\",\"version\":9}\n",
    );
    let (code, _, err) = cli(&["replay".as_ref(), broken.as_os_str()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 1") && err.contains("version 9"), "{err}");
}

#[test]
fn diff_reports_the_first_differing_record() {
    let a = two_node_traces(1024);
    let b = two_node_traces(8192);
    let pa = write_tmp("diff-a.jsonl", &a[0]);
    let pa2 = write_tmp("diff-a2.jsonl", &a[0]);
    let pb = write_tmp("diff-b.jsonl", &b[0]);
    let (code, out, err) = cli(&["diff".as_ref(), pa.as_os_str(), pa2.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&["diff".as_ref(), pa.as_os_str(), pb.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("header config.push_threshold: 1024 != 8192"),
        "{out}"
    );
    let ta = Trace::parse_bytes(&a[0]).unwrap();
    let tb = Trace::parse_bytes(&b[0]).unwrap();
    let first = (0..ta.entries.len())
        .find(|&i| ta.entries[i].record != tb.entries[i].record)
        .unwrap();
    assert!(
        out.contains(&format!("first differing record: #{first}")),
        "{out}"
    );
}
