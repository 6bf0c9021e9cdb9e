//! The simulator's property checks: one test per property and fault kind, over a few seeds.
//! More seeds go through the CLI:
//! `cargo run -p p2p-testkit --release --bin p2p-sim -- run <name> --seeds 0..100`.

use p2p_testkit::sim::{
    BULK, ByzKind, LatencyStats, Report, SWARM_BAD_TIMEOUT, SWARM_BPS, SWARM_CRASH_AFTER, SWARM_F,
    SWARM_LATENCY, SWARM_NODES, SWARM_STREAM, Scenario, TraceSink, URGENT, named,
    swarm_bad_third_attackers, swarm_slow_nodes,
};
use p2p_testkit::trace::{InputRec, MessageRec, OutputRec, Record, Trace};
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
fn a_slow_node_is_never_cut_off() {
    // The node at 2 Mbit/s interleaves 4 bulk responses of 200 kB per connection over 7
    // connections (~9 kB/s per message): slow, but every message progresses, so no peer cuts
    // it off for a stall (with a deadline from the first frame, 6 of these 20 seeds did).
    for r in run_named("slow-node", 0..20) {
        all_delivered(&r);
        assert!(r.cutoffs.is_empty(), "{r}");
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

// ---------------------------------------------------------------------------------------------
// Progress under f = floor((n - 1) / 3) colluding attackers: the `byz-f-*` scenarios run 13 slots,
// 4 of them (drawn from the seed) attackers, the other 9 honest nodes publishing urgent artifacts
// of 2,000 bytes (advertised and fetched at urgent priority), one pushed urgent artifact of 600
// bytes each and 3 bulk artifacts of 100 kB in the first second, with 500 ms request timeouts.
// `byz-f-baseline` is the same run with the 4 attacker slots left empty: same honest nodes, same
// workload, no attack.
//
// The latency asserted is the all-hold latency of each honest artifact (publish until the last
// honest node holds it), its p99 over the run's artifacts. A hostile member can cost an honest
// download at most one request timeout (it is picked as a source, never answers, the request
// times out and goes to an honest source), so the bound is the same seed's no-attack p99 plus one
// request timeout (500 ms).
//
// Measured (release, `p2p-sim run <name> --seeds 0..20`, core at e6ef93e), all-hold p50 / p99 /
// max over the 20 runs' artifacts, and the largest per-run p99 of single deliveries:
//   byz-f-baseline (no attack)  35 / 100 / 142 ms   deliveries p99 <= 118 ms
//   byz-f-never-serve           35 / 100 / 144 ms   deliveries p99 <= 120 ms
//   byz-f-squatter              35 / 100 / 145 ms   deliveries p99 <= 128 ms
//   byz-f-pusher                35 / 100 / 143 ms   deliveries p99 <= 119 ms
//   byz-f-hash-flood            35 / 100 / 145 ms   deliveries p99 <= 121 ms
//   byz-f-bad-data              35 / 100 / 142 ms   deliveries p99 <= 118 ms
//   byz-f-silent                35 / 100 / 142 ms   deliveries p99 <= 118 ms
//   byz-f-phantom               35 / 101 / 145 ms   deliveries p99 <= 120 ms
//   byz-f-mixed                 35 / 100 / 144 ms   deliveries p99 <= 120 ms
// so the bound (no-attack p99 + 500 ms) holds with a wide margin: none of these attacks costs
// the honest artifacts a request timeout. (The squatters' and hash-flooders' bursts of adverts
// show only in the urgent kind's per-delivery p99, 38 ms without attack, up to 74 and 59 ms.)
// ---------------------------------------------------------------------------------------------

/// The honest nodes' request timeout in the `byz-f-*` scenarios.
const BYZ_F_REQUEST_TIMEOUT: Duration = ms(500);

/// Percentiles of the all-hold latency of `r`'s artifacts (publish until every expected node held
/// it); only artifacts that every expected node got count.
fn all_hold(r: &Report) -> LatencyStats {
    let mut v: Vec<Duration> = r
        .artifacts
        .iter()
        .filter_map(|a| a.complete_after)
        .collect();
    LatencyStats::of(&mut v)
}

/// Checks a `byz-f-*` run against the no-attack run of the same seed: every check passed, every
/// honest node got every honest artifact, once and intact, within bounded state, and the all-hold
/// p99 stayed within one request timeout of the no-attack p99.
fn check_progress(r: &Report, baseline: &Report) {
    r.assert_passed();
    all_delivered(r);
    for name in [
        "eventual-delivery",
        "exactly-once",
        "integrity",
        "bounded-state",
    ] {
        assert!(r.check(name).is_some_and(|c| c.ok), "{name}:\n{r}");
    }
    let (attacked, calm) = (all_hold(r), all_hold(baseline));
    assert_eq!(
        attacked.count,
        r.artifacts.len(),
        "an artifact never completed:\n{r}"
    );
    assert_eq!(
        r.artifacts.len(),
        baseline.artifacts.len(),
        "not the same workload"
    );
    let bound = calm.p99 + BYZ_F_REQUEST_TIMEOUT;
    assert!(
        attacked.p99 <= bound,
        "all-hold p99 {attacked} above the no-attack p99 {calm} plus one request timeout:\n{r}"
    );
}

/// The no-attack run of `seed`, checked.
fn byz_f_baseline(seed: u64) -> Report {
    let r = named("byz-f-baseline", seed).expect("exists").run();
    r.assert_passed();
    all_delivered(&r);
    r
}

/// Runs `name` over `seeds` and checks each run's progress against the no-attack run.
fn byz_f(name: &str, seeds: std::ops::Range<u64>) -> Vec<Report> {
    seeds
        .map(|seed| {
            let r = named(name, seed).expect("exists").run();
            check_progress(&r, &byz_f_baseline(seed));
            r
        })
        .collect()
}

/// The attacker slots of a scenario.
fn attackers(sc: &Scenario) -> Vec<usize> {
    (0..sc.node_count())
        .filter(|&i| !sc.is_honest_node(i))
        .collect()
}

/// Runs `name` for `seed` with every honest node recorded, checks its progress, and returns the
/// report, the attacker slots and, per honest node, (oversized pushes it received from
/// attackers, deliveries of anything received from an attacker).
///
/// The report's checks cannot see the second figure: exactly-once and integrity only judge
/// deliveries of workload artifacts, and an attacker's pushed artifact hashes to its id, so its
/// delivery would pass both. The recorded `Deliver` outputs name the peer each artifact came from.
fn byz_f_recorded(name: &str, seed: u64) -> (Report, Vec<usize>, Vec<(u64, u64)>) {
    let mut sc = named(name, seed).expect("exists");
    let bad = attackers(&sc);
    for i in 0..sc.node_count() {
        if sc.is_honest_node(i) {
            sc = sc.record(i, TraceSink::Memory);
        }
    }
    let r = sc.run();
    check_progress(&r, &byz_f_baseline(seed));
    let traces: Vec<Trace> = r
        .traces
        .iter()
        .map(|t| Trace::parse_bytes(t.data.as_deref().expect("in memory")).expect("parses"))
        .collect();
    let honest: Vec<_> = traces.iter().map(|t| t.header.node).collect();
    let threshold = traces[0].header.config.push_threshold;
    let per_node = traces
        .iter()
        .map(|t| {
            let (mut pushes, mut foreign) = (0, 0);
            for e in &t.entries {
                match &e.record {
                    Record::In {
                        input:
                            InputRec::Message {
                                from,
                                msg: MessageRec::Push { data, .. },
                            },
                        ..
                    } if !honest.contains(from) && data.len() > threshold => pushes += 1,
                    Record::Out {
                        output: OutputRec::Deliver { from, .. },
                        ..
                    } if !honest.contains(from) => foreign += 1,
                    _ => {}
                }
            }
            (pushes, foreign)
        })
        .collect();
    (r, bad, per_node)
}

#[test]
fn byz_f_baseline_delivers_everything_quickly() {
    for seed in 0..3 {
        let r = byz_f_baseline(seed);
        // Without an attack, every artifact is everywhere well within one request timeout.
        assert!(all_hold(&r).max < BYZ_F_REQUEST_TIMEOUT, "{r}");
    }
}

#[test]
fn byz_f_never_serving_adverts_do_not_hold_downloads_back() {
    for r in byz_f("byz-f-never-serve", 0..2) {
        // The attackers stayed under the limits: nobody was cut off, yet they filled the table.
        assert!(r.cutoffs.is_empty(), "{r}");
        assert!(r.max_state.max_adverts_of_one_peer < 2_000, "{r}");
        assert!(r.max_state.pending_downloads > 4_000, "{r}");
    }
}

#[test]
fn byz_f_squatters_leave_the_others_their_share_of_the_table() {
    for r in byz_f("byz-f-squatter", 0..2) {
        assert!(r.cutoffs.is_empty(), "{r}");
        assert!(r.max_state.max_adverts_of_one_peer < 3_000, "{r}");
        // f squatters at just under 3,000 adverts each would take 12,000 of the 10,000 slots;
        // the reserved half keeps the 8 other members' shares free.
        assert!(r.max_state.pending_downloads > 5_000, "{r}");
        assert!(r.max_state.pending_downloads <= 10_000, "{r}");
    }
}

#[test]
fn byz_f_oversized_pushes_are_cut_off_and_never_delivered() {
    for seed in 0..3 {
        let (r, bad, per_node) = byz_f_recorded("byz-f-pusher", seed);
        let honest = per_node.len();
        for &p in &bad {
            assert_eq!(
                r.cut_off_by(p, "push above the push threshold"),
                honest,
                "pusher {p} not cut off by every honest node:\n{r}"
            );
        }
        for (node, &(pushes, foreign)) in per_node.iter().enumerate() {
            assert!(
                pushes >= bad.len() as u64,
                "honest trace {node}: {pushes} pushes\n{r}"
            );
            assert_eq!(
                foreign, 0,
                "honest trace {node} delivered an attacker's artifact\n{r}"
            );
        }
    }
}

#[test]
fn byz_f_hash_flood_churn_stays_inside_the_limits() {
    for r in byz_f("byz-f-hash-flood", 0..2) {
        assert!(r.cutoffs.is_empty(), "{r}");
        assert!(r.max_state.max_adverts_of_one_peer < 2_000, "{r}");
    }
}

#[test]
fn byz_f_bad_data_is_cut_off_and_routed_around() {
    for r in byz_f("byz-f-bad-data", 0..3) {
        assert!(!r.cutoffs.is_empty(), "{r}");
        assert!(
            r.cutoffs
                .iter()
                .all(|c| c.reason.contains("wrong hash or size")),
            "{r}"
        );
    }
}

#[test]
fn byz_f_silent_sources_are_routed_around() {
    byz_f("byz-f-silent", 0..3);
}

#[test]
fn byz_f_phantom_adverts_do_not_hold_downloads_back() {
    byz_f("byz-f-phantom", 0..2);
}

#[test]
fn byz_f_mixed_colluders_do_not_stop_progress() {
    // Every honest node cuts the one pusher off; the first seed is recorded to check that nothing
    // an attacker sent was delivered (recording triples the run's cost in a debug build).
    for seed in 0..4 {
        let (r, bad, honest) = if seed == 0 {
            let (r, bad, per_node) = byz_f_recorded("byz-f-mixed", seed);
            for (node, &(pushes, foreign)) in per_node.iter().enumerate() {
                assert!(pushes > 0, "honest trace {node} got no push\n{r}");
                assert_eq!(
                    foreign, 0,
                    "honest trace {node} delivered an attacker's artifact\n{r}"
                );
            }
            (r, bad, per_node.len())
        } else {
            let sc = named("byz-f-mixed", seed).expect("exists");
            let bad = attackers(&sc);
            let r = sc.run();
            check_progress(&r, &byz_f_baseline(seed));
            (r, bad, 13 - 4)
        };
        let pushers: Vec<usize> = bad
            .iter()
            .copied()
            .filter(|&p| r.cut_off_by(p, "push above the push threshold") > 0)
            .collect();
        assert_eq!(pushers.len(), 1, "{r}");
        assert_eq!(
            r.cut_off_by(pushers[0], "push above the push threshold"),
            honest,
            "{r}"
        );
    }
}

/// Honest nodes run the connection policy: a flooding member they cut off is redialed only
/// after its ban, and each repeat offence doubles the ban (500 ms, 1 s, 2 s, ...), while every
/// honest artifact is still delivered.
#[test]
fn repeat_offenders_are_readmitted_only_after_doubling_bans() {
    for seed in 0..5 {
        let r = named("byz-flood", seed).expect("exists").run();
        r.assert_passed();
        all_delivered(&r);
        let mut pairs: std::collections::BTreeMap<(usize, usize), Vec<u64>> = Default::default();
        for c in &r.cutoffs {
            pairs
                .entry((c.by, c.peer))
                .or_default()
                .push(c.at.as_nanos());
        }
        let mut repeated = 0;
        for ((by, peer), times) in &pairs {
            for (k, w) in times.windows(2).enumerate() {
                let ban = Duration::from_millis(500).saturating_mul(1 << k.min(16));
                let gap = Duration::from_nanos(w[1] - w[0]);
                assert!(
                    gap >= ban,
                    "seed {seed}: node {by} readmitted {peer} after {gap:?}, within ban {ban:?}"
                );
                repeated += 1;
            }
        }
        assert!(
            repeated > 0,
            "seed {seed}: no attacker came back at all:\n{r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Colluding members that attack the connection layer (the `byz-f-*` subnet, 4 of 13): the honest
// simulated nodes run the drivers' rules on their links (classes by message type, the policy's
// churn limit, the reassembly budget with the stall rule, the write stall timeout), with the
// connection timers scaled as the request timeout is (stall timeout 2.5 s without a frame of a
// message under reassembly, write stall 2.5 s) and a node-wide reassembly cap of 64 MiB. Each attack keeps the same
// progress bound as above, and its own bound.
//
// Measured (release, `p2p-sim run <name> --seeds 0..20`), all-hold p50 / p99 / max over the 20
// runs' artifacts, the largest per-run p99 of single deliveries, and what the honest nodes did:
//   byz-f-baseline (no attack)  35 /  99 / 153 ms   deliveries p99 <= 141 ms
//   byz-f-class-spoofer         35 /  99 / 147 ms   deliveries p99 <= 140 ms   1,796 wrong-class
//                               cut-offs, all bans, the first 30 ms in
//   byz-f-churner               35 /  99 / 148 ms   deliveries p99 <= 141 ms   refused (and banned)
//                               after 10 admissions in a row, the first at 200 ms
//   byz-f-partial-frames        35 / 103 / 154 ms   deliveries p99 <= 143 ms   reassembly peak
//                               44 MB of the 67 MB cap; 1,504 budget refusals (no ban), 908
//                               stall bans, the first at 2.513 s (the 2.5 s stall timeout)
//   byz-f-stalled-reader        35 / 131 / 224 ms   deliveries p99 <= 215 ms   212 write stall
//                               closes (no ban), the first at 2.9 s; the honest uplinks spend
//                               their windows on the readers (amplification 4.65)
//   byz-f-mixed-conn            35 / 107 / 168 ms   deliveries p99 <= 157 ms
// ---------------------------------------------------------------------------------------------

/// The `byz-f-*` subnets' ban after a first offence (the simulator's policy `ban_base`).
const BYZ_F_FIRST_BAN: Duration = ms(500);
/// The `byz-f-*` subnets' stall timeout of a message under reassembly.
const BYZ_F_STALL: Duration = ms(2_500);
/// The `byz-f-*` subnets' write stall timeout.
const BYZ_F_WRITE_STALL: Duration = ms(2_500);

/// The cutoffs of `r` whose reason contains `reason`, per (honest node, peer), in time order.
fn cutoffs_of(r: &Report, reason: &str) -> std::collections::BTreeMap<(usize, usize), Vec<u64>> {
    let mut pairs: std::collections::BTreeMap<(usize, usize), Vec<u64>> = Default::default();
    for c in r.cutoffs.iter().filter(|c| c.reason.contains(reason)) {
        pairs
            .entry((c.by, c.peer))
            .or_default()
            .push(c.at.as_nanos());
    }
    pairs
}

/// Runs `name` over `seeds` with its progress checked; returns each report with its attackers.
fn byz_f_with_attackers(name: &str, seeds: std::ops::Range<u64>) -> Vec<(Report, Vec<usize>)> {
    seeds
        .map(|seed| {
            let sc = named(name, seed).expect("exists");
            let bad = attackers(&sc);
            let r = sc.run();
            check_progress(&r, &byz_f_baseline(seed));
            assert!(
                r.cutoffs.iter().all(|c| bad.contains(&c.peer)),
                "an honest node was cut off:\n{r}"
            );
            (r, bad)
        })
        .collect()
}

#[test]
fn byz_f_class_spoofers_are_banned_at_their_first_wrong_class_message() {
    for (r, bad) in byz_f_with_attackers("byz-f-class-spoofer", 0..8) {
        let honest = 13 - bad.len();
        for &p in &bad {
            assert_eq!(r.cut_off_by(p, " class"), honest, "{p}:\n{r}");
        }
        // Every cut is a ban, and the spoofer is back only after it: a wrong-class message is
        // never let through twice in a row.
        assert!(r.cutoffs.iter().all(|c| c.banned), "{r}");
        for ((by, peer), times) in cutoffs_of(&r, " class") {
            for w in times.windows(2) {
                let gap = Duration::from_nanos(w[1] - w[0]);
                assert!(
                    gap >= BYZ_F_FIRST_BAN,
                    "{by} readmitted {peer} after {gap:?}"
                );
            }
        }
    }
}

#[test]
fn byz_f_churners_are_refused_past_the_churn_limit_and_banned() {
    for (r, bad) in byz_f_with_attackers("byz-f-churner", 0..8) {
        let refusals = cutoffs_of(&r, "churn limit");
        // Each churner dials the honest nodes with higher ids than its own (the dial rule) and
        // is refused by at least one; every refusal is a ban, and the next refusal of the same
        // pair comes after it (the churner is not admitted in between).
        assert!(
            bad.iter().any(|p| r.cut_off_by(*p, "churn limit") > 0),
            "{r}"
        );
        assert!(r.cutoffs.iter().all(|c| c.banned), "{r}");
        for ((by, peer), times) in refusals {
            for w in times.windows(2) {
                let gap = Duration::from_nanos(w[1] - w[0]);
                assert!(
                    gap >= BYZ_F_FIRST_BAN,
                    "{by} refused {peer} again after {gap:?}"
                );
            }
            // At most one refusal per ban: 500 ms, then doubling, over a 6 s run.
            assert!(
                times.len() <= 4,
                "{by} refused {peer} {} times:\n{r}",
                times.len()
            );
        }
    }
}

#[test]
fn byz_f_partial_frames_stay_within_the_reassembly_cap_and_stall_out() {
    for (r, bad) in byz_f_with_attackers("byz-f-partial-frames", 0..8) {
        let (peak, cap) = r.reassembly_peak;
        assert!(
            peak > 0 && peak <= cap,
            "reassembly peak {peak} of cap {cap}:\n{r}"
        );
        // Every attacker's unfinished messages stall out at some honest node (a ban); a refusal
        // of the node-wide budget only ends the connection.
        for &p in &bad {
            assert!(r.cut_off_by(p, "stall deadline") > 0, "{p}:\n{r}");
        }
        assert!(r.cutoffs.iter().any(|c| c.reason.contains("budget")), "{r}");
        for c in &r.cutoffs {
            assert_eq!(c.banned, !c.reason.contains("budget"), "{c:?}");
        }
        // The attackers send the first frame of each message and nothing more of it: it stalls
        // 2.5 s after that frame, and no honest sender's message (which progresses) ever does.
        let first = r
            .cutoffs
            .iter()
            .filter(|c| c.reason.contains("stall deadline"))
            .map(|c| c.at.as_nanos())
            .min();
        assert!(first >= Some(BYZ_F_STALL.as_nanos() as u64), "{r}");
    }
}

#[test]
fn byz_f_stalled_readers_are_cut_after_the_write_stall_timeout_without_a_ban() {
    for (r, bad) in byz_f_with_attackers("byz-f-stalled-reader", 0..8) {
        assert!(!r.cutoffs.is_empty(), "{r}");
        for c in &r.cutoffs {
            assert!(c.reason.contains("write stall") && !c.banned, "{c:?}");
            assert!(
                c.at.as_nanos() >= BYZ_F_WRITE_STALL.as_nanos() as u64,
                "{c:?}"
            );
        }
        assert!(
            bad.iter().all(|p| r.cut_off_by(*p, "write stall") > 0),
            "{r}"
        );
    }
}

#[test]
fn byz_f_mixed_connection_attackers_do_not_stop_progress() {
    for (r, _) in byz_f_with_attackers("byz-f-mixed-conn", 0..12) {
        let (peak, cap) = r.reassembly_peak;
        assert!(peak <= cap, "{r}");
        for reason in [" class", "churn limit", "stall deadline"] {
            assert!(
                r.cutoffs.iter().any(|c| c.reason.contains(reason)),
                "{reason}:\n{r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The connection layer's timers on the simulated links (`ConnConfig`'s defaults: keepalive
// after 5 s of silence, idle timeout 30 s, hello within 5 s).
// ---------------------------------------------------------------------------------------------

/// One way latency of the timer tests' links.
const TIMER_LINK: Duration = ms(10);
/// The connection layer's default idle timeout and hello timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A partition that closes nothing (bytes across it just stop) is detected by the idle
/// timeout: every connection across it ends within the idle timeout plus one latency of the
/// cut (the keepalives keep the other connections up through the quiet stretch), without a
/// ban; after the heal the links come back, and what either side published meanwhile reaches
/// every node.
#[test]
fn a_silent_partition_ends_links_by_the_idle_timeout_and_they_come_back_after_the_heal() {
    let cut_at = ms(1_000);
    let heal_at = ms(40_000);
    let side = [0usize, 1, 2];
    for seed in 0..2 {
        let r = Scenario::new(seed)
            .name("silent-partition")
            .nodes(6)
            .link(TIMER_LINK, 100_000_000)
            .publish(ms(0), 0, URGENT, 500)
            .publish(ms(0), 4, BULK, 200_000)
            .partition(cut_at, side.to_vec())
            .publish(ms(2_000), 1, URGENT, 700)
            .publish(ms(2_000), 5, BULK, 300_000)
            .heal(heal_at)
            .settle(ms(5_000))
            .run();
        r.assert_passed();
        all_delivered(&r);
        let idle = cutoffs_of(&r, "nothing received");
        let across = |a: usize, b: usize| side.contains(&a) != side.contains(&b);
        // Each of the 9 connections across the cut ended once, by one of its ends; no other
        // connection did, and nobody was banned.
        let mut pairs: Vec<(usize, usize)> =
            idle.keys().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), 9, "{r}");
        assert!(pairs.iter().all(|&(a, b)| across(a, b)), "{r}");
        assert_eq!(r.cutoffs.len(), 9, "{r}");
        for c in &r.cutoffs {
            assert!(!c.banned, "{c:?}");
            let after_cut = Duration::from_nanos(c.at.as_nanos()) - cut_at;
            // The last byte across came before the cut plus one latency, and the keepalives
            // (every 5 s of silence) make it at most one keepalive interval before the cut.
            assert!(after_cut <= IDLE_TIMEOUT + TIMER_LINK, "{c:?}");
            assert!(after_cut >= IDLE_TIMEOUT - Duration::from_secs(5), "{c:?}");
        }
        // Every artifact reached all 5 other nodes, those published across the cut after the
        // heal.
        for a in &r.artifacts {
            assert_eq!((a.expected, a.holders), (5, 5), "{a:?}\n{r}");
            let done = Duration::from_nanos(a.published_at.as_nanos()) + a.complete_after.unwrap();
            if a.published_at.as_nanos() > 0 {
                assert!(done > heal_at, "{a:?}");
            }
        }
    }
}

/// A member that completes the handshake and then sends nothing, not even its hello
/// (`ByzKind::Mute`), is cut by every honest node that opened a connection with it at the
/// hello deadline (5 s after the connection started), without a ban, as the drivers' hello
/// exchange does; the honest nodes' artifacts flow meanwhile as without it.
#[test]
fn a_peer_that_never_sends_its_hello_is_cut_at_the_hello_deadline() {
    for seed in 0..3 {
        let build = |mute: bool| {
            let sc = Scenario::new(seed)
                .name("mute")
                .nodes(5)
                .link(TIMER_LINK, 100_000_000)
                .publish(ms(0), 0, URGENT, 500)
                .publish(ms(100), 1, BULK, 200_000)
                .publish(ms(6_000), 3, URGENT, 800)
                .run_for(ms(12_000));
            if mute {
                sc.byzantine(2, ByzKind::Mute)
            } else {
                sc
            }
        };
        let base = build(false).run();
        let r = build(true).run();
        r.assert_passed();
        all_delivered(&r);
        assert_eq!(r.expected, 3 * 3, "{r}");
        // Honest delivery is no slower than without the mute peer (which never counts as
        // connected, so no core ever sends it anything).
        assert!(all_hold(&r).max <= all_hold(&base).max, "{r}\n{base}");
        assert!(all_hold(&r).max < ms(200), "{r}");
        assert!(!r.cutoffs.is_empty(), "{r}");
        for c in &r.cutoffs {
            assert_eq!(c.peer, 2, "{c:?}");
            assert!(c.reason.contains("no hello within") && !c.banned, "{c:?}");
            // A connection starts at 0 or at a redial after the back-off; its hello deadline
            // is 5 s later.
            assert!(c.at.as_nanos() >= HELLO_TIMEOUT.as_nanos() as u64, "{c:?}");
        }
        // Every honest node cut it at the first deadline, 5 s after the start.
        assert_eq!(r.cut_off_by(2, "no hello within"), 4, "{r}");
        let first = r.cutoffs.iter().map(|c| c.at.as_nanos()).min();
        assert_eq!(first, Some(HELLO_TIMEOUT.as_nanos() as u64), "{r}");
    }
}

// ---------------------------------------------------------------------------------------------
// Swarming: chunked artifacts (4 MiB, 32 chunks of 128 KiB) from node 0 to 13 relaying nodes on
// 300 Mbit/s links of 25 ms. Every run must deliver to every running honest member once and
// intact within bounded state (the `complete` check besides the usual ones). Larger runs
// (`swarm-4m-40`, `swarm-64m-*`, `swarm-partial-mesh`) go through `p2p-sim run`.
//
// Measured (release, `p2p-sim run <name> --seeds 0..20`), all-hold time after the publish
// (min / p50 / max) and amplification:
//   swarm-4m-13               431 / 433 / 435 ms    1.006
//   swarm-bad-third-baseline  413 / 414 / 417 ms    1.005  (9 honest nodes, 4 empty slots)
//   swarm-bad-third          1429 / 1430 / 1451 ms  1.006  (attack - baseline: 1013 to 1035 ms)
//   swarm-origin-crash        431 / 433 / 435 ms    1.006  (every chunk out at 238-240 ms)
//   swarm-slow-nodes         1486 / 1508 / 1548 ms  1.006
// ---------------------------------------------------------------------------------------------

/// Checks a swarm run: every check passed, each artifact reached every running honest member
/// (the `complete` check: nothing vacuous), once, intact, within bounded state.
fn swarm_ok(r: &Report) {
    r.assert_passed();
    all_delivered(r);
    for name in [
        "complete",
        "eventual-delivery",
        "exactly-once",
        "integrity",
        "bounded-state",
    ] {
        assert!(r.check(name).is_some_and(|c| c.ok), "{name}:\n{r}");
    }
    for a in &r.artifacts {
        assert!(a.chunks > 1, "not chunked:\n{r}");
        assert!(a.complete_after.is_some(), "incomplete:\n{r}");
    }
}

/// The only artifact's all-hold time (publish until every expected node held it).
fn hold(r: &Report) -> Duration {
    r.artifacts[0].complete_after.expect("complete")
}

#[test]
fn swarms_deliver_4_mib_to_13_nodes_once_with_the_origin_sending_each_chunk_once() {
    for r in run_named("swarm-4m-13", 0..3) {
        swarm_ok(&r);
        let a = &r.artifacts[0];
        // Peers exchange what the origin sent: it sends each chunk about once (32 of 32
        // measured), never a copy per peer (12 x 32).
        assert!(a.origin_chunk_sends <= u64::from(a.chunks) * 5 / 4, "{r}");
        // Have, Cancel, requests and framing included (1.006 measured; the target is 1.05).
        assert!(r.amplification() <= 1.05, "{r}");
        // Progress bound, in virtual time: well under the 1,418 ms of whole-artifact
        // transfers from the origin (431 to 435 ms measured, the physical bound is 162 ms).
        assert!(hold(&r) <= ms(1_000), "{r}");
        assert!(
            r.counter("chunks_cancelled") <= r.counter("chunks_requested"),
            "{r}"
        );
    }
}

#[test]
fn swarms_complete_despite_a_third_serving_bad_chunks_or_never_answering() {
    for seed in 0..3 {
        let calm = named("swarm-bad-third-baseline", seed)
            .expect("exists")
            .run();
        swarm_ok(&calm);
        let r = named("swarm-bad-third", seed).expect("exists").run();
        swarm_ok(&r);
        let attackers = swarm_bad_third_attackers(seed);
        assert_eq!(attackers.len(), SWARM_F);
        for (node, kind) in &attackers {
            match kind {
                // Its chunks fail the manifest: it is cut off and banned.
                ByzKind::BadChunks => assert!(
                    r.cut_off_by(*node, "wrong hash or size") > 0,
                    "bad-chunks node {node} never cut off:\n{r}"
                ),
                ByzKind::Silent => {}
                other => panic!("unexpected attacker kind {other:?}"),
            }
        }
        assert!(
            r.cutoffs
                .iter()
                .all(|c| attackers.iter().any(|(n, _)| *n == c.peer)),
            "an honest node was cut off:\n{r}"
        );
        // The silent ones are routed around after their requests time out.
        assert!(r.counter("timeouts") > 0, "{r}");
        // Bound: a silent holder can cost a download one request timeout for the manifest (it
        // echoes the advert, so it may be the manifest's source) and one chunk request timeout
        // (it claims every chunk, so it is asked first, up to 8 chunks of 128 KiB per peer at
        // once or as many bytes in smaller chunks, which time out together); the chunks asked
        // of the f / 2 silent holders then cross one link again (f / 2 x 8 x 128 KiB at 300
        // Mbit/s).
        let cfg = p2p_core::Config {
            request_timeout_base: SWARM_BAD_TIMEOUT,
            ..p2p_core::Config::default()
        };
        let chunk = u64::from(cfg.chunk_size);
        let manifest = 40 + 32 * u64::from(r.artifacts[0].chunks);
        let refetch = (SWARM_F / 2 * cfg.max_chunks_in_flight_per_peer) as u64 * chunk;
        let refetch = Duration::from_secs_f64(refetch as f64 * 8.0 / SWARM_BPS as f64);
        let bound =
            hold(&calm) + cfg.request_timeout(manifest) + cfg.request_timeout(chunk) + refetch;
        eprintln!(
            "swarm-bad-third seed {seed}: baseline {:?}, attacked {:?}, bound {:?}",
            hold(&calm),
            hold(&r),
            bound
        );
        assert!(
            hold(&r) <= bound,
            "all-hold {:?} above the no-attack {:?} plus the timeouts ({bound:?}):\n{r}",
            hold(&r),
            hold(&calm)
        );
    }
}

#[test]
fn swarms_complete_after_the_origin_crashes_once_every_chunk_left_it() {
    for r in run_named("swarm-origin-crash", 0..3) {
        swarm_ok(&r);
        let a = &r.artifacts[0];
        // The `origin-spread` check passed: every chunk had gone through from the origin
        // before the crash...
        let out = a.all_chunks_out.expect("every chunk left the origin");
        assert!(out < SWARM_CRASH_AFTER, "{r}");
        assert!(r.check("origin-spread").is_some_and(|c| c.ok), "{r}");
        // ...and no node had completed then: each finished from the partial holders alone,
        // the origin gone (it is not among the running members the `complete` check counts).
        assert_eq!(a.expected, SWARM_NODES - 1, "{r}");
        for (node, d) in a.delivered_after.iter().enumerate() {
            if node != a.origin {
                let d = d.expect("delivered");
                assert!(
                    d > SWARM_CRASH_AFTER,
                    "node {node} done before the crash:\n{r}"
                );
            }
        }
    }
}

#[test]
fn swarms_complete_with_a_third_of_the_nodes_at_a_tenth_of_the_rate() {
    for r in run_named("swarm-slow-nodes", 0..3) {
        swarm_ok(&r);
        let slow = swarm_slow_nodes(r.seed);
        let a = &r.artifacts[0];
        let times = |is_slow: bool| -> Vec<Duration> {
            a.delivered_after
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != a.origin && slow.contains(i) == is_slow)
                .map(|(_, d)| d.expect("delivered"))
                .collect()
        };
        let (fast, slowest) = (times(false), times(true));
        let slow_bound =
            Duration::from_secs_f64((4u64 << 20) as f64 * 8.0 / (SWARM_BPS / 10) as f64)
                + 2 * SWARM_LATENCY;
        // Every node, fast and slow, completes within 1.5 x the slow nodes' own physical
        // bound (4 MiB at 30 Mbit/s + 2 x 25 ms = 1,168 ms, so 1,752 ms; over seeds 0..20 the
        // fast nodes took 1,357 to 1,508 ms, the slow ones 1,378 to 1,547 ms).
        assert!(fast.len() == SWARM_NODES - 1 - slowest.len(), "{r}");
        for d in fast.iter().chain(&slowest) {
            assert!(*d <= slow_bound * 3 / 2, "{r}");
        }
        // Not asserted here: in this first swarm the fast nodes wait for the slow ones (1,130
        // to 1,270 ms): every fast node asks each slow owner for its stripe's chunks as it
        // announces them, before any answer shows it slow, and they queue behind its 30 Mbit/s
        // uplink shared by 12 requesters. From the next swarm on, the slow owners' stripes pass
        // on: `swarm-slow-stream` below.
    }
}

#[test]
fn once_slow_owners_are_known_the_fast_nodes_no_longer_wait_for_them() {
    for r in run_named("swarm-slow-stream", 0..2) {
        swarm_ok(&r);
        let slow = swarm_slow_nodes(r.seed);
        let slow_bound =
            Duration::from_secs_f64((4u64 << 20) as f64 * 8.0 / (SWARM_BPS / 10) as f64)
                + 2 * SWARM_LATENCY;
        assert_eq!(r.artifacts.len(), SWARM_STREAM, "{r}");
        for (k, a) in r.artifacts.iter().enumerate() {
            for (node, d) in a.delivered_after.iter().enumerate() {
                if node == a.origin {
                    continue;
                }
                let d = d.expect("delivered");
                // Every node within 1.5 x the slow nodes' own bound (1,752 ms), as in
                // `swarm-slow-nodes`.
                assert!(
                    d <= slow_bound * 3 / 2,
                    "artifact {k}, node {node}:
{r}"
                );
                // After the first artifact the fast nodes take less than half the slow nodes'
                // bound (584 ms; seeds 0..4: 346-468 ms, against 1,130-1,272 ms in the first).
                if k > 0 && !slow.contains(&node) {
                    assert!(
                        d < slow_bound / 2,
                        "artifact {k}, node {node}: {d:?}
{r}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_partial_mesh_from_the_derived_topology_delivers_everything_over_many_seeds() {
    // The graph the real nodes derive (`p2p_transport::topology`, degree 2: each node has 2 to
    // 4 neighbours of 11), with relaying: every artifact reaches every node, in every seed.
    for r in run_named("partial-mesh", 0..50) {
        all_delivered(&r);
        assert!(r.check("exactly-once").is_some_and(|c| c.ok), "{r}");
    }
    // A member leaving and returning changes the graph: the nodes prune the connections that
    // are no longer edges (no ban) and dial the new ones, and still deliver everything.
    for r in run_named("partial-mesh-membership", 0..10) {
        all_delivered(&r);
        // The only connections cut are those of the member removed (by the cores, as for any
        // removal); a pruned connection is neither a cut-off nor a ban.
        assert!(r.cutoffs.iter().all(|c| c.peer == 5), "{:?}", r.cutoffs);
    }
}
