//! Core cost: adverts handled per second (advert in -> priority decision -> request out), and
//! bytes of state per tracked advert (printed; measured with a counting allocator).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use p2p_core::{
    Advert, ArtifactId, Bytes, Config, Decision, Input, Kind, Message, Node, NodeId, Output,
    PriorityFnRef, Time,
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

criterion_group!(benches, bench_adverts, bench_crafted, bench_state);
criterion_main!(benches);
