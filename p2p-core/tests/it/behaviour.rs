//! One test per behaviour of the core, driving a single node by hand.

use crate::support::*;
use p2p_core::{
    Advert, Artifact, ArtifactId, Bytes, Class, Config, Decision, DisconnectReason, Event, Input,
    InputError, Kind, Message, Node, Output, Priority, PriorityFnRef, RetryReason, Time,
};
use std::time::Duration;

fn art(n: u8, size: usize) -> Artifact {
    let mut data = vec![n; size];
    if size > 0 {
        data[0] = n.wrapping_mul(31);
    }
    Artifact::with_chunk_size(Kind(0), &b"a"[..], data, WHOLE)
}

fn advert_of(a: &Artifact) -> Message {
    Message::Adverts(vec![a.advert()])
}

fn response(req_id: u64, a: &Artifact) -> Message {
    Message::Response {
        req_id,
        id: a.id,
        data: a.data.clone(),
    }
}

fn events(outs: &[Output]) -> Vec<Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

// ---- 1. identities, types, messages ----

#[test]
fn messages_travel_in_the_class_of_their_priority() {
    let mut node = connected_node(Config::default(), 1);
    let a = art(1, 5000);
    step(&mut node, t(0), Input::Publish(a.clone()));
    // Repeats one request timeout apart: an honest requester's retries (earlier ones would be
    // early repeats, answered not-found).
    for (k, (priority, class)) in [
        (Priority::URGENT, Class::Urgent),
        (Priority::NORMAL, Class::Normal),
        (Priority::BULK, Class::Bulk),
    ]
    .into_iter()
    .enumerate()
    {
        let outs = recv(
            &mut node,
            t(3000 * k as u64),
            id(1),
            Message::Request {
                req_id: 9,
                id: a.id,
                priority,
            },
        );
        let s = sends(&outs);
        assert!(matches!(s[0].1, Message::Response { .. }));
        assert_eq!(s[0].2, class);
    }
    let outs = recv(
        &mut node,
        t(6000),
        id(1),
        Message::Request {
            req_id: 10,
            id: ArtifactId([9; 32]),
            priority: Priority::URGENT,
        },
    );
    assert_eq!(sends(&outs)[0].2, Class::Control, "not-found is control");
}

// ---- 2. membership ----

#[test]
fn non_member_connection_is_refused() {
    let mut node = connected_node(Config::default(), 2);
    let outs = step(&mut node, t(0), Input::PeerConnected(id(7)));
    assert_eq!(
        disconnects(&outs),
        vec![(id(7), DisconnectReason::NotMember)]
    );
    // And nothing it sends is taken.
    let a = art(1, 10);
    let outs = recv(
        &mut node,
        t(0),
        id(7),
        Message::Push {
            advert: a.advert(),
            data: a.data.clone(),
        },
    );
    assert!(delivered(&outs).is_empty());
}

#[test]
fn removed_member_is_disconnected_and_forgotten() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(2), advert_of(&a));
    assert_eq!(requests(&outs).len(), 1);
    let outs = step(
        &mut node,
        t(1),
        Input::Membership {
            version: 2,
            members: vec![id(0), id(1)],
        },
    );
    assert_eq!(
        disconnects(&outs),
        vec![(id(2), DisconnectReason::NotMember)]
    );
    let sizes = node.table_sizes();
    assert_eq!(sizes.tracked_adverts, 0);
    assert_eq!(sizes.pending_downloads, 0);
    assert_eq!(sizes.requests, 0);
    assert_eq!(node.connected_peers().count(), 1);
    // Publishing now reaches only the remaining member.
    let outs = step(&mut node, t(2), Input::Publish(art(2, 10)));
    let to: Vec<_> = sends(&outs).into_iter().map(|s| s.0).collect();
    assert_eq!(to, vec![id(1)]);
}

// ---- 3. publishing ----

#[test]
fn small_artifacts_are_pushed_large_ones_advertised() {
    let mut node = connected_node(Config::default(), 3);
    let outs = step(&mut node, t(0), Input::Publish(art(1, 1024)));
    let s = sends(&outs);
    assert_eq!(s.len(), 3);
    assert!(
        s.iter()
            .all(|(_, m, c)| matches!(m, Message::Push { .. }) && *c == Class::Urgent)
    );
    let outs = step(&mut node, t(0), Input::Publish(art(2, 1025)));
    let s = sends(&outs);
    assert_eq!(s.len(), 3);
    assert!(
        s.iter()
            .all(|(_, m, c)| matches!(m, Message::Adverts(v) if v.len() == 1)
                && *c == Class::Control)
    );
}

#[test]
fn remove_withdraws_from_every_peer() {
    let mut node = connected_node(Config::default(), 3);
    let a = art(1, 5000);
    step(&mut node, t(0), Input::Publish(a.clone()));
    let outs = step(&mut node, t(1), Input::Remove(a.id));
    let s = sends(&outs);
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|(_, m, _)| *m == Message::Withdraw(a.id)));
    assert!(!node.has_artifact(&a.id));
    // And a request for it is now answered not-found.
    let outs = recv(
        &mut node,
        t(2),
        id(1),
        Message::Request {
            req_id: 1,
            id: a.id,
            priority: Priority::NORMAL,
        },
    );
    assert!(matches!(
        sends(&outs)[0].1,
        Message::NotFound { req_id: 1, .. }
    ));
}

#[test]
fn resync_on_reconnect_readvertises_pool() {
    let mut node = connected_node(Config::default(), 2);
    let (a, b) = (art(1, 10), art(2, 5000));
    step(&mut node, t(0), Input::Publish(a.clone()));
    step(&mut node, t(0), Input::Publish(b.clone()));
    step(&mut node, t(1), Input::PeerDisconnected(id(1)));
    let outs = step(&mut node, t(2), Input::PeerConnected(id(1)));
    let s = sends(&outs);
    assert_eq!(s.len(), 1, "one batch");
    let Message::Adverts(adverts) = &s[0].1 else {
        panic!("expected adverts, got {:?}", s[0].1)
    };
    let mut ids: Vec<_> = adverts.iter().map(|a| a.id).collect();
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want, "resync advertises (never pushes) the whole pool");
}

#[test]
fn publish_rejects_bad_artifacts_with_typed_errors() {
    let cfg = Config {
        max_artifact_size: 16 << 20,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let big = Artifact::new(Kind(0), &b""[..], vec![0u8; (16 << 20) + 1]);
    assert!(matches!(
        node.handle_input(t(0), Input::Publish(big)),
        Err(InputError::ArtifactTooLarge { .. })
    ));
    let long_attr = Artifact::new(Kind(0), vec![0u8; 65], &b"x"[..]);
    assert!(matches!(
        node.handle_input(t(0), Input::Publish(long_attr)),
        Err(InputError::AttrTooLong { len: 65, max: 64 })
    ));
    let mut forged = art(1, 10);
    forged.data = Bytes::from_static(b"other");
    assert_eq!(
        node.handle_input(t(0), Input::Publish(forged)),
        Err(InputError::IdMismatch)
    );
}

// ---- 4. receiving adverts ----

#[test]
fn advert_flood_of_one_kind_does_not_crowd_out_another() {
    let cfg = Config {
        max_adverts_per_peer_per_kind: 10,
        max_adverts_per_peer: 100,
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 2);
    // Peer 1 floods kind 1 past its per-kind limit and is cut off.
    let flood: Vec<Advert> = (0..11u8)
        .map(|i| Artifact::new(Kind(1), &b""[..], vec![i; 2000]).advert())
        .collect();
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(flood));
    assert_eq!(
        disconnects(&outs),
        vec![(
            id(1),
            DisconnectReason::TooManyAdvertsOfKind {
                kind: Kind(1),
                limit: 10
            }
        )]
    );
    // Peer 2's adverts of kind 1 and kind 2 are all still taken.
    let mixed: Vec<Advert> = (0..10u8)
        .flat_map(|i| {
            [
                Artifact::new(Kind(1), &b""[..], vec![i; 3000]).advert(),
                Artifact::new(Kind(2), &b""[..], vec![i; 3001]).advert(),
            ]
        })
        .collect();
    let outs = recv(&mut node, t(1), id(2), Message::Adverts(mixed));
    assert!(disconnects(&outs).is_empty());
    assert_eq!(node.table_sizes().tracked_adverts, 20);
}

#[test]
fn later_adverts_are_fetched_after_reevaluation() {
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    assert!(requests(&outs).is_empty());
    node.set_priority_fn(PriorityFnRef::fetch_all());
    let outs = step(&mut node, t(1), Input::Reevaluate);
    assert_eq!(requests(&outs).len(), 1);
}

#[test]
fn periodic_reevaluation_runs_every_interval() {
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        reevaluate_interval: Duration::from_secs(3),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    recv(&mut node, t(0), id(1), advert_of(&art(1, 5000)));
    assert_eq!(node.poll_timeout(), Some(t(3000)));
    node.set_priority_fn(PriorityFnRef::fetch_all());
    let outs = step(&mut node, t(2999), Input::Timeout);
    assert!(requests(&outs).is_empty(), "not before the interval");
    let outs = step(&mut node, t(3000), Input::Timeout);
    assert_eq!(requests(&outs).len(), 1);
}

#[test]
fn dropped_adverts_are_forgotten_and_not_fetched() {
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Drop),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    assert!(requests(&outs).is_empty());
    assert!(matches!(events(&outs)[..], [Event::Dropped { .. }]));
    assert_eq!(node.table_sizes().tracked_adverts, 0);
    // A second advert of the same id is dropped cheaply while the decision holds.
    let outs = recv(&mut node, t(1), id(2), advert_of(&a));
    assert!(requests(&outs).is_empty());
    assert_eq!(node.table_sizes().pending_downloads, 0);
}

#[test]
fn reevaluation_to_drop_aborts_a_queued_download() {
    let cfg = Config {
        max_in_flight: 1,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let (a, b) = (art(1, 5000), art(2, 5000));
    recv(
        &mut node,
        t(0),
        id(1),
        Message::Adverts(vec![a.advert(), b.advert()]),
    );
    assert_eq!(node.table_sizes().pending_downloads, 2);
    let b_id = b.id;
    node.set_priority_fn(PriorityFnRef::new(move |ad: &Advert| {
        if ad.id == b_id {
            Decision::Drop
        } else {
            Decision::Fetch(Priority::NORMAL)
        }
    }));
    step(&mut node, t(1), Input::Reevaluate);
    assert_eq!(node.table_sizes().pending_downloads, 1);
}

// ---- 5. downloads ----

#[test]
fn withdrawn_advert_aborts_download() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let [(to, _, _)] = requests(&outs)[..] else {
        panic!()
    };
    assert_eq!(to, id(1));
    recv(&mut node, t(1), id(2), advert_of(&a));
    // Peer 1 withdraws: the download moves to peer 2 at once.
    let outs = recv(&mut node, t(2), id(1), Message::Withdraw(a.id));
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, id(2));
    assert!(events(&outs).iter().any(|e| matches!(
        e,
        Event::Retry {
            reason: RetryReason::Withdrawn,
            ..
        }
    )));
    // Peer 2 withdraws too: nothing is left to fetch and the state is freed.
    recv(&mut node, t(3), id(2), Message::Withdraw(a.id));
    assert_eq!(node.table_sizes().pending_downloads, 0);
    assert_eq!(node.table_sizes().tracked_adverts, 0);
}

#[test]
fn hash_mismatch_retries_other_source_and_penalizes() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (first, req, _) = requests(&outs)[0];
    assert_eq!(first, id(1));
    let outs = recv(&mut node, t(0), id(2), advert_of(&a));
    assert!(requests(&outs).is_empty(), "one request at a time");
    let outs = recv(
        &mut node,
        t(1),
        id(1),
        Message::Response {
            req_id: req,
            id: a.id,
            data: Bytes::from(vec![0u8; 5000]),
        },
    );
    assert!(delivered(&outs).is_empty());
    assert!(events(&outs).contains(&Event::Penalized {
        peer: id(1),
        count: 1
    }));
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, id(2), "retried with the other source");
    let outs = recv(&mut node, t(2), id(2), response(r[0].1, &a));
    assert_eq!(delivered(&outs), vec![a]);
}

#[test]
fn repeated_bad_data_disconnects_peer() {
    let cfg = Config {
        max_bad_data_per_peer: 1,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let (a, b) = (art(1, 10), art(2, 10));
    let bad = |x: &Artifact| Message::Push {
        advert: x.advert(),
        data: Bytes::from(vec![0xee; 10]),
    };
    let outs = recv(&mut node, t(0), id(1), bad(&a));
    assert!(disconnects(&outs).is_empty());
    let outs = recv(&mut node, t(0), id(1), bad(&b));
    assert_eq!(
        disconnects(&outs),
        vec![(id(1), DisconnectReason::BadData { count: 2 })]
    );
}

#[test]
fn timeout_scales_with_size_and_retries_elsewhere() {
    let cfg = Config {
        reevaluate_interval: Duration::from_secs(3600),
        chunk_size: WHOLE,
        ..Config::default()
    };
    let size = 4 << 20;
    let expected = cfg.request_timeout(size as u64);
    assert_eq!(expected, Duration::from_secs(2 + 4));
    let mut node = connected_node(cfg, 2);
    let a = art(1, size);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let first = requests(&outs)[0].0;
    recv(&mut node, t(0), id(2), advert_of(&a));
    assert_eq!(node.poll_timeout(), Some(Time::ZERO + expected));
    let outs = step(&mut node, Time::ZERO + expected, Input::Timeout);
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_ne!(
        r[0].0, first,
        "the timed-out source is not asked again first"
    );
    assert!(events(&outs).iter().any(|e| matches!(
        e,
        Event::Retry {
            reason: RetryReason::Timeout,
            ..
        }
    )));
    assert_eq!(node.metrics().timeouts, 1);
}

#[test]
fn not_found_retries_other_source() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (p, req, _) = requests(&outs)[0];
    recv(&mut node, t(0), id(2), advert_of(&a));
    let outs = recv(
        &mut node,
        t(1),
        p,
        Message::NotFound {
            req_id: req,
            id: a.id,
        },
    );
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_ne!(r[0].0, p);
    assert_eq!(
        node.table_sizes().tracked_adverts,
        1,
        "the not-found advert is forgotten"
    );
}

#[test]
fn disconnect_retries_other_source() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (p, _, _) = requests(&outs)[0];
    recv(&mut node, t(0), id(2), advert_of(&a));
    let outs = step(&mut node, t(1), Input::PeerDisconnected(p));
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_ne!(r[0].0, p);
}

#[test]
fn source_with_fewest_in_flight_is_chosen() {
    for seed in 0..10 {
        let cfg = Config {
            seed,
            ..Config::default()
        };
        let mut node = connected_node(cfg, 2);
        let (a, b) = (art(1, 5000), art(2, 5000));
        // Only peer 1 has `a`: it has one request in flight.
        let outs = recv(&mut node, t(0), id(1), advert_of(&a));
        assert_eq!(requests(&outs)[0].0, id(1));
        // Both have `b`, known before the download starts: the idle peer 2 is asked.
        node.set_priority_fn(PriorityFnRef::new(|_: &Advert| Decision::Later));
        recv(&mut node, t(0), id(1), advert_of(&b));
        recv(&mut node, t(0), id(2), advert_of(&b));
        node.set_priority_fn(PriorityFnRef::fetch_all());
        let outs = step(&mut node, t(1), Input::Reevaluate);
        assert_eq!(requests(&outs)[..], [(id(2), 2, b.id)], "seed {seed}");
    }
}

#[test]
fn a_source_that_served_is_asked_before_an_idle_new_one_and_a_failing_one_last() {
    let mut node = connected_node(Config::default(), 3);
    // Peer 1 serves one artifact and then holds a request in flight; peer 2 is new and idle.
    let (own, busy) = (art(1, 5000), art(2, 5000));
    let outs = recv(&mut node, t(0), id(1), advert_of(&own));
    let (_, req, _) = requests(&outs)[0];
    recv(&mut node, t(0), id(1), response(req, &own));
    let outs = recv(&mut node, t(0), id(1), advert_of(&busy));
    assert_eq!(requests(&outs)[0].0, id(1));
    // An artifact both advertise: the proven peer 1 is asked although it is busier.
    let both = art(3, 5000);
    node.set_priority_fn(PriorityFnRef::new(|_: &Advert| Decision::Later));
    recv(&mut node, t(0), id(2), advert_of(&both));
    recv(&mut node, t(0), id(1), advert_of(&both));
    node.set_priority_fn(PriorityFnRef::fetch_all());
    let outs = step(&mut node, t(1), Input::Reevaluate);
    assert_eq!(requests(&outs)[0].0, id(1), "the proven source first");

    // Peer 3 fails a request (not found): it ranks after the new peer 2.
    let lost = art(4, 5000);
    let outs = recv(&mut node, t(2), id(3), advert_of(&lost));
    let (_, req, _) = requests(&outs)[0];
    recv(
        &mut node,
        t(2),
        id(3),
        Message::NotFound {
            req_id: req,
            id: lost.id,
        },
    );
    let last = art(5, 5000);
    node.set_priority_fn(PriorityFnRef::new(|_: &Advert| Decision::Later));
    recv(&mut node, t(3), id(3), advert_of(&last));
    recv(&mut node, t(3), id(2), advert_of(&last));
    node.set_priority_fn(PriorityFnRef::fetch_all());
    let outs = step(&mut node, t(4), Input::Reevaluate);
    let to_last: Vec<_> = requests(&outs)
        .into_iter()
        .filter(|r| r.2 == last.id)
        .collect();
    assert_eq!(to_last[0].0, id(2), "the new source before the failing one");
}

/// Which peer each of 40 equally-advertised artifacts is fetched from, one at a time, after
/// each peer served one artifact.
fn tie_break_choices(seed: u64) -> Vec<p2p_core::NodeId> {
    let cfg = Config {
        seed,
        max_in_flight: 1,
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 4);
    // Each peer first serves one artifact of its own, so all four are proven sources.
    node.set_priority_fn(PriorityFnRef::fetch_all());
    for p in 1..=4 {
        let own = art(200 + p as u8, 2000);
        let outs = recv(&mut node, t(0), id(p), advert_of(&own));
        let (_, req, _) = requests(&outs)[0];
        recv(&mut node, t(0), id(p), response(req, &own));
    }
    node.set_priority_fn(PriorityFnRef::new(|_: &Advert| Decision::Later));
    let arts: Vec<_> = (0..40u8).map(|i| art(i, 2000)).collect();
    for p in 1..=4 {
        recv(
            &mut node,
            t(0),
            id(p),
            Message::Adverts(arts.iter().map(|a| a.advert()).collect()),
        );
    }
    node.set_priority_fn(PriorityFnRef::fetch_all());
    let mut outs = step(&mut node, t(1), Input::Reevaluate);
    let mut chosen = Vec::new();
    while let Some(&(to, req, aid)) = requests(&outs).first() {
        chosen.push(to);
        let a = arts.iter().find(|a| a.id == aid).unwrap();
        outs = recv(&mut node, t(1), to, response(req, a));
    }
    chosen
}

#[test]
fn tie_break_spreads_requests_across_equal_sources() {
    // Equal load: the keyed hash of (artifact, peer) decides, so no peer wins them all...
    let chosen = tie_break_choices(7);
    assert_eq!(chosen.len(), 40);
    for p in 1..=4 {
        let n = chosen.iter().filter(|c| **c == id(p)).count();
        assert!(n >= 3, "peer {p} chosen {n} times of 40: {chosen:?}");
    }
    // ...and the hash is salted by the seed: another node's choices differ.
    assert_eq!(tie_break_choices(7), chosen);
    assert_ne!(tie_break_choices(8), chosen);
}

#[test]
fn downloads_start_in_priority_order_fifo_within_a_priority() {
    let cfg = Config {
        max_in_flight: 1,
        priority_fn: PriorityFnRef::new(|a: &Advert| Decision::Fetch(Priority(a.attr[0]))),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let mk = |n: u8, p: u8| Artifact::new(Kind(0), vec![p], vec![n; 3000]);
    let blocker = mk(0, 100);
    let outs = recv(&mut node, t(0), id(1), advert_of(&blocker));
    let mut req = requests(&outs)[0].1;
    let order = [mk(1, 10), mk(2, 200), mk(3, 10), mk(4, 200), mk(5, 50)];
    recv(
        &mut node,
        t(0),
        id(1),
        Message::Adverts(order.iter().map(|a| a.advert()).collect()),
    );
    let mut got = Vec::new();
    let mut current = blocker.clone();
    for _ in 0..order.len() {
        let outs = recv(&mut node, t(1), id(1), response(req, &current));
        let r = requests(&outs);
        assert_eq!(r.len(), 1);
        req = r[0].1;
        current = order.iter().find(|a| a.id == r[0].2).unwrap().clone();
        got.push(current.data[1]);
    }
    assert_eq!(got, vec![2, 4, 5, 1, 3]);
}

#[test]
fn in_flight_limits_hold_per_peer_and_global() {
    let cfg = Config {
        max_in_flight: 5,
        max_in_flight_per_peer: 2,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 4);
    for p in 1..=4 {
        let adverts = (0..10u8)
            .map(|i| art(p as u8 * 16 + i, 2000).advert())
            .collect();
        recv(&mut node, t(0), id(p), Message::Adverts(adverts));
    }
    let sizes = node.table_sizes();
    assert_eq!(sizes.in_flight, 5);
    assert_eq!(sizes.pending_downloads, 40);
}

#[test]
fn in_flight_bytes_limit_holds_but_never_blocks_one_large_artifact() {
    let cfg = Config {
        max_in_flight_bytes: 10_000,
        max_in_flight_bytes_per_peer: 10_000,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let adverts = vec![art(1, 6000).advert(), art(2, 6000).advert()];
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(adverts));
    assert_eq!(
        requests(&outs).len(),
        1,
        "the second would pass the byte limit"
    );
    let huge = art(3, 50_000);
    let mut node = connected_node(
        Config {
            max_in_flight_bytes: 10_000,
            max_in_flight_bytes_per_peer: 10_000,
            ..Config::default()
        },
        1,
    );
    let outs = recv(&mut node, t(0), id(1), advert_of(&huge));
    assert_eq!(
        requests(&outs).len(),
        1,
        "an artifact over the limit is fetched alone"
    );
}

#[test]
fn backoff_grows_when_all_sources_fail() {
    let cfg = Config {
        retry_backoff_initial: Duration::from_millis(100),
        reevaluate_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    assert_eq!(requests(&outs).len(), 1);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let deadline = node.poll_timeout().unwrap();
        let outs = step(&mut node, deadline, Input::Timeout);
        assert!(requests(&outs).is_empty(), "the only source failed: wait");
        let resume = node.poll_timeout().unwrap();
        waits.push(resume - deadline);
        let outs = step(&mut node, resume, Input::Timeout);
        assert_eq!(requests(&outs).len(), 1, "asked again after the back-off");
    }
    assert_eq!(
        waits,
        [100, 200, 400].map(Duration::from_millis),
        "exponential back-off"
    );
}

#[test]
fn a_new_source_is_tried_without_waiting_out_the_backoff() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (_, req, _) = requests(&outs)[0];
    // Peer 1 times out; it was the only source, so the download backs off.
    let due = node.poll_timeout().unwrap();
    let outs = step(&mut node, due, Input::Timeout);
    assert!(requests(&outs).is_empty());
    // Peer 2 advertises: it is asked at once.
    let outs = recv(&mut node, due, id(2), advert_of(&a));
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, id(2));
    // Peer 1's late answer is still good data: delivered once, peer 2's answer is a duplicate.
    let outs = recv(&mut node, due, id(1), response(req, &a));
    assert_eq!(delivered(&outs).len(), 1);
    let outs = recv(&mut node, due, id(2), response(r[0].1, &a));
    assert!(delivered(&outs).is_empty());
    assert_eq!(node.metrics().duplicates, 1);
}

#[test]
fn large_artifacts_fetch_in_parallel_when_configured() {
    let cfg = Config {
        parallel_fetch_min_size: 1 << 20,
        max_parallel_requests: 2,
        chunk_size: WHOLE,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let big = art(1, 2 << 20);
    let small = art(2, 5000);
    for p in 1..=3 {
        recv(
            &mut node,
            t(0),
            id(p),
            Message::Adverts(vec![big.advert(), small.advert()]),
        );
    }
    let sizes = node.table_sizes();
    assert_eq!(
        sizes.in_flight, 3,
        "two for the large artifact, one for the small"
    );
}

// ---- 6. delivery ----

#[test]
fn delivered_exactly_once_despite_duplicate_adverts_and_pushes() {
    let mut node = connected_node(Config::default(), 3);
    let a = art(1, 10);
    let push = Message::Push {
        advert: a.advert(),
        data: a.data.clone(),
    };
    let mut count = 0;
    for p in 1..=3 {
        count += delivered(&recv(&mut node, t(0), id(p), push.clone())).len();
        count += delivered(&recv(&mut node, t(0), id(p), advert_of(&a))).len();
    }
    assert_eq!(count, 1);
    assert_eq!(node.metrics().duplicates, 2);
    assert_eq!(node.table_sizes().pending_downloads, 0);
}

#[test]
fn pushed_artifact_with_bad_hash_is_rejected() {
    let mut node = connected_node(Config::default(), 1);
    let a = art(1, 10);
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Push {
            advert: a.advert(),
            data: Bytes::from_static(b"0123456789"),
        },
    );
    assert!(delivered(&outs).is_empty());
    assert_eq!(node.metrics().bad_data, 1);
}

#[test]
fn relay_advertises_not_pushes_and_skips_known_holders() {
    let cfg = Config {
        auto_relay: true,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 4);
    let a = art(1, 10);
    // Peer 2 advertised it before peer 1's push arrives: both hold it.
    recv(&mut node, t(0), id(2), advert_of(&a));
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Push {
            advert: a.advert(),
            data: a.data.clone(),
        },
    );
    assert_eq!(delivered(&outs).len(), 1);
    let mut to: Vec<_> = sends(&outs)
        .into_iter()
        .filter(|(_, m, _)| matches!(m, Message::Adverts(_)))
        .map(|s| s.0)
        .collect();
    to.sort();
    assert_eq!(
        to,
        vec![id(3), id(4)],
        "relayed as an advert, not to holders"
    );
    assert!(
        !sends(&outs)
            .iter()
            .any(|(_, m, _)| matches!(m, Message::Push { .. }))
    );
}

#[test]
fn application_relay_after_delivery_skips_holders() {
    let mut node = connected_node(Config::default(), 3);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (_, req, _) = requests(&outs)[0];
    let outs = recv(&mut node, t(0), id(1), response(req, &a));
    let got = delivered(&outs);
    assert_eq!(got.len(), 1);
    // The application validates and publishes it: adverts go to peers 2 and 3 only.
    let outs = step(&mut node, t(1), Input::Publish(got[0].clone()));
    let mut to: Vec<_> = sends(&outs).into_iter().map(|s| s.0).collect();
    to.sort();
    assert_eq!(to, vec![id(2), id(3)]);
}

#[test]
fn adverts_to_one_peer_are_batched() {
    let cfg = Config {
        auto_relay: true,
        advert_batch_size: 3,
        ..Config::default()
    };
    let mut node = connected_node(cfg.clone(), 2);
    // Seven artifacts arrive in one batch of pushes... as adverts from peer 1, fetched and relayed.
    let arts: Vec<_> = (0..7u8).map(|i| art(i, 2000)).collect();
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Adverts(arts.iter().map(|a| a.advert()).collect()),
    );
    let mut batch_sizes = Vec::new();
    for (_, req, id_) in requests(&outs) {
        let a = arts.iter().find(|a| a.id == id_).unwrap();
        let outs = recv(&mut node, t(1), id(1), response(req, a));
        for (_, m, _) in sends(&outs) {
            if let Message::Adverts(v) = m {
                batch_sizes.push(v.len());
            }
        }
    }
    // Each delivery is its own input, so each relay is its own batch here; a resync shows the
    // batching: one batch per input, the node asking to run again until it is done.
    assert_eq!(batch_sizes.iter().sum::<usize>(), 7);
    step(&mut node, t(2), Input::PeerDisconnected(id(2)));
    let mut outs = step(&mut node, t(3), Input::PeerConnected(id(2)));
    let mut sizes: Vec<Vec<usize>> = Vec::new();
    loop {
        sizes.push(
            sends(&outs)
                .into_iter()
                .map(|(_, m, _)| match m {
                    Message::Adverts(v) => v.len(),
                    other => panic!("unexpected {other:?}"),
                })
                .collect(),
        );
        match node.poll_timeout() {
            Some(at) if at <= t(3) + cfg.resync_interval * 3 => {
                outs = step(&mut node, at, Input::Timeout)
            }
            _ => break,
        }
    }
    assert_eq!(sizes, vec![vec![3], vec![3], vec![1]]);
}

// ---- 7. serving ----

#[test]
fn requests_are_answered_from_pool_or_not_found() {
    let mut node = connected_node(Config::default(), 1);
    let a = art(1, 3000);
    step(&mut node, t(0), Input::Publish(a.clone()));
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Request {
            req_id: 5,
            id: a.id,
            priority: Priority::NORMAL,
        },
    );
    assert_eq!(sends(&outs)[0].1, response(5, &a));
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Request {
            req_id: 6,
            id: ArtifactId([3; 32]),
            priority: Priority::NORMAL,
        },
    );
    assert_eq!(
        sends(&outs)[0].1,
        Message::NotFound {
            req_id: 6,
            id: ArtifactId([3; 32])
        }
    );
}

#[test]
fn congested_peer_requests_wait_in_a_bounded_queue() {
    let cfg = Config {
        max_queued_requests_per_peer: 2,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    // Distinct artifacts: a second request of one artifact while one is held is answered
    // not-found (see `a_peer_repeating_requests_gets_bounded_serves_then_is_cut_off`).
    let arts: Vec<_> = (1..=5u8).map(|i| art(i, 3000)).collect();
    for a in &arts {
        step(&mut node, t(0), Input::Publish(a.clone()));
    }
    step(
        &mut node,
        t(0),
        Input::Congestion {
            peer: id(1),
            congested: true,
        },
    );
    let req = |r: u64| Message::Request {
        req_id: r,
        id: arts[r as usize - 1].id,
        priority: Priority::NORMAL,
    };
    assert!(sends(&recv(&mut node, t(0), id(1), req(1))).is_empty());
    assert!(sends(&recv(&mut node, t(0), id(1), req(2))).is_empty());
    let outs = step(
        &mut node,
        t(1),
        Input::Congestion {
            peer: id(1),
            congested: false,
        },
    );
    assert_eq!(sends(&outs).len(), 2, "served when the queue drains");
    step(
        &mut node,
        t(2),
        Input::Congestion {
            peer: id(1),
            congested: true,
        },
    );
    recv(&mut node, t(2), id(1), req(3));
    recv(&mut node, t(2), id(1), req(4));
    let outs = recv(&mut node, t(2), id(1), req(5));
    assert_eq!(
        disconnects(&outs),
        vec![(id(1), DisconnectReason::TooManyRequests { limit: 2 })]
    );
}

// ---- 8. bounds ----

#[test]
fn peer_exceeding_advert_limit_is_cut_off() {
    let cfg = Config {
        max_adverts_per_peer: 5,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let adverts = (0..6u8).map(|i| art(i, 2000).advert()).collect();
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(adverts));
    assert_eq!(
        disconnects(&outs),
        vec![(id(1), DisconnectReason::TooManyAdverts { limit: 5 })]
    );
    assert_eq!(node.table_sizes().tracked_adverts, 0, "its state is freed");
}

#[test]
fn oversized_batches_and_fields_are_protocol_violations() {
    let cfg = Config {
        max_adverts_per_message: 2,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let adverts = (0..3u8).map(|i| art(i, 2000).advert()).collect();
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(adverts));
    assert!(matches!(
        disconnects(&outs)[..],
        [(_, DisconnectReason::ProtocolViolation(_))]
    ));
    let mut a = art(1, 2000).advert();
    a.attr = Bytes::from(vec![0; 65]);
    let outs = recv(&mut node, t(0), id(2), Message::Adverts(vec![a]));
    assert!(matches!(
        disconnects(&outs)[..],
        [(
            _,
            DisconnectReason::ProtocolViolation("advert attr too long")
        )]
    ));
    let outs = recv(
        &mut node,
        t(0),
        id(3),
        Message::Response {
            req_id: 77,
            id: ArtifactId([1; 32]),
            data: Bytes::new(),
        },
    );
    assert!(matches!(
        disconnects(&outs)[..],
        [(_, DisconnectReason::ProtocolViolation(_))]
    ));
}

#[test]
fn pending_download_table_is_bounded() {
    let cfg = Config {
        max_pending_downloads: 3,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let adverts = (0..10u8).map(|i| art(i, 2000).advert()).collect();
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(adverts));
    assert!(
        disconnects(&outs).is_empty(),
        "a full table is not the peer's fault"
    );
    assert_eq!(node.table_sizes().pending_downloads, 3);
    assert_eq!(node.metrics().adverts_dropped, 7);
}

#[test]
fn delivered_memory_is_bounded() {
    let cfg = Config {
        max_delivered_memory: 4,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    for i in 0..10u8 {
        let a = art(i, 10);
        recv(
            &mut node,
            t(0),
            id(1),
            Message::Push {
                advert: a.advert(),
                data: a.data.clone(),
            },
        );
    }
    assert_eq!(node.table_sizes().delivered_memory, 4);
    assert_eq!(node.metrics().delivered, 10);
}

// ---- 9. observability ----

#[test]
fn metrics_count_deliveries_retries_and_gauges() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let outs = recv(&mut node, t(0), id(1), advert_of(&a));
    let (p, req, _) = requests(&outs)[0];
    recv(&mut node, t(0), id(2), advert_of(&a));
    let m = node.metrics();
    assert_eq!(m.adverts_received, 2);
    assert_eq!(m.tracked_adverts, 2);
    assert_eq!(m.pending_downloads, 1);
    assert_eq!(m.in_flight, 1);
    assert_eq!(m.in_flight_bytes, 5000);
    assert_eq!(m.connected_peers, 2);
    let outs = recv(
        &mut node,
        t(1),
        p,
        Message::NotFound {
            req_id: req,
            id: a.id,
        },
    );
    let (q, req, _) = requests(&outs)[0];
    recv(&mut node, t(2), q, response(req, &a));
    let m = node.metrics();
    assert_eq!(m.retries, 1);
    assert_eq!(m.delivered, 1);
    assert_eq!(m.bytes_received, 5000);
    assert_eq!(m.pending_downloads, 0);
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.tracked_adverts, 0);
}

#[test]
fn new_node_reports_no_timeout_until_it_waits_on_something() {
    let node = Node::new(id(0), Config::default());
    assert_eq!(node.poll_timeout(), None);
}

// ---- adversarial metadata ----

#[test]
fn a_lying_first_advertiser_cannot_shut_out_honest_sources() {
    let mut node = connected_node(Config::default(), 2);
    let a = art(1, 5000);
    let mut lie = a.advert();
    lie.size = 4000;
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![lie]));
    let (_, req, _) = requests(&outs)[0];
    // The honest advert disagrees with the first one; it is still a source.
    recv(&mut node, t(0), id(2), advert_of(&a));
    assert_eq!(node.table_sizes().tracked_adverts, 2);
    let outs = recv(
        &mut node,
        t(1),
        id(1),
        Message::Response {
            req_id: req,
            id: a.id,
            data: Bytes::from(vec![0u8; 4000]),
        },
    );
    let r = requests(&outs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, id(2));
    let outs = recv(&mut node, t(2), id(2), response(r[0].1, &a));
    assert_eq!(
        delivered(&outs),
        vec![a],
        "the hash decides, not the advertised size"
    );
}

#[test]
fn a_dropped_advert_does_not_hide_a_different_advert_of_the_same_id() {
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|a: &Advert| {
            if a.kind == Kind(9) {
                Decision::Drop
            } else {
                Decision::Fetch(Priority::NORMAL)
            }
        }),
        ..Config::default()
    };
    let mut node = connected_node(cfg, 2);
    let a = art(1, 5000);
    let mut lie = a.advert();
    lie.kind = Kind(9);
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![lie.clone()]));
    assert!(requests(&outs).is_empty());
    // The same lie again is dropped cheaply...
    let outs = recv(&mut node, t(0), id(2), Message::Adverts(vec![lie]));
    assert!(requests(&outs).is_empty());
    // ...but the honest advert is evaluated on its own and fetched.
    let outs = recv(&mut node, t(0), id(2), advert_of(&a));
    assert_eq!(requests(&outs).len(), 1);
}

#[test]
fn table_bounds_report_exactly_the_tables_past_their_limit() {
    let cfg = Config {
        max_pending_downloads: 3,
        max_in_flight_bytes: 100,
        ..Config::default()
    };
    let ok = p2p_core::TableSizes {
        pending_downloads: 3,
        in_flight: 1,
        in_flight_bytes: 5000,
        ..Default::default()
    };
    assert!(
        ok.exceeded(&cfg, 2).is_empty(),
        "one large artifact may pass the byte limit"
    );
    let bad = p2p_core::TableSizes {
        pending_downloads: 4,
        in_flight: 2,
        in_flight_bytes: 101,
        ..Default::default()
    };
    assert_eq!(
        bad.exceeded(&cfg, 2),
        vec![("pending downloads", 4, 3), ("bytes in flight", 101, 100)]
    );
}
