//! The simulator's property checks: one test per property and fault kind, over a few seeds.
//! More seeds go through the CLI:
//! `cargo run -p p2p-testkit --release --bin p2p-sim -- run <name> --seeds 0..100`.

use p2p_testkit::sim::{BULK, ByzKind, Report, Scenario, URGENT, named};
use std::time::Duration;

const fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// Runs a named scenario over `seeds`, failing with the seed and the command to reproduce it.
fn run_named(name: &str, seeds: std::ops::Range<u64>) -> Vec<Report> {
    seeds
        .map(|seed| {
            let report = named(name, seed).expect("scenario exists").run();
            report.assert_passed();
            report
        })
        .collect()
}

fn all_delivered(r: &Report) {
    assert!(r.expected > 0, "nothing was expected:\n{r}");
    assert_eq!(r.delivered, r.expected, "{r}");
}

#[test]
fn full_mesh_delivers_everything_once_and_intact() {
    for r in run_named("mesh", 0..2) {
        all_delivered(&r);
        for name in ["exactly-once", "integrity", "bounded-state"] {
            assert!(r.check(name).is_some_and(|c| c.ok), "{r}");
        }
        assert!(r.amplification() < 1.2, "{r}");
    }
}

#[test]
fn artifacts_cross_a_random_graph_through_relays() {
    for r in run_named("relay", 0..1) {
        all_delivered(&r);
    }
    run_named("random-faults-relay", 0..1);
}

#[test]
fn artifacts_cross_a_line_of_relays() {
    for r in run_named("line", 0..2) {
        all_delivered(&r);
        // Seven hops of store-and-forward: the far end cannot be as fast as one hop.
        assert!(r.latency.max > ms(70), "{r}");
    }
}

#[test]
fn partitioned_sides_converge_after_healing() {
    for r in run_named("partition-heal", 0..2) {
        all_delivered(&r);
        // Artifacts published across the cut could only arrive after the heal at 3 s.
        assert!(r.latency.max > ms(1_000), "{r}");
    }
}

#[test]
fn crashed_nodes_restart_fresh_and_catch_up() {
    for r in run_named("crash-restart", 0..2) {
        all_delivered(&r);
    }
}

#[test]
fn a_slow_node_gets_everything_eventually() {
    for r in run_named("slow-node", 0..1) {
        all_delivered(&r);
    }
}

#[test]
fn dropped_connections_lose_nothing_for_good() {
    for r in run_named("conn-drop", 0..2) {
        all_delivered(&r);
    }
}

#[test]
fn membership_changes_let_joiners_catch_up() {
    for r in run_named("membership", 0..2) {
        all_delivered(&r);
    }
}

#[test]
fn urgent_artifacts_overtake_bulk_load() {
    for r in run_named("priority", 0..2) {
        let c = r.check("urgent-latency").expect("checked");
        assert!(c.ok, "{r}");
    }
}

#[test]
fn congestion_signals_keep_request_queues_bounded() {
    for r in run_named("congestion", 0..1) {
        all_delivered(&r);
    }
}

#[test]
fn random_fault_plans_keep_every_property() {
    run_named("random-faults", 0..2);
    run_named("random", 0..3);
}

fn byzantine(kind: ByzKind, seeds: std::ops::Range<u64>) -> Vec<Report> {
    run_named(&format!("byz-{}", kind.name()), seeds)
}

#[test]
fn peers_sending_bad_data_are_cut_off() {
    for r in byzantine(ByzKind::BadData, 0..2) {
        all_delivered(&r);
        assert_eq!(r.cut_off_by(8, "wrong hash or size"), 8, "{r}");
    }
}

#[test]
fn silent_peers_are_routed_around() {
    for r in byzantine(ByzKind::Silent, 0..2) {
        all_delivered(&r);
    }
}

#[test]
fn phantom_adverts_do_not_grow_state() {
    for r in byzantine(ByzKind::Phantom, 0..2) {
        all_delivered(&r);
        assert!(r.max_state.pending_downloads < 2_000, "{r}");
    }
}

#[test]
fn advert_floods_are_cut_off_at_the_limit() {
    for r in byzantine(ByzKind::Flood, 0..2) {
        all_delivered(&r);
        assert_eq!(r.cut_off_by(8, "artifacts of kind"), 8, "{r}");
        assert!(r.max_state.max_adverts_of_one_peer <= 2_000, "{r}");
    }
}

#[test]
fn advert_churn_does_not_grow_state() {
    for r in byzantine(ByzKind::Churn, 0..2) {
        all_delivered(&r);
        assert!(r.max_state.max_adverts_of_one_peer <= 2_000, "{r}");
    }
}

#[test]
fn malformed_messages_are_cut_off() {
    for r in byzantine(ByzKind::Malformed, 0..1) {
        all_delivered(&r);
        for reason in [
            "attr too long",
            "advertised artifact too large",
            "too many adverts in one message",
            "request never made",
            "above the size limit",
        ] {
            assert!(
                r.cut_off_by(8, reason) > 0,
                "no cut-off for {reason:?}:\n{r}"
            );
        }
    }
}

#[test]
fn same_seed_gives_the_same_outputs() {
    let r = named("random-faults", 5)
        .expect("exists")
        .check_determinism()
        .run();
    assert!(r.check("determinism").is_some_and(|c| c.ok), "{r}");
}

#[test]
fn different_seeds_give_different_runs() {
    let a = named("mesh", 5).expect("exists").run();
    let b = named("mesh", 6).expect("exists").run();
    assert_ne!(a.output_hash, b.output_hash);
}

#[test]
fn the_checkers_catch_an_artifact_that_cannot_arrive() {
    // Node 2 is only linked through node 1, and relaying is off: it can never get node 0's
    // artifact, so eventual delivery must fail and the report must name the seed.
    let r = Scenario::new(11)
        .nodes(3)
        .topology(p2p_testkit::sim::Topology::Links(vec![(0, 1), (1, 2)]))
        .auto_relay(false)
        .publish(ms(0), 0, BULK, 5_000)
        .run();
    assert_eq!((r.expected, r.delivered), (2, 1), "{r}");
    assert!(!r.check("eventual-delivery").expect("ran").ok);
    assert!(r.to_string().contains("reproduce with"));
}

#[test]
fn removed_artifacts_are_not_expected_anywhere() {
    let r = Scenario::new(3)
        .nodes(5)
        .publish(ms(0), 0, URGENT, 300)
        .remove(ms(1), 0, 0)
        .run();
    r.assert_passed();
    assert_eq!(r.expected, 0, "{r}");
}
