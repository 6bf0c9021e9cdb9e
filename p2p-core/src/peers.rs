//! The connected peers: membership, small numbers for the tables, per-peer counters, and the
//! fair shares of the global limits that the peers draw on.

use crate::budget::FairShare;
use crate::config::Config;
use crate::event::DisconnectReason;
use crate::hash::{FastMap, FastSet, FastState};
use crate::message::Message;
use crate::pool::Holders;
use crate::ready::Slot;
use crate::serving::ServeQueue;
use crate::sink::Sink;
use crate::types::{Advert, Class, Kind, NodeId};
use smallvec::SmallVec;

/// A peer's stable small number: given on first connection and never reused, so that holder
/// lists (which outlive connections) cost 4 bytes a peer instead of 32.
pub(crate) type PeerKey = u32;

/// One connected peer.
pub(crate) struct Peer {
    /// This peer's small index, used in the download table instead of its 32-byte id.
    pub(crate) slot: Slot,
    /// This peer's stable key, used in holder lists.
    pub(crate) key: PeerKey,
    /// Adverts of this peer that we track for download.
    adverts: usize,
    /// Tracked adverts per kind.
    per_kind: SmallVec<[(Kind, u32); 4]>,
    /// Requests awaiting this peer's answer (timed-out ones included: the peer stays busy).
    pub(crate) in_flight: usize,
    in_flight_bytes: u64,
    /// This peer's requests counted in the global limits (not timed out).
    counted: u64,
    counted_bytes: u64,
    /// Downloads charged to this peer in the download table's fair share.
    owned: u64,
    bad_data: u32,
    /// Artifacts this peer gave us (answers with the right bytes, new pushes) and requests it
    /// failed (timed out, not found, bad bytes) since it connected.
    served: u32,
    failed: u32,
    /// Adverts to send at the end of the current input, batched.
    outbox: Vec<Advert>,
    /// The resync still to send: the pool's sequence numbers `next..end` (see
    /// [`Pool::adverts_from`](crate::pool::Pool::adverts_from)).
    resync: Option<(u64, u64)>,
    /// Requests of this peer held while its send queue is full.
    pub(crate) serving: ServeQueue,
}

impl Peer {
    /// Whether any advert of this peer is tracked.
    pub(crate) fn tracks_adverts(&self) -> bool {
        self.adverts > 0
    }

    /// How much this peer is trusted as a source, lower first: 0 when it gave us more
    /// artifacts than it failed our requests (proven), 1 when as many (a new peer), 2 when fewer
    /// (suspect).
    pub(crate) fn source_rank(&self) -> u8 {
        match self.served.cmp(&self.failed) {
            std::cmp::Ordering::Greater => 0,
            std::cmp::Ordering::Equal => 1,
            std::cmp::Ordering::Less => 2,
        }
    }
}

/// The members and the connected peers, with the budgets they share.
///
/// Invariants:
/// - a connected peer's slot maps back to it (`slots[slot]`), and a slot is held by at most one
///   connected peer; freed slots are reused, keys never are (one per member ever connected);
/// - `tracked_adverts` is the sum of the peers' `adverts`, and a peer's `adverts` the sum of its
///   per-kind counts;
/// - between inputs, the requests and bytes in flight of `flight_n` and `flight_bytes` are the
///   sums of the peers' `counted` and `counted_bytes` (at most `in_flight` and
///   `in_flight_bytes`), and the download table's usage is the sum of the peers' `owned`;
/// - `advert_dirty` lists each peer whose outbox is not empty (it is empty between inputs).
pub(crate) struct Peers {
    members: FastSet<NodeId>,
    map: FastMap<NodeId, Peer>,
    /// Slot -> peer id, for connected peers.
    slots: Vec<NodeId>,
    free_slots: Vec<Slot>,
    /// Peer id -> its stable key (one entry per member ever connected).
    keys: FastMap<NodeId, PeerKey>,
    /// Requests in flight (counted ones), with a reserved share per connected peer.
    flight_n: FairShare,
    /// Bytes in flight (counted ones), with a reserved share per connected peer.
    flight_bytes: FairShare,
    /// The download table's bound, with a reserved share per member (charged to each download's
    /// owner), so that squatters cannot fill it.
    table: FairShare,
    tracked_adverts: usize,
    advert_dirty: Vec<NodeId>,
    /// Peers with a resync to send, in the order they connected.
    resyncing: Vec<NodeId>,
}

impl Peers {
    /// No members and no peers; the tables hash with `fast`, the budgets take `cfg`'s limits.
    pub(crate) fn new(fast: FastState, cfg: &Config) -> Self {
        Peers {
            members: FastSet::with_hasher(fast),
            map: FastMap::with_hasher(fast),
            slots: Vec::new(),
            free_slots: Vec::new(),
            keys: FastMap::with_hasher(fast),
            flight_n: FairShare::new(cfg.max_in_flight as u64),
            flight_bytes: FairShare::new(cfg.max_in_flight_bytes),
            table: FairShare::new(cfg.max_pending_downloads as u64),
            tracked_adverts: 0,
            advert_dirty: Vec::new(),
            resyncing: Vec::new(),
        }
    }

    // ---- membership and connections ----

    /// Replaces the members.
    pub(crate) fn set_members(&mut self, members: impl IntoIterator<Item = NodeId>) {
        self.members.clear();
        self.members.extend(members);
    }

    /// Whether `id` is a member.
    pub(crate) fn is_member(&self, id: &NodeId) -> bool {
        self.members.contains(id)
    }

    /// Members.
    pub(crate) fn members_len(&self) -> usize {
        self.members.len()
    }

    /// Connected peers that are not members.
    pub(crate) fn non_members(&self) -> Vec<NodeId> {
        self.map
            .keys()
            .filter(|p| !self.members.contains(*p))
            .copied()
            .collect()
    }

    /// Connected peers.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `id` is connected.
    pub(crate) fn contains(&self, id: &NodeId) -> bool {
        self.map.contains_key(id)
    }

    /// The connected peer `id`.
    pub(crate) fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.map.get(id)
    }

    /// The connected peer `id`, to change.
    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Peer> {
        self.map.get_mut(id)
    }

    /// The connected peers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Peer)> {
        self.map.iter()
    }

    /// The connected peers, to change.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Peer)> {
        self.map.iter_mut()
    }

    /// The connected peers' ids.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.map.keys()
    }

    /// The id of the peer in `slot` (the last one that held it).
    pub(crate) fn id_of_slot(&self, slot: Slot) -> NodeId {
        self.slots[slot as usize]
    }

    /// The stable key of the connected peer in `slot`.
    pub(crate) fn key_of_slot(&self, slot: Slot) -> PeerKey {
        self.map[&self.slots[slot as usize]].key
    }

    /// Connects `peer` (not connected yet) with the pool's sequence numbers `0..resync_end` to
    /// advertise to it (see [`feed_resync`](Self::feed_resync)): gives it a free slot and its
    /// stable key. The caller reshares the budgets.
    pub(crate) fn connect(&mut self, peer: NodeId, resync_end: u64) {
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = peer;
                slot
            }
            None => {
                self.slots.push(peer);
                (self.slots.len() - 1) as Slot
            }
        };
        let next_key = self.keys.len() as PeerKey;
        let key = *self.keys.entry(peer).or_insert(next_key);
        let state = Peer {
            slot,
            key,
            adverts: 0,
            per_kind: SmallVec::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            counted: 0,
            counted_bytes: 0,
            owned: 0,
            bad_data: 0,
            served: 0,
            failed: 0,
            outbox: Vec::new(),
            resync: (resync_end > 0).then_some((0, resync_end)),
            serving: ServeQueue::default(),
        };
        if state.resync.is_some() {
            self.resyncing.push(peer);
        }
        self.map.insert(peer, state);
    }

    /// Whether a peer not congested has a resync to send (the node then wants to run again).
    pub(crate) fn resync_pending(&self) -> bool {
        self.resyncing
            .iter()
            .any(|p| self.map.get(p).is_some_and(|s| !s.serving.is_congested()))
    }

    /// Moves the next batch of each resync (at most `batch` adverts, taken by `next(from, end,
    /// out)`, which returns where the following batch starts) into the outbox of its peer,
    /// unless the peer is congested: a resync goes out as the peer's send queue drains, a batch
    /// per input.
    pub(crate) fn feed_resync(
        &mut self,
        batch: usize,
        mut next: impl FnMut(u64, u64, usize, &mut Vec<Advert>) -> u64,
    ) {
        let map = &mut self.map;
        let dirty = &mut self.advert_dirty;
        self.resyncing.retain(|peer| {
            let Some(state) = map.get_mut(peer) else {
                return false;
            };
            let Some((from, end)) = state.resync else {
                return false;
            };
            if state.serving.is_congested() {
                return true;
            }
            if state.outbox.is_empty() {
                dirty.push(*peer);
            }
            let from = next(from, end, batch, &mut state.outbox);
            state.resync = (from < end).then_some((from, end));
            state.resync.is_some()
        });
    }

    /// Forgets `peer` and frees its slot. The caller has given back what it held in the budgets
    /// (or hands it over) and reshares them.
    pub(crate) fn remove(&mut self, peer: &NodeId) -> Option<Peer> {
        let state = self.map.remove(peer)?;
        if state.resync.is_some() {
            self.resyncing.retain(|p| p != peer);
        }
        self.tracked_adverts -= state.adverts;
        self.free_slots.push(state.slot);
        Some(state)
    }

    /// Recomputes the fair shares after the set of peers or members changed: in-flight limits
    /// are shared among connected peers, the download table among the members other than
    /// `own_id`.
    pub(crate) fn reshare(&mut self, cfg: &Config, own_id: NodeId) {
        let peers = self.map.len();
        self.flight_n.reshare(
            peers,
            cfg.max_in_flight_per_peer as u64,
            self.map.values().map(|p| p.counted),
        );
        self.flight_bytes.reshare(
            peers,
            cfg.max_in_flight_bytes_per_peer,
            self.map.values().map(|p| p.counted_bytes),
        );
        let others = self.members.len() - usize::from(self.members.contains(&own_id));
        self.table.reshare(
            others.max(peers),
            cfg.max_adverts_per_peer as u64,
            self.map.values().map(|p| p.owned),
        );
    }

    /// Counts an artifact `peer` gave us (a right answer or a new push).
    pub(crate) fn record_served(&mut self, peer: &NodeId) {
        if let Some(state) = self.map.get_mut(peer) {
            state.served = state.served.saturating_add(1);
        }
    }

    /// Counts a request `peer` failed (timed out, not found, bad bytes).
    pub(crate) fn record_failed(&mut self, peer: &NodeId) {
        if let Some(state) = self.map.get_mut(peer) {
            state.failed = state.failed.saturating_add(1);
        }
    }

    /// Counts one more bad artifact from `peer`; returns its count (`None` if not connected).
    pub(crate) fn penalize(&mut self, peer: &NodeId) -> Option<u32> {
        let state = self.map.get_mut(peer)?;
        state.bad_data += 1;
        Some(state.bad_data)
    }

    // ---- adverts ----

    /// Adverts tracked, over all peers.
    pub(crate) fn tracked_adverts(&self) -> usize {
        self.tracked_adverts
    }

    /// Adverts tracked of the peer that tracks most.
    pub(crate) fn max_adverts_of_one_peer(&self) -> usize {
        self.map.values().map(|p| p.adverts).max().unwrap_or(0)
    }

    /// Requests held of the peer that holds most.
    pub(crate) fn max_held_requests_of_one_peer(&self) -> usize {
        self.map
            .values()
            .map(|p| p.serving.len())
            .max()
            .unwrap_or(0)
    }

    /// Counts an advert of `kind` from `peer` (connected), within the per-peer and per-kind
    /// limits; past one, the error is the reason to disconnect the peer.
    pub(crate) fn track_advert(
        &mut self,
        peer: &NodeId,
        kind: Kind,
        cfg: &Config,
    ) -> Result<(), DisconnectReason> {
        let (max_all, max_kind) = (cfg.max_adverts_per_peer, cfg.max_adverts_per_peer_per_kind);
        let state = self.map.get_mut(peer).expect("peer is connected");
        if state.adverts >= max_all {
            return Err(DisconnectReason::TooManyAdverts { limit: max_all });
        }
        let i = match state.per_kind.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                state.per_kind.push((kind, 0));
                state.per_kind.len() - 1
            }
        };
        if state.per_kind[i].1 as usize >= max_kind {
            return Err(DisconnectReason::TooManyAdvertsOfKind {
                kind,
                limit: max_kind,
            });
        }
        state.per_kind[i].1 += 1;
        state.adverts += 1;
        self.tracked_adverts += 1;
        Ok(())
    }

    /// Uncounts an advert of `kind` from the peer in `slot` (connected).
    pub(crate) fn untrack_advert(&mut self, slot: Slot, kind: Kind) {
        let peer = self.slots[slot as usize];
        let state = self.map.get_mut(&peer).expect("sources are connected");
        state.adverts -= 1;
        self.tracked_adverts -= 1;
        if let Some(k) = state.per_kind.iter_mut().find(|(k, _)| *k == kind) {
            k.1 -= 1;
        }
    }

    /// Moves one advert of the peer in `slot` (connected) from kind `from` to kind `to`.
    pub(crate) fn move_kind(&mut self, slot: Slot, from: Kind, to: Kind) {
        let peer = self.slots[slot as usize];
        let state = self.map.get_mut(&peer).expect("sources are connected");
        if let Some(k) = state.per_kind.iter_mut().find(|(k, _)| *k == from) {
            k.1 -= 1;
        }
        match state.per_kind.iter_mut().find(|(k, _)| *k == to) {
            Some(k) => k.1 += 1,
            None => state.per_kind.push((to, 1)),
        }
    }

    /// Calls `f` with every connected peer whose key is not in `skip`.
    pub(crate) fn for_each_other(&self, skip: &Holders, mut f: impl FnMut(NodeId)) {
        for (peer, state) in self.map.iter() {
            if !skip.contains(&state.key) {
                f(*peer);
            }
        }
    }

    /// Queues `advert` for every connected peer whose key is not in `skip`.
    pub(crate) fn advertise_to_others(&mut self, skip: &Holders, advert: &Advert) {
        for (peer, state) in self.map.iter_mut() {
            if skip.contains(&state.key) {
                continue;
            }
            if state.outbox.is_empty() {
                self.advert_dirty.push(*peer);
            }
            state.outbox.push(advert.clone());
        }
    }

    /// Sends the queued adverts, in batches of at most `cfg.advert_batch_size`.
    pub(crate) fn flush_adverts(&mut self, sink: &mut Sink, cfg: &Config) {
        let batch = cfg.advert_batch_size.max(1);
        for peer in std::mem::take(&mut self.advert_dirty) {
            let Some(state) = self.map.get_mut(&peer) else {
                continue;
            };
            let outbox = std::mem::take(&mut state.outbox);
            sink.metrics.adverts_sent += outbox.len() as u64;
            for head in outbox.chunks(batch) {
                sink.send(peer, Message::Adverts(head.to_vec()), Class::Control);
            }
        }
    }

    // ---- the download table's fair share ----

    /// Whether `peer` (connected) may be charged one more download.
    pub(crate) fn admits_download(&self, peer: &NodeId) -> bool {
        self.table.admits(self.map[peer].owned, 1)
    }

    /// Charges one download to `peer` (connected).
    pub(crate) fn charge_download(&mut self, peer: &NodeId) {
        let owner = self.map.get_mut(peer).expect("peer is connected");
        self.table.take(owner.owned, 1);
        owner.owned += 1;
    }

    /// Gives back one download charged to the peer in `slot`, if it is connected.
    pub(crate) fn discharge_download(&mut self, slot: Slot) {
        if let Some(p) = self.map.get_mut(&self.slots[slot as usize]) {
            self.table.give(p.owned, 1);
            p.owned -= 1;
        }
    }

    /// Moves the charge of one download from the peer in slot `from` to the one in `to`.
    pub(crate) fn charge_owner(&mut self, from: Slot, to: Slot) {
        self.discharge_download(from);
        let to = self.slots[to as usize];
        if let Some(p) = self.map.get_mut(&to) {
            self.table.take(p.owned, 1);
            p.owned += 1;
        }
    }

    // ---- requests in flight ----

    /// Requests counted in the global in-flight limit.
    pub(crate) fn in_flight(&self) -> u64 {
        self.flight_n.used()
    }

    /// Bytes counted in the global in-flight limit.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        self.flight_bytes.used()
    }

    /// Whether the peer in `slot` is connected and below its own request limit.
    pub(crate) fn below_request_limit(&self, slot: Slot, cfg: &Config) -> bool {
        self.map
            .get(&self.slots[slot as usize])
            .is_some_and(|p| p.in_flight < cfg.max_in_flight_per_peer)
    }

    /// Whether `peer` may be sent a request of `size` bytes now: within its own limits and
    /// within its fair share of the global ones.
    pub(crate) fn available(&self, peer: &Peer, size: u64, cfg: &Config) -> bool {
        peer.in_flight < cfg.max_in_flight_per_peer
            && (peer.in_flight == 0
                || peer.in_flight_bytes + size <= cfg.max_in_flight_bytes_per_peer)
            && self.flight_n.admits(peer.counted, 1)
            && self.flight_bytes.admits(peer.counted_bytes, size)
    }

    /// Records a request of `size` bytes sent to `peer` (connected), counted in the global
    /// limits.
    pub(crate) fn start_request(&mut self, peer: &NodeId, size: u64) {
        let state = self.map.get_mut(peer).expect("source is connected");
        state.in_flight += 1;
        state.in_flight_bytes += size;
        self.flight_n.take(state.counted, 1);
        self.flight_bytes.take(state.counted_bytes, size);
        state.counted += 1;
        state.counted_bytes += size;
    }

    /// Takes a request of `size` bytes to `peer` out of the global limits (the peer stays busy).
    pub(crate) fn uncount_request(&mut self, peer: &NodeId, size: u64) {
        if let Some(state) = self.map.get_mut(peer) {
            self.flight_n.give(state.counted, 1);
            self.flight_bytes.give(state.counted_bytes, size);
            state.counted -= 1;
            state.counted_bytes -= size;
        }
    }

    /// Records that `peer` answered (or dropped) an uncounted request of `size` bytes.
    pub(crate) fn end_request(&mut self, peer: &NodeId, size: u64) {
        if let Some(state) = self.map.get_mut(peer) {
            state.in_flight -= 1;
            state.in_flight_bytes -= size;
        }
    }

    /// Checks the invariants above (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        for (id, p) in &self.map {
            assert_eq!(self.slots[p.slot as usize], *id);
            assert_eq!(self.keys[id], p.key);
            assert_eq!(
                p.per_kind.iter().map(|k| k.1 as usize).sum::<usize>(),
                p.adverts
            );
            assert!(p.counted <= p.in_flight as u64 && p.counted_bytes <= p.in_flight_bytes);
        }
        let sum = |f: fn(&Peer) -> u64| self.map.values().map(f).sum::<u64>();
        assert_eq!(sum(|p| p.adverts as u64), self.tracked_adverts as u64);
        assert_eq!(sum(|p| p.counted), self.flight_n.used());
        assert_eq!(sum(|p| p.counted_bytes), self.flight_bytes.used());
        assert_eq!(sum(|p| p.owned), self.table.used());
    }
}

#[cfg(test)]
mod tests {
    use super::Peers;
    use crate::config::Config;
    use crate::event::DisconnectReason;
    use crate::hash::FastState;
    use crate::types::{Kind, NodeId};

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn connected(cfg: &Config, n: u8) -> Peers {
        let mut peers = Peers::new(FastState(7), cfg);
        peers.set_members((0..=n).map(node));
        for i in 1..=n {
            peers.connect(node(i), 0);
        }
        peers.reshare(cfg, node(0));
        peers
    }

    #[test]
    fn slots_are_reused_and_keys_are_stable() {
        let cfg = Config::default();
        let mut peers = connected(&cfg, 3);
        let slot2 = peers.get(&node(2)).expect("connected").slot;
        let key2 = peers.get(&node(2)).expect("connected").key;
        assert!(peers.remove(&node(2)).is_some());
        assert!(peers.remove(&node(2)).is_none());
        peers.connect(node(4), 0);
        assert_eq!(peers.get(&node(4)).expect("connected").slot, slot2);
        assert_eq!(peers.id_of_slot(slot2), node(4));
        peers.connect(node(2), 0);
        assert_eq!(peers.get(&node(2)).expect("connected").key, key2);
        assert_eq!(peers.non_members(), vec![node(4)]);
        peers.check();
    }

    #[test]
    fn adverts_are_bounded_per_peer_and_per_kind() {
        let cfg = Config {
            max_adverts_per_peer: 3,
            max_adverts_per_peer_per_kind: 2,
            ..Config::default()
        };
        let mut peers = connected(&cfg, 1);
        let a = node(1);
        assert!(peers.track_advert(&a, Kind(0), &cfg).is_ok());
        assert!(peers.track_advert(&a, Kind(0), &cfg).is_ok());
        assert_eq!(
            peers.track_advert(&a, Kind(0), &cfg),
            Err(DisconnectReason::TooManyAdvertsOfKind {
                kind: Kind(0),
                limit: 2
            })
        );
        assert!(peers.track_advert(&a, Kind(1), &cfg).is_ok());
        assert_eq!(
            peers.track_advert(&a, Kind(2), &cfg),
            Err(DisconnectReason::TooManyAdverts { limit: 3 })
        );
        let slot = peers.get(&a).expect("connected").slot;
        peers.move_kind(slot, Kind(0), Kind(1));
        peers.untrack_advert(slot, Kind(1));
        assert_eq!(peers.tracked_adverts(), 2);
        assert_eq!(peers.max_adverts_of_one_peer(), 2);
        peers.check();
        let gone = peers.remove(&a).expect("connected");
        assert!(gone.tracks_adverts());
        assert_eq!(peers.tracked_adverts(), 0);
    }

    #[test]
    fn requests_in_flight_are_bounded_per_peer_and_shared_fairly() {
        let cfg = Config {
            max_in_flight: 4,
            max_in_flight_per_peer: 3,
            ..Config::default()
        };
        let mut peers = connected(&cfg, 2);
        let (a, b) = (node(1), node(2));
        // a takes what the budget admits: its share (1) and the shared half (2), leaving b's
        // share free.
        for _ in 0..3 {
            assert!(peers.available(peers.get(&a).expect("connected"), 1, &cfg));
            peers.start_request(&a, 1);
        }
        let pa = peers.get(&a).expect("connected");
        assert!(!peers.available(pa, 1, &cfg), "at its own limit");
        assert!(!peers.below_request_limit(pa.slot, &cfg));
        assert!(peers.available(peers.get(&b).expect("connected"), 1, &cfg));
        peers.start_request(&b, 1);
        assert_eq!((peers.in_flight(), peers.in_flight_bytes()), (4, 4));
        peers.uncount_request(&a, 1);
        peers.end_request(&a, 1);
        assert_eq!(peers.in_flight(), 3);
        peers.check();
    }

    #[test]
    fn download_charges_move_between_owners() {
        let cfg = Config::default();
        let mut peers = connected(&cfg, 2);
        let (a, b) = (node(1), node(2));
        assert!(peers.admits_download(&a));
        peers.charge_download(&a);
        let (sa, sb) = (
            peers.get(&a).expect("connected").slot,
            peers.get(&b).expect("connected").slot,
        );
        peers.charge_owner(sa, sb);
        peers.check();
        peers.discharge_download(sb);
        peers.check();
        assert_eq!(peers.penalize(&a), Some(1));
        assert_eq!(peers.penalize(&node(9)), None);
    }
}
