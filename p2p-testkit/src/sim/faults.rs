//! The state that faults change: the membership and its version, the partition, and the
//! byzantine actors' ticks; and the plan of a scenario's random faults.
//!
//! Invariants:
//! - the membership version starts at 1 and grows by one with every change told to the nodes
//!   ([`Faults::next_version`]);
//! - while a partition holds, every node has a side, and nodes on different sides are
//!   [`partitioned`](Faults::partitioned): the engine closes their connections when the
//!   partition starts and does not open them until it heals;
//! - a byzantine actor has at most one tick scheduled ([`Faults::arm`]), and none once it went
//!   down ([`Faults::disarm`]).

use super::network::{Network, nanos};
use super::queue::{EvKind, Queue};
use super::rng::Rng;
use super::scenario::{Action, Fault};
use p2p_core::NodeId;
use std::time::Duration;

/// Membership, partition and byzantine ticks.
pub(super) struct Faults {
    members: Vec<bool>,
    version: u64,
    /// Each node's side while a partition holds.
    group: Option<Vec<u8>>,
    /// Whether each byzantine actor has a tick scheduled.
    ticking: Vec<bool>,
    byz_period: u64,
}

impl Faults {
    /// The initial membership (`members[i]`: node `i` is a member), at version 1.
    pub(super) fn new(members: Vec<bool>, byz_period: Duration) -> Self {
        Faults {
            ticking: vec![false; members.len()],
            members,
            version: 1,
            group: None,
            byz_period: nanos(byz_period),
        }
    }

    /// Whether node `i` is a member.
    pub(super) fn is_member(&self, i: usize) -> bool {
        self.members[i]
    }

    /// Makes node `i` a member or not; the caller then tells the nodes.
    pub(super) fn set_member(&mut self, i: usize, member: bool) {
        self.members[i] = member;
    }

    /// The current membership version.
    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// Moves to the next membership version and returns it.
    pub(super) fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The ids of the members, in node order.
    pub(super) fn member_ids(&self, ids: &[NodeId]) -> Vec<NodeId> {
        ids.iter()
            .zip(&self.members)
            .filter(|(_, m)| **m)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Splits the nodes into `side` and the others (unknown nodes in `side` are ignored).
    pub(super) fn partition(&mut self, side: &[usize]) {
        let n = self.members.len();
        let mut g = vec![0u8; n];
        for &i in side {
            if i < n {
                g[i] = 1;
            }
        }
        self.group = Some(g);
    }

    /// Ends the partition.
    pub(super) fn heal(&mut self) {
        self.group = None;
    }

    /// Whether a partition separates `a` and `b`.
    pub(super) fn partitioned(&self, a: u32, b: u32) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g[a as usize] != g[b as usize])
    }

    /// Schedules the next tick of the byzantine actor `me` (incarnation `inc`), unless one is
    /// scheduled already.
    pub(super) fn arm(&mut self, me: u32, inc: u32, q: &mut Queue) {
        if self.ticking[me as usize] {
            return;
        }
        self.ticking[me as usize] = true;
        let t = q.now() + self.byz_period;
        q.push(t, EvKind::ByzTick { node: me, inc });
    }

    /// The tick of `me` is done (or void: the actor went down).
    pub(super) fn disarm(&mut self, me: usize) {
        self.ticking[me] = false;
    }
}

/// The settings of [`Scenario::random_faults`](super::Scenario::random_faults).
pub(super) struct RandomFaults<'a> {
    pub(super) count: usize,
    pub(super) start: Duration,
    pub(super) window: Duration,
    /// The honest initial members, the nodes the faults hit.
    pub(super) honest: &'a [usize],
    /// The bandwidth a slowed node returns to.
    pub(super) bandwidth_bps: u64,
}

impl RandomFaults<'_> {
    /// The faults and their repairs, drawn from `rng`: partitions of up to half the honest
    /// nodes, crashes, dropped connections (to a neighbour in `net`), slow nodes and removed
    /// members, each undone within the window.
    pub(super) fn plan(&self, net: &Network, rng: &mut Rng) -> Vec<(Duration, Action)> {
        let honest = self.honest;
        let mut actions = Vec::new();
        if honest.len() < 2 {
            return actions;
        }
        let w = nanos(self.window).max(4);
        for _ in 0..self.count {
            let t = nanos(self.start) + rng.below(w / 2);
            let d = nanos(Duration::from_millis(100)) + rng.below(w / 2);
            let (t, d) = (Duration::from_nanos(t), Duration::from_nanos(t + d));
            let node = honest[rng.below(honest.len() as u64) as usize];
            let (fault, repair) = match rng.below(5) {
                0 => (Fault::Partition(self.side(rng)), Fault::Heal),
                1 => (Fault::Crash(node), Fault::Restart(node)),
                2 => {
                    let nb = net.neighbours(node);
                    if !nb.is_empty() {
                        let peer = nb[rng.below(nb.len() as u64) as usize] as usize;
                        actions.push((t, Action::Fault(Fault::DropConnection(node, peer))));
                    }
                    continue;
                }
                3 => (
                    Fault::Bandwidth(node, (self.bandwidth_bps / 20).max(1)),
                    Fault::Bandwidth(node, self.bandwidth_bps),
                ),
                _ => (Fault::RemoveMember(node), Fault::AddMember(node)),
            };
            actions.push((t, Action::Fault(fault)));
            actions.push((d, Action::Fault(repair)));
        }
        actions
    }

    /// A random side of a partition: 1 to half of the honest nodes.
    fn side(&self, rng: &mut Rng) -> Vec<usize> {
        let size = 1 + rng.below((self.honest.len() / 2).max(1) as u64) as usize;
        let mut side = self.honest.to_vec();
        for k in 0..side.len() {
            let j = k + rng.below((side.len() - k) as u64) as usize;
            side.swap(k, j);
        }
        side.truncate(size);
        side
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId([i as u8; 32])).collect()
    }

    #[test]
    fn membership_changes_move_the_version_and_the_member_list() {
        let mut f = Faults::new(vec![true, false, true], Duration::from_millis(5));
        assert_eq!(f.version(), 1);
        assert_eq!(f.member_ids(&ids(3)), [NodeId([0; 32]), NodeId([2; 32])]);
        f.set_member(1, true);
        f.set_member(0, false);
        assert_eq!(f.next_version(), 2);
        assert_eq!(f.member_ids(&ids(3)), [NodeId([1; 32]), NodeId([2; 32])]);
        assert!(f.is_member(1) && !f.is_member(0));
    }

    #[test]
    fn a_partition_separates_its_side_from_the_rest_until_healed() {
        let mut f = Faults::new(vec![true; 4], Duration::ZERO);
        assert!(!f.partitioned(0, 3));
        f.partition(&[1, 2, 9]);
        assert!(f.partitioned(0, 1) && f.partitioned(2, 3));
        assert!(!f.partitioned(1, 2) && !f.partitioned(0, 3));
        f.heal();
        assert!(!f.partitioned(0, 1));
    }

    #[test]
    fn a_byzantine_actor_has_one_tick_scheduled_at_most() {
        let mut f = Faults::new(vec![true; 2], Duration::from_millis(5));
        let mut q = Queue::default();
        f.arm(1, 3, &mut q);
        f.arm(1, 3, &mut q);
        assert_eq!(q.live(), 1);
        assert!(matches!(
            q.pop(u64::MAX),
            Some(EvKind::ByzTick { node: 1, inc: 3 })
        ));
        assert_eq!(q.now(), 5_000_000);
        f.disarm(1);
        f.arm(1, 3, &mut q);
        assert_eq!(q.live(), 1);
    }

    #[test]
    fn random_faults_hit_honest_nodes_and_are_repaired_in_the_window() {
        let mut net = Network::new(
            [1_000_000; 6],
            Duration::ZERO,
            None,
            None,
            None,
            Rng::new(0),
        );
        for a in 0..6 {
            net.add_link(a, (a + 1) % 6, |_| Duration::from_millis(1));
        }
        let honest = [0, 1, 2, 4];
        let plan = RandomFaults {
            count: 50,
            start: Duration::from_secs(1),
            window: Duration::from_secs(4),
            honest: &honest,
            bandwidth_bps: 1_000_000,
        };
        let faults = plan.plan(&net, &mut Rng::new(9));
        assert_eq!(faults.len(), plan.plan(&net, &mut Rng::new(9)).len());
        assert!(faults.len() >= 50);
        for (t, a) in &faults {
            assert!(*t >= plan.start && *t < Duration::from_secs(5) + Duration::from_millis(100));
            let Action::Fault(f) = a else {
                panic!("not a fault: {a:?}")
            };
            match f {
                Fault::Partition(side) => {
                    assert!(!side.is_empty() && side.len() <= 2);
                    assert!(side.iter().all(|i| honest.contains(i)));
                }
                Fault::Crash(i) | Fault::Restart(i) | Fault::Bandwidth(i, _) => {
                    assert!(honest.contains(i))
                }
                Fault::AddMember(i) | Fault::RemoveMember(i) => assert!(honest.contains(i)),
                Fault::DropConnection(a, b) => {
                    assert!(honest.contains(a) && net.neighbours(*a).contains(&(*b as u32)))
                }
                Fault::Heal => {}
            }
        }
    }
}
