//! Shared test helpers: quickcheck generators of messages.
#![allow(dead_code)]

use bytes::Bytes;
use p2p_core::{Advert, ArtifactId, Kind, Message, Priority};
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

impl Arbitrary for M {
    fn arbitrary(g: &mut Gen) -> Self {
        M(match u8::arbitrary(g) % 6 {
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
            _ => Message::NotFound {
                req_id: u64::arbitrary(g),
                id: arb_id(g),
            },
        })
    }
}
