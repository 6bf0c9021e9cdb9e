//! Throughput of the whole wire path on one core (the driver moving 256 KiB per write): encode + mux (frame) + demux (reassemble) +
//! decode, for 1 KiB messages (messages/s) and 1 MiB messages (bytes/s).
//!
//! `copy` appends frames to one write buffer (`poll_transmit`) and feeds it to the receiver as
//! one chunk; `vectored` hands the receiver the sender's pieces (`poll_transmit_parts`), as a
//! vectored write would, so no payload is copied on the sending side.

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use p2p_core::{ArtifactId, Class, Message};
use p2p_transport::mux::{MuxConfig, MuxReceiver, MuxSender};

fn response(i: u64, len: usize) -> Message {
    Message::Response {
        req_id: i,
        id: ArtifactId([i as u8; 32]),
        data: Bytes::from(vec![i as u8; len]),
    }
}

/// Pushes every message, moves all frames to the receiver and drains it; returns messages seen.
fn round_copy(
    msgs: &[Message],
    tx: &mut MuxSender,
    rx: &mut MuxReceiver,
    wire: &mut BytesMut,
) -> usize {
    for m in msgs {
        tx.push(Class::Normal, m).expect("queue has room");
    }
    let mut seen = 0;
    while !tx.is_idle() {
        let _ = tx.poll_transmit(wire, 256 << 10);
        rx.feed_buf(wire);
        while let Some(m) = rx.poll_message().expect("valid stream") {
            black_box(&m);
            seen += 1;
        }
    }
    seen
}

fn round_vectored(
    msgs: &[Message],
    tx: &mut MuxSender,
    rx: &mut MuxReceiver,
    parts: &mut Vec<Bytes>,
) -> usize {
    for m in msgs {
        tx.push(Class::Normal, m).expect("queue has room");
    }
    let mut seen = 0;
    while !tx.is_idle() {
        let _ = tx.poll_transmit_parts(parts, 256 << 10);
        for p in parts.drain(..) {
            rx.feed(p);
        }
        while let Some(m) = rx.poll_message().expect("valid stream") {
            black_box(&m);
            seen += 1;
        }
    }
    seen
}

fn bench(c: &mut Criterion, group: &str, msgs: Vec<Message>, throughput: Throughput) {
    let mut g = c.benchmark_group(group);
    g.throughput(throughput);
    for frame_size in [16 << 10, 256 << 10] {
        let cfg = MuxConfig {
            frame_size,
            ..MuxConfig::default()
        };
        let mut tx = MuxSender::new(cfg.clone()).unwrap();
        let mut rx = MuxReceiver::new(cfg).unwrap();
        // Sized to two writes, so the buffer is reclaimed (and stays in cache) once the receiver
        // drops what it was fed.
        let mut wire = BytesMut::with_capacity(512 << 10);
        g.bench_function(BenchmarkId::new("copy", frame_size), |b| {
            b.iter(|| assert_eq!(round_copy(&msgs, &mut tx, &mut rx, &mut wire), msgs.len()))
        });
        let mut parts = Vec::new();
        g.bench_function(BenchmarkId::new("vectored", frame_size), |b| {
            b.iter(|| {
                assert_eq!(
                    round_vectored(&msgs, &mut tx, &mut rx, &mut parts),
                    msgs.len()
                )
            })
        });
    }
    g.finish();
}

fn small(c: &mut Criterion) {
    let msgs: Vec<Message> = (0..1000).map(|i| response(i, 1024)).collect();
    bench(c, "wire_1KiB", msgs, Throughput::Elements(1000));
}

fn large(c: &mut Criterion) {
    let msgs: Vec<Message> = (0..8).map(|i| response(i, 1 << 20)).collect();
    bench(c, "wire_1MiB", msgs, Throughput::Bytes(8 << 20));
}

criterion_group!(benches, small, large);
criterion_main!(benches);
