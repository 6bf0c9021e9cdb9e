//! The local pool: the artifacts this node serves (published, or received and relayed), who is
//! known to hold them, and the memory of delivered artifacts.

use crate::chunks::Manifest;
use crate::config::Config;
use crate::hash::{Map, SaltedState};
use crate::message::Message;
use crate::peers::{PeerKey, Peers};
use crate::recent::Recent;
use crate::sink::Sink;
use crate::types::{Advert, Artifact, ArtifactId, Class};
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Peers known to hold an artifact (they sent or advertised it to us), as [`PeerKey`]s.
pub(crate) type Holders = SmallVec<[PeerKey; 4]>;

struct PoolEntry {
    artifact: Artifact,
    /// Its manifest, if it is chunked.
    manifest: Option<Manifest>,
    holders: Holders,
    /// Its place in the order of pooling.
    seq: u64,
    /// Whether this node pushed it to its peers (it is small and was published here).
    pushed: bool,
}

/// The artifacts this node serves and the artifacts it delivered.
///
/// Invariants: `bytes` is the sum of the pooled artifacts' sizes; `order` maps each pooled
/// artifact's `seq` (below `next_seq`, unique) to its id and holds nothing else; a holder list names a peer at
/// most once; at most `max_delivered_memory` delivered ids are remembered, oldest forgotten
/// first. Artifacts added by the auto-relay keep the pool within `max_auto_relay_pool` artifacts
/// and `max_auto_relay_pool_bytes` bytes (the application's own publications are not bounded).
pub(crate) struct Pool {
    entries: Map<ArtifactId, PoolEntry>,
    /// The pooled ids in the order they were pooled: a new connection's resync walks it with a
    /// cursor, a bounded batch at a time.
    order: BTreeMap<u64, ArtifactId>,
    /// The sequence number of the next pooled artifact.
    next_seq: u64,
    bytes: u64,
    /// Delivered ids, with the peers known to hold them.
    delivered: Recent<Holders>,
}

impl Pool {
    /// An empty pool whose tables hash with `hasher`.
    pub(crate) fn new(hasher: SaltedState) -> Self {
        Pool {
            entries: Map::with_hasher(hasher),
            order: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            delivered: Recent::new(hasher),
        }
    }

    /// Whether the pool holds `id`.
    pub(crate) fn contains(&self, id: &ArtifactId) -> bool {
        self.entries.contains_key(id)
    }

    /// Whether this node pools `id` or delivered it (and still remembers so).
    pub(crate) fn knows(&self, id: &ArtifactId) -> bool {
        self.entries.contains_key(id) || self.delivered.get(id).is_some()
    }

    /// The root of the pooled artifact `id`: what a request for it is answered with (its bytes,
    /// or its manifest if it is chunked).
    pub(crate) fn root(&self, id: &ArtifactId) -> Option<Bytes> {
        let e = self.entries.get(id)?;
        Some(match &e.manifest {
            Some(m) => m.root().clone(),
            None => e.artifact.data.clone(),
        })
    }

    /// Chunk `index` of the pooled chunked artifact `id`.
    pub(crate) fn chunk(&self, id: &ArtifactId, index: u32) -> Option<Bytes> {
        let e = self.entries.get(id)?;
        e.manifest.as_ref()?.slice(&e.artifact.data, index)
    }

    /// The pooled artifact `id`.
    pub(crate) fn get(&self, id: &ArtifactId) -> Option<&Artifact> {
        self.entries.get(id).map(|e| &e.artifact)
    }

    /// The pooled artifacts whose sequence numbers are `from` or later, in pooling order, with
    /// their sequence numbers.
    pub(crate) fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, &Artifact)> {
        self.order
            .range(from..)
            .filter_map(|(seq, id)| self.entries.get(id).map(|e| (*seq, &e.artifact)))
    }

    /// Artifacts pooled.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes pooled.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Delivered ids remembered.
    pub(crate) fn delivered_len(&self) -> usize {
        self.delivered.len()
    }

    /// The end of the pooling order so far: a resync started now covers the sequence numbers
    /// below it (artifacts pooled later are announced as they are pooled).
    pub(crate) fn seq_end(&self) -> u64 {
        self.next_seq
    }

    /// Appends to `out` the adverts of at most `max` artifacts still pooled whose sequence
    /// numbers lie in `from..end`, in pooling order; returns where the next batch starts
    /// (`end` when none is left).
    pub(crate) fn adverts_from(
        &self,
        from: u64,
        end: u64,
        max: usize,
        out: &mut Vec<Advert>,
    ) -> u64 {
        let mut range = self.order.range(from..end);
        for (_, id) in range.by_ref().take(max) {
            if let Some(e) = self.entries.get(id) {
                out.push(e.artifact.advert());
            }
        }
        range.next().map_or(end, |(seq, _)| *seq)
    }

    /// Whether this node pushed the pooled artifact `id` to its peers when it pooled it: a
    /// peer that announces it holds `id` needs no push of it that has not started yet.
    pub(crate) fn pushed(&self, id: &ArtifactId) -> bool {
        self.entries.get(id).is_some_and(|e| e.pushed)
    }

    /// Records the peer `key` as a holder of `id` if this node pools or delivered it; returns
    /// `None` if it does not, else whether `key` was not recorded as a holder before.
    pub(crate) fn note_holder(&mut self, id: &ArtifactId, key: PeerKey) -> Option<bool> {
        if let Some(entry) = self.entries.get_mut(id) {
            return Some(add_holder(&mut entry.holders, key));
        }
        self.delivered
            .get_mut(id)
            .map(|holders| add_holder(holders, key))
    }

    /// Forgets the peer `key` as a holder of `id` (it withdrew it).
    pub(crate) fn forget_holder(&mut self, id: &ArtifactId, key: PeerKey) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.holders.retain(|p| *p != key);
        }
        if let Some(holders) = self.delivered.get_mut(id) {
            holders.retain(|p| *p != key);
        }
    }

    /// Remembers that `id` was delivered and who holds it.
    pub(crate) fn remember_delivered(&mut self, id: ArtifactId, holders: Holders, cfg: &Config) {
        self.delivered
            .remember(id, holders, cfg.max_delivered_memory);
    }

    /// Whether the auto-relay may pool a delivered artifact of `size` bytes.
    pub(crate) fn admits_relay(&self, size: u64, cfg: &Config) -> bool {
        cfg.auto_relay
            && self.entries.len() < cfg.max_auto_relay_pool
            && self.bytes + size <= cfg.max_auto_relay_pool_bytes
    }

    /// Pools an artifact and announces it to every connected peer not known to hold it: the
    /// origin pushes small artifacts, a relay (of an artifact delivered here) only advertises.
    pub(crate) fn add(
        &mut self,
        artifact: Artifact,
        manifest: Option<Manifest>,
        peers: &mut Peers,
        sink: &mut Sink,
        cfg: &Config,
    ) {
        let id = artifact.id;
        let (holders, relay) = match self.delivered.get(&id) {
            Some(h) => (h.clone(), true),
            None => (SmallVec::new(), false),
        };
        let size = artifact.data.len() as u64;
        let advert = artifact.advert();
        let pushed = !relay && size <= cfg.push_threshold;
        if pushed {
            peers.for_each_other(&holders, |to| {
                let msg = Message::Push {
                    advert: advert.clone(),
                    data: artifact.data.clone(),
                };
                sink.send(to, msg, Class::Urgent);
                sink.metrics.bytes_served += size;
            });
        } else {
            peers.advertise_to_others(&holders, &advert);
        }
        self.bytes += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id);
        self.entries.insert(
            id,
            PoolEntry {
                artifact,
                manifest,
                holders,
                seq,
                pushed,
            },
        );
    }

    /// Takes `id` out of the pool and tells every connected peer not known to hold it.
    pub(crate) fn remove(&mut self, id: ArtifactId, peers: &Peers, sink: &mut Sink) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.bytes -= entry.artifact.data.len() as u64;
        self.order.remove(&entry.seq);
        peers.for_each_other(&entry.holders, |to| {
            sink.send(to, Message::Withdraw(id), Class::Control);
        });
    }
}

/// Adds `peer` to a holder list unless it is there already; returns whether it was added.
pub(crate) fn add_holder(holders: &mut Holders, peer: PeerKey) -> bool {
    let new = !holders.contains(&peer);
    if new {
        holders.push(peer);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::{Holders, Pool};
    use crate::config::Config;
    use crate::event::Output;
    use crate::hash::{FastState, SaltedState};
    use crate::message::Message;
    use crate::peers::Peers;
    use crate::sink::Sink;
    use crate::types::{Artifact, Class, Kind, NodeId};

    fn two_peers(cfg: &Config) -> (Peers, NodeId, NodeId) {
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let mut peers = Peers::new(FastState(1), cfg);
        peers.set_members([a, b]);
        peers.connect(a, 0);
        peers.connect(b, 0);
        (peers, a, b)
    }

    fn sends(sink: &mut Sink) -> Vec<(NodeId, Message, Class)> {
        std::iter::from_fn(|| sink.pop())
            .filter_map(|o| match o {
                Output::Send { to, msg, class } => Some((to, msg, class)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_origin_pushes_small_artifacts_and_counts_their_bytes() {
        let cfg = Config::default();
        let (mut peers, _, _) = two_peers(&cfg);
        let (mut pool, mut sink) = (Pool::new(SaltedState::new(1)), Sink::default());
        let art = Artifact::new(Kind(0), &b""[..], vec![1u8; 10]);
        pool.add(art.clone(), None, &mut peers, &mut sink, &cfg);
        let out = sends(&mut sink);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|(_, m, c)| matches!(m, Message::Push { .. }) && *c == Class::Urgent)
        );
        assert_eq!((pool.len(), pool.bytes()), (1, 10));
        assert_eq!(pool.get(&art.id).map(|a| a.id), Some(art.id));
        pool.remove(art.id, &peers, &mut sink);
        assert_eq!((pool.len(), pool.bytes()), (0, 0));
        assert_eq!(sends(&mut sink).len(), 2, "a withdraw to each peer");
    }

    #[test]
    fn the_pool_is_walked_in_pooling_order_from_a_position() {
        let cfg = Config::default();
        let (mut peers, _, _) = two_peers(&cfg);
        let (mut pool, mut sink) = (Pool::new(SaltedState::new(1)), Sink::default());
        let arts: Vec<Artifact> = (0..4u8)
            .map(|i| Artifact::new(Kind(u16::from(i)), &b""[..], vec![i; 10]))
            .collect();
        for a in &arts {
            pool.add(a.clone(), None, &mut peers, &mut sink, &cfg);
        }
        pool.remove(arts[1].id, &peers, &mut sink);
        let walk = |from| -> Vec<_> { pool.iter_from(from).map(|(s, a)| (s, a.id)).collect() };
        assert_eq!(
            walk(0),
            vec![(0, arts[0].id), (2, arts[2].id), (3, arts[3].id)]
        );
        assert_eq!(walk(1), vec![(2, arts[2].id), (3, arts[3].id)]);
        assert_eq!(walk(4), vec![]);
    }

    #[test]
    fn a_relay_advertises_and_skips_known_holders() {
        let cfg = Config::default();
        let (mut peers, a, b) = two_peers(&cfg);
        let (mut pool, mut sink) = (Pool::new(SaltedState::new(1)), Sink::default());
        let art = Artifact::new(Kind(0), &b""[..], vec![1u8; 10]);
        let holders: Holders = [peers.get(&a).expect("connected").key]
            .into_iter()
            .collect();
        pool.remember_delivered(art.id, holders, &cfg);
        pool.add(art.clone(), None, &mut peers, &mut sink, &cfg);
        peers.flush_adverts(&mut sink, &cfg);
        let out = sends(&mut sink);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], (to, Message::Adverts(ads), Class::Control) if *to == b && ads[0].id == art.id)
        );
        // Withdraw skips the holder too; a holder that withdrew is told again.
        pool.forget_holder(&art.id, peers.get(&a).expect("connected").key);
        pool.remove(art.id, &peers, &mut sink);
        assert_eq!(sends(&mut sink).len(), 2);
    }

    #[test]
    fn holders_are_noted_only_for_known_artifacts_and_once() {
        let cfg = Config::default();
        let mut pool = Pool::new(SaltedState::new(1));
        let art = Artifact::new(Kind(0), &b""[..], vec![1u8; 10]);
        assert_eq!(pool.note_holder(&art.id, 3), None);
        pool.remember_delivered(art.id, Holders::new(), &cfg);
        assert_eq!(pool.note_holder(&art.id, 3), Some(true));
        assert_eq!(pool.note_holder(&art.id, 3), Some(false));
        assert_eq!(pool.delivered_len(), 1);
        let (mut peers, _, _) = two_peers(&cfg);
        let mut sink = Sink::default();
        pool.add(art.clone(), None, &mut peers, &mut sink, &cfg);
        pool.remove(art.id, &peers, &mut sink);
        // Both connected peers have keys 0 and 1; key 3 held it: each gets a withdraw.
        assert_eq!(sends(&mut sink).len(), 2);
    }

    #[test]
    fn the_auto_relay_keeps_the_pool_within_its_bounds() {
        let cfg = Config {
            auto_relay: true,
            max_auto_relay_pool: 2,
            max_auto_relay_pool_bytes: 25,
            ..Config::default()
        };
        let (mut peers, _, _) = two_peers(&cfg);
        let (mut pool, mut sink) = (Pool::new(SaltedState::new(1)), Sink::default());
        assert!(pool.admits_relay(25, &cfg));
        assert!(!pool.admits_relay(26, &cfg));
        pool.add(
            Artifact::new(Kind(0), &b""[..], vec![1u8; 10]),
            None,
            &mut peers,
            &mut sink,
            &cfg,
        );
        assert!(pool.admits_relay(15, &cfg) && !pool.admits_relay(16, &cfg));
        pool.add(
            Artifact::new(Kind(0), &b""[..], vec![2u8; 1]),
            None,
            &mut peers,
            &mut sink,
            &cfg,
        );
        assert!(!pool.admits_relay(1, &cfg), "two artifacts pooled");
        let off = Config {
            auto_relay: false,
            ..cfg
        };
        assert!(!Pool::new(SaltedState::new(1)).admits_relay(1, &off));
    }
}
