//! Shared test helpers: quickcheck generators of messages.
#![allow(dead_code)]

use bytes::Bytes;
use p2p_core::{Advert, ArtifactId, ChunkRange, Kind, Message, Priority};
use quickcheck::{Arbitrary, Gen};

/// A quickcheck wrapper: an arbitrary message of any type within the default limits.
#[derive(Clone, Debug)]
pub struct M(pub Message);

/// Arbitrary bytes of length 0..=max.
pub fn arb_bytes(g: &mut Gen, max: usize) -> Bytes {
    let len = usize::arbitrary(g) % (max + 1);
    Bytes::from((0..len).map(|_| u8::arbitrary(g)).collect::<Vec<u8>>())
}

/// A payload: mostly small, sometimes spanning many 1 KiB frames.
pub fn arb_payload(g: &mut Gen) -> Bytes {
    if u8::arbitrary(g) % 5 == 0 {
        arb_bytes(g, 20_000)
    } else {
        arb_bytes(g, 300)
    }
}

/// An arbitrary artifact id.
pub fn arb_id(g: &mut Gen) -> ArtifactId {
    let mut a = [0u8; 32];
    a.iter_mut().for_each(|b| *b = u8::arbitrary(g));
    ArtifactId(a)
}

/// An arbitrary advert with an attribute of at most 64 bytes.
pub fn arb_advert(g: &mut Gen) -> Advert {
    Advert {
        id: arb_id(g),
        kind: Kind(u16::arbitrary(g)),
        size: u64::arbitrary(g),
        attr: arb_bytes(g, 64),
    }
}

/// Up to `max` chunk ranges, non-empty, ascending and disjoint (adjacent ones included).
pub fn arb_ranges(g: &mut Gen, max: usize) -> Vec<ChunkRange> {
    let n = usize::arbitrary(g) % (max + 1);
    let mut next = u32::arbitrary(g) % 1000;
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let start = next.saturating_add(u32::arbitrary(g) % 4);
        let end = start.saturating_add(1 + u32::arbitrary(g) % 100);
        if start >= end {
            break;
        }
        ranges.push(ChunkRange { start, end });
        next = end;
    }
    ranges
}

impl Arbitrary for M {
    fn arbitrary(g: &mut Gen) -> Self {
        M(match u8::arbitrary(g) % 12 {
            0 => Message::Push {
                advert: arb_advert(g),
                data: arb_payload(g),
            },
            1 => {
                let n = usize::arbitrary(g) % 40;
                Message::Adverts((0..n).map(|_| arb_advert(g)).collect())
            }
            2 => Message::Withdraw(arb_id(g)),
            3 => Message::Request {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
                priority: Priority(u8::arbitrary(g)),
            },
            4 => Message::Response {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
                data: arb_payload(g),
            },
            5 => Message::NotFound {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
            },
            6 => Message::ChunkRequest {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
                index: u32::arbitrary(g),
                priority: Priority(u8::arbitrary(g)),
            },
            7 => Message::Chunk {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
                index: u32::arbitrary(g),
                data: arb_payload(g),
            },
            8 => Message::Have {
                id: arb_id(g),
                ranges: arb_ranges(g, 40),
            },
            9 => Message::Decline {
                id: arb_id(g),
                ranges: arb_ranges(g, 40),
            },
            10 => Message::Fetching(arb_advert(g)),
            _ => Message::Cancel {
                req_id: u64::arbitrary(g),
            },
        })
    }
}
