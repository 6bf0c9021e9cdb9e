//! Determinism of the core itself: found broken by the simulator (per-instance random hash
//! seeds), kept as a regression test.

use p2p_core::{Artifact, Config, Input, Kind, Node, NodeId, Output, Time};

/// The order of the sends one node makes for one publish, fed identical inputs.
fn push_order(cfg: &Config) -> Vec<NodeId> {
    let me = NodeId([0; 32]);
    let peers: Vec<NodeId> = (1..=12u8).map(|i| NodeId([i; 32])).collect();
    let mut node = Node::new(me, cfg.clone());
    let mut members = peers.clone();
    members.push(me);
    let now = Time::ZERO;
    node.handle_input(
        now,
        Input::Membership {
            version: 1,
            members,
        },
    )
    .expect("membership");
    for p in &peers {
        node.handle_input(now, Input::PeerConnected(*p))
            .expect("connect");
    }
    while node.poll_output().is_some() {}
    let artifact = Artifact::new(Kind(1), &b""[..], vec![1u8; 100]);
    node.handle_input(now, Input::Publish(artifact))
        .expect("publish");
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Send { to, .. } => Some(to),
            _ => None,
        })
        .collect()
}

#[test]
fn same_config_and_inputs_give_the_same_output_order() {
    let cfg = Config {
        seed: 42,
        ..Config::default()
    };
    let first = push_order(&cfg);
    assert_eq!(first.len(), 12);
    for _ in 0..10 {
        assert_eq!(push_order(&cfg), first);
    }
}
