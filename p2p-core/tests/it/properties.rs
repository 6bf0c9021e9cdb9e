//! Property tests: arbitrary input sequences, a small in-test network, determinism.

use crate::support::Net;
use p2p_core::{Artifact, Kind};
use quickcheck::{QuickCheck, TestResult};

#[test]
fn arbitrary_inputs_never_panic_or_exceed_bounds() {
    fn prop(data: Vec<u8>) -> TestResult {
        match p2p_core::check::run(&data) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .tests(2000)
        .rng(quickcheck::Gen::new(600))
        .quickcheck(prop as fn(Vec<u8>) -> TestResult);
}

/// A published artifact set, from the property's arbitrary input.
fn workload(spec: &[(u8, u16)], nodes: usize) -> Vec<(usize, Artifact)> {
    spec.iter()
        .enumerate()
        .map(|(i, (origin, size))| {
            let size = *size as usize % 6000;
            let mut data = vec![(i % 251) as u8; size];
            data.extend_from_slice(&(i as u32).to_le_bytes());
            (
                *origin as usize % nodes,
                Artifact::new(Kind((i % 3) as u16), vec![i as u8], data),
            )
        })
        .collect()
}

#[test]
fn small_network_delivers_every_artifact_to_every_node_exactly_once() {
    fn prop(n: u8, seed: u64, spec: Vec<(u8, u16)>, relay: bool) -> TestResult {
        let nodes = 2 + n as usize % 7;
        let mut net = Net::new(nodes, seed, |c| c.auto_relay = relay);
        net.connect_all();
        let work = workload(&spec, nodes);
        for (origin, artifact) in &work {
            net.publish(*origin, artifact.clone());
        }
        net.run_until_quiet(seed);
        for (origin, artifact) in &work {
            for node in 0..nodes {
                if node == *origin {
                    continue;
                }
                let got = net.delivered_count(node, &artifact.id);
                if got != 1 {
                    return TestResult::error(format!(
                        "node {node} got {:?} {got} times",
                        artifact.id
                    ));
                }
            }
        }
        if let Err(e) = net.check_integrity() {
            return TestResult::error(e);
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(u8, u64, Vec<(u8, u16)>, bool) -> TestResult);
}

#[test]
fn same_seed_and_inputs_give_same_outputs() {
    fn prop(seed: u64, spec: Vec<(u8, u16)>) -> bool {
        let run = || {
            let mut net = Net::new(4, seed, |c| c.auto_relay = true);
            net.connect_all();
            for (origin, artifact) in workload(&spec, 4) {
                net.publish(origin, artifact);
            }
            net.run_until_quiet(seed);
            net.transcript_hash()
        };
        run() == run()
    }
    QuickCheck::new()
        .tests(100)
        .quickcheck(prop as fn(u64, Vec<(u8, u16)>) -> bool);
}

/// The core fuzz target's seed corpus is replayed here so CI keeps it alive.
#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the test reads the committed corpus; p2p-core itself reads no file"
)]
fn core_fuzz_corpus_keeps_every_invariant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/core");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(e) = p2p_core::check::run(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 10, "the corpus has {n} files");
}
