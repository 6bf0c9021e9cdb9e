//! Core cost: adverts handled per second (advert in -> priority decision -> request out), a chunk
//! answered in a swarm of many chunks (verify, write, choose and ask the next chunk), and bytes
//! of state per tracked advert (printed; measured with a counting allocator).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use p2p_core::chunks::Manifest;
use p2p_core::{
    Advert, Artifact, ArtifactId, Bytes, ChunkRange, Config, Decision, Input, Kind, Message, Node,
    NodeId, Output, PriorityFnRef, RequestId, Time,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PEERS: usize = 8;
const BATCH: usize = 256;

fn peer(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 32])
}

fn adverts(n: usize, salt: u64) -> Vec<Advert> {
    (0..n as u64)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i ^ (salt << 40)).to_le_bytes());
            id[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            Advert {
                id: ArtifactId(id),
                kind: Kind((i % 4) as u16),
                size: 4096,
                attr: Bytes::from_static(b"height"),
            }
        })
        .collect()
}

fn node(cfg: Config) -> Node {
    let mut node = Node::new(NodeId([0; 32]), cfg);
    let members = (0..=PEERS).map(|i| if i == 0 { NodeId([0; 32]) } else { peer(i - 1) });
    node.handle_input(
        Time::ZERO,
        Input::Membership {
            version: 1,
            members: members.collect(),
        },
    )
    .unwrap();
    for p in 0..PEERS {
        node.handle_input(Time::ZERO, Input::PeerConnected(peer(p)))
            .unwrap();
    }
    while node.poll_output().is_some() {}
    node
}

fn roomy() -> Config {
    Config {
        max_adverts_per_peer: 1 << 22,
        max_adverts_per_peer_per_kind: 1 << 22,
        max_pending_downloads: 1 << 22,
        max_in_flight: 1 << 22,
        max_in_flight_per_peer: 1 << 22,
        max_in_flight_bytes: u64::MAX / 4,
        max_in_flight_bytes_per_peer: u64::MAX / 4,
        ..Config::default()
    }
}

/// Feeds `adverts` in batches, round-robin over the peers; returns the requests sent.
fn feed(node: &mut Node, adverts: &[Advert]) -> usize {
    let mut requests = 0;
    for (i, batch) in adverts.chunks(BATCH).enumerate() {
        node.handle_input(
            Time::ZERO,
            Input::Message {
                from: peer(i % PEERS),
                msg: Message::Adverts(batch.to_vec()),
            },
        )
        .unwrap();
        while let Some(out) = node.poll_output() {
            if let Output::Send {
                msg: Message::Request { .. },
                ..
            } = out
            {
                requests += 1;
            }
        }
    }
    requests
}

fn bench_adverts(c: &mut Criterion) {
    let n = 20_000;
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(n as u64));
    let fresh = adverts(n, 1);
    g.bench_function("advert_to_request", |b| {
        b.iter_batched(
            || (node(roomy()), fresh.clone()),
            |(mut node, ads)| {
                let r = feed(&mut node, &ads);
                assert_eq!(r, n);
                node
            },
            BatchSize::LargeInput,
        )
    });
    // The same artifacts advertised again by every other peer: sources added, no new requests.
    g.bench_function("duplicate_advert", |b| {
        b.iter_batched(
            || {
                let mut node = node(roomy());
                feed(&mut node, &fresh);
                (node, fresh.clone())
            },
            |(mut node, ads)| {
                feed(&mut node, &ads[BATCH..]);
                node
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// `n` ids whose table hash at node 0 with seed `seed` has its low `bits` bits zero: what an
/// attacker who knows the seed can send to pile adverts into a few buckets.
fn crafted_adverts(n: usize, seed: u64, bits: u32) -> Vec<Advert> {
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        id[31] = 0xc0;
        i += 1;
        let id = ArtifactId(id);
        if p2p_core::check::table_hash(seed, NodeId([0; 32]), &id) & mask == 0 {
            out.push(Advert {
                id,
                kind: Kind((i % 4) as u16),
                size: 4096,
                attr: Bytes::from_static(b"height"),
            });
        }
    }
    out
}

/// 50,000 adverts kept (`Later`) by a node: random ids, ids crafted against the node's own seed
/// (as if it were known), and the same crafted ids at a node whose seed is secret.
fn bench_crafted(c: &mut Criterion) {
    let n = 50_000;
    let known_seed = 0;
    let crafted = crafted_adverts(n, known_seed, 12);
    let random = adverts(n, 3);
    let keep = |seed: u64| Config {
        seed,
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        ..roomy()
    };
    let mut g = c.benchmark_group("core_crafted_ids");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    let cases = [
        ("random_ids", &random, known_seed),
        ("crafted_ids_known_seed", &crafted, known_seed),
        ("crafted_ids_secret_seed", &crafted, 0x6a09_e667_f3bc_c908),
    ];
    for (name, ads, seed) in cases {
        g.bench_function(name, |b| {
            b.iter_batched(
                || (node(keep(seed)), ads.clone()),
                |(mut node, ads)| {
                    feed(&mut node, &ads);
                    node
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

#[allow(
    clippy::disallowed_macros,
    reason = "the benchmark prints its measure; p2p-core itself never prints"
)]
fn report_state_per_advert() {
    let n = 100_000;
    let ads = adverts(n, 2);
    let cfg = Config {
        priority_fn: PriorityFnRef::new(|_: &Advert| Decision::Later),
        ..roomy()
    };
    let mut node = node(cfg);
    let before = ALLOCATED.load(Ordering::Relaxed);
    // Every advert from one peer, kept (`Later`): one download record and one per-peer record each.
    for batch in ads.chunks(BATCH) {
        node.handle_input(
            Time::ZERO,
            Input::Message {
                from: peer(0),
                msg: Message::Adverts(batch.to_vec()),
            },
        )
        .unwrap();
        while node.poll_output().is_some() {}
    }
    let after = ALLOCATED.load(Ordering::Relaxed);
    let tracked = node.metrics().tracked_adverts as usize;
    assert_eq!(tracked, n);
    println!(
        "core/state_per_tracked_advert: {} bytes ({} adverts, {:.1} MiB)",
        (after - before) / tracked,
        tracked,
        (after - before) as f64 / (1 << 20) as f64
    );
}

fn bench_state(_c: &mut Criterion) {
    report_state_per_advert();
}

/// Chunks of the swarm in [`bench_swarm`] (a 4 GiB artifact in the default 128 KiB chunks has
/// as many), and their size.
const SWARM_CHUNKS: u32 = 32_768;
const SWARM_CHUNK: u32 = 4096;

/// A node swarming an artifact of [`SWARM_CHUNKS`] chunks that peer 0 holds whole and every other
/// peer holds in part (each every chunk of its own index modulo the peers), with the chunk
/// requests it sent: (peer, request, chunk).
fn swarming(a: &Artifact, m: &Manifest) -> (Node, Vec<(NodeId, RequestId, u32)>) {
    let cfg = Config {
        chunk_size: SWARM_CHUNK,
        ..roomy()
    };
    let mut node = node(cfg);
    let mut asks = Vec::new();
    let take = |node: &mut Node, asks: &mut Vec<(NodeId, RequestId, u32)>| {
        let mut manifest_req = None;
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send {
                    to,
                    msg: Message::ChunkRequest { req_id, index, .. },
                    ..
                } => asks.push((to, req_id, index)),
                Output::Send {
                    msg: Message::Request { req_id, .. },
                    ..
                } => manifest_req = Some(req_id),
                _ => {}
            }
        }
        manifest_req
    };
    let msg = |from, msg| Input::Message { from, msg };
    node.handle_input(Time::ZERO, msg(peer(0), Message::Adverts(vec![a.advert()])))
        .unwrap();
    let req_id = take(&mut node, &mut asks).expect("the manifest is asked for");
    let answer = Message::Response {
        req_id,
        id: a.id,
        data: m.root().clone(),
    };
    node.handle_input(Time::ZERO, msg(peer(0), answer)).unwrap();
    take(&mut node, &mut asks);
    for p in 1..PEERS {
        let ranges = (p as u32..SWARM_CHUNKS)
            .step_by(PEERS - 1)
            .map(|i| ChunkRange {
                start: i,
                end: i + 1,
            })
            .collect::<Vec<_>>();
        for part in ranges.chunks(1024) {
            let have = Message::Have {
                id: a.id,
                ranges: part.to_vec(),
            };
            node.handle_input(Time::ZERO, msg(peer(p), have)).unwrap();
            take(&mut node, &mut asks);
        }
    }
    (node, asks)
}

/// One chunk answered in a swarm of [`SWARM_CHUNKS`] chunks with eight holders: the chunk is
/// verified and written, and the next one chosen and asked for. It times the answers alone (the
/// clock the core may not read is the benchmark's own).
#[allow(clippy::disallowed_methods)]
fn bench_swarm(c: &mut Criterion) {
    let data: Vec<u8> = (0..SWARM_CHUNKS as usize * SWARM_CHUNK as usize)
        .map(|i| (i as u32).wrapping_mul(0x9e37_79b9).rotate_right(13) as u8)
        .collect();
    let a = Artifact::with_chunk_size(Kind(1), Bytes::new(), data, SWARM_CHUNK);
    let m = Manifest::build(&a.data, SWARM_CHUNK).expect("chunked");
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chunk_answer_in_a_swarm_of_32768_chunks", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            let (mut node, mut asks) = swarming(&a, &m);
            for _ in 0..iters {
                let Some((from, req_id, index)) = asks.pop() else {
                    (node, asks) = swarming(&a, &m);
                    continue;
                };
                let answer = Message::Chunk {
                    req_id,
                    id: a.id,
                    index,
                    data: m.slice(&a.data, index).expect("a chunk"),
                };
                let start = std::time::Instant::now();
                node.handle_input(Time::ZERO, Input::Message { from, msg: answer })
                    .unwrap();
                while let Some(out) = node.poll_output() {
                    if let Output::Send {
                        to,
                        msg: Message::ChunkRequest { req_id, index, .. },
                        ..
                    } = out
                    {
                        asks.push((to, req_id, index));
                    }
                }
                spent += start.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_adverts,
    bench_crafted,
    bench_swarm,
    bench_state
);
criterion_main!(benches);
