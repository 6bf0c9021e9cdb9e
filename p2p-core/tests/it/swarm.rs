//! Chunked artifacts: fetched chunk by chunk from full and partial holders, verified per chunk,
//! cancelled on the wire, within the incomplete-bytes budget, and completed without the origin.

use crate::support::*;
use p2p_core::chunks::Manifest;
use p2p_core::{
    Artifact, Config, Decision, DisconnectReason, Input, Kind, Message, Output, Priority,
    PriorityFnRef,
};
use std::time::Duration;

const CHUNK: u32 = 16 << 10;

fn chunked(cfg: &mut Config) {
    cfg.chunk_size = CHUNK;
}

/// An artifact of `chunks` chunks (the last one shorter), with bytes that differ per chunk.
fn big(n: u8, chunks: u32) -> Artifact {
    let size = (chunks as usize - 1) * CHUNK as usize + 1000;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32 / 7).wrapping_mul(n as u32 + 1) as u8)
        .collect();
    Artifact::with_chunk_size(Kind(0), &b"big"[..], data, CHUNK)
}

/// Chunks `node` sent: answers to chunk requests and pushes of its stripe.
fn served(net: &Net, node: usize) -> u64 {
    net.nodes[node].metrics().chunks_served
}

#[test]
fn a_chunked_artifact_reaches_every_node_once_and_peers_serve_each_other() {
    for seed in 0..5 {
        let n = 8;
        let mut net = Net::new(n, seed, chunked);
        net.connect_all();
        let a = big(1, 16);
        net.publish(0, a.clone());
        net.run_until_quiet(seed);
        net.check_integrity().unwrap();
        for node in 1..n {
            assert_eq!(
                net.delivered_count(node, &a.id),
                1,
                "seed {seed} node {node}"
            );
            assert_eq!(net.deliveries[node][0].data, a.data);
        }
        // The origin sends about one copy of each chunk; the peers exchange the rest.
        let origin = served(&net, 0);
        let by_peers: u64 = (1..n).map(|i| served(&net, i)).sum();
        // Each node got each chunk once. A chunk sent twice (a push that crossed a request)
        // is a duplicate at its receiver (an unwanted push counts as one), or an answer its
        // cancel dropped.
        let needed = 16 * (n as u64 - 1);
        let extra: u64 = (1..n)
            .map(|i| {
                let m = net.nodes[i].metrics();
                m.duplicates + m.chunks_cancelled
            })
            .sum();
        let sent = origin + by_peers;
        assert!(
            sent >= needed && sent <= needed + extra,
            "seed {seed}: {sent} chunks sent, {needed} needed, {extra} extra"
        );
        // Links interleave arbitrarily here (no latency), so a push may cross a request; the
        // simulator measures the amplification on timed links (`BENCHMARKS.md`).
        assert!(
            (sent - needed) * 8 <= needed,
            "seed {seed}: {sent} chunks sent for {needed}"
        );
        assert!(
            origin <= 16 * 2,
            "seed {seed}: the origin served {origin} chunks, peers {by_peers}"
        );
        for node in 0..n {
            let sizes = net.nodes[node].table_sizes();
            assert_eq!((sizes.swarms, sizes.chunk_requests), (0, 0), "all done");
            assert_eq!(sizes.incomplete_bytes, 0);
        }
    }
}

#[test]
fn chunks_hashed_by_the_driver_complete_the_same_way() {
    let n = 6;
    let mut net = Net::new(n, 9, |cfg| {
        cfg.chunk_size = CHUNK;
        cfg.offload_chunk_hashing = true;
    });
    net.connect_all();
    let a = big(7, 10);
    net.publish(0, a.clone());
    net.run_until_quiet(9);
    net.check_integrity().unwrap();
    for node in 1..n {
        assert_eq!(net.delivered_count(node, &a.id), 1, "node {node}");
    }
}

#[test]
fn the_origin_may_leave_once_every_chunk_left_it() {
    for seed in 0..5 {
        let n = 6;
        // The peers relay what they receive, as an application that validated it would.
        let mut net = Net::new(n, seed, |cfg| {
            cfg.chunk_size = CHUNK;
            cfg.auto_relay = true;
        });
        net.connect_all();
        let a = big(2, 12);
        net.publish(0, a.clone());
        let left_origin =
            |net: &Net| (0..12).all(|i| (1..n).any(|node| net.nodes[node].has_chunk(&a.id, i)));
        let stopped = net.run_until(seed, left_origin);
        assert!(stopped, "seed {seed}: every chunk reached a peer");
        for peer in 1..n {
            net.disconnect(0, peer);
        }
        net.run_until_quiet(seed);
        net.check_integrity().unwrap();
        for node in 1..n {
            assert_eq!(
                net.delivered_count(node, &a.id),
                1,
                "seed {seed} node {node}"
            );
        }
    }
}

#[test]
fn incomplete_artifacts_stay_within_their_budget_and_all_complete() {
    let budget = 40u64 << 10;
    let tweak = |cfg: &mut Config| {
        cfg.chunk_size = CHUNK;
        cfg.max_incomplete_bytes = budget;
    };
    let mut net = Net::new(5, 3, tweak);
    net.connect_all();
    let arts: Vec<Artifact> = (0..4).map(|i| big(10 + i, 2)).collect();
    for (i, a) in arts.iter().enumerate() {
        net.publish(i % 2, a.clone());
    }
    let mut worst = 0;
    net.run_until(3, |net| {
        for node in &net.nodes {
            let s = node.table_sizes();
            worst = worst.max(s.incomplete_bytes);
            assert!(s.incomplete_held_bytes <= s.incomplete_bytes);
            assert!(s.exceeded(node.config(), 4).is_empty(), "{:?}", s);
        }
        false
    });
    assert!(
        worst > 0 && worst <= budget,
        "reserved at most the budget: {worst}"
    );
    for node in 2..5 {
        for a in &arts {
            assert_eq!(net.delivered_count(node, &a.id), 1);
        }
    }
}

/// A node with two full holders (peers 1 and 2) that fetched the manifest of `a`.
/// The answer to manifest request `req_id` for `a`.
fn manifest_answer(req_id: u64, a: &Artifact) -> Message {
    Message::Response {
        req_id,
        id: a.id,
        data: manifest_of(a).root().clone(),
    }
}

/// Peer `from` advertises `a` at `at` and answers the manifest request at once: the outputs
/// of the answer (the swarm's first chunk requests, if it became active).
fn fetch_manifest(
    node: &mut p2p_core::Node,
    at: u64,
    from: p2p_core::NodeId,
    a: &Artifact,
) -> Vec<Output> {
    // The chunk requests of the node's own stripe leave with the manifest request.
    let mut outs = recv(node, t(at), from, Message::Adverts(vec![a.advert()]));
    let (peer, req_id, _) = requests(&outs)[0];
    outs.extend(recv(node, t(at + 1), peer, manifest_answer(req_id, a)));
    outs
}

/// A node with two full holders (peers 1 and 2) that fetched the manifest of `a`, and the chunk
/// requests it sent (those of its stripe with the manifest request, the others with its answer).
fn swarming_node(a: &Artifact, cfg: Config) -> (p2p_core::Node, Vec<(p2p_core::NodeId, u64, u32)>) {
    let mut node = connected_node(cfg, 2);
    let mut outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![a.advert()]));
    outs.extend(recv(
        &mut node,
        t(0),
        id(2),
        Message::Adverts(vec![a.advert()]),
    ));
    let (peer, req_id, _) = requests(&outs)[0];
    outs.extend(recv(&mut node, t(1), peer, manifest_answer(req_id, a)));
    (node, chunk_requests(&outs))
}

fn chunk_requests(outs: &[Output]) -> Vec<(p2p_core::NodeId, u64, u32)> {
    sends(outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::ChunkRequest { req_id, index, .. } => Some((to, req_id, index)),
            _ => None,
        })
        .collect()
}

fn chunk_of(a: &Artifact, index: u32) -> bytes::Bytes {
    manifest_of(a).slice(&a.data, index).unwrap()
}

/// The manifest that names `a`: in this file's subnet chunk size, or the default one (the
/// mid-sized artifacts).
fn manifest_of(a: &Artifact) -> Manifest {
    [CHUNK, p2p_core::chunks::DEFAULT_CHUNK_SIZE]
        .into_iter()
        .filter_map(|c| Manifest::build(&a.data, c))
        .find(|m| m.id() == a.id)
        .expect("the artifact's manifest")
}

#[test]
fn a_bad_chunk_penalizes_its_sender_and_the_chunk_comes_from_another_holder() {
    let a = big(3, 4);
    let cfg = Config {
        chunk_size: CHUNK,
        max_bad_data_per_peer: 0,
        ..Config::default()
    };
    let (mut node, reqs) = swarming_node(&a, cfg);
    assert_eq!(
        reqs.len(),
        4,
        "every chunk asked at once, spread over both holders"
    );
    assert!(reqs.iter().any(|r| r.0 == id(1)) && reqs.iter().any(|r| r.0 == id(2)));
    let mut delivered_n = 0;
    let mut pending = reqs;
    let mut liar_cut = false;
    for round in 0..10 {
        let mut next = Vec::new();
        for (peer, req_id, index) in pending.drain(..) {
            let data = if peer == id(1) {
                bytes::Bytes::from(vec![0xee; chunk_of(&a, index).len()])
            } else {
                chunk_of(&a, index)
            };
            let msg = Message::Chunk {
                req_id,
                id: a.id,
                index,
                data,
            };
            let outs = recv(&mut node, t(2 + round), peer, msg);
            liar_cut |= disconnects(&outs)
                .iter()
                .any(|(p, r)| *p == id(1) && matches!(r, DisconnectReason::BadData { .. }));
            for d in delivered(&outs) {
                assert_eq!(d.data, a.data);
                delivered_n += 1;
            }
            next.extend(chunk_requests(&outs));
        }
        pending = next;
        if pending.is_empty() {
            break;
        }
    }
    assert!(liar_cut, "the peer that sent a bad chunk is cut off");
    assert_eq!(
        delivered_n, 1,
        "the artifact completes from the honest holder"
    );
    // It serves its chunks for one chunk request timeout more, then forgets them.
    assert_eq!(node.table_sizes().chunk_requests, 0);
    step(&mut node, t(10_000), Input::Timeout);
    assert_eq!(node.table_sizes().swarms, 0);
}

#[test]
fn dropping_a_swarm_cancels_its_requests_on_the_wire() {
    let a = big(4, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let (mut node, reqs) = swarming_node(&a, cfg);
    assert!(!reqs.is_empty());
    node.set_priority_fn(PriorityFnRef::new(|_: &p2p_core::Advert| Decision::Drop));
    let outs = step(&mut node, t(5), Input::Reevaluate);
    let mut cancelled: Vec<(p2p_core::NodeId, u64)> = sends(&outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::Cancel { req_id } => Some((to, req_id)),
            _ => None,
        })
        .collect();
    let mut asked: Vec<(p2p_core::NodeId, u64)> = reqs.iter().map(|r| (r.0, r.1)).collect();
    cancelled.sort();
    asked.sort();
    assert_eq!(cancelled, asked, "every request in flight is cancelled");
    assert_eq!(node.table_sizes().swarms, 0);
    assert_eq!(node.table_sizes().chunk_requests, 0);
    // A chunk arriving after the cancel is harmless.
    let (peer, req_id, index) = reqs[0];
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    let outs = recv(&mut node, t(6), peer, msg);
    assert!(disconnects(&outs).is_empty() && delivered(&outs).is_empty());
}

#[test]
fn a_cancelled_request_is_not_answered_and_the_driver_drops_its_queued_answer() {
    // The server: holds `a` in its pool, its peer 1 congested so requests wait.
    let a = big(5, 3);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    step(&mut node, t(0), Input::Publish(a.clone()));
    step(
        &mut node,
        t(0),
        Input::Congestion {
            peer: id(1),
            congested: true,
        },
    );
    let ask = |req_id, index| Message::ChunkRequest {
        req_id,
        id: a.id,
        index,
        priority: Priority::NORMAL,
    };
    recv(&mut node, t(1), id(1), ask(1 << 63 | 1, 0));
    recv(&mut node, t(1), id(1), ask(1 << 63 | 2, 1));
    let outs = recv(
        &mut node,
        t(2),
        id(1),
        Message::Cancel {
            req_id: 1 << 63 | 1,
        },
    );
    assert!(outs.iter().any(
        |o| matches!(o, Output::Cancel { to, req_id } if *to == id(1) && *req_id == 1 << 63 | 1)
    ));
    let outs = step(
        &mut node,
        t(3),
        Input::Congestion {
            peer: id(1),
            congested: false,
        },
    );
    let answered: Vec<u32> = sends(&outs)
        .into_iter()
        .filter_map(|(_, m, _)| match m {
            Message::Chunk { index, data, .. } => {
                assert_eq!(data, chunk_of(&a, index));
                Some(index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        answered,
        vec![1],
        "only the request not cancelled is answered"
    );
}

#[test]
fn a_have_of_chunks_the_artifact_lacks_is_a_violation() {
    let a = big(6, 3);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let (mut node, _) = swarming_node(&a, cfg);
    let outs = recv(
        &mut node,
        t(3),
        id(2),
        Message::Have {
            id: a.id,
            ranges: vec![p2p_core::ChunkRange { start: 2, end: 9 }],
        },
    );
    assert!(matches!(
        disconnects(&outs)[..],
        [(p, DisconnectReason::ProtocolViolation(_))] if p == id(2)
    ));
}

#[test]
fn a_manifest_given_with_a_publish_must_name_the_artifact() {
    let a = big(8, 3);
    let other = big(9, 3);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 1);
    let wrong = Manifest::build(&other.data, CHUNK).unwrap();
    assert_eq!(
        node.handle_input(
            t(0),
            Input::PublishChunked {
                artifact: a.clone(),
                manifest: wrong
            }
        ),
        Err(p2p_core::InputError::ManifestMismatch)
    );
    let right = Manifest::build(&a.data, CHUNK).unwrap();
    node.handle_input(
        t(0),
        Input::PublishChunked {
            artifact: a.clone(),
            manifest: right.clone(),
        },
    )
    .unwrap();
    assert!(node.has_chunk(&a.id, 2));
    // A request for it is answered with the manifest.
    let outs = recv(
        &mut node,
        t(1),
        id(1),
        Message::Request {
            req_id: 1,
            id: a.id,
            priority: Priority::NORMAL,
        },
    );
    assert!(sends(&outs).iter().any(|(_, m, _)| matches!(
        m,
        Message::Response { data, .. } if data == right.root()
    )));
}

/// Every honest node receives a chunked artifact exactly once, intact, within the bounds at
/// every step, while up to a third of the other nodes corrupt every chunk they send or never
/// answer chunk requests; the origin is honest and stays.
#[test]
fn prop_honest_nodes_complete_despite_faulty_chunk_holders() {
    fn prop(n: u8, chunks: u8, faulty: u8, seed: u64) -> quickcheck::TestResult {
        let n = 4 + (n % 6) as usize;
        let chunks = 2 + (chunks % 14) as u32;
        let mut net = Net::new(n, seed, |cfg| {
            cfg.chunk_size = CHUNK;
            cfg.auto_relay = true;
        });
        let f = (n - 1) / 3;
        for k in 0..f {
            let node = 1 + (faulty as usize + k) % (n - 1);
            let fault = if (faulty >> k) & 1 == 0 {
                ChunkFault::Corrupt
            } else {
                ChunkFault::Silent
            };
            net.faulty.insert(node, fault);
        }
        net.connect_all();
        let a = big(seed as u8, chunks);
        net.publish(0, a.clone());
        let mut broken = None;
        net.run_until(seed, |net| {
            for (i, node) in net.nodes.iter().enumerate() {
                let s = node.table_sizes();
                if let Some(e) = s.exceeded(node.config(), n).first() {
                    broken = Some(format!("node {i}: {e:?}"));
                    return true;
                }
            }
            false
        });
        if let Some(e) = broken {
            return quickcheck::TestResult::error(e);
        }
        if let Err(e) = net.check_integrity() {
            return quickcheck::TestResult::error(e);
        }
        for node in 1..n {
            if net.faulty.contains_key(&node) {
                continue;
            }
            let got = net.delivered_count(node, &a.id);
            if got != 1 {
                return quickcheck::TestResult::error(format!(
                    "n {n} chunks {chunks} faulty {:?}: node {node} delivered {got} times",
                    net.faulty
                ));
            }
        }
        quickcheck::TestResult::passed()
    }
    quickcheck::QuickCheck::new()
        .tests(60)
        .quickcheck(prop as fn(u8, u8, u8, u64) -> quickcheck::TestResult);
}

/// A member advertises a large artifact whose chunks it never serves and answers its manifest
/// first, so that its swarm takes the whole incomplete-bytes budget; an honest member's large
/// artifact waits, then is fetched once the stalled swarm has gone two chunk request timeouts
/// without a chunk. Bound: delivered within three chunk request timeouts of its manifest.
#[test]
fn a_swarm_no_one_serves_gives_its_budget_to_a_waiting_one() {
    let squat = big(20, 4);
    let honest = big(21, 4);
    let cfg = Config {
        chunk_size: CHUNK,
        max_incomplete_bytes: squat.data.len() as u64,
        ..Config::default()
    };
    let chunk_timeout = cfg.request_timeout(u64::from(CHUNK));
    let mut node = connected_node(cfg, 2);
    // Peer 1 advertises the squatting artifact and answers its manifest at once.
    let squat_asks = chunk_requests(&fetch_manifest(&mut node, 0, id(1), &squat));
    assert!(!squat_asks.is_empty() && squat_asks.iter().all(|r| r.0 == id(1)));
    // Peer 2's artifact: its manifest arrives, but the budget is taken.
    assert!(chunk_requests(&fetch_manifest(&mut node, 2, id(2), &honest)).is_empty());
    assert_eq!(node.table_sizes().swarms, 2);
    // Peer 1 never answers. Time goes on; peer 2 answers whatever it is asked.
    let mut now = t(3);
    let mut delivered_at = None;
    let mut pending: Vec<(p2p_core::NodeId, u64, u32)> = Vec::new();
    while now < t(3) + chunk_timeout * 4 && delivered_at.is_none() {
        let mut outs = Vec::new();
        for (peer, req_id, index) in pending.drain(..) {
            if peer == id(2) {
                let msg = Message::Chunk {
                    req_id,
                    id: honest.id,
                    index,
                    data: chunk_of(&honest, index),
                };
                outs.extend(recv(&mut node, now, peer, msg));
            }
        }
        let next = node
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100));
        now = next.max(now + Duration::from_millis(1));
        outs.extend(step(&mut node, now, Input::Timeout));
        if delivered(&outs).iter().any(|a| a.id == honest.id) {
            delivered_at = Some(now);
        }
        pending.extend(chunk_requests(&outs));
        let s = node.table_sizes();
        assert!(s.exceeded(node.config(), 2).is_empty(), "{s:?}");
    }
    let at = delivered_at.expect("the honest artifact is delivered");
    assert!(at <= t(3) + chunk_timeout * 3, "delivered at {at:?}");
    assert!(node.metrics().swarms_stalled >= 1);
}

/// The chunk requests among `outs`: (peer, request id, artifact, chunk index).
fn chunk_asks(outs: &[Output]) -> Vec<(p2p_core::NodeId, u64, p2p_core::ArtifactId, u32)> {
    sends(outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::ChunkRequest {
                req_id, id, index, ..
            } => Some((to, req_id, id, index)),
            _ => None,
        })
        .collect()
}

/// Whether node 0 owns chunk `index` of `a` in the stripes of a node connected to the origin
/// (peer 1, the full holder) and to peers 2 and 3 (members fetching it too).
fn own_stripe(a: &Artifact, index: u32) -> bool {
    let takers = [id(0), id(2), id(3)];
    let offset = u64::from_le_bytes(a.id.0[..8].try_into().unwrap());
    let n = takers.len() as u64;
    takers[((u64::from(index) + offset % n) % n) as usize] == id(0)
}

/// Four swarms are active at once and the origin answers one chunk request at a time, 300 ms
/// after it (its uplink is busy): every swarm looks idle and overdue in turn, yet the node
/// asks the origin for every chunk of its own stripes before it asks for another member's,
/// so the origin does not send chunks the other members are fetching ahead of them. It then
/// fetches the rest from the origin, as the other members never serve a chunk: every artifact
/// completes, each chunk asked once.
#[test]
fn a_node_asks_the_origin_for_its_own_stripes_before_any_other_chunk() {
    let arts: Vec<Artifact> = (0..4).map(|n| big(30 + n, 6)).collect();
    let cfg = Config {
        chunk_size: CHUNK,
        max_chunks_in_flight_per_peer: 1,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let mut asked = Vec::new();
    for (k, a) in arts.iter().enumerate() {
        asked.extend(chunk_asks(&fetch_manifest(&mut node, k as u64, id(1), a)));
        for peer in [id(2), id(3)] {
            let have = Message::Have {
                id: a.id,
                ranges: Vec::new(),
            };
            recv(&mut node, t(k as u64 + 1), peer, have);
        }
    }
    let own: usize = arts
        .iter()
        .map(|a| (0..6).filter(|i| own_stripe(a, *i)).count())
        .sum();
    let mut order = Vec::new();
    let mut done = 0;
    let mut now = t(10);
    while done < arts.len() && now < t(60_000) {
        now = now + Duration::from_millis(300);
        assert!(asked.len() <= 1, "one request at a time to the origin");
        let mut outs = Vec::new();
        for (peer, req_id, art, index) in asked.drain(..) {
            assert_eq!(peer, id(1), "only the origin holds chunks");
            let a = arts
                .iter()
                .position(|x| x.id == art)
                .expect("one of the four");
            order.push((a, index));
            let msg = Message::Chunk {
                req_id,
                id: arts[a].id,
                index,
                data: chunk_of(&arts[a], index),
            };
            outs.extend(recv(&mut node, now, peer, msg));
        }
        outs.extend(step(&mut node, now, Input::Timeout));
        done += delivered(&outs).len();
        asked.extend(chunk_asks(&outs));
    }
    assert_eq!(done, arts.len(), "every artifact completes from the origin");
    assert_eq!(order.len(), 4 * 6, "each chunk asked once");
    let first: Vec<bool> = order[..own]
        .iter()
        .map(|(a, i)| own_stripe(&arts[*a], *i))
        .collect();
    assert!(
        first.iter().all(|o| *o),
        "the {own} chunks of its own stripes come first: {order:?}"
    );
    // The metrics name why the others' chunks were asked of the origin: peers 2 and 3 said
    // they fetch, so nothing was handed over; the swarms were idle or overdue.
    let m = node.metrics();
    assert_eq!(m.chunks_asked_handed_over, 0);
    assert_eq!(
        (m.chunks_asked_idle + m.chunks_asked_overdue) as usize,
        4 * 6 - own
    );
}

/// Peers 2 and 3 never say they fetch the artifact: once `swarm_patience` has passed, their
/// stripes pass to this node, which asks the origin for them (and says so in its metrics),
/// before the swarm is overdue and without its being idle.
#[test]
fn the_stripes_of_members_that_do_not_fetch_pass_to_this_node_after_the_patience() {
    let a = big(40, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let patience = cfg.swarm_patience;
    let mut node = connected_node(cfg, 3);
    let first = chunk_asks(&fetch_manifest(&mut node, 0, id(1), &a));
    let own = (0..6).filter(|i| own_stripe(&a, *i)).count();
    assert_eq!(first.len(), own, "only its own stripe at first");
    assert_eq!(node.metrics().chunks_asked_handed_over, 0);
    let later = chunk_asks(&step(
        &mut node,
        t(1) + patience + Duration::from_millis(1),
        Input::Timeout,
    ));
    assert_eq!(later.len(), 6 - own, "the others' stripes, from the origin");
    assert!(later.iter().all(|(peer, ..)| *peer == id(1)));
    let m = node.metrics();
    assert_eq!(m.chunks_asked_handed_over as usize, 6 - own);
    assert_eq!((m.chunks_asked_idle, m.chunks_asked_overdue), (0, 0));
}

/// The first manifest request to a full holder carries on with this node's own stripe: the
/// chunk requests leave in the same input, so the chunks follow the manifest without another
/// round trip, and the swarm does not ask for them again once the manifest arrives.
#[test]
fn a_node_asks_for_its_stripe_with_the_manifest() {
    let a = big(40, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![a.advert()]));
    let (peer, req_id, _) = requests(&outs)[0];
    assert_eq!(peer, id(1));
    let early = chunk_asks(&outs);
    let mut own: Vec<u32> = (0..6).filter(|i| own_stripe(&a, *i)).collect();
    let mut asked: Vec<u32> = early.iter().map(|r| r.3).collect();
    own.sort_unstable();
    asked.sort_unstable();
    assert!(!own.is_empty());
    assert_eq!(asked, own, "its own stripe, with the manifest request");
    assert!(early.iter().all(|r| r.0 == id(1) && r.2 == a.id));
    assert_eq!(node.metrics().chunks_requested, own.len() as u64);
    let outs = recv(&mut node, t(1), peer, manifest_answer(req_id, &a));
    assert!(
        chunk_asks(&outs).iter().all(|r| !own.contains(&r.3)),
        "the swarm adopts the early requests"
    );
    // The early chunks are kept when they arrive.
    for (peer, req_id, _, index) in early {
        let msg = Message::Chunk {
            req_id,
            id: a.id,
            index,
            data: chunk_of(&a, index),
        };
        let outs = recv(&mut node, t(2), peer, msg);
        assert!(disconnects(&outs).is_empty());
        assert!(node.has_chunk(&a.id, index));
    }
    assert_eq!(node.metrics().duplicates, 0);
}

/// Many chunked artifacts advertised at once (a burst of publishes, a resync): only the first
/// manifest request carries stripe requests; the others wait for their manifests, so the
/// holder's uplink does not queue every swarm's chunks ahead of the manifests the exchange
/// between the peers needs.
#[test]
fn only_a_node_with_nothing_in_flight_asks_for_its_stripe_with_the_manifest() {
    let (a, b) = (big(46, 6), big(47, 6));
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let outs = recv(
        &mut node,
        t(0),
        id(1),
        Message::Adverts(vec![a.advert(), b.advert()]),
    );
    assert_eq!(requests(&outs).len(), 2, "both manifests are asked for");
    let early = chunk_asks(&outs);
    assert!(!early.is_empty(), "the first carries its stripe");
    let first = early[0].2;
    assert!(first == a.id || first == b.id);
    assert!(
        early.iter().all(|r| r.2 == first),
        "the second waits for its manifest: {early:?}"
    );
}

/// An advert that claims a larger size makes the node ask for chunks the manifest does not
/// have: the swarm cancels those requests on the wire when it starts.
#[test]
fn early_requests_past_the_manifest_are_cancelled() {
    let a = big(41, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let mut node = connected_node(cfg, 3);
    let mut advert = a.advert();
    advert.size = u64::from(CHUNK) * 30;
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![advert]));
    let (peer, req_id, _) = requests(&outs)[0];
    let early = chunk_asks(&outs);
    let past: Vec<u64> = early.iter().filter(|r| r.3 >= 6).map(|r| r.1).collect();
    assert!(!past.is_empty(), "{early:?}");
    let outs = recv(&mut node, t(1), peer, manifest_answer(req_id, &a));
    let mut cancelled: Vec<u64> = sends(&outs)
        .into_iter()
        .filter_map(|(_, m, _)| match m {
            Message::Cancel { req_id } => Some(req_id),
            _ => None,
        })
        .collect();
    cancelled.sort_unstable();
    assert_eq!(cancelled, past);
}

/// The owner of chunk `index` of `a` among the takers of a node connected to the origin (peer 1)
/// and to peers 2 and 3.
fn owner_of(a: &Artifact, index: u32) -> p2p_core::NodeId {
    let takers = [id(0), id(2), id(3)];
    let offset = u64::from_le_bytes(a.id.0[..8].try_into().unwrap());
    let n = takers.len() as u64;
    takers[((u64::from(index) + offset % n) % n) as usize]
}

/// Node 0, connected to the origin (peer 1) and to peers 2 and 3, which said they fetch `a`
/// (an empty `Have`); its swarm of `a` is active. Returns the node and its chunk requests.
fn swarming_with_fetchers(
    a: &Artifact,
    cfg: Config,
) -> (
    p2p_core::Node,
    Vec<(p2p_core::NodeId, u64, p2p_core::ArtifactId, u32)>,
) {
    swarming_among(a, 4, cfg)
}

/// As [`swarming_with_fetchers`], with node 0 one of `members` members (a partial mesh when
/// they are more than 4).
fn swarming_among(
    a: &Artifact,
    members: usize,
    cfg: Config,
) -> (
    p2p_core::Node,
    Vec<(p2p_core::NodeId, u64, p2p_core::ArtifactId, u32)>,
) {
    let mut node = connected_among(cfg, members, 3);
    let mut outs = fetch_manifest(&mut node, 0, id(1), a);
    for peer in [id(2), id(3)] {
        let have = Message::Have {
            id: a.id,
            ranges: Vec::new(),
        };
        outs.extend(recv(&mut node, t(2), peer, have));
    }
    (node, chunk_asks(&outs))
}

fn pushed(a: &Artifact, index: u32) -> Message {
    Message::Chunk {
        req_id: p2p_core::PUSHED_CHUNK,
        id: a.id,
        index,
        data: chunk_of(a, index),
    }
}

/// A chunk announced while its owner fetches the artifact is not asked for while the owner's
/// push may still come: the push is kept; a chunk whose push does not come within
/// `push_patience` (nothing else arriving either) is then asked of a holder.
#[test]
fn a_node_waits_for_the_owner_to_push_its_chunk_then_falls_back() {
    let a = big(42, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        ..Config::default()
    };
    let patience = cfg.push_patience;
    let (mut node, _) = swarming_with_fetchers(&a, cfg);
    let of = |owner: usize| (0..6).find(|i| owner_of(&a, *i) == id(owner)).unwrap();
    let (i2, i3) = (of(2), of(3));
    // Each owner announces its chunk.
    let mut asks = Vec::new();
    for (peer, i) in [(2, i2), (3, i3)] {
        let have = Message::Have {
            id: a.id,
            ranges: vec![p2p_core::ChunkRange {
                start: i,
                end: i + 1,
            }],
        };
        asks.extend(chunk_asks(&recv(&mut node, t(3), id(peer), have)));
    }
    assert!(
        asks.iter().all(|r| r.3 != i2 && r.3 != i3),
        "pushed chunks are not asked for: {asks:?}"
    );
    // Peer 2 pushes its chunk: kept.
    let outs = recv(&mut node, t(4), id(2), pushed(&a, i2));
    assert!(disconnects(&outs).is_empty());
    assert!(node.has_chunk(&a.id, i2));
    assert_eq!(node.metrics().chunks_received, 1);
    // Peer 3's never comes: past the patience (counted from the last chunk gained) it is asked.
    let early = step(&mut node, t(4) + patience / 2, Input::Timeout);
    assert!(chunk_asks(&early).iter().all(|r| r.3 != i3));
    let late = step(&mut node, t(5) + patience, Input::Timeout);
    assert!(
        chunk_asks(&late).iter().any(|r| r.3 == i3),
        "asked once the push is overdue"
    );
}

/// With pushes off (the default) an owner pushes nothing and no one waits for a push: a chunk
/// announced by its owner is asked for at once.
#[test]
fn with_pushes_off_owners_push_nothing_and_peers_ask_at_once() {
    let a = big(44, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    assert!(!cfg.push_chunks);
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let (peer, req_id, _, index) = *asks
        .iter()
        .find(|r| owner_of(&a, r.3) == id(0))
        .expect("it asks the origin for its own stripe");
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    let outs = recv(&mut node, t(3), peer, msg);
    assert!(
        !outs.iter().any(|o| matches!(
            o,
            Output::Send {
                msg: Message::Chunk { req_id: 0, .. },
                ..
            }
        )),
        "no push: {outs:?}"
    );
    let other = (0..6).find(|i| owner_of(&a, *i) == id(2)).unwrap();
    let have = Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange {
            start: other,
            end: other + 1,
        }],
    };
    let asked = chunk_asks(&recv(&mut node, t(4), id(2), have));
    assert!(
        asked.iter().any(|r| r.3 == other),
        "asked at once: {asked:?}"
    );
}

/// A node pushes a chunk of its own stripe, once verified, to the peers fetching the artifact,
/// and each chunk to each peer only once.
#[test]
fn an_owner_pushes_its_chunks_to_the_fetching_peers_once() {
    let a = big(43, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let (peer, req_id, _, index) = *asks
        .iter()
        .find(|r| owner_of(&a, r.3) == id(0))
        .expect("it asks the origin for its own stripe");
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    let outs = recv(&mut node, t(10), peer, msg);
    let mut to: Vec<p2p_core::NodeId> = sends(&outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::Chunk {
                req_id: p2p_core::PUSHED_CHUNK,
                index: i,
                data,
                ..
            } if i == index && data == chunk_of(&a, index) => Some(to),
            _ => None,
        })
        .collect();
    to.sort();
    assert_eq!(to, vec![id(2), id(3)]);
    // Asked again what it holds, it tells, but pushes nothing twice.
    let have = Message::Have {
        id: a.id,
        ranges: Vec::new(),
    };
    let outs = recv(&mut node, t(11), id(2), have);
    assert!(sends(&outs).iter().all(|(_, m, _)| !matches!(
        m,
        Message::Chunk {
            req_id: p2p_core::PUSHED_CHUNK,
            ..
        }
    )));
    assert_eq!(node.metrics().chunks_served, 2);
}

/// A peer that says it holds a chunk this node pushed it revokes the push if it is still queued
/// (`Output::CancelPushes` with the `Have`'s ranges); a peer never pushed to revokes nothing.
#[test]
fn a_have_of_a_pushed_chunk_revokes_the_queued_push() {
    let a = big(45, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let (peer, req_id, _, index) = *asks
        .iter()
        .find(|r| owner_of(&a, r.3) == id(0))
        .expect("it asks the origin for its own stripe");
    let cancels = |outs: &[Output]| {
        outs.iter()
            .filter_map(|o| match o {
                Output::CancelPushes { to, id, ranges } => Some((*to, *id, ranges.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Before any push, a `Have` revokes nothing.
    let other = (0..6).find(|i| owner_of(&a, *i) == id(3)).unwrap();
    let early = Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange {
            start: other,
            end: other + 1,
        }],
    };
    assert_eq!(cancels(&recv(&mut node, t(9), id(2), early)), vec![]);
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    let outs = recv(&mut node, t(10), peer, msg);
    assert_eq!(pushes_to(&outs), vec![id(2), id(3)]);
    let ranges = vec![p2p_core::ChunkRange {
        start: index,
        end: index + 1,
    }];
    let have = Message::Have {
        id: a.id,
        ranges: ranges.clone(),
    };
    let outs = recv(&mut node, t(11), id(2), have);
    assert_eq!(cancels(&outs), vec![(id(2), a.id, ranges)]);
}

/// A node that asks someone else for a chunk whose owner would push it tells the owner in a
/// `Decline`; an owner told so pushes the chunk to everyone but the decliner, and revokes a
/// push of it already queued for the decliner.
#[test]
fn a_chunk_asked_elsewhere_is_declined_to_its_owner_who_then_pushes_it_to_others_only() {
    let a = big(46, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        ..Config::default()
    };
    let patience = cfg.swarm_patience;
    // The decliner: node 0 gets its own stripe, then, idle for `swarm_patience`, asks the
    // origin for the chunks of peers 2 and 3 and tells each owner which.
    let (mut node, asks) = swarming_with_fetchers(&a, cfg.clone());
    for (peer, req_id, _, index) in asks {
        let msg = Message::Chunk {
            req_id,
            id: a.id,
            index,
            data: chunk_of(&a, index),
        };
        recv(&mut node, t(10), peer, msg);
    }
    let outs = step(&mut node, t(11) + patience, Input::Timeout);
    let asked: Vec<u32> = chunk_asks(&outs).iter().map(|r| r.3).collect();
    assert!(!asked.is_empty(), "idle, it asks the origin");
    let mut declined: Vec<(p2p_core::NodeId, u32)> = sends(&outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::Decline { id, ranges } if id == a.id => Some((to, ranges)),
            _ => None,
        })
        .flat_map(|(to, ranges)| {
            ranges
                .into_iter()
                .flat_map(move |r| (r.start..r.end).map(move |i| (to, i)))
        })
        .collect();
    declined.sort();
    let mut expected: Vec<(p2p_core::NodeId, u32)> =
        asked.iter().map(|i| (owner_of(&a, *i), *i)).collect();
    expected.sort();
    assert_eq!(
        declined, expected,
        "each chunk asked of the origin, to its owner"
    );

    // The owner: node 0 is told by peer 2 that it asked others for chunk `index` of node 0's
    // stripe; verified, the chunk is pushed to peer 3 only. Peer 3 then declines it too: the
    // queued push is revoked.
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let (peer, req_id, _, index) = *asks
        .iter()
        .find(|r| owner_of(&a, r.3) == id(0))
        .expect("it asks the origin for its own stripe");
    let ranges = vec![p2p_core::ChunkRange {
        start: index,
        end: index + 1,
    }];
    let decline = Message::Decline {
        id: a.id,
        ranges: ranges.clone(),
    };
    let outs = recv(&mut node, t(5), id(2), decline.clone());
    assert!(
        outs.is_empty(),
        "nothing pushed yet, nothing to revoke: {outs:?}"
    );
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    let outs = recv(&mut node, t(10), peer, msg);
    assert_eq!(pushes_to(&outs), vec![id(3)]);
    let outs = recv(&mut node, t(11), id(3), decline);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::CancelPushes { to, id: art, ranges: r } if *to == id(3) && *art == a.id && *r == ranges
    )));
    // A decline that comes before the swarm starts (the manifest is still on its way) holds
    // too.
    let mut node = connected_node(
        Config {
            push_chunks: true,
            chunk_size: CHUNK,
            ..Config::default()
        },
        3,
    );
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![a.advert()]));
    let (origin, manifest_req, _) = requests(&outs)[0];
    let (_, req_id, _, _) = *chunk_asks(&outs)
        .iter()
        .find(|r| r.3 == index)
        .expect("the stripe leaves with the manifest request");
    recv(
        &mut node,
        t(1),
        id(2),
        Message::Decline {
            id: a.id,
            ranges: ranges.clone(),
        },
    );
    recv(&mut node, t(2), origin, manifest_answer(manifest_req, &a));
    for peer in [id(2), id(3)] {
        let have = Message::Have {
            id: a.id,
            ranges: Vec::new(),
        };
        recv(&mut node, t(3), peer, have);
    }
    let msg = Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    assert_eq!(pushes_to(&recv(&mut node, t(4), origin, msg)), vec![id(3)]);

    // A decline of chunks the artifact does not have is a protocol violation.
    let bad = Message::Decline {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange { start: 6, end: 7 }],
    };
    assert_eq!(disconnects(&recv(&mut node, t(12), id(3), bad)).len(), 1);
}

/// An owner pushes a peer at most `max_pushes_in_flight_per_peer` chunks that the peer has not
/// announced back: the next waits, and goes when the peer's `Have` of an earlier one opens its
/// window, to that peer only.
#[test]
fn pushes_wait_for_room_in_the_peers_window() {
    let a = big(47, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        max_pushes_in_flight_per_peer: 1,
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let mine: Vec<_> = asks
        .iter()
        .filter(|r| owner_of(&a, r.3) == id(0))
        .copied()
        .collect();
    assert_eq!(mine.len(), 2, "node 0 owns two of the six chunks: {asks:?}");
    let pushed_chunks = |outs: &[Output]| -> Vec<(p2p_core::NodeId, u32)> {
        let mut v: Vec<_> = sends(outs)
            .into_iter()
            .filter_map(|(to, m, _)| match m {
                Message::Chunk {
                    req_id: p2p_core::PUSHED_CHUNK,
                    index,
                    ..
                } => Some((to, index)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    let answer = |(_, req_id, _, index): (p2p_core::NodeId, u64, p2p_core::ArtifactId, u32)| {
        Message::Chunk {
            req_id,
            id: a.id,
            index,
            data: chunk_of(&a, index),
        }
    };
    let (first, second) = (mine[0].3, mine[1].3);
    let outs = recv(&mut node, t(10), mine[0].0, answer(mine[0]));
    assert_eq!(pushed_chunks(&outs), vec![(id(2), first), (id(3), first)]);
    let outs = recv(&mut node, t(11), mine[1].0, answer(mine[1]));
    assert_eq!(pushed_chunks(&outs), vec![], "both windows are full");
    let have = Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange {
            start: first,
            end: first + 1,
        }],
    };
    let outs = recv(&mut node, t(12), id(2), have);
    assert_eq!(pushed_chunks(&outs), vec![(id(2), second)]);
    assert_eq!(node.metrics().chunks_served, 3);
}

/// In a full mesh a node asks the full holders only for its own stripe until one chunk
/// request timeout has passed; in a partial mesh, where its neighbours deal the chunks over
/// other neighbourhoods and may never fetch what it counts on them for, it asks them for any
/// chunk once four `swarm_patience`s have passed.
#[test]
fn in_a_partial_mesh_a_swarm_soon_asks_the_full_holders_for_any_chunk() {
    let a = big(48, 6);
    let patience = Config::default().swarm_patience;
    for (members, asks_all) in [(4, false), (10, true)] {
        let cfg = Config {
            chunk_size: CHUNK,
            ..Config::default()
        };
        let (mut node, first) = swarming_among(&a, members, cfg);
        let mut asked: Vec<u32> = first.iter().map(|r| r.3).collect();
        assert!(!asked.is_empty() && asked.len() < 6, "{members}: {first:?}");
        let early = step(&mut node, t(3) + patience * 3, Input::Timeout);
        assert!(chunk_asks(&early).is_empty(), "{members}: {early:?}");
        let later = step(&mut node, t(3) + patience * 4, Input::Timeout);
        asked.extend(chunk_asks(&later).iter().map(|r| r.3));
        asked.sort_unstable();
        asked.dedup();
        assert_eq!(
            asked.len() == 6,
            asks_all,
            "{members} members: asked {asked:?}"
        );
    }
}

/// In a partial mesh a node that starts a swarm tells its neighbours with the advert
/// (`Fetching`) instead of an empty `Have`; a node that did not know the artifact takes the
/// sender as a partial source: it asks it for the manifest only (no stripe with it, which a
/// full holder would get), and counts it as a fetching peer, not a full holder.
#[test]
fn in_a_partial_mesh_a_swarm_spreads_its_advert_to_neighbours_that_lack_it() {
    let a = big(49, 6);
    for (members, fetching) in [(4, false), (10, true)] {
        let cfg = Config {
            chunk_size: CHUNK,
            ..Config::default()
        };
        let mut node = connected_among(cfg, members, 3);
        let outs = fetch_manifest(&mut node, 0, id(1), &a);
        let mut told: Vec<(p2p_core::NodeId, &str)> = sends(&outs)
            .into_iter()
            .filter_map(|(to, m, _)| match m {
                Message::Fetching(ad) if ad.id == a.id && ad.size == a.advert().size => {
                    Some((to, "fetching"))
                }
                Message::Have { ranges, .. } if ranges.is_empty() => Some((to, "have")),
                _ => None,
            })
            .collect();
        told.sort();
        let how = if fetching { "fetching" } else { "have" };
        assert_eq!(told, vec![(id(2), how), (id(3), how)], "{members} members");
    }

    // The receiving side: peer 2 fetches `a`, which this node has not heard of.
    let mut node = connected_node(
        Config {
            chunk_size: CHUNK,
            ..Config::default()
        },
        3,
    );
    let outs = recv(&mut node, t(0), id(2), Message::Fetching(a.advert()));
    let asked = requests(&outs);
    assert_eq!(asked.len(), 1, "{outs:?}");
    assert_eq!((asked[0].0, asked[0].2), (id(2), a.id));
    assert!(
        chunk_asks(&outs).is_empty(),
        "no stripe asked of a partial holder"
    );
    let outs = recv(&mut node, t(1), id(2), manifest_answer(asked[0].1, &a));
    // The swarm started: it asks what peer 2 holds, and asks no full holder (there is none).
    assert!(
        sends(&outs).iter().any(|(to, m, _)| *to == id(2)
            && matches!(m, Message::Have { ranges, .. } if ranges.is_empty()))
    );
    assert!(chunk_asks(&outs).is_empty(), "{:?}", chunk_asks(&outs));
    let have = Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange { start: 0, end: 2 }],
    };
    let asks = chunk_asks(&recv(&mut node, t(2), id(2), have));
    let mut got: Vec<u32> = asks.iter().map(|r| r.3).collect();
    got.sort_unstable();
    assert_eq!(got, vec![0, 1], "the chunks peer 2 announced, from peer 2");
}

/// A member that claims to fetch an artifact (`Fetching`) and then never serves it holds the
/// honest full holder's download back by at most one manifest request timeout: the manifest
/// comes from the full holder after it, and the chunks follow.
#[test]
fn a_fetching_claim_never_served_delays_the_download_by_one_request_timeout() {
    let a = big(50, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let bound = cfg.request_timeout(a.advert().size);
    let mut node = connected_node(cfg, 3);
    let outs = recv(&mut node, t(0), id(2), Message::Fetching(a.advert()));
    assert_eq!(requests(&outs).len(), 1);
    assert_eq!(requests(&outs)[0].0, id(2), "the liar is asked first");
    let outs = recv(&mut node, t(1), id(1), Message::Adverts(vec![a.advert()]));
    assert!(requests(&outs).is_empty(), "one manifest request at a time");
    let mut at = t(1);
    let mut honest = None;
    while honest.is_none() && at <= t(0) + bound + Duration::from_millis(10) {
        at = at + Duration::from_millis(5);
        let outs = step(&mut node, at, Input::Timeout);
        honest = requests(&outs).into_iter().find(|r| r.0 == id(1));
    }
    let (_, req_id, _) = honest.expect("the full holder is asked within one request timeout");
    let asks = chunk_asks(&recv(&mut node, at, id(1), manifest_answer(req_id, &a)));
    assert!(
        !asks.is_empty() && asks.iter().all(|r| r.0 == id(1)),
        "the swarm fetches from the full holder: {asks:?}"
    );
}

/// A partial source that later advertises the artifact whole is a full source from then on,
/// and its advert is weighed as a new source's: metadata the priority function wants more
/// replaces that of its `Fetching`.
#[test]
fn a_partial_source_that_advertises_the_whole_is_asked_for_it() {
    let mut node = connected_node(Config::default(), 2);
    node.set_priority_fn(p2p_core::PriorityFnRef::by_kind(
        vec![(Kind(0), p2p_core::Priority::URGENT)],
        p2p_core::Decision::Later,
    ));
    let a = Artifact::new(Kind(0), &b""[..], vec![7u8; 3000]);
    let mut later = a.advert();
    later.kind = Kind(1);
    let outs = recv(&mut node, t(0), id(1), Message::Fetching(later));
    assert!(requests(&outs).is_empty(), "wanted later: {outs:?}");
    let outs = recv(&mut node, t(1), id(1), Message::Adverts(vec![a.advert()]));
    let asked = requests(&outs);
    assert_eq!(asked.len(), 1, "{outs:?}");
    assert_eq!((asked[0].0, asked[0].2), (id(1), a.id));
}

/// The peers `outs` pushes a chunk to, sorted.
fn pushes_to(outs: &[Output]) -> Vec<p2p_core::NodeId> {
    let mut to: Vec<p2p_core::NodeId> = sends(outs)
        .into_iter()
        .filter_map(|(to, m, _)| match m {
            Message::Chunk {
                req_id: p2p_core::PUSHED_CHUNK,
                ..
            } => Some(to),
            _ => None,
        })
        .collect();
    to.sort();
    to
}

/// Pushed chunks no swarm wants are dropped; past `max_unwanted_pushes` of them (net of useful
/// ones) the peer is cut off with its typed reason. A bad pushed chunk is bad data.
#[test]
fn unwanted_and_bad_pushes_are_bounded() {
    let a = big(44, 6);
    let other = big(45, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        max_unwanted_pushes: 3,
        max_bad_data_per_peer: 0,
        ..Config::default()
    };
    let (mut node, _) = swarming_with_fetchers(&a, cfg);
    // Peer 2 pushes chunks of an artifact this node does not fetch.
    for k in 0..3 {
        let outs = recv(&mut node, t(10 + k), id(2), pushed(&other, k as u32));
        assert!(disconnects(&outs).is_empty(), "push {k}");
    }
    let outs = recv(&mut node, t(20), id(2), pushed(&other, 3));
    assert_eq!(
        disconnects(&outs),
        vec![(id(2), DisconnectReason::UnwantedPushes { limit: 3 })]
    );
    assert_eq!(node.metrics().duplicates, 4);
    // Peer 3 pushes a chunk whose bytes are wrong.
    let bad = Message::Chunk {
        req_id: p2p_core::PUSHED_CHUNK,
        id: a.id,
        index: 1,
        data: bytes::Bytes::from(vec![0xee; chunk_of(&a, 1).len()]),
    };
    let outs = recv(&mut node, t(21), id(3), bad);
    assert!(
        disconnects(&outs)
            .iter()
            .any(|(p, r)| *p == id(3) && matches!(r, DisconnectReason::BadData { .. }))
    );
    assert!(!node.has_chunk(&a.id, 1));
}

/// Pushes spend the peer's serving budget as answers do: with a burst of one chunk and a rate
/// that refills nothing meanwhile, each fetching peer is pushed one chunk of the two this node
/// owns, and fetches the other itself.
#[test]
fn pushes_spend_the_serving_budget() {
    let a = big(46, 6);
    let cfg = Config {
        push_chunks: true,
        chunk_size: CHUNK,
        serve_rate: 1,
        serve_burst: u64::from(CHUNK),
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let own: Vec<_> = asks
        .iter()
        .filter(|r| owner_of(&a, r.3) == id(0))
        .copied()
        .collect();
    assert_eq!(own.len(), 2, "{asks:?}");
    let mut pushes = Vec::new();
    for (peer, req_id, _, index) in own {
        let msg = Message::Chunk {
            req_id,
            id: a.id,
            index,
            data: chunk_of(&a, index),
        };
        pushes.extend(
            sends(&recv(&mut node, t(10), peer, msg))
                .into_iter()
                .filter_map(|(to, m, _)| match m {
                    Message::Chunk {
                        req_id: p2p_core::PUSHED_CHUNK,
                        index,
                        ..
                    } => Some((to, index)),
                    _ => None,
                }),
        );
    }
    pushes.sort();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert!(pushes[0].0 == id(2) && pushes[1].0 == id(3), "{pushes:?}");
}

/// A mid-sized artifact of `size` bytes in the default chunk size, bytes differing per chunk.
fn mid(n: u8, size: usize) -> Artifact {
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32 / 7).wrapping_mul(n as u32 + 1) as u8)
        .collect();
    Artifact::with_chunk_size(
        Kind(0),
        &b"mid"[..],
        data,
        p2p_core::chunks::DEFAULT_CHUNK_SIZE,
    )
}

/// A 4 MiB artifact in a subnet of 128 KiB chunks travels in 128 chunks of 32 KiB
/// (`chunk_size_for`): its manifest in those is fetched and swarmed, while a manifest of the
/// same bytes in 128 KiB chunks (the subnet's chunk size, but not the one for its size) is bad
/// data.
#[test]
fn a_mid_sized_artifact_travels_in_small_chunks_and_no_other_cut_is_accepted() {
    let cfg = Config {
        max_bad_data_per_peer: 0,
        ..Config::default()
    };
    let a = mid(50, 4 << 20);
    let m = Manifest::build(&a.data, cfg.chunk_size).unwrap();
    assert_eq!((m.chunk_size(), m.count(), m.id()), (32 << 10, 128, a.id));
    let mut node = connected_node(cfg.clone(), 2);
    let outs = fetch_manifest(&mut node, 0, id(1), &a);
    assert!(disconnects(&outs).is_empty(), "{outs:?}");
    let asks = chunk_asks(&outs);
    assert!(!asks.is_empty() && asks.iter().all(|r| r.2 == a.id && r.3 < 128));

    // The same bytes cut into 128 KiB chunks: a manifest the rule does not give.
    let mut b = p2p_core::ManifestBuilder::new(cfg.chunk_size).unwrap();
    for piece in a.data.chunks(cfg.chunk_size as usize) {
        b.push(piece).unwrap();
    }
    let coarse = b.finish().unwrap();
    assert_eq!(coarse.count(), 32);
    let advert = p2p_core::Advert {
        id: coarse.id(),
        ..a.advert()
    };
    let mut node = connected_node(cfg, 2);
    let outs = recv(&mut node, t(0), id(1), Message::Adverts(vec![advert]));
    let (peer, req_id, _) = requests(&outs)[0];
    let answer = Message::Response {
        req_id,
        id: coarse.id(),
        data: coarse.root().clone(),
    };
    let outs = recv(&mut node, t(1), peer, answer);
    assert!(
        disconnects(&outs).iter().any(|(p, _)| *p == peer),
        "a manifest in another chunk size is bad data: {outs:?}"
    );
}

/// The `Have`s a node sends of the chunks it verified within `have_interval` of its last one.
fn haves_to(outs: &[Output], to: p2p_core::NodeId) -> Vec<Vec<p2p_core::ChunkRange>> {
    sends(outs)
        .into_iter()
        .filter_map(|(p, m, _)| match m {
            Message::Have { ranges, .. } if p == to && !ranges.is_empty() => Some(ranges),
            _ => None,
        })
        .collect()
}

/// A node announces the first chunk it verifies at once, and the chunks it verifies less than
/// `have_interval` after its last `Have` in one `Have` once the interval has passed (the node
/// asks to run again then), for a swarm in chunks smaller than `chunk_size` (a 4 MiB artifact in
/// 32 KiB chunks); a swarm in chunks of `chunk_size` announces each chunk at once.
#[test]
fn chunks_verified_within_the_have_interval_are_announced_together() {
    let a = mid(51, 4 << 20);
    let cfg = Config::default();
    let interval = cfg.have_interval;
    assert!(interval >= Duration::from_millis(2));
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let answer = |r: &(p2p_core::NodeId, u64, p2p_core::ArtifactId, u32)| Message::Chunk {
        req_id: r.1,
        id: a.id,
        index: r.3,
        data: chunk_of(&a, r.3),
    };
    assert!(asks.len() >= 2, "{asks:?}");
    let first = recv(&mut node, t(3), asks[0].0, answer(&asks[0]));
    let one = |i: u32| p2p_core::ChunkRange {
        start: i,
        end: i + 1,
    };
    assert_eq!(haves_to(&first, id(2)), vec![vec![one(asks[0].3)]]);
    let second = recv(&mut node, t(3) + interval / 2, asks[1].0, answer(&asks[1]));
    assert!(haves_to(&second, id(2)).is_empty(), "{second:?}");
    assert!(haves_to(&second, id(3)).is_empty(), "{second:?}");
    let wake = node.poll_timeout().expect("a Have is due");
    assert!(wake <= t(3) + interval, "{wake:?}");
    let later = step(&mut node, t(3) + interval, Input::Timeout);
    for peer in [id(2), id(3)] {
        assert_eq!(haves_to(&later, peer), vec![vec![one(asks[1].3)]]);
    }

    // In chunks of `chunk_size`: each chunk at once.
    let b = big(53, 6);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(&b, cfg);
    for (k, r) in asks.iter().take(2).enumerate() {
        let msg = Message::Chunk {
            req_id: r.1,
            id: b.id,
            index: r.3,
            data: chunk_of(&b, r.3),
        };
        let outs = recv(&mut node, t(3) + Duration::from_millis(k as u64), r.0, msg);
        assert_eq!(haves_to(&outs, id(2)), vec![vec![one(r.3)]]);
    }
}

/// A swarm in chunks smaller than `chunk_size` may have proportionally more requests in flight
/// (the limits count chunks of `chunk_size`): a 4 MiB artifact in 32 KiB chunks is asked of
/// the origin (its stripe) and of a partial holder 32 chunks at a time each (1 MiB, as 8 chunks
/// of 128 KiB would be), not 8.
#[test]
fn the_chunk_request_limits_count_bytes_of_the_subnets_chunk_size() {
    let cfg = Config::default();
    let per_peer = cfg.max_chunks_in_flight_per_peer;
    let a = mid(52, 4 << 20);
    let mut node = connected_node(cfg, 2);
    let mut outs = fetch_manifest(&mut node, 0, id(1), &a);
    let have = Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange { start: 0, end: 128 }],
    };
    outs.extend(recv(&mut node, t(2), id(2), have));
    let asks = chunk_asks(&outs);
    let to = |p: usize| asks.iter().filter(|r| r.0 == id(p)).count();
    assert_eq!((to(1), to(2)), (per_peer * 4, per_peer * 4));
    let mut asked: Vec<u32> = asks.iter().map(|r| r.3).collect();
    asked.sort_unstable();
    asked.dedup();
    assert_eq!(asked.len(), per_peer * 8, "each chunk asked once");
}

/// A swarm with nothing to ask (it waits for its peers' stripes) looks again, after a `Have`,
/// only at the chunks the `Have` adds, unless something else changed: once it is idle past
/// `swarm_patience`, any `Have` (even of a chunk it holds, and before any timer input) has it
/// ask the full holder for a chunk of another's stripe.
#[test]
fn a_stuck_swarm_looks_at_what_a_have_adds_and_at_everything_once_idle() {
    let a = big(51, 12);
    let cfg = Config {
        chunk_size: CHUNK,
        ..Config::default()
    };
    let patience = cfg.swarm_patience;
    let (mut node, asks) = swarming_with_fetchers(&a, cfg);
    let own: Vec<u32> = (0..12).filter(|i| owner_of(&a, *i) == id(0)).collect();
    let mut asked: Vec<u32> = asks.iter().map(|r| r.3).collect();
    asked.sort_unstable();
    assert_eq!(asked, own, "first its own stripe, from the origin");
    let chunk = |req_id, index| Message::Chunk {
        req_id,
        id: a.id,
        index,
        data: chunk_of(&a, index),
    };
    for r in &asks {
        let more = chunk_asks(&recv(&mut node, t(3), r.0, chunk(r.1, r.3)));
        assert!(more.is_empty(), "nothing else to ask yet: {more:?}");
    }
    let have = |i: u32| Message::Have {
        id: a.id,
        ranges: vec![p2p_core::ChunkRange {
            start: i,
            end: i + 1,
        }],
    };
    // Stuck: a Have of a chunk of peer 2's stripe gets that chunk asked of peer 2, nothing else.
    let c2 = (0..12).find(|i| owner_of(&a, *i) == id(2)).unwrap();
    let got = chunk_asks(&recv(&mut node, t(4), id(2), have(c2)));
    assert_eq!(
        got.iter().map(|r| (r.0, r.3)).collect::<Vec<_>>(),
        vec![(id(2), c2)],
        "{got:?}"
    );
    assert!(chunk_asks(&recv(&mut node, t(5), id(2), chunk(got[0].1, c2))).is_empty());
    // Nothing in flight, idle past the patience, no timer input yet: a Have of a chunk it
    // holds has it ask the origin for one chunk of the others' stripes.
    let got = chunk_asks(&recv(&mut node, t(5) + patience * 2, id(3), have(c2)));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, id(1), "{got:?}");
    assert!(!own.contains(&got[0].3) && got[0].3 != c2, "{got:?}");
}

type ChunkAsk = (p2p_core::NodeId, u64, p2p_core::ArtifactId, u32);

fn chunk_msg(art: &Artifact, req_id: u64, index: u32) -> Message {
    Message::Chunk {
        req_id,
        id: art.id,
        index,
        data: chunk_of(art, index),
    }
}

fn have_one(art: &Artifact, i: u32) -> Message {
    Message::Have {
        id: art.id,
        ranges: vec![p2p_core::ChunkRange {
            start: i,
            end: i + 1,
        }],
    }
}

/// Node 0 swarming `a` (24 chunks) with the origin (peer 1) and peers 2 and 3, once peer 2 has
/// answered four chunks of its stripe in 10 ms each and peer 3 four of its own in about 400
/// ms each: peer 3 is slow from its fourth answer on, not before (one late answer is no
/// evidence). Returns the node and the chunk requests of that fourth answer's outputs.
fn with_slow_peer_3(a: &Artifact) -> (p2p_core::Node, Vec<ChunkAsk>) {
    let cfg = Config {
        chunk_size: CHUNK,
        max_chunks_in_flight_per_peer: 64,
        ..Config::default()
    };
    let (mut node, asks) = swarming_with_fetchers(a, cfg);
    for r in &asks {
        recv(&mut node, t(3), r.0, chunk_msg(a, r.1, r.3));
    }
    let four = |owner| -> Vec<u32> {
        (0..24)
            .filter(|i| owner_of(a, *i) == owner)
            .take(4)
            .collect()
    };
    let mut asked = Vec::new();
    for peer in [id(2), id(3)] {
        for i in four(peer) {
            let got = chunk_asks(&recv(&mut node, t(10), peer, have_one(a, i)));
            assert_eq!(
                got.iter().map(|r| (r.0, r.3)).collect::<Vec<_>>(),
                vec![(peer, i)]
            );
            asked.extend(got);
        }
    }
    let mut last = Vec::new();
    for (k, r) in asked.iter().enumerate() {
        let at = if r.0 == id(2) { 20 } else { 410 + k as u64 };
        last = chunk_asks(&recv(&mut node, t(at), r.0, chunk_msg(a, r.1, r.3)));
        if k + 1 < asked.len() {
            assert_eq!(node.metrics().chunks_asked_slow_owner, 0, "answer {k}");
        }
    }
    (node, last)
}

/// A stripe owner whose chunk answers came at least eight times slower than the median
/// member's hands its stripe over at once: the rest of its stripe of the current artifact is
/// asked of the origin, and in the next swarm this node (next after it in the stripes' order)
/// asks the origin for the slow owner's chunks together with its own, before any patience
/// has passed, and says why in its metrics. The other owner's stripe stays its own.
#[test]
fn a_slow_owners_stripe_passes_to_the_next_taker_at_once() {
    let (a, b) = (big(60, 24), big(61, 24));
    let (mut node, rest_asks) = with_slow_peer_3(&a);
    let mut rest: Vec<(p2p_core::NodeId, u32)> = rest_asks.iter().map(|r| (r.0, r.3)).collect();
    rest.sort_unstable_by_key(|r| r.1);
    let expected: Vec<(p2p_core::NodeId, u32)> = (0..24)
        .filter(|i| owner_of(&a, *i) == id(3) && !node.has_chunk(&a.id, *i))
        .map(|i| (id(1), i))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        rest, expected,
        "the rest of peer 3's stripe, from the origin"
    );
    let before = node.metrics().chunks_asked_slow_owner;
    assert_eq!(before, expected.len() as u64);
    for r in &rest_asks {
        recv(&mut node, t(420), r.0, chunk_msg(&a, r.1, r.3));
    }
    // Peer 2 announces the rest of its stripe, and `a` completes.
    let left: Vec<u32> = (0..24)
        .filter(|i| owner_of(&a, *i) == id(2) && !node.has_chunk(&a.id, *i))
        .collect();
    let mut done = false;
    for i in left {
        for r in chunk_asks(&recv(&mut node, t(430), id(2), have_one(&a, i))) {
            done |= !delivered(&recv(&mut node, t(440), r.0, chunk_msg(&a, r.1, r.3))).is_empty();
        }
    }
    assert!(done, "a is delivered");

    // The next artifact: the node is next after peer 3 in the stripes' order. Peer 3's
    // stripe leaves with the manifest request, as the node's own does.
    let mut outs = recv(
        &mut node,
        t(1_000),
        id(1),
        Message::Adverts(vec![b.advert()]),
    );
    let mut early: Vec<u32> = chunk_asks(&outs).iter().map(|r| r.3).collect();
    early.sort_unstable();
    let (_, req_id, _) = requests(&outs)[0];
    outs.extend(recv(
        &mut node,
        t(1_001),
        id(1),
        manifest_answer(req_id, &b),
    ));
    for peer in [id(2), id(3)] {
        let fetching = Message::Have {
            id: b.id,
            ranges: Vec::new(),
        };
        outs.extend(recv(&mut node, t(1_002), peer, fetching));
    }
    let mut asked: Vec<u32> = chunk_asks(&outs)
        .iter()
        .filter(|r| r.2 == b.id)
        .inspect(|r| assert_eq!(r.0, id(1), "only the origin holds b"))
        .map(|r| r.3)
        .collect();
    asked.sort_unstable();
    let expected: Vec<u32> = (0..24)
        .filter(|i| [id(0), id(3)].contains(&owner_of(&b, *i)))
        .collect();
    assert_eq!(
        asked, expected,
        "its own stripe and the slow owner's, at once"
    );
    assert_eq!(early, expected, "both with the manifest request");
    let slow_stripe = expected
        .iter()
        .filter(|i| owner_of(&b, **i) == id(3))
        .count() as u64;
    assert!(slow_stripe > 0);
    assert_eq!(node.metrics().chunks_asked_slow_owner - before, slow_stripe);
    assert_eq!(node.metrics().chunks_asked_handed_over, 0);

    // Peer 2's stripe is still peer 2's: its chunk is asked of it once announced.
    let b2 = (0..24).find(|i| owner_of(&b, *i) == id(2)).unwrap();
    let got = chunk_asks(&recv(&mut node, t(1_003), id(2), have_one(&b, b2)));
    assert_eq!(
        got.iter().map(|r| (r.0, r.3)).collect::<Vec<_>>(),
        vec![(id(2), b2)]
    );
}

/// The stripe of a slow owner passes on only while a full holder can serve it: once the origin
/// is gone, the chunks only the slow owner holds are asked of it, and the artifact completes
/// from it.
#[test]
fn a_slow_owners_chunks_are_asked_of_it_once_no_full_holder_is_left() {
    let (a, b) = (big(62, 24), big(63, 24));
    let (mut node, rest_asks) = with_slow_peer_3(&a);
    assert!(node.metrics().chunks_asked_slow_owner > 0, "peer 3 is slow");
    for r in &rest_asks {
        recv(&mut node, t(420), r.0, chunk_msg(&a, r.1, r.3));
    }

    // The origin advertises `b`, serves its manifest, and leaves before any chunk.
    fetch_manifest(&mut node, 1_000, id(1), &b);
    step(&mut node, t(1_002), Input::PeerDisconnected(id(1)));
    // Peers 2 and 3 now hold every chunk of `b` between them: peer 2 its own stripe, peer 3
    // its own and this node's. Nothing can come from a full holder any more.
    let mut wanted: Vec<(p2p_core::NodeId, u32)> = Vec::new();
    let mut outs = Vec::new();
    for i in 0..24 {
        let holder = if owner_of(&b, i) == id(2) {
            id(2)
        } else {
            id(3)
        };
        wanted.push((holder, i));
        outs.extend(recv(&mut node, t(1_003), holder, have_one(&b, i)));
    }
    let mut asked: Vec<(p2p_core::NodeId, u32)> = chunk_asks(&outs)
        .iter()
        .filter(|r| r.2 == b.id)
        .map(|r| (r.0, r.3))
        .collect();
    // Peer 3's chunks come once nothing else is in flight: answer what was asked, then look.
    let mut done = false;
    let mut now = 1_004;
    while !done && now < 1_100 {
        let batch = chunk_asks(&outs);
        outs = Vec::new();
        for r in batch.iter().filter(|r| r.2 == b.id) {
            outs.extend(recv(&mut node, t(now), r.0, chunk_msg(&b, r.1, r.3)));
        }
        done = !delivered(&outs).is_empty();
        asked.extend(
            chunk_asks(&outs)
                .iter()
                .filter(|r| r.2 == b.id)
                .map(|r| (r.0, r.3)),
        );
        now += 1;
    }
    assert!(
        done,
        "b completes from peers 2 and 3 within 100 ms: {asked:?}"
    );
    asked.sort_unstable_by_key(|r| r.1);
    assert_eq!(asked, wanted, "each chunk asked once, of its only holder");
}
