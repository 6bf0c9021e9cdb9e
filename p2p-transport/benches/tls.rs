//! rustls in-memory bulk throughput: this machine's single-core TLS limit.
//!
//! One direction, TLS 1.3 with TLS13_AES_128_GCM_SHA256, 1 MiB writes; the figure counts the
//! sender's encryption and the receiver's decryption, both on the bench thread.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p2p_transport::tls::bench_support::TlsPair;

fn bulk_transfer(c: &mut Criterion) {
    const WRITE: usize = 1 << 20;
    const PER_ITER: usize = 8 * WRITE;
    let payload = vec![0x5a_u8; WRITE];
    let mut pair = TlsPair::new().expect("in-memory TLS pair");
    let mut group = c.benchmark_group("tls13_aes128gcm");
    group.throughput(Throughput::Bytes(PER_ITER as u64));
    group.bench_function("bulk_8MiB_in_1MiB_writes", |b| {
        b.iter(|| {
            let got = pair.transfer(&payload, PER_ITER).expect("transfer");
            assert_eq!(got, PER_ITER);
        })
    });
    group.finish();
}

criterion_group!(benches, bulk_transfer);
criterion_main!(benches);
