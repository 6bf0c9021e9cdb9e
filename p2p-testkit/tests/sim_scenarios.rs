//! The simulator's property checks, one test per property and fault kind, over a few seeds
//! (more seeds: `cargo run -p p2p-testkit --release --bin p2p-sim -- run <name> --seeds 0..100`).

use p2p_testkit::sim::{ByzKind, Report, Scenario, URGENT, named};
use std::time::Duration;

fn run_named(name: &str, seeds: std::ops::Range<u64>) -> Vec<Report> {
    seeds
        .map(|seed| {
            let report = named(name, seed).expect("scenario exists").run();
            report.assert_passed();
            report
        })
        .collect()
}

#[test]
fn full_mesh_delivers_everything_once_and_intact() {
    for r in run_named("mesh", 0..3) {
        assert!(r.expected > 0);
        assert_eq!(r.delivered, r.expected);
        assert!(r.check("exactly-once").is_some_and(|c| c.ok));
        assert!(r.check("integrity").is_some_and(|c| c.ok));
    }
}
