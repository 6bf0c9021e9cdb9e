//! Core and transport costs, timed here in fixed loops of the same operations as the criterion
//! benches (p2p-core `benches/core.rs` `advert_to_request`, p2p-transport `benches/wire.rs`
//! `copy`), so that one run of p2p-bench yields every figure of one commit in one JSON file.
//! Each figure is the best of a few repetitions (the machine is shared).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use p2p_core::{
    Advert, ArtifactId, Class, Config, Input, Kind, Message, Node, NodeId, Output, Time,
};
use p2p_transport::mux::{MuxConfig, MuxReceiver, MuxSender};
use serde::{Deserialize, Serialize};

/// The micro-benchmark figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Micro {
    /// Fresh adverts handled per second by the core (advert in, priority decision, request out),
    /// 8 peers, batches of 256.
    pub core_adverts_per_s: f64,
    /// 1 KiB `Response` messages per second through encode, mux, demux and decode.
    pub wire_1kib_msgs_per_s: f64,
    /// Payload bytes per second of 1 MiB `Response`s through the same path.
    pub wire_1mib_bytes_per_s: f64,
}

const PEERS: usize = 8;
const BATCH: usize = 256;

fn peer(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 32])
}

fn adverts(n: usize) -> Vec<Advert> {
    (0..n as u64)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
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

/// A core with limits high enough that every advert becomes a request, and 8 connected peers.
fn roomy_node() -> Result<Node, String> {
    let cfg = Config {
        max_adverts_per_peer: 1 << 22,
        max_adverts_per_peer_per_kind: 1 << 22,
        max_pending_downloads: 1 << 22,
        max_in_flight: 1 << 22,
        max_in_flight_per_peer: 1 << 22,
        max_in_flight_bytes: u64::MAX / 4,
        max_in_flight_bytes_per_peer: u64::MAX / 4,
        ..Config::default()
    };
    let me = NodeId([0; 32]);
    let mut node = Node::new(me, cfg);
    let members = std::iter::once(me).chain((0..PEERS).map(peer)).collect();
    let err = |e: p2p_core::InputError| format!("core setup: {e}");
    node.handle_input(
        Time::ZERO,
        Input::Membership {
            version: 1,
            members,
        },
    )
    .map_err(err)?;
    for p in 0..PEERS {
        node.handle_input(Time::ZERO, Input::PeerConnected(peer(p)))
            .map_err(err)?;
    }
    while node.poll_output().is_some() {}
    Ok(node)
}

/// Adverts handled per second: best of `reps` runs of `n` fresh adverts into a fresh core.
pub fn core_adverts(n: usize, reps: usize) -> Result<f64, String> {
    let ads = adverts(n);
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let mut node = roomy_node()?;
        let batches: Vec<Message> = ads
            .chunks(BATCH)
            .map(|b| Message::Adverts(b.to_vec()))
            .collect();
        let start = Instant::now();
        let mut requests = 0;
        for (i, msg) in batches.into_iter().enumerate() {
            node.handle_input(
                Time::ZERO,
                Input::Message {
                    from: peer(i % PEERS),
                    msg,
                },
            )
            .map_err(|e| format!("core: {e}"))?;
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
        let secs = start.elapsed().as_secs_f64();
        if requests != n {
            return Err(format!("core: {requests} requests for {n} fresh adverts"));
        }
        best = best.max(n as f64 / secs.max(1e-9));
    }
    Ok(best)
}

/// Messages per second through the node's own multiplexer settings (encode, frame, reassemble,
/// decode), moving 64 KiB per write like the driver: best of `reps` rounds of `msgs`.
fn wire(msgs: &[Message], reps: usize) -> Result<f64, String> {
    let cfg = MuxConfig::default();
    let mut tx = MuxSender::new(cfg.clone()).map_err(|e| format!("mux: {e}"))?;
    let mut rx = MuxReceiver::new(cfg).map_err(|e| format!("mux: {e}"))?;
    let mut wire = BytesMut::with_capacity(128 << 10);
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let mut seen = 0;
        for m in msgs {
            tx.push(Class::Normal, m).map_err(|e| format!("mux: {e}"))?;
            // Drain as we go so the queue stays within its bounds whatever the count.
            while !tx.is_idle() {
                let _ = tx.poll_transmit(&mut wire, 64 << 10);
                rx.feed_buf(&mut wire);
                while let Some((_, m)) = rx.poll_message().map_err(|e| format!("demux: {e}"))? {
                    std::hint::black_box(&m);
                    seen += 1;
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if seen != msgs.len() {
            return Err(format!("wire: {seen} of {} messages came out", msgs.len()));
        }
        best = best.max(msgs.len() as f64 / secs.max(1e-9));
    }
    Ok(best)
}

fn responses(count: usize, len: usize) -> Vec<Message> {
    (0..count as u64)
        .map(|i| Message::Response {
            req_id: i,
            id: ArtifactId([i as u8; 32]),
            data: Bytes::from(vec![i as u8; len]),
        })
        .collect()
}

/// Every micro figure; `scale` 1 is the full size, larger divides the counts (quick mode).
pub fn measure(scale: usize, reps: usize) -> Result<Micro, String> {
    let scale = scale.max(1);
    let big = responses((32 / scale).max(2), 1 << 20);
    Ok(Micro {
        core_adverts_per_s: core_adverts(20_000 / scale, reps)?,
        wire_1kib_msgs_per_s: wire(&responses(20_000 / scale, 1024), reps)?,
        wire_1mib_bytes_per_s: wire(&big, reps)? * (1 << 20) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fresh_advert_becomes_a_request_and_every_message_comes_out() {
        assert!(core_adverts(600, 1).unwrap() > 0.0);
        assert!(wire(&responses(50, 1024), 1).unwrap() > 0.0);
        assert!(wire(&responses(2, 100_000), 1).unwrap() > 0.0);
    }
}
