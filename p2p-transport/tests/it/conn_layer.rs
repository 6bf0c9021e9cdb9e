//! The sans-IO connection layer: one connection's halves back to back, and the node's peer
//! policy, driven with explicit times.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2p_core::{Advert, ArtifactId, Class, Kind, Message, NodeId, Time};
use p2p_transport::codec::{DecodeError, Hello};
use p2p_transport::conn::{ConnConfig, ConnError, ConnEvent, ConnReceiver, ConnSender, connection};
use p2p_transport::mux::{MuxConfig, MuxSender, PushError};
use p2p_transport::peers::{Admit, CloseCause, PeerPolicy, PolicyAction, PolicyConfig, Refusal};
use p2p_transport::topology::Topology;
use quickcheck::{QuickCheck, TestResult};

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn advert(i: u8) -> Message {
    Message::Adverts(vec![Advert {
        id: ArtifactId([i; 32]),
        kind: Kind(1),
        size: 1000,
        attr: Bytes::new(),
    }])
}

/// A push of `len` bytes, named `i`.
fn push(i: u8, len: usize) -> Message {
    Message::Push {
        advert: Advert {
            id: ArtifactId([i; 32]),
            kind: Kind(2),
            size: len as u64,
            attr: Bytes::new(),
        },
        data: Bytes::from(vec![i; len]),
    }
}

/// A response of `len` bytes, named `i`.
fn response(i: u8, len: usize) -> Message {
    Message::Response {
        req_id: u64::from(i),
        id: ArtifactId([i; 32]),
        data: Bytes::from(vec![i; len]),
    }
}

/// `t` less `d`.
fn before(t: Time, d: Duration) -> Time {
    Time::from_nanos(t.as_nanos() - d.as_nanos() as u64)
}

/// Moves everything `tx` transmits at `now` into `rx`, in chunks of `chunk` bytes.
fn pump(tx: &mut ConnSender, rx: &mut ConnReceiver, now: Time, chunk: usize) -> usize {
    let mut out = BytesMut::new();
    let mut total = 0;
    loop {
        let n = tx.poll_transmit(now, &mut out, 64 << 10);
        if n == 0 {
            break;
        }
        total += n;
    }
    tx.handle_written(now, total);
    while !out.is_empty() {
        let mut piece = out.split_to(chunk.min(out.len()));
        rx.handle_input(now, &mut piece);
    }
    total
}

fn events(rx: &mut ConnReceiver) -> Result<Vec<ConnEvent>, ConnError> {
    let mut v = Vec::new();
    while let Some(e) = rx.poll_event()? {
        v.push(e);
    }
    Ok(v)
}

#[test]
fn hello_comes_first_then_messages_in_order_and_keepalives_stay_below_the_core() {
    let cfg = ConnConfig::default();
    let (mut tx, _) = connection(&cfg, Hello::new(7), t(0)).unwrap();
    let (_, mut rx) = connection(&cfg, Hello::new(9), t(0)).unwrap();
    tx.push(Class::Control, &advert(1)).unwrap();
    tx.push(Class::Control, &advert(2)).unwrap();
    pump(&mut tx, &mut rx, t(1), 3);
    assert_eq!(
        events(&mut rx).unwrap(),
        vec![
            ConnEvent::Hello(Hello::new(7)),
            ConnEvent::Message(Class::Control, advert(1)),
            ConnEvent::Message(Class::Control, advert(2)),
        ]
    );
    // Nothing transmitted for the keepalive interval: a keepalive is queued, which the
    // receiver takes as proof of life but does not surface.
    assert_eq!(tx.poll_timeout(), t(1) + cfg.keepalive_interval);
    assert!(
        !tx.handle_timeout(t(1) + cfg.keepalive_interval / 2)
            .unwrap()
    );
    let at = t(1) + cfg.keepalive_interval;
    assert!(tx.handle_timeout(at).unwrap());
    assert_eq!(tx.keepalives(), 1);
    assert!(pump(&mut tx, &mut rx, at, 1000) > 0);
    assert_eq!(events(&mut rx).unwrap(), vec![]);
    assert_eq!(rx.poll_timeout(), Some(at + cfg.idle_timeout));
}

#[test]
fn a_silent_peer_fails_the_hello_deadline_then_a_quiet_one_the_idle_timeout() {
    let cfg = ConnConfig::default();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    assert_eq!(rx.poll_timeout(), Some(t(0) + cfg.hello_timeout));
    rx.handle_timeout(t(0) + cfg.hello_timeout);
    assert_eq!(
        rx.poll_event(),
        Err(ConnError::HelloTimeout(cfg.hello_timeout))
    );
    assert_eq!(rx.poll_timeout(), None, "a failed connection has no timer");

    let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    pump(&mut tx, &mut rx, t(100), 64);
    assert!(matches!(
        events(&mut rx).unwrap()[..],
        [ConnEvent::Hello(_)]
    ));
    let idle_at = t(100) + cfg.idle_timeout;
    assert_eq!(rx.poll_timeout(), Some(idle_at));
    rx.handle_timeout(before(idle_at, Duration::from_millis(1)));
    assert!(rx.poll_event().is_ok());
    rx.handle_timeout(idle_at);
    let e = rx.poll_event().unwrap_err();
    assert_eq!(e, ConnError::Idle(cfg.idle_timeout));
    assert!(!e.is_misbehaviour());
}

#[test]
fn a_bad_hello_or_a_bad_frame_is_a_misbehaviour_and_sticky() {
    let cfg = ConnConfig::default();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    rx.handle_input(t(1), &mut BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]));
    let e = rx.poll_event().unwrap_err();
    assert!(matches!(e, ConnError::Hello(DecodeError::BadMagic { .. })));
    assert!(e.is_misbehaviour());
    assert_eq!(rx.poll_event().unwrap_err(), e);

    let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    pump(&mut tx, &mut rx, t(1), 64);
    let mut garbage = BytesMut::from(&[0xffu8; 32][..]);
    rx.handle_input(t(2), &mut garbage);
    assert!(matches!(
        events(&mut rx).unwrap_err(),
        ConnError::Protocol(_)
    ));
}

#[test]
fn each_message_type_travels_only_in_its_classes_and_a_wrong_class_is_misbehaviour() {
    let cfg = ConnConfig::default();
    let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    // The sending half refuses what the receiving half would cut off for.
    for (class, msg) in [
        (Class::Urgent, advert(1)),
        (Class::Bulk, Message::Withdraw(ArtifactId([1; 32]))),
        (Class::Control, push(1, 10)),
        (Class::Normal, push(1, 10)),
        (Class::Control, response(1, 10)),
    ] {
        assert_eq!(
            tx.push(class, &msg),
            Err(PushError::ClassNotAllowed {
                msg: msg.name(),
                class
            })
        );
        assert!(!p2p_transport::codec::class_allowed(&msg, class));
    }
    assert_eq!(tx.mux().queued_bytes_total(), 0);
    for class in [Class::Urgent, Class::Normal, Class::Bulk] {
        tx.push(class, &response(2, 10)).unwrap();
    }
    tx.push(Class::Urgent, &push(2, 10)).unwrap();

    // A hostile sender speaks the multiplexer directly: adverts claimed urgent, a response
    // claimed control, and a keepalive (an empty batch) outside the control class.
    for (class, msg) in [
        (Class::Urgent, advert(3)),
        (Class::Control, response(3, 100)),
        (Class::Urgent, Message::Adverts(Vec::new())),
    ] {
        let (_, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
        let mut mux = MuxSender::new(cfg.mux.clone()).unwrap();
        let mut bytes = BytesMut::new();
        p2p_transport::codec::encode_hello(&Hello::new(1), &mut bytes);
        mux.push(Class::Control, &advert(4)).unwrap();
        mux.push(class, &msg).unwrap();
        while mux.poll_transmit(&mut bytes, 1 << 20) > 0 {}
        rx.handle_input(t(1), &mut bytes);
        assert_eq!(rx.poll_event(), Ok(Some(ConnEvent::Hello(Hello::new(1)))));
        assert_eq!(
            rx.poll_event(),
            Ok(Some(ConnEvent::Message(Class::Control, advert(4))))
        );
        let err = rx.poll_event().unwrap_err();
        assert_eq!(
            err,
            ConnError::WrongClass {
                msg: msg.name(),
                class
            }
        );
        assert!(err.is_misbehaviour());
        assert_eq!(rx.poll_event(), Err(err), "sticky");
    }
}

#[test]
fn congestion_is_marked_once_past_high_water_and_cleared_at_low_water() {
    let mux = MuxConfig {
        high_water: 64 << 10,
        ..MuxConfig::default()
    };
    let cfg = ConnConfig::with_mux(mux);
    let (mut tx, _) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let big = response(1, 40 << 10);
    tx.push(Class::Bulk, &big).unwrap();
    assert_eq!(tx.poll_congestion(), None);
    tx.push(Class::Bulk, &big).unwrap();
    assert_eq!(tx.poll_congestion(), Some(true));
    assert_eq!(tx.poll_congestion(), None, "an edge is reported once");
    let mut out = BytesMut::new();
    // Drain in small steps: the mark clears only at or below the low-water mark.
    while tx.mux().queued_bytes_total() > cfg.low_water {
        assert_eq!(tx.poll_congestion(), None);
        let _ = tx.poll_transmit(t(1), &mut out, 4 << 10);
    }
    assert_eq!(tx.poll_congestion(), Some(false));
}

#[test]
fn invalid_settings_are_typed_errors() {
    let mut cfg = ConnConfig::default();
    cfg.idle_timeout = cfg.keepalive_interval;
    assert!(connection(&cfg, Hello::new(1), t(0)).is_err());
    let mut cfg = ConnConfig::default();
    cfg.low_water = cfg.mux.high_water;
    assert!(cfg.validate().is_err());
    let cfg = PolicyConfig {
        backoff_min: Duration::ZERO,
        ..PolicyConfig::default()
    };
    assert!(PeerPolicy::new(NodeId([1; 32]), cfg, 0).is_err());
    let cfg = PolicyConfig {
        churn_burst: 0,
        ..PolicyConfig::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(p2p_transport::peers::PolicyConfigError::Churn { .. })
    ));
}

/// Messages of random classes and sizes, transmitted in random slices, arrive whole, each
/// class in order, after the hello.
#[test]
fn prop_messages_survive_any_chunking() {
    fn prop(sizes: Vec<(u8, u16)>, chunk: u16) -> TestResult {
        let chunk = usize::from(chunk % 3000) + 16;
        let cfg = ConnConfig::default();
        let (mut tx, _) = connection(&cfg, Hello::new(3), t(0)).unwrap();
        let (_, mut rx) = connection(&cfg, Hello::new(3), t(0)).unwrap();
        let mut sent: Vec<(Class, Message)> = Vec::new();
        for (i, (c, size)) in sizes.iter().take(40).enumerate() {
            let class = Class::ALL[usize::from(*c) % Class::COUNT];
            let msg = match class {
                Class::Control => advert(i as u8),
                _ => response(i as u8, usize::from(*size % 4096) * 8),
            };
            tx.push(class, &msg).unwrap();
            sent.push((class, msg));
        }
        pump(&mut tx, &mut rx, t(1), chunk);
        let got = events(&mut rx).unwrap();
        if got.first() != Some(&ConnEvent::Hello(Hello::new(3))) || got.len() != sent.len() + 1 {
            return TestResult::failed();
        }
        for class in Class::ALL {
            let want: Vec<&Message> = sent
                .iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, m)| m)
                .collect();
            let have: Vec<&Message> = got[1..]
                .iter()
                .filter_map(|e| match e {
                    ConnEvent::Message(c, m) if *c == class => Some(m),
                    _ => None,
                })
                .collect();
            // Within a class, round-robin interleaving may reorder messages of different
            // lengths; the set must match exactly.
            let mut w: Vec<_> = want.iter().map(|m| format!("{m:?}")).collect();
            let mut h: Vec<_> = have.iter().map(|m| format!("{m:?}")).collect();
            w.sort();
            h.sort();
            if w != h {
                return TestResult::failed();
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(60)
        .quickcheck(prop as fn(Vec<(u8, u16)>, u16) -> TestResult);
}

// ---- the peer policy ----

fn id(b: u8) -> NodeId {
    NodeId([b; 32])
}

fn actions(p: &mut PeerPolicy) -> Vec<PolicyAction> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

fn policy(me: u8) -> PeerPolicy {
    PeerPolicy::new(id(me), PolicyConfig::default(), 42).unwrap()
}

#[test]
fn the_lower_id_dials_at_once_and_refuses_the_higher_ids_dial() {
    let mut p = policy(5);
    p.set_members(t(0), 1, [id(1), id(5), id(7), id(9)]);
    assert_eq!(
        actions(&mut p),
        vec![PolicyAction::Dial(id(7)), PolicyAction::Dial(id(9))]
    );
    assert_eq!(p.admit(t(1), id(9), false), Err(Refusal::WrongDirection));
    assert_eq!(p.admit(t(1), id(1), false), Ok(Admit::New));
    assert_eq!(p.admit(t(1), id(7), true), Ok(Admit::New));
    assert_eq!(p.admit(t(1), id(5), false), Err(Refusal::Ourselves));
    assert_eq!(p.admit(t(1), id(3), false), Err(Refusal::NotMember));
    // A reconnect that raced the old connection's teardown replaces it.
    assert_eq!(p.admit(t(2), id(1), false), Ok(Admit::Replace));
    assert_eq!(p.connected().collect::<Vec<_>>(), vec![id(1), id(7)]);
    assert_eq!(
        p.poll_timeout(),
        None,
        "id 9 is being dialed; nothing else is due"
    );
}

#[test]
fn failed_dials_back_off_exponentially_with_jitter_up_to_the_maximum() {
    let cfg = PolicyConfig::default();
    let mut p = policy(1);
    p.set_members(t(0), 1, [id(1), id(2)]);
    assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(2))]);
    let mut now = t(0);
    for attempt in 1..=12u32 {
        p.dial_failed(now, id(2));
        let due = p.poll_timeout().expect("a redial is scheduled");
        let full = cfg
            .backoff_min
            .saturating_mul(1 << (attempt - 1))
            .min(cfg.backoff_max);
        let delay = due.saturating_since(now);
        assert!(
            delay >= full / 2 && delay <= full,
            "attempt {attempt}: {delay:?} vs {full:?}"
        );
        p.handle_timeout(before(due, Duration::from_nanos(1)));
        assert_eq!(actions(&mut p), vec![], "not before it is due");
        p.handle_timeout(due);
        assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(2))]);
        now = due;
    }
    // A connection that lived for the maximum back-off resets it.
    assert_eq!(p.admit(now, id(2), true), Ok(Admit::New));
    let later = now + cfg.backoff_max;
    p.closed(later, id(2), CloseCause::Lost);
    let delay = p.poll_timeout().unwrap().saturating_since(later);
    assert!(delay <= cfg.backoff_min, "{delay:?}");
}

#[test]
fn bans_escalate_for_repeat_offenders_and_are_forgiven_after_a_quiet_period() {
    let cfg = PolicyConfig::default();
    let mut p = policy(9);
    p.set_members(t(0), 1, [id(2), id(9)]);
    let mut now = t(0);
    let mut lengths = Vec::new();
    for _ in 0..8 {
        assert_eq!(p.admit(now, id(2), false), Ok(Admit::New));
        p.closed(now, id(2), CloseCause::Misbehaviour);
        let until = p.banned_until(now, &id(2)).expect("banned");
        lengths.push(until.saturating_since(now));
        assert_eq!(p.admit(now, id(2), false), Err(Refusal::Banned { until }));
        assert!(!p.may_connect(now, &id(2)));
        now = until;
        assert!(p.may_connect(now, &id(2)));
    }
    let expected: Vec<Duration> = (0..8)
        .map(|k| cfg.ban_base.saturating_mul(1 << k).min(cfg.ban_max))
        .collect();
    assert_eq!(lengths, expected);
    // Long good behaviour after the last ban: the next offence counts as a first one.
    now = now + cfg.forgive_after;
    p.misbehaved(now, id(2));
    assert_eq!(p.banned_until(now, &id(2)), Some(now + cfg.ban_base));
}

#[test]
fn a_banned_peer_we_dial_is_not_dialed_before_its_ban_ends() {
    let mut p = policy(1);
    p.set_members(t(0), 1, [id(1), id(2)]);
    assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(2))]);
    assert_eq!(p.admit(t(10), id(2), true), Ok(Admit::New));
    p.closed(t(20), id(2), CloseCause::Misbehaviour);
    let until = p.banned_until(t(20), &id(2)).unwrap();
    assert!(p.poll_timeout().unwrap() >= until);
    p.handle_timeout(before(until, Duration::from_millis(1)));
    assert_eq!(actions(&mut p), vec![]);
    p.handle_timeout(p.poll_timeout().unwrap());
    assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(2))]);
}

#[test]
fn removed_members_are_closed_and_forgotten_and_return_with_a_clean_slate() {
    let mut p = policy(1);
    p.set_members(t(0), 1, [id(1), id(2), id(3)]);
    actions(&mut p);
    assert_eq!(p.admit(t(1), id(2), true), Ok(Admit::New));
    assert_eq!(p.admit(t(1), id(3), true), Ok(Admit::New));
    p.closed(t(2), id(3), CloseCause::Misbehaviour);
    p.set_members(t(3), 2, [id(1)]);
    assert_eq!(actions(&mut p), vec![PolicyAction::Close(id(2))]);
    assert!(!p.may_connect(t(3), &id(2)));
    assert_eq!(p.admit(t(3), id(2), true), Err(Refusal::NotMember));
    p.set_members(t(4), 3, [id(1), id(2), id(3)]);
    assert_eq!(
        actions(&mut p),
        vec![PolicyAction::Dial(id(2)), PolicyAction::Dial(id(3))],
        "returning members are dialed at once, the ban forgotten"
    );
    assert_eq!(p.version(), Some(3));
}

/// Under any sequence of events and any topology the policy never dials a connected peer, a
/// non-member, a non-neighbour, a peer it does not dial, or a peer already being dialed; it
/// prunes only members that are not neighbours; and every neighbour it dials that is neither
/// connected nor banned has a dial due within the maximum back-off.
#[test]
fn prop_the_policy_keeps_its_rules_and_always_redials() {
    fn prop(ops: Vec<(u8, u8, u16)>, topology: u8) -> bool {
        let cfg = PolicyConfig {
            topology: match topology % 3 {
                0 => Topology::All,
                1 => Topology::Degree(2),
                _ => Topology::Explicit([1, 3, 5, 6, 8].map(id).into()),
            },
            ..PolicyConfig::default()
        };
        let me = 4u8;
        let mut p = PeerPolicy::new(id(me), cfg.clone(), 7).unwrap();
        let mut members: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7];
        let mut version = 1;
        p.set_members(t(0), version, members.iter().map(|b| id(*b)));
        let mut now = t(0);
        let mut dialing: Vec<NodeId> = Vec::new();
        for (op, who, dt) in ops.into_iter().take(200) {
            now = now + Duration::from_millis(u64::from(dt % 5000));
            let peer = id(who % 9);
            match op % 7 {
                0 => p.dial_failed(now, peer),
                1 => {
                    let dialed = dialing.contains(&peer);
                    let _ = p.admit(now, peer, dialed);
                }
                2 => p.closed(now, peer, CloseCause::Lost),
                3 => p.closed(now, peer, CloseCause::Misbehaviour),
                4 => {
                    version += 1;
                    if members.contains(&(who % 9)) {
                        members.retain(|m| *m != who % 9);
                    } else {
                        members.push(who % 9);
                    }
                    p.set_members(now, version, members.iter().map(|b| id(*b)));
                }
                _ => {
                    if let Some(due) = p.poll_timeout() {
                        now = now.max(due);
                    }
                    p.handle_timeout(now);
                }
            }
            while let Some(a) = p.poll_action() {
                match a {
                    PolicyAction::Dial(d) => {
                        if p.is_connected(&d) || !p.is_neighbour(&d) || !p.dials(&d) {
                            return false;
                        }
                        dialing.push(d);
                    }
                    PolicyAction::Close(c) => {
                        if p.is_member(&c) {
                            return false;
                        }
                    }
                    PolicyAction::Prune(c) => {
                        if !p.is_member(&c) || p.is_neighbour(&c) || p.is_connected(&c) {
                            return false;
                        }
                    }
                }
            }
            dialing.retain(|d| !p.is_connected(d) && p.is_neighbour(d));
            // Liveness: a neighbour we dial, not connected, not being dialed, has a timer.
            for m in &members {
                let m = id(*m);
                if p.is_neighbour(&m) && p.dials(&m) && !p.is_connected(&m) && !dialing.contains(&m)
                {
                    let limit = now + cfg.backoff_max;
                    let limit = p.banned_until(now, &m).map_or(limit, |b| b.max(limit));
                    match p.poll_timeout() {
                        Some(due) if due <= limit => {}
                        _ => return false,
                    }
                }
            }
        }
        true
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<(u8, u8, u16)>, u8) -> bool);
}

// ---- the topology ----

fn policy_with(me: NodeId, topology: Topology) -> PeerPolicy {
    let cfg = PolicyConfig {
        topology,
        ..PolicyConfig::default()
    };
    PeerPolicy::new(me, cfg, 42).unwrap()
}

#[test]
fn a_derived_topology_dials_only_neighbours_and_refuses_other_members_without_a_ban() {
    let members: Vec<NodeId> = (1..=16).map(id).collect();
    let topo = Topology::Degree(2);
    for me in &members {
        let nbrs = topo.neighbours(me, &members);
        assert!(nbrs.len() >= 2 && nbrs.len() <= 4, "{}", nbrs.len());
        let mut p = policy_with(*me, topo.clone());
        p.set_members(t(0), 1, members.iter().copied());
        let dialed: Vec<NodeId> = nbrs.iter().filter(|n| *n > me).copied().collect();
        let expected: Vec<PolicyAction> = dialed.iter().map(|n| PolicyAction::Dial(*n)).collect();
        assert_eq!(
            actions(&mut p),
            expected,
            "only the neighbours with higher ids"
        );
        assert_eq!(p.neighbours().collect::<BTreeSet<_>>(), nbrs);
        for other in members.iter().filter(|m| *m < me) {
            let got = p.admit(t(1), *other, false);
            if nbrs.contains(other) {
                assert_eq!(got, Ok(Admit::New));
            } else {
                assert_eq!(got, Err(Refusal::NotNeighbour));
                // Still a member, not banned: it may become a neighbour later.
                assert!(p.is_member(other) && p.may_connect(t(1), other));
            }
        }
        // A dial that failed is retried; nothing is dialed that is not a neighbour.
        for n in &dialed {
            p.dial_failed(t(2), *n);
        }
        let mut redialed = BTreeSet::new();
        while redialed.len() < dialed.len() {
            let now = p.poll_timeout().expect("a redial is due");
            p.handle_timeout(now);
            for a in actions(&mut p) {
                let PolicyAction::Dial(n) = a else {
                    panic!("{a:?}")
                };
                assert!(nbrs.contains(&n));
                redialed.insert(n);
            }
        }
    }
}

#[test]
fn a_member_that_stops_being_a_neighbour_is_pruned_without_a_ban_and_new_neighbours_dialed() {
    let topo = Topology::Degree(2);
    let members: Vec<NodeId> = (10..=25).map(id).collect();
    let me = id(10);
    let before = topo.neighbours(&me, &members);
    // A newcomer that takes a place next to `me` in a ring.
    let (newcomer, after) = (26..=255)
        .map(|b| {
            let mut m = members.clone();
            m.push(id(b));
            (id(b), topo.neighbours(&me, &m))
        })
        .find(|(_, after)| before.difference(after).next().is_some())
        .expect("some newcomer changes the neighbours");
    let mut p = policy_with(me, topo.clone());
    p.set_members(t(0), 1, members.iter().copied());
    actions(&mut p);
    for n in &before {
        assert_eq!(p.admit(t(1), *n, *n > me), Ok(Admit::New));
    }
    let mut next = members.clone();
    next.push(newcomer);
    p.set_members(t(2), 2, next.iter().copied());
    let lost: Vec<NodeId> = before.difference(&after).copied().collect();
    let gained: Vec<NodeId> = after.difference(&before).copied().collect();
    let mut expected: Vec<PolicyAction> = lost.iter().map(|n| PolicyAction::Prune(*n)).collect();
    expected.extend(gained.iter().map(|n| PolicyAction::Dial(*n)));
    assert_eq!(actions(&mut p), expected);
    for n in &lost {
        assert!(!p.is_connected(n) && p.is_member(n));
        assert_eq!(p.banned_until(t(2), n), None, "pruning is no ban");
        // A dial of ours that was in flight and completes is refused.
        assert_eq!(p.admit(t(3), *n, true), Err(Refusal::NotNeighbour));
    }
    // No redial of a pruned member, however long we wait.
    if let Some(due) = p.poll_timeout() {
        p.handle_timeout(due + Duration::from_secs(3600));
        assert!(
            actions(&mut p)
                .iter()
                .all(|a| !lost.iter().any(|n| *a == PolicyAction::Dial(*n)))
        );
    }
    // Back to the first membership: the pruned members are neighbours again and dialed at once
    // (if ours to dial), the newcomer's connection closed as a removed member's.
    assert_eq!(p.admit(t(4), newcomer, newcomer > me), Ok(Admit::New));
    p.set_members(t(5), 3, members.iter().copied());
    let got = actions(&mut p);
    assert!(got.contains(&PolicyAction::Close(newcomer)), "{got:?}");
    for n in lost.iter().filter(|n| **n > me) {
        assert!(got.contains(&PolicyAction::Dial(*n)), "{got:?}");
    }
}

#[test]
fn an_explicit_list_connects_members_that_list_each_other() {
    let me = id(5);
    let mut p = policy_with(me, Topology::Explicit([id(2), id(7), id(42)].into()));
    p.set_members(t(0), 1, [2, 3, 5, 7, 9].map(id));
    // 9 is a member we would dial in a full mesh, 42 is listed but no member.
    assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(7))]);
    assert_eq!(p.admit(t(1), id(2), false), Ok(Admit::New));
    assert_eq!(p.admit(t(1), id(3), false), Err(Refusal::NotNeighbour));
    assert_eq!(p.neighbours().collect::<Vec<_>>(), vec![id(2), id(7)]);
}

#[test]
fn refusals_of_a_non_neighbour_count_towards_the_churn_limit() {
    let cfg = PolicyConfig::default();
    let mut p = policy_with(id(9), Topology::Explicit([id(2)].into()));
    p.set_members(t(0), 1, [id(1), id(2), id(9)]);
    for _ in 0..cfg.churn_burst {
        assert_eq!(p.admit(t(0), id(1), false), Err(Refusal::NotNeighbour));
    }
    assert!(matches!(
        p.admit(t(0), id(1), false),
        Err(Refusal::Churning { .. })
    ));
    assert!(p.banned_until(t(0), &id(1)).is_some());
    // The neighbour is unaffected.
    assert_eq!(p.admit(t(0), id(2), false), Ok(Admit::New));
}

// ---- the churn limit ----

#[test]
fn a_member_reconnecting_faster_than_the_churn_limit_is_refused_and_banned_escalating() {
    let cfg = PolicyConfig::default();
    let mut p = policy(9);
    p.set_members(t(0), 1, [id(2), id(9)]);
    let mut now = t(0);
    let mut bans = Vec::new();
    for round in 0..3 {
        // Connect, leave, again and again, 1 ms apart.
        let mut admitted = 0;
        let refusal = loop {
            match p.admit(now, id(2), false) {
                Ok(_) => admitted += 1,
                Err(r) => break r,
            }
            now = now + Duration::from_millis(1);
            p.closed(now, id(2), CloseCause::Lost);
        };
        // The first round starts with a full bucket; later ones start after a ban long enough
        // to refill it.
        assert_eq!(admitted, cfg.churn_burst, "round {round}");
        let until = p.banned_until(now, &id(2)).expect("churning is an offence");
        assert_eq!(refusal, Refusal::Churning { until });
        assert!(!p.may_connect(now, &id(2)));
        assert_eq!(p.admit(now, id(2), false), Err(Refusal::Banned { until }));
        bans.push(until.saturating_since(now));
        now = until;
    }
    assert_eq!(bans, vec![cfg.ban_base, cfg.ban_base * 2, cfg.ban_base * 4]);
}

#[test]
fn a_churning_peer_we_dial_is_dialed_no_faster_than_the_limit() {
    let cfg = PolicyConfig::default();
    let mut p = policy(1);
    p.set_members(t(0), 1, [id(1), id(2)]);
    let mut dials = Vec::new();
    let mut now = t(0);
    for _ in 0..40 {
        if let Some(due) = p.poll_timeout() {
            now = now.max(due);
        }
        p.handle_timeout(now);
        assert_eq!(actions(&mut p), vec![PolicyAction::Dial(id(2))]);
        dials.push(now);
        assert_eq!(p.admit(now, id(2), true), Ok(Admit::New));
        // It accepts and leaves at once, every time.
        p.closed(now, id(2), CloseCause::Lost);
    }
    assert_within_limit(&cfg, &dials);
}

/// Checks that `times` (sorted) keep the churn limit: any window of length `w` holds at most
/// `churn_burst + w / churn_refill` of them.
fn assert_within_limit(cfg: &PolicyConfig, times: &[Time]) {
    for i in 0..times.len() {
        for j in i..times.len() {
            let w = times[j].saturating_since(times[i]);
            let allowed = u128::from(cfg.churn_burst) + w.as_nanos() / cfg.churn_refill.as_nanos();
            assert!(
                (j - i + 1) as u128 <= allowed,
                "{} admissions in {w:?}",
                j - i + 1
            );
        }
    }
}

fn within_limit(cfg: &PolicyConfig, times: &[Time]) -> bool {
    std::panic::catch_unwind(|| assert_within_limit(cfg, times)).is_ok()
}

/// Under any sequence of admissions (both directions), closes, offences and timer firings, the
/// admissions of one member keep the churn limit.
#[test]
fn prop_admissions_of_a_member_never_exceed_the_churn_limit() {
    fn prop(ops: Vec<(u8, u16)>) -> bool {
        let cfg = PolicyConfig {
            churn_burst: 3,
            ..PolicyConfig::default()
        };
        let mut p = PeerPolicy::new(id(4), cfg.clone(), 3).unwrap();
        p.set_members(t(0), 1, [id(2), id(4), id(6)]);
        let mut now = t(0);
        let mut admitted: Vec<(NodeId, Time)> = Vec::new();
        for (op, dt) in ops.into_iter().take(300) {
            now = now + Duration::from_millis(u64::from(dt % 1500));
            let peer = if op & 1 == 0 { id(2) } else { id(6) };
            match (op >> 1) % 5 {
                0 | 1 => {
                    let dialed = p.dials(&peer);
                    if p.admit(now, peer, dialed).is_ok() {
                        admitted.push((peer, now));
                    }
                }
                2 => p.closed(now, peer, CloseCause::Lost),
                3 => p.dial_failed(now, peer),
                _ => {
                    if let Some(due) = p.poll_timeout() {
                        now = now.max(due);
                    }
                    p.handle_timeout(now);
                    while p.poll_action().is_some() {}
                }
            }
        }
        [id(2), id(6)].iter().all(|m| {
            let times: Vec<Time> = admitted
                .iter()
                .filter(|(p, _)| p == m)
                .map(|(_, t)| *t)
                .collect();
            within_limit(&cfg, &times)
        })
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<(u8, u16)>) -> bool);
}

/// A member that reconnects no faster than one admission per `churn_refill` is never refused,
/// however long its connections last.
#[test]
fn prop_an_honest_peer_with_sparse_reconnects_is_never_refused() {
    fn prop(gaps: Vec<(u16, u16)>) -> bool {
        let cfg = PolicyConfig::default();
        let mut p = PeerPolicy::new(id(9), cfg.clone(), 5).unwrap();
        p.set_members(t(0), 1, [id(3), id(9)]);
        let mut now = t(0);
        for (gap, life) in gaps.into_iter().take(300) {
            if p.admit(now, id(3), false).is_err() {
                return false;
            }
            let life = Duration::from_millis(u64::from(life % 3000));
            p.closed(now + life, id(3), CloseCause::Lost);
            now = now + cfg.churn_refill.max(life) + Duration::from_millis(u64::from(gap % 3000));
        }
        true
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<(u16, u16)>) -> bool);
}

/// An honest dialer paced by the default back-off alone, whose connections (or dials) fail after
/// any lifetime, is never refused by the member it dials: the default churn limit lets the
/// back-off through.
#[test]
fn prop_an_honest_dialer_is_never_refused_for_churn() {
    fn prop(lives: Vec<(bool, u16)>, seed: u64) -> bool {
        // The dialer paces itself by its back-off alone (its own churn limit off).
        let unlimited = PolicyConfig {
            churn_burst: u32::MAX,
            ..PolicyConfig::default()
        };
        let mut dialer = PeerPolicy::new(id(1), unlimited, seed).unwrap();
        let mut acceptor = PeerPolicy::new(id(2), PolicyConfig::default(), seed ^ 1).unwrap();
        dialer.set_members(t(0), 1, [id(1), id(2)]);
        acceptor.set_members(t(0), 1, [id(1), id(2)]);
        let mut now = t(0);
        let mut first = true;
        for (fails, life) in lives.into_iter().take(300) {
            if !std::mem::take(&mut first) {
                let Some(due) = dialer.poll_timeout() else {
                    return false;
                };
                now = now.max(due);
                dialer.handle_timeout(now);
            }
            if actions(&mut dialer) != vec![PolicyAction::Dial(id(2))] {
                return false;
            }
            if fails {
                dialer.dial_failed(now, id(2));
                continue;
            }
            if acceptor.admit(now, id(1), false).is_err() || dialer.admit(now, id(2), true).is_err()
            {
                return false;
            }
            // Mostly short-lived connections: the worst case for the limit.
            let life = Duration::from_millis(u64::from(life) % 12_000 / (1 + u64::from(life % 4)));
            now = now + life;
            acceptor.closed(now, id(1), CloseCause::Lost);
            dialer.closed(now, id(2), CloseCause::Lost);
        }
        true
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(Vec<(bool, u16)>, u64) -> bool);
}

#[test]
fn cancelling_queued_answers_clears_the_congestion_mark() {
    let cfg = ConnConfig::with_mux(MuxConfig {
        high_water: 1 << 20,
        ..MuxConfig::default()
    });
    let (mut tx, mut rx) = connection(&cfg, Hello::new(1), t(0)).unwrap();
    let chunk = |req_id: u64| Message::Chunk {
        req_id,
        id: ArtifactId([7; 32]),
        index: 0,
        data: Bytes::from(vec![req_id as u8; 300 << 10]),
    };
    for req in 1..=4 {
        tx.push(Class::Normal, &chunk(req)).unwrap();
    }
    assert_eq!(tx.poll_congestion(), Some(true));
    // Down to 900 KiB: still above low water (512 KiB).
    assert!(tx.cancel(4));
    assert_eq!(tx.poll_congestion(), None);
    assert!(tx.cancel(3));
    assert_eq!(tx.poll_congestion(), None);
    // Down to 300 KiB: drained.
    assert!(tx.cancel(2));
    assert_eq!(tx.poll_congestion(), Some(false));
    assert!(!tx.cancel(3));
    pump(&mut tx, &mut rx, t(1), 7000);
    let got = events(&mut rx).unwrap();
    let reqs: Vec<u64> = got
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Message(Class::Normal, Message::Chunk { req_id, .. }) => Some(*req_id),
            _ => None,
        })
        .collect();
    assert_eq!(reqs, vec![1]);
}
