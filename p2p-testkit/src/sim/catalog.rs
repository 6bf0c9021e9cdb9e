//! Named scenarios: what the tests and `p2p-sim run <name>` execute.

use super::byz::ByzKind;
use super::rng::{Rng, derive};
use super::scenario::{Scenario, Topology, Workload};
use super::{BULK, NORMAL, URGENT};
use std::time::Duration;

/// A named scenario.
#[derive(Clone, Copy, Debug)]
pub struct CatalogEntry {
    /// The name, as given to `p2p-sim run`.
    pub name: &'static str,
    /// One line on what it checks.
    pub about: &'static str,
    /// Builds it for a seed.
    pub build: fn(u64) -> Scenario,
}

const fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn base(seed: u64, name: &str, nodes: usize) -> Scenario {
    Scenario::new(seed)
        .name(name)
        .nodes(nodes)
        .link(ms(10), 100_000_000)
        .jitter(ms(2))
        .settle(Duration::from_secs(20))
}

fn mixed(urgent_per_node: usize, bulk_count: usize, bulk_size: usize, window: u64) -> Workload {
    Workload {
        urgent_per_node,
        urgent_size: 600,
        bulk_count,
        bulk_size,
        start: ms(10),
        window: ms(window),
    }
}

fn byz(seed: u64, kind: ByzKind) -> Scenario {
    let name = format!("byz-{}", kind.name());
    let s = base(seed, &name, 9)
        .byzantine(8, kind)
        .config(|c| {
            c.max_adverts_per_peer = 3_000;
            c.max_adverts_per_peer_per_kind = 2_000;
            c.max_pending_downloads = 20_000;
            c.request_timeout_base = ms(500);
            c.request_timeout_per_mib = ms(200);
        })
        .workload(mixed(3, 2, 40_000, 1_000))
        .byzantine_pace(ms(20), 150)
        .settle(Duration::from_secs(15));
    match kind {
        ByzKind::Malformed => s
            .reconnect_cut_off(Some(ms(200)))
            .run_for(Duration::from_secs(10)),
        _ => s,
    }
}

/// Nodes of a `byz-f-*` subnet.
const BYZ_F_NODES: usize = 13;
/// Attackers of a `byz-f-*` subnet: the most a BFT subnet of [`BYZ_F_NODES`] tolerates,
/// f = floor((n - 1) / 3).
const BYZ_F: usize = (BYZ_F_NODES - 1) / 3;

/// The attacker slots of a `byz-f-*` run: [`BYZ_F`] distinct node indices drawn from the seed.
fn byz_f_slots(seed: u64) -> [usize; BYZ_F] {
    let mut r = Rng::new(derive(seed, 98));
    let mut all: Vec<usize> = (0..BYZ_F_NODES).collect();
    let mut slots = [0; BYZ_F];
    for (k, slot) in slots.iter_mut().enumerate() {
        let j = k + r.below((all.len() - k) as u64) as usize;
        all.swap(k, j);
        *slot = all[k];
    }
    slots
}

/// The attackers of `byz-f-mixed`: one each of never-serve, squatter, pusher and bad-data, in an
/// order drawn from the seed (so which slot runs which kind depends on the seed).
fn byz_f_mixed(seed: u64) -> [ByzKind; BYZ_F] {
    let mut kinds = [
        ByzKind::NeverServe,
        ByzKind::Squatter,
        ByzKind::Pusher,
        ByzKind::BadData,
    ];
    let mut r = Rng::new(derive(seed, 97));
    for k in 0..kinds.len() {
        let j = k + r.below((kinds.len() - k) as u64) as usize;
        kinds.swap(k, j);
    }
    kinds
}

/// A `byz-f-*` run: [`BYZ_F_NODES`] full-meshed slots, [`BYZ_F`] of them (drawn from the seed)
/// running `attackers` in collusion; with `None`, those slots stay empty (never members), which
/// gives the same honest nodes and the same workload without any attack.
///
/// The honest nodes publish urgent artifacts of 2,000 bytes (over the 1 KiB push threshold, so
/// they are advertised and downloaded at urgent priority, the class never-serve and hash-flood
/// attack), one pushed urgent artifact of 600 bytes each, and 3 bulk artifacts of 100 kB, all
/// in the first second. The limits are small so that attackers reach them quickly: 3,000
/// adverts per peer, 2,000 per kind, and a download table of 10,000, which f squatters at just
/// under 3,000 each overfill. Request timeouts are 500 ms; a cut-off attacker reconnects after
/// 500 ms and starts again. The connection layer's timers are scaled as the request timeout is
/// (a quarter of the drivers' defaults): write stall timeout 2.5 s, and stall timeout 2.5 s
/// without a frame of a message under reassembly (a twelfth of the default 30 s, so that it
/// fires within a run, which ends 5 s after the last publish; the honest links carry a frame
/// of each started message every few milliseconds). The node-wide reassembly cap is 64 MiB (the drivers' default is 512 MiB, twice
/// the core's in-flight bytes), so that f senders of partial frames, each allowed 64 MiB on its
/// connection, pass it and the budget's fair shares decide.
fn byz_f(seed: u64, name: &str, attackers: Option<[ByzKind; BYZ_F]>) -> Scenario {
    let slots = byz_f_slots(seed);
    let mut s = base(seed, name, BYZ_F_NODES)
        .config(|c| {
            c.max_adverts_per_peer = 3_000;
            c.max_adverts_per_peer_per_kind = 2_000;
            c.max_pending_downloads = 10_000;
            c.request_timeout_base = ms(500);
            c.request_timeout_per_mib = ms(200);
        })
        .workload(Workload {
            urgent_per_node: 3,
            urgent_size: 2_000,
            bulk_count: 3,
            bulk_size: 100_000,
            start: ms(10),
            window: ms(1_000),
        })
        .reconnect_cut_off(Some(ms(500)))
        .byzantine_pace(ms(20), 150)
        .partial_timeout(ms(2_500))
        .write_stall_timeout(ms(2_500))
        .reassembly_cap(64 << 20)
        .settle(Duration::from_secs(5));
    match attackers {
        Some(kinds) => {
            for (node, kind) in slots.into_iter().zip(kinds) {
                s = s.byzantine(node, kind);
            }
        }
        None => {
            let honest = (0..BYZ_F_NODES).filter(|i| !slots.contains(i)).collect();
            s = s.initial_members(honest);
        }
    }
    let mut r = Rng::new(derive(seed, 96));
    for node in (0..BYZ_F_NODES).filter(|i| !slots.contains(i)) {
        s = s.publish(ms(10 + r.below(1_000)), node, URGENT, 600);
    }
    s
}

/// The attackers of `byz-f-mixed-conn`: one of each connection-layer kind, in an order drawn
/// from the seed.
fn byz_f_mixed_conn(seed: u64) -> [ByzKind; BYZ_F] {
    let mut kinds = [
        ByzKind::ClassSpoofer,
        ByzKind::Churner,
        ByzKind::PartialFrames,
        ByzKind::StalledReader,
    ];
    let mut r = Rng::new(derive(seed, 97));
    for i in (1..BYZ_F).rev() {
        kinds.swap(i, r.below(i as u64 + 1) as usize);
    }
    kinds
}

/// A `byz-f-*` run with f attackers of one kind.
fn byz_f_all(seed: u64, kind: ByzKind) -> Scenario {
    byz_f(seed, &format!("byz-f-{}", kind.name()), Some([kind; BYZ_F]))
}

/// Bandwidth of a node in the `swarm-*` scenarios: 300 Mbit/s.
pub const SWARM_BPS: u64 = 300_000_000;
/// One-way latency of a link in the `swarm-*` scenarios.
pub const SWARM_LATENCY: Duration = ms(25);
/// When the origin of a `swarm-*` scenario publishes: after every connection is up (hellos
/// take one 25 ms latency), so the figures measure the broadcast alone.
pub const SWARM_PUBLISH_AT: Duration = ms(100);
/// Nodes of `swarm-bad-third`, `swarm-origin-crash` and `swarm-slow-nodes`.
pub const SWARM_NODES: usize = 13;
/// Attackers of `swarm-bad-third`: f = floor((n - 1) / 3) of [`SWARM_NODES`].
pub const SWARM_F: usize = (SWARM_NODES - 1) / 3;
/// Size of the artifact of the 4 MiB `swarm-*` scenarios.
pub const SWARM_4M: usize = 4 << 20;
/// Chunk request timeout base of `swarm-bad-third` (and its baseline): 500 ms, as the
/// `byz-f-*` scenarios' request timeout, so a silent holder's chunk is asked elsewhere within
/// about half a second (500 ms + 200 ms per MiB: 525 ms for a 128 KiB chunk).
pub const SWARM_BAD_TIMEOUT: Duration = ms(500);
/// When `swarm-origin-crash` crashes the origin, after its publish: 4 MiB at 300 Mbit/s is
/// 112 ms on the origin's uplink and the first chunk leaves 50 ms after the publish (advert,
/// then the manifest request with the node's own stripe); every chunk had gone through from
/// the origin 191 to 193 ms after the publish in seeds 0..3 (the run checks it:
/// `origin-spread`), and no node completes before 263 ms, so the crash leaves every node with
/// chunks to fetch from the partial holders.
pub const SWARM_CRASH_AFTER: Duration = ms(220);
/// Slow nodes of `swarm-slow-nodes`: a third of [`SWARM_NODES`].
pub const SWARM_SLOW: usize = SWARM_NODES / 3;

/// A `swarm-*` run: `nodes` relaying nodes on 300 Mbit/s links of 25 ms (jitter 1 ms) in a full
/// mesh, node 0 publishing one artifact of `size` random bytes (chunked as the default chunk
/// size of 128 KiB gives: 16 KiB for 4 MiB, 128 KiB for 64 MiB; `chunks::chunk_size_for`) at
/// [`SWARM_PUBLISH_AT`], which every honest member must get (`expect_complete`).
fn swarm(seed: u64, name: &str, nodes: usize, size: usize) -> Scenario {
    Scenario::new(seed)
        .name(name)
        .nodes(nodes)
        .link(SWARM_LATENCY, SWARM_BPS)
        .jitter(ms(1))
        .auto_relay(true)
        .publish(SWARM_PUBLISH_AT, 0, NORMAL, size)
        .expect_complete()
        .settle(Duration::from_secs(10))
}

/// `count` distinct node indices of `1..nodes` (never the origin, node 0), drawn from `seed`.
fn draw_nodes(seed: u64, stream: u64, nodes: usize, count: usize) -> Vec<usize> {
    let mut r = Rng::new(derive(seed, stream));
    let mut all: Vec<usize> = (1..nodes).collect();
    for k in 0..count.min(all.len()) {
        let j = k + r.below((all.len() - k) as u64) as usize;
        all.swap(k, j);
    }
    all.truncate(count);
    all
}

/// The attacker slots of `swarm-bad-third` (drawn from the seed, never the origin) and their
/// kinds: half serve bad chunks ([`ByzKind::BadChunks`], which misbehaves in swarms only, so
/// honest nodes meet it there and not at its first push), half never answer
/// ([`ByzKind::Silent`]).
pub fn swarm_bad_third_attackers(seed: u64) -> Vec<(usize, ByzKind)> {
    draw_nodes(seed, 95, SWARM_NODES, SWARM_F)
        .into_iter()
        .enumerate()
        .map(|(k, node)| {
            let kind = if k % 2 == 0 {
                ByzKind::BadChunks
            } else {
                ByzKind::Silent
            };
            (node, kind)
        })
        .collect()
}

/// `swarm-bad-third` (with `attack`) or its baseline: 4 MiB from node 0 to [`SWARM_NODES`]
/// slots, [`SWARM_F`] of them (drawn from the seed) attackers or, without `attack`, empty
/// slots that are never members (the same honest nodes and artifact without any attack).
/// Both kinds answer an honest swarm's empty `Have` with every chunk, so honest nodes ask them
/// first (partial holders before full ones); the bad-chunk ones are penalized at their first
/// chunk, the silent ones (which also echo the advert) cost a request timeout
/// ([`SWARM_BAD_TIMEOUT`]). A cut-off
/// attacker reconnects after 500 ms (and is refused while banned).
fn swarm_bad_third(seed: u64, attack: bool) -> Scenario {
    let name = if attack {
        "swarm-bad-third"
    } else {
        "swarm-bad-third-baseline"
    };
    let attackers = swarm_bad_third_attackers(seed);
    let mut s = swarm(seed, name, SWARM_NODES, SWARM_4M)
        .config(|c| c.request_timeout_base = SWARM_BAD_TIMEOUT)
        .reconnect_cut_off(Some(ms(500)));
    if attack {
        for (node, kind) in attackers {
            s = s.byzantine(node, kind);
        }
    } else {
        let honest = (0..SWARM_NODES)
            .filter(|i| !attackers.iter().any(|(n, _)| n == i))
            .collect();
        s = s.initial_members(honest);
    }
    s
}

/// Artifacts of `swarm-slow-stream`, published [`SWARM_STREAM_GAP`] apart.
pub const SWARM_STREAM: usize = 3;

/// Time between two publishes of `swarm-slow-stream`: longer than the slow nodes take.
pub const SWARM_STREAM_GAP: Duration = ms(1500);

/// The slow nodes of `swarm-slow-nodes` and `swarm-slow-stream` (drawn from the seed, never
/// the origin).
pub fn swarm_slow_nodes(seed: u64) -> Vec<usize> {
    draw_nodes(seed, 94, SWARM_NODES, SWARM_SLOW)
}

/// Every named scenario.
pub fn catalog() -> Vec<CatalogEntry> {
    vec![
        CatalogEntry {
            name: "mesh",
            about: "13 honest nodes, full mesh, urgent from all plus bulk: delivery, once, integrity",
            build: |seed| base(seed, "mesh", 13).workload(mixed(4, 3, 300_000, 2_000)),
        },
        CatalogEntry {
            name: "relay",
            about: "60 nodes on the derived graph of degree 4 (4 to 6, mean ~6) with auto-relay: delivery through relays",
            build: |seed| {
                base(seed, "relay", 60)
                    .topology(Topology::Degree(4))
                    .workload(mixed(1, 2, 100_000, 1_000))
            },
        },
        CatalogEntry {
            name: "partial-mesh",
            about: "12 nodes on the sparsest derived graph (degree 2 to 4) with auto-relay: every artifact reaches every node",
            build: |seed| {
                base(seed, "partial-mesh", 12)
                    .topology(Topology::Degree(2))
                    .workload(mixed(1, 1, 20_000, 300))
                    .settle(Duration::from_secs(5))
            },
        },
        CatalogEntry {
            name: "partial-mesh-membership",
            about: "partial-mesh while a member leaves and returns: the nodes rewire to the new graph (prune, dial) and still deliver everything",
            build: |seed| {
                base(seed, "partial-mesh-membership", 12)
                    .topology(Topology::Degree(2))
                    .workload(mixed(1, 1, 20_000, 1_500))
                    .remove_member(ms(400), 5)
                    .add_member(ms(900), 5)
                    .settle(Duration::from_secs(5))
            },
        },
        CatalogEntry {
            name: "line",
            about: "8 nodes on a line with auto-relay: delivery over 7 hops",
            build: |seed| {
                base(seed, "line", 8)
                    .topology(Topology::Links((0..7).map(|i| (i, i + 1)).collect()))
                    .workload(mixed(1, 1, 50_000, 500))
            },
        },
        CatalogEntry {
            name: "partition-heal",
            about: "a third of 12 nodes cut off while both sides publish, then healed",
            build: |seed| {
                base(seed, "partition-heal", 12)
                    .partition(ms(5), vec![0, 1, 2, 3])
                    .workload(mixed(2, 2, 60_000, 1_500))
                    .heal(ms(3_000))
            },
        },
        CatalogEntry {
            name: "crash-restart",
            about: "origins and receivers crash mid-transfer and restart with fresh state",
            build: |seed| {
                base(seed, "crash-restart", 10)
                    .publish(ms(0), 0, BULK, 2_000_000)
                    .publish(ms(0), 1, URGENT, 700)
                    .crash(ms(60), 5)
                    .crash(ms(80), 1)
                    .publish(ms(100), 2, BULK, 500_000)
                    .restart(ms(1_500), 5)
                    .restart(ms(2_000), 1)
                    .publish(ms(2_100), 1, URGENT, 800)
            },
        },
        CatalogEntry {
            name: "slow-node",
            about: "one node at 2 Mbit/s among 100 Mbit/s nodes: everyone still gets everything",
            build: |seed| {
                base(seed, "slow-node", 8)
                    .node_bandwidth(3, 2_000_000)
                    .workload(mixed(2, 2, 200_000, 1_000))
                    .settle(Duration::from_secs(40))
            },
        },
        CatalogEntry {
            name: "conn-drop",
            about: "connections drop mid-transfer and come back; nothing is delivered on a stale connection",
            build: |seed| {
                let mut s = base(seed, "conn-drop", 8)
                    .workload(mixed(3, 3, 500_000, 2_000))
                    .reconnect_dropped(ms(300));
                for k in 0..12u64 {
                    let a = (k as usize * 3) % 8;
                    let b = (a + 1 + k as usize % 7) % 8;
                    s = s.drop_connection(ms(50 + k * 150), a, b);
                }
                s
            },
        },
        CatalogEntry {
            name: "membership",
            about: "a node joins late and another leaves mid-run; the joiner catches up",
            build: |seed| {
                base(seed, "membership", 10)
                    .initial_members((0..9).collect())
                    .workload(mixed(2, 2, 100_000, 1_000))
                    .add_member(ms(1_500), 9)
                    .remove_member(ms(700), 4)
                    .add_member(ms(2_500), 4)
            },
        },
        CatalogEntry {
            name: "priority",
            about: "urgent artifacts under a saturating bulk load stay near their idle latency",
            build: |seed| {
                base(seed, "priority", 6)
                    .link(ms(10), 50_000_000)
                    .workload(Workload {
                        urgent_per_node: 20,
                        urgent_size: 500,
                        bulk_count: 12,
                        bulk_size: 2_000_000,
                        start: ms(0),
                        window: ms(2_000),
                    })
                    .expect_urgent_p99(ms(150))
            },
        },
        CatalogEntry {
            name: "congestion",
            about: "a slow receiver congests its peers' queues; requests wait in bounded queues",
            build: |seed| {
                base(seed, "congestion", 6)
                    .node_bandwidth(0, 5_000_000)
                    .congestion(256 * 1024, 64 * 1024)
                    .workload(mixed(3, 6, 300_000, 500))
                    .settle(Duration::from_secs(40))
            },
        },
        CatalogEntry {
            name: "random-faults",
            about: "16 nodes, random partitions, crashes, drops, slow periods and membership changes",
            build: |seed| {
                base(seed, "random-faults", 16)
                    .workload(mixed(2, 3, 150_000, 4_000))
                    .random_faults(6, ms(100), ms(4_000))
            },
        },
        CatalogEntry {
            name: "random-faults-relay",
            about: "40 nodes on the derived graph of degree 6 with relays under random faults",
            build: |seed| {
                base(seed, "random-faults-relay", 40)
                    .topology(Topology::Degree(6))
                    .workload(mixed(1, 2, 100_000, 3_000))
                    .random_faults(6, ms(100), ms(3_000))
            },
        },
        CatalogEntry {
            name: "random",
            about: "a random subnet, topology, workload, fault plan and byzantine actor per seed",
            build: random,
        },
        CatalogEntry {
            name: "byz-bad-data",
            about: "a peer serving and pushing bytes that do not match: penalized and cut off",
            build: |seed| byz(seed, ByzKind::BadData),
        },
        CatalogEntry {
            name: "byz-silent",
            about: "a peer advertising everything and answering nothing: fetched elsewhere",
            build: |seed| byz(seed, ByzKind::Silent),
        },
        CatalogEntry {
            name: "byz-phantom",
            about: "a peer advertising artifacts it does not have: state stays bounded",
            build: |seed| byz(seed, ByzKind::Phantom),
        },
        CatalogEntry {
            name: "byz-flood",
            about: "a peer flooding adverts past the limits: cut off, state bounded",
            build: |seed| byz(seed, ByzKind::Flood),
        },
        CatalogEntry {
            name: "byz-churn",
            about: "a peer churning adverts and withdraws: state bounded",
            build: |seed| byz(seed, ByzKind::Churn),
        },
        CatalogEntry {
            name: "byz-malformed",
            about: "a peer sending oversized attrs, sizes, batches, unsolicited answers and messages: cut off",
            build: |seed| byz(seed, ByzKind::Malformed),
        },
        CatalogEntry {
            name: "byz-f-baseline",
            about: "the byz-f workload on 9 of 13 slots with the 4 attacker slots empty: the no-attack latency",
            build: |seed| byz_f(seed, "byz-f-baseline", None),
        },
        CatalogEntry {
            name: "byz-f-never-serve",
            about: "f = 4 of 13 advertise urgent ids just under the limits and never answer: honest downloads keep pace",
            build: |seed| byz_f_all(seed, ByzKind::NeverServe),
        },
        CatalogEntry {
            name: "byz-f-squatter",
            about: "f = 4 of 13 fill the download table with ids they never serve: the others keep their share",
            build: |seed| byz_f_all(seed, ByzKind::Squatter),
        },
        CatalogEntry {
            name: "byz-f-pusher",
            about: "f = 4 of 13 push valid artifacts over the push threshold: cut off, never delivered",
            build: |seed| byz_f_all(seed, ByzKind::Pusher),
        },
        CatalogEntry {
            name: "byz-f-hash-flood",
            about: "f = 4 of 13 churn urgent adverts and withdraws inside the limits: honest latency holds",
            build: |seed| byz_f_all(seed, ByzKind::HashFlood),
        },
        CatalogEntry {
            name: "byz-f-bad-data",
            about: "f = 4 of 13 serve and push bytes that do not match: cut off, everything delivered",
            build: |seed| byz_f_all(seed, ByzKind::BadData),
        },
        CatalogEntry {
            name: "byz-f-silent",
            about: "f = 4 of 13 advertise everything they hear and answer nothing: fetched from honest nodes",
            build: |seed| byz_f_all(seed, ByzKind::Silent),
        },
        CatalogEntry {
            name: "byz-f-phantom",
            about: "f = 4 of 13 advertise ids they do not have and answer NotFound: delivery and bounds hold",
            build: |seed| byz_f_all(seed, ByzKind::Phantom),
        },
        CatalogEntry {
            name: "byz-f-mixed",
            about: "f = 4 of 13 colluding: never-serve, squatter, pusher and bad-data on seed-drawn slots",
            build: |seed| byz_f(seed, "byz-f-mixed", Some(byz_f_mixed(seed))),
        },
        CatalogEntry {
            name: "byz-f-class-spoofer",
            about: "f = 4 of 13 send messages in classes their types do not allow: cut off and banned at the first",
            build: |seed| byz_f_all(seed, ByzKind::ClassSpoofer),
        },
        CatalogEntry {
            name: "byz-f-churner",
            about: "f = 4 of 13 connect and leave every 20 ms: refused past the churn limit and banned",
            build: |seed| byz_f_all(seed, ByzKind::Churner),
        },
        CatalogEntry {
            name: "byz-f-partial-frames",
            about: "f = 4 of 13 start 1 MiB messages and never send more: reassembly stays in its cap, cut at the stall timeout",
            build: |seed| byz_f_all(seed, ByzKind::PartialFrames),
        },
        CatalogEntry {
            name: "byz-f-stalled-reader",
            about: "f = 4 of 13 never drain their downlink: the senders end the connection after the write stall timeout",
            build: |seed| byz_f_all(seed, ByzKind::StalledReader),
        },
        CatalogEntry {
            name: "byz-f-mixed-conn",
            about: "f = 4 of 13 colluding: class spoofer, churner, partial frames and stalled reader on seed-drawn slots",
            build: |seed| byz_f(seed, "byz-f-mixed-conn", Some(byz_f_mixed_conn(seed))),
        },
        CatalogEntry {
            name: "swarm-4m-13",
            about: "4 MiB from one node to 13, full mesh, 300 Mbit/s, 25 ms: chunks swarm, every node completes once",
            build: |seed| swarm(seed, "swarm-4m-13", 13, SWARM_4M),
        },
        CatalogEntry {
            name: "swarm-4m-40",
            about: "4 MiB from one node to 40, full mesh, 300 Mbit/s, 25 ms",
            build: |seed| swarm(seed, "swarm-4m-40", 40, SWARM_4M),
        },
        CatalogEntry {
            name: "swarm-64m-13",
            about: "64 MiB from one node to 13, full mesh, 300 Mbit/s, 25 ms",
            build: |seed| swarm(seed, "swarm-64m-13", 13, 64 << 20),
        },
        CatalogEntry {
            name: "swarm-64m-40",
            about: "64 MiB from one node to 40, full mesh, 300 Mbit/s, 25 ms",
            build: |seed| swarm(seed, "swarm-64m-40", 40, 64 << 20),
        },
        CatalogEntry {
            name: "swarm-partial-mesh",
            about: "4 MiB to 40 nodes on the derived graph of degree 6: chunks travel through relaying swarms",
            build: |seed| {
                swarm(seed, "swarm-partial-mesh", 40, SWARM_4M).topology(Topology::Degree(6))
            },
        },
        CatalogEntry {
            name: "swarm-bad-third-baseline",
            about: "swarm-bad-third's honest nodes and artifact with the 4 attacker slots empty: the no-attack figures",
            build: |seed| swarm_bad_third(seed, false),
        },
        CatalogEntry {
            name: "swarm-bad-third",
            about: "f = 4 of 13 claim every chunk: 2 serve bad chunks (penalized), 2 never answer (timed out); every honest node completes",
            build: |seed| swarm_bad_third(seed, true),
        },
        CatalogEntry {
            name: "swarm-origin-crash",
            about: "4 MiB to 13; the origin crashes once every chunk has left it: the partial holders finish it",
            build: |seed| {
                let at = SWARM_PUBLISH_AT + SWARM_CRASH_AFTER;
                swarm(seed, "swarm-origin-crash", SWARM_NODES, SWARM_4M)
                    .crash(at, 0)
                    .expect_origin_spread_by(at)
            },
        },
        CatalogEntry {
            name: "swarm-slow-nodes",
            about: "4 MiB to 13, a third of them (seed-drawn) at 30 Mbit/s: every node completes, the fast ones at their own pace",
            build: |seed| {
                let mut s = swarm(seed, "swarm-slow-nodes", SWARM_NODES, SWARM_4M);
                for node in swarm_slow_nodes(seed) {
                    s = s.node_bandwidth(node, SWARM_BPS / 10);
                }
                s
            },
        },
        CatalogEntry {
            name: "swarm-slow-stream",
            about: "three 4 MiB artifacts 1.5 s apart to 13, a third at 30 Mbit/s: once the slow owners' stripes pass on, the fast nodes no longer wait for them",
            build: |seed| {
                let mut s = swarm(seed, "swarm-slow-stream", SWARM_NODES, SWARM_4M);
                for k in 1..SWARM_STREAM {
                    let at = SWARM_PUBLISH_AT + SWARM_STREAM_GAP * k as u32;
                    s = s.publish(at, 0, NORMAL, SWARM_4M);
                }
                for node in swarm_slow_nodes(seed) {
                    s = s.node_bandwidth(node, SWARM_BPS / 10);
                }
                s
            },
        },
    ]
}

/// The named scenario `name` for `seed`, if it exists.
pub fn named(name: &str, seed: u64) -> Option<Scenario> {
    catalog()
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| (e.build)(seed))
}

/// A random scenario drawn from `seed`: size, topology, workload, faults and byzantine actors.
pub fn random(seed: u64) -> Scenario {
    let mut r = super::rng::Rng::new(super::rng::derive(seed, 99));
    let nodes = r.range(4, 24) as usize;
    let mut s = base(seed, "random", nodes);
    if r.chance(0.5) {
        s = s.topology(Topology::Degree(r.range(2, 7) as usize));
    }
    s = s.workload(mixed(
        r.range(1, 4) as usize,
        r.range(0, 3) as usize,
        r.range(2_000, 400_000) as usize,
        r.range(200, 3_000),
    ));
    if r.chance(0.7) {
        s = s.random_faults(r.range(1, 6) as usize, ms(50), ms(r.range(500, 4_000)));
    }
    if nodes >= 6 && r.chance(0.5) {
        let kind = ByzKind::CORE[r.below(ByzKind::CORE.len() as u64) as usize];
        s = s.byzantine(nodes - 1, kind).config(|c| {
            c.max_adverts_per_peer = 3_000;
            c.max_adverts_per_peer_per_kind = 2_000;
            c.request_timeout_base = ms(500);
        });
    }
    s
}
