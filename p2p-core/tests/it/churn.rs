//! Reconnect churn and repeated requests: a member that connects and leaves again and again
//! costs the node a bounded amount of work per cycle, and a member that asks for the same
//! artifact again and again gets a bounded number of bytes, while honest members are served.

use crate::support::{WHOLE, connected_node, id, sends, step, t};
use p2p_core::{Artifact, ArtifactId, Config, Input, Kind, Message, Node, Time};
use std::collections::BTreeSet;

/// A node (id 0) with peers 1 and 2 connected and `n` small artifacts published.
fn node_with_pool(cfg: Config, n: u32) -> (Node, Vec<Artifact>) {
    let mut node = connected_node(cfg, 2);
    let arts: Vec<Artifact> = (0..n)
        .map(|i| Artifact::new(Kind(0), &b""[..], i.to_le_bytes().repeat(400)))
        .collect();
    for a in &arts {
        step(&mut node, t(0), Input::Publish(a.clone()));
    }
    (node, arts)
}

/// The adverts among `outs` sent to peer `to`.
fn adverts_to(outs: &[p2p_core::Output], to: usize) -> Vec<ArtifactId> {
    sends(outs)
        .into_iter()
        .filter(|(peer, _, _)| *peer == id(to))
        .flat_map(|(_, m, _)| match m {
            Message::Adverts(v) => v.into_iter().map(|a| a.id).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_member_that_connects_and_leaves_costs_at_most_one_resync_batch_per_input() {
    let cfg = Config::default();
    let batch = cfg.advert_batch_size;
    let (mut node, _) = node_with_pool(cfg, 5_000);
    step(&mut node, t(1), Input::PeerDisconnected(id(2)));
    let mut sent = 0;
    for cycle in 0..1_000u64 {
        let now = t(2 + cycle);
        let outs = step(&mut node, now, Input::PeerConnected(id(2)));
        let n = adverts_to(&outs, 2).len();
        assert!(n <= batch, "cycle {cycle}: {n} adverts in one input");
        sent += n;
        let outs = step(&mut node, now, Input::PeerDisconnected(id(2)));
        assert!(adverts_to(&outs, 2).is_empty());
    }
    // Before: 5,000 adverts per cycle (5,000,000 in all), copied from the pool at every connect.
    assert_eq!(sent, 1_000 * batch);
    assert_eq!(node.poll_timeout(), None, "no resync left to send");
    assert_eq!(node.table_sizes().tracked_adverts, 0);
}

#[test]
fn a_resync_advertises_every_pooled_artifact_once_in_batches_as_the_peer_drains() {
    let cfg = Config::default();
    let (batch, step_every) = (cfg.advert_batch_size, cfg.resync_interval);
    let (mut node, arts) = node_with_pool(cfg, 2_000);
    step(&mut node, t(1), Input::PeerDisconnected(id(2)));
    // Changes while the resync runs: one artifact removed, one added (announced at once).
    let late = Artifact::new(Kind(0), &b""[..], vec![9u8; 5000]);
    let mut now = t(2);
    let mut got = adverts_to(&step(&mut node, now, Input::PeerConnected(id(2))), 2);
    assert_eq!(got.len(), batch);
    // Every input carries the next batch (the last artifact, removed, is never advertised).
    let outs = step(&mut node, now, Input::Remove(arts[1999].id));
    assert_eq!(adverts_to(&outs, 2).len(), batch);
    got.extend(adverts_to(&outs, 2));
    let outs = step(&mut node, now, Input::Publish(late.clone()));
    assert_eq!(
        adverts_to(&outs, 2).len(),
        batch + 1,
        "a batch and the new artifact"
    );
    got.extend(adverts_to(&outs, 2));
    // Congested: nothing more until it clears.
    let congested = Input::Congestion {
        peer: id(2),
        congested: true,
    };
    assert!(adverts_to(&step(&mut node, now, congested), 2).is_empty());
    assert_eq!(node.poll_timeout(), None);
    let clear = Input::Congestion {
        peer: id(2),
        congested: false,
    };
    let mut inputs = 0;
    now = now + step_every / 2;
    got.extend(adverts_to(&step(&mut node, now, clear), 2));
    while let Some(at) = node.poll_timeout() {
        assert_eq!(at, now + step_every);
        now = at;
        let outs = step(&mut node, now, Input::Timeout);
        let n = adverts_to(&outs, 2).len();
        assert!(n <= batch);
        got.extend(adverts_to(&outs, 2));
        inputs += 1;
    }
    let expected: BTreeSet<ArtifactId> =
        arts[..1999].iter().map(|a| a.id).chain([late.id]).collect();
    let unique: BTreeSet<ArtifactId> = got.iter().copied().collect();
    assert_eq!(
        unique, expected,
        "every pooled artifact, the removed one not"
    );
    assert_eq!(got.len(), expected.len(), "each once");
    assert_eq!(
        inputs,
        (1_999 - 4 * batch).div_ceil(batch),
        "one batch per timer input"
    );
    // The same inputs give the same outputs.
    let (mut again, _) = node_with_pool(Config::default(), 2_000);
    step(&mut again, t(1), Input::PeerDisconnected(id(2)));
    let first = adverts_to(&step(&mut again, t(2), Input::PeerConnected(id(2))), 2);
    assert_eq!(first, got[..batch]);
}

fn request(req_id: u64, id: ArtifactId) -> Message {
    Message::Request {
        req_id,
        id,
        priority: p2p_core::Priority::NORMAL,
    }
}

/// Artifact bytes among `outs` sent to peer `to` in responses.
fn served_to(outs: &[p2p_core::Output], to: usize) -> u64 {
    sends(outs)
        .into_iter()
        .filter(|(peer, _, _)| *peer == id(to))
        .map(|(_, m, _)| match m {
            Message::Response { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Honest fetches: peer 2 asks for `arts` one request each; returns the ids answered with data.
fn honest_fetch(node: &mut Node, now: Time, arts: &[Artifact]) -> BTreeSet<ArtifactId> {
    let mut got = BTreeSet::new();
    for (i, a) in arts.iter().enumerate() {
        let outs = crate::support::recv(node, now, id(2), request(10_000 + i as u64, a.id));
        for (to, m, _) in sends(&outs) {
            if let (true, Message::Response { id: got_id, .. }) = (to == id(2), m) {
                got.insert(got_id);
            }
        }
    }
    got
}

#[test]
fn a_peer_repeating_requests_gets_bounded_serves_then_is_cut_off() {
    let cfg = Config {
        chunk_size: WHOLE,
        ..Config::default()
    };
    let limit = cfg.max_early_repeats;
    let (mut node, _) = node_with_pool(cfg, 0);
    let big = Artifact::with_chunk_size(Kind(0), &b""[..], vec![7u8; 4 << 20], WHOLE);
    let honest: Vec<Artifact> = (0..20u8)
        .map(|i| Artifact::new(Kind(0), &b""[..], vec![i; 64 << 10]))
        .collect();
    for a in honest.iter().chain([&big]) {
        step(&mut node, t(0), Input::Publish(a.clone()));
    }
    // The attacker (peer 1) asks for the 4 MiB artifact 1,000 times; the honest member (peer 2)
    // fetches 20 artifacts in between.
    let (mut bytes, mut refused, mut cut_at) = (0u64, 0u64, None);
    let mut honest_got = BTreeSet::new();
    for r in 0..1_000u64 {
        let outs = crate::support::recv(&mut node, t(1), id(1), request(r, big.id));
        bytes += served_to(&outs, 1);
        refused += sends(&outs)
            .iter()
            .filter(|(_, m, _)| matches!(m, Message::NotFound { .. }))
            .count() as u64;
        if let Some(reason) = outs.iter().find_map(|o| match o {
            p2p_core::Output::Disconnect { peer, reason } if *peer == id(1) => Some(reason.clone()),
            _ => None,
        }) {
            assert_eq!(
                reason,
                p2p_core::DisconnectReason::RepeatedRequests { limit }
            );
            cut_at.get_or_insert(r);
        }
        if r % 50 == 0 {
            let i = (r / 50) as usize;
            honest_got.extend(honest_fetch(&mut node, t(1), &honest[i..=i]));
        }
    }
    // Before: 1,000 x 4 MiB. After: one serve (a repeat within half the 6 s request timeout of
    // a 4 MiB artifact is early), 64 early repeats answered not-found, cut off at the 66th.
    assert_eq!(bytes, 4 << 20, "one serve of 4 MiB");
    assert_eq!(refused, u64::from(limit));
    assert_eq!(cut_at, Some(u64::from(limit) + 1));
    // Every honest request was answered in the input that carried it (0 ms).
    assert_eq!(honest_got, honest.iter().map(|a| a.id).collect());
}

#[test]
fn the_byte_budget_bounds_what_one_peer_gets_while_others_are_served() {
    let cfg = Config {
        serve_rate: 16 << 20,
        serve_burst: 8 << 20,
        chunk_size: WHOLE,
        ..Config::default()
    };
    let (rate, burst) = (cfg.serve_rate, cfg.serve_burst);
    let (mut node, _) = node_with_pool(cfg, 0);
    let bigs: Vec<Artifact> = (0..20u8)
        .map(|i| Artifact::with_chunk_size(Kind(1), &b""[..], vec![i; 4 << 20], WHOLE))
        .collect();
    let honest: Vec<Artifact> = (0..20u8)
        .map(|i| Artifact::new(Kind(0), &b""[..], vec![i; 64 << 10]))
        .collect();
    for a in bigs.iter().chain(&honest) {
        step(&mut node, t(0), Input::Publish(a.clone()));
    }
    // 1,000 requests over 20 artifacts of 4 MiB (50 each: early repeats, within the mark).
    let mut bytes = 0u64;
    for r in 0..1_000u64 {
        let outs =
            crate::support::recv(&mut node, t(0), id(1), request(r, bigs[r as usize % 20].id));
        bytes += served_to(&outs, 1);
    }
    assert!(node.connected_peers().any(|p| *p == id(1)));
    // Two artifacts fit the burst; the first request of each of the other 18 waits, the
    // repeats were refused.
    assert_eq!(bytes, 2 * (4 << 20));
    assert_eq!(node.table_sizes().max_queued_requests_of_one_peer, 18);
    // Over 10 s, the attacker gets at most the burst plus the rate (plus one artifact); the
    // honest member's requests are answered at once at every step.
    let mut now = t(0);
    let (mut honest_at, mut last_serve) = (0, t(0));
    while now < t(10_000) {
        now = node.poll_timeout().unwrap_or(t(10_000)).min(t(10_000));
        let outs = step(&mut node, now, Input::Timeout);
        let served = served_to(&outs, 1);
        if served > 0 {
            last_serve = now;
        }
        bytes += served;
        let elapsed = now.saturating_since(t(0)).as_secs_f64();
        let bound = burst as f64 + rate as f64 * elapsed + (4u64 << 20) as f64;
        assert!(bytes as f64 <= bound, "{bytes} bytes by {elapsed} s");
        while honest_at < honest.len() && now >= t(500 * honest_at as u64) {
            let got = honest_fetch(&mut node, now, &honest[honest_at..=honest_at]);
            assert_eq!(got.len(), 1, "honest request at {now:?} answered at once");
            honest_at += 1;
        }
    }
    assert_eq!(honest_at, honest.len());
    // The 18 held ones went out as the budget refilled: 72 MiB at 16 MiB/s, the last at 4.5 s.
    assert_eq!(bytes, 20 * (4 << 20));
    assert_eq!(last_serve, t(4_500));
    assert_eq!(node.table_sizes().max_queued_requests_of_one_peer, 0);
}
