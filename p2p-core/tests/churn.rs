//! Reconnect churn and repeated requests: a member that connects and leaves again and again
//! costs the node a bounded amount of work per cycle, and a member that asks for the same
//! artifact again and again gets a bounded number of bytes, while honest members are served.

mod support;

use p2p_core::{Artifact, ArtifactId, Config, Input, Kind, Message, Node, Time};
use std::collections::BTreeSet;
use support::{connected_node, id, sends, step};

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

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
