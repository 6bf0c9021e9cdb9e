//! The express lane: a second connection to a peer for the traffic that must not wait behind
//! bulk bytes.
//!
//! The multiplexer sends an urgent frame before any bulk frame it still holds, but below it the
//! bytes of one TCP connection leave in order: what the kernel holds for the connection (up to
//! `TCP_NOTSENT_LOWAT` unsent plus the congestion window in flight), the links' queues, and any
//! loss recovery stand between an urgent frame and the peer. With links saturated by bulk
//! transfers that is hundreds of milliseconds. An express lane is a connection of its own beside
//! the main one, so it has its own kernel queue and congestion window and its packets can be
//! marked for a link that serves them first; it carries only the classes [`carries`] names
//! (control and urgent messages), the main connection everything else.
//!
//! The rules, decided here and carried out by the driver:
//! - each side announces in its [`Hello`](crate::codec::Hello) whether it takes an express lane
//!   ([`ConnRole::Main`] `{ express }`); a lane exists only if both did;
//! - the side that dialed the main connection dials the lane ([`ExpressAction::Dial`]) as soon
//!   as the main connection is up, and again after a failed attempt, with a back-off doubling
//!   from [`ExpressConfig::retry_min`] to [`ExpressConfig::retry_max`];
//! - the other side admits a lane only from that peer, in that direction, while the peer's main
//!   connection is up; a lane that arrives before its main connection is held for at most
//!   [`ExpressConfig::hold_timeout`] (its handshake can overtake the main one's last step), one
//!   per peer; a second lane replaces the first;
//! - the lane belongs to the main connection: when either ends, the driver ends both, so no
//!   message queued on one outlives the other and the core's view of the peer (connected or
//!   not) stays the one it has of the main connection.
//!
//! Messages of one lane keep their order; between lanes they may be reordered. The core does
//! not depend on the order of messages in different classes (a request may always cross an
//! advert's withdrawal, an answer a cancel).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use p2p_core::{Class, NodeId, Time};
use thiserror::Error;

use crate::codec::ConnRole;

/// Whether messages of `class` travel on the express lane when there is one: control and
/// urgent messages do; normal and bulk answers stay on the main connection.
pub fn carries(class: Class) -> bool {
    matches!(class, Class::Control | Class::Urgent)
}

/// Settings of the express lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpressConfig {
    /// Whether this node takes express lanes (default on).
    pub enabled: bool,
    /// Delay before the second attempt to open a lane (default 200 ms).
    pub retry_min: Duration,
    /// Longest delay between attempts (default 10 s).
    pub retry_max: Duration,
    /// How long a lane that arrived before its main connection is held (default 2 s, the
    /// driver's handshake timeout).
    pub hold_timeout: Duration,
}

impl Default for ExpressConfig {
    fn default() -> Self {
        ExpressConfig {
            enabled: true,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            hold_timeout: Duration::from_secs(2),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpressAction {
    /// Dial an express lane to the peer.
    Dial(NodeId),
    /// Drop the lane held for the peer: its main connection did not come.
    DropHeld(NodeId),
}

/// How an express lane that completed its handshake is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpressAdmit {
    /// Attach it to the peer's main connection now.
    Attach,
    /// Hold it until the peer's main connection is up ([`ExpressLanes::main_up`] says when).
    Hold,
}

/// Why an express lane is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ExpressRefusal {
    /// This node does not take express lanes.
    #[error("express lanes are off on this node")]
    Disabled,
    /// The lane came from the side that does not open it (the side that accepted the main
    /// connection), or we did not ask for it.
    #[error("express lane in the wrong direction")]
    WrongDirection,
    /// The peer's main connection said it takes no express lane.
    #[error("the peer's main connection announced no express lane")]
    NotOffered,
}

/// One peer's lane, while its main connection is up.
#[derive(Clone, Copy, Debug)]
struct Lane {
    /// Whether we dial it (we dialed the main connection).
    we_dial: bool,
    /// Whether the peer offered one.
    offered: bool,
    /// Whether a lane is attached.
    up: bool,
    /// Whether a dial is in progress.
    dialing: bool,
    /// When the next dial is due.
    dial_at: Option<Time>,
    /// Failed dials since the main connection came up.
    failures: u32,
}

/// The express lanes of one node: which peers have one, which to dial and when.
#[derive(Debug)]
pub struct ExpressLanes {
    cfg: ExpressConfig,
    /// One entry per peer whose main connection is up.
    lanes: BTreeMap<NodeId, Lane>,
    /// Lanes held for a main connection not up yet: the peer and the deadline.
    held: BTreeMap<NodeId, Time>,
    actions: VecDeque<ExpressAction>,
}

impl ExpressLanes {
    /// No lanes.
    pub fn new(cfg: ExpressConfig) -> Self {
        ExpressLanes {
            cfg,
            lanes: BTreeMap::new(),
            held: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ExpressConfig {
        &self.cfg
    }

    /// The role this node announces on a main connection.
    pub fn main_role(&self) -> ConnRole {
        ConnRole::Main {
            express: self.cfg.enabled,
        }
    }

    /// `peer`'s main connection is up at `now`: `we_dialed` it, and the peer announced
    /// `peer_role`. Returns whether a lane held for the peer is to be attached now.
    pub fn main_up(
        &mut self,
        now: Time,
        peer: NodeId,
        we_dialed: bool,
        peer_role: ConnRole,
    ) -> bool {
        let offered = matches!(peer_role, ConnRole::Main { express: true });
        let wanted = self.cfg.enabled && offered;
        let held = self.held.remove(&peer).is_some();
        let attach = held && wanted && !we_dialed;
        if held && !attach {
            self.actions.push_back(ExpressAction::DropHeld(peer));
        }
        self.lanes.insert(
            peer,
            Lane {
                we_dial: we_dialed,
                offered,
                up: attach,
                dialing: false,
                dial_at: (wanted && we_dialed).then_some(now),
                failures: 0,
            },
        );
        attach
    }

    /// `peer`'s main connection ended (and with it its lane).
    pub fn main_down(&mut self, peer: NodeId) {
        self.lanes.remove(&peer);
    }

    /// An express lane to or from `peer` completed its handshake at `now`; `dialed` says whether
    /// we opened it.
    pub fn admit(
        &mut self,
        now: Time,
        peer: NodeId,
        dialed: bool,
    ) -> Result<ExpressAdmit, ExpressRefusal> {
        if !self.cfg.enabled {
            return Err(ExpressRefusal::Disabled);
        }
        let Some(lane) = self.lanes.get_mut(&peer) else {
            if dialed {
                // Ours, for a main connection that ended meanwhile.
                return Err(ExpressRefusal::WrongDirection);
            }
            // The peer's main connection may not have reached us yet: hold it, one per peer.
            self.held.insert(peer, now + self.cfg.hold_timeout);
            return Ok(ExpressAdmit::Hold);
        };
        if dialed {
            if !lane.dialing {
                // Not a dial of ours for this main connection.
                return Err(ExpressRefusal::WrongDirection);
            }
            lane.dialing = false;
        } else if lane.we_dial {
            return Err(ExpressRefusal::WrongDirection);
        }
        if !lane.offered {
            return Err(ExpressRefusal::NotOffered);
        }
        lane.up = true;
        lane.dial_at = None;
        Ok(ExpressAdmit::Attach)
    }

    /// Our dial of `peer`'s lane failed at `now`: try again after the back-off.
    pub fn dial_failed(&mut self, now: Time, peer: NodeId) {
        let Some(lane) = self.lanes.get_mut(&peer) else {
            return;
        };
        lane.dialing = false;
        lane.up = false;
        if !lane.we_dial || !lane.offered || !self.cfg.enabled {
            return;
        }
        lane.failures = lane.failures.saturating_add(1);
        let doublings = lane.failures.saturating_sub(1).min(16);
        let delay = self
            .cfg
            .retry_min
            .saturating_mul(1 << doublings)
            .min(self.cfg.retry_max);
        lane.dial_at = Some(now + delay);
    }

    /// Whether `peer` has an express lane attached.
    pub fn is_up(&self, peer: &NodeId) -> bool {
        self.lanes.get(peer).is_some_and(|l| l.up)
    }

    /// Lanes held for a main connection not up yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let dials = self
            .lanes
            .values()
            .filter(|l| !l.dialing)
            .filter_map(|l| l.dial_at);
        dials.chain(self.held.values().copied()).min()
    }

    /// Queues the dials that are due and drops the held lanes whose main connection did not
    /// come in time.
    pub fn handle_timeout(&mut self, now: Time) {
        for (peer, lane) in &mut self.lanes {
            if !lane.dialing && lane.dial_at.is_some_and(|t| t <= now) {
                lane.dial_at = None;
                lane.dialing = true;
                self.actions.push_back(ExpressAction::Dial(*peer));
            }
        }
        let expired: Vec<NodeId> = self
            .held
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.held.remove(&peer);
            self.actions.push_back(ExpressAction::DropHeld(peer));
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<ExpressAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn ms(n: u64) -> Time {
        Time::from_nanos(n * 1_000_000)
    }

    const OFFERS: ConnRole = ConnRole::Main { express: true };

    fn actions(l: &mut ExpressLanes) -> Vec<ExpressAction> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    #[test]
    fn the_main_dialer_dials_the_lane_at_once_and_the_other_side_attaches_it() {
        let mut dialer = ExpressLanes::new(ExpressConfig::default());
        let mut acceptor = ExpressLanes::new(ExpressConfig::default());
        assert!(!dialer.main_up(ms(0), id(2), true, OFFERS));
        assert!(!acceptor.main_up(ms(0), id(1), false, OFFERS));
        assert_eq!(dialer.poll_timeout(), Some(ms(0)));
        assert_eq!(acceptor.poll_timeout(), None, "the acceptor never dials");
        dialer.handle_timeout(ms(0));
        assert_eq!(actions(&mut dialer), [ExpressAction::Dial(id(2))]);
        assert_eq!(dialer.poll_timeout(), None, "one dial at a time");
        assert_eq!(
            acceptor.admit(ms(1), id(1), false),
            Ok(ExpressAdmit::Attach)
        );
        assert_eq!(dialer.admit(ms(1), id(2), true), Ok(ExpressAdmit::Attach));
        assert!(dialer.is_up(&id(2)) && acceptor.is_up(&id(1)));
        dialer.main_down(id(2));
        assert!(!dialer.is_up(&id(2)));
    }

    #[test]
    fn no_lane_unless_both_sides_offer_one() {
        let off = ExpressConfig {
            enabled: false,
            ..ExpressConfig::default()
        };
        let mut old = ExpressLanes::new(off);
        assert_eq!(old.main_role(), ConnRole::Main { express: false });
        old.main_up(ms(0), id(2), true, OFFERS);
        assert_eq!(old.poll_timeout(), None);
        assert_eq!(
            old.admit(ms(0), id(2), false),
            Err(ExpressRefusal::Disabled)
        );
        let mut on = ExpressLanes::new(ExpressConfig::default());
        on.main_up(ms(0), id(2), true, ConnRole::Main { express: false });
        assert_eq!(on.poll_timeout(), None, "the peer offered none: no dial");
        on.main_up(ms(0), id(3), false, ConnRole::Main { express: false });
        assert_eq!(
            on.admit(ms(0), id(3), false),
            Err(ExpressRefusal::NotOffered)
        );
    }

    #[test]
    fn a_lane_in_the_wrong_direction_is_refused() {
        let mut l = ExpressLanes::new(ExpressConfig::default());
        l.main_up(ms(0), id(2), true, OFFERS);
        assert_eq!(
            l.admit(ms(0), id(2), false),
            Err(ExpressRefusal::WrongDirection),
            "we dialed the main connection, so the lane is ours to dial"
        );
        l.main_up(ms(0), id(3), false, OFFERS);
        assert_eq!(
            l.admit(ms(0), id(3), true),
            Err(ExpressRefusal::WrongDirection),
            "a dial we never asked for"
        );
    }

    #[test]
    fn a_lane_that_overtakes_its_main_connection_is_held_then_attached_or_dropped() {
        let mut l = ExpressLanes::new(ExpressConfig::default());
        assert_eq!(l.admit(ms(0), id(1), false), Ok(ExpressAdmit::Hold));
        assert_eq!(
            l.admit(ms(5), id(1), false),
            Ok(ExpressAdmit::Hold),
            "one per peer"
        );
        assert_eq!(l.held(), 1);
        assert!(
            l.main_up(ms(10), id(1), false, OFFERS),
            "attached with the main connection"
        );
        assert!(l.is_up(&id(1)));
        assert_eq!(l.held(), 0);
        // One whose main connection never comes is dropped after the hold timeout.
        assert_eq!(l.admit(ms(20), id(4), false), Ok(ExpressAdmit::Hold));
        assert_eq!(l.poll_timeout(), Some(ms(2020)));
        l.handle_timeout(ms(2019));
        assert!(actions(&mut l).is_empty());
        l.handle_timeout(ms(2020));
        assert_eq!(actions(&mut l), [ExpressAction::DropHeld(id(4))]);
        assert_eq!(l.held(), 0);
    }

    #[test]
    fn failed_dials_back_off_from_retry_min_to_retry_max() {
        let mut l = ExpressLanes::new(ExpressConfig::default());
        l.main_up(ms(0), id(2), true, OFFERS);
        let mut now = ms(0);
        let mut delays = Vec::new();
        for _ in 0..10 {
            let due = l.poll_timeout().expect("a dial is due");
            delays.push(due.saturating_since(now).as_millis());
            now = due;
            l.handle_timeout(now);
            assert_eq!(actions(&mut l), [ExpressAction::Dial(id(2))]);
            l.dial_failed(now, id(2));
        }
        assert_eq!(
            delays,
            [0, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[derive(Clone, Debug)]
    enum Ev {
        MainUp(u8, bool, bool),
        MainDown(u8),
        Admit(u8, bool),
        DialFailed(u8),
        Tick(u16),
    }

    impl Arbitrary for Ev {
        fn arbitrary(g: &mut Gen) -> Self {
            let peer = u8::arbitrary(g) % 4;
            match u8::arbitrary(g) % 5 {
                0 => Ev::MainUp(peer, bool::arbitrary(g), bool::arbitrary(g)),
                1 => Ev::MainDown(peer),
                2 => Ev::Admit(peer, bool::arbitrary(g)),
                3 => Ev::DialFailed(peer),
                _ => Ev::Tick(u16::arbitrary(g) % 3000),
            }
        }
    }

    /// Whatever happens: at most one lane held per peer, a dial only to a peer whose main
    /// connection we dialed and which offered a lane, never two dials of one lane at once, and
    /// a lane up only beside a main connection.
    #[test]
    fn lanes_stay_bounded_and_dials_go_only_where_they_belong() {
        fn prop(evs: Vec<Ev>) -> bool {
            let mut l = ExpressLanes::new(ExpressConfig::default());
            let mut now = ms(0);
            let mut mains: BTreeMap<NodeId, (bool, bool)> = BTreeMap::new();
            let mut dialing: BTreeMap<NodeId, bool> = BTreeMap::new();
            for ev in evs {
                match ev {
                    Ev::MainUp(p, we, offers) => {
                        mains.insert(id(p), (we, offers));
                        dialing.remove(&id(p));
                        l.main_up(now, id(p), we, ConnRole::Main { express: offers });
                    }
                    Ev::MainDown(p) => {
                        mains.remove(&id(p));
                        dialing.remove(&id(p));
                        l.main_down(id(p));
                    }
                    Ev::Admit(p, dialed) => {
                        let ok = l.admit(now, id(p), dialed);
                        if dialed && ok.is_ok() && dialing.remove(&id(p)) != Some(true) {
                            return false;
                        }
                    }
                    Ev::DialFailed(p) => {
                        if dialing.remove(&id(p)) == Some(true) {
                            l.dial_failed(now, id(p));
                        }
                    }
                    Ev::Tick(d) => {
                        now = now + Duration::from_millis(u64::from(d));
                        l.handle_timeout(now);
                    }
                }
                while let Some(a) = l.poll_action() {
                    if let ExpressAction::Dial(p) = a {
                        let Some((we, offers)) = mains.get(&p) else {
                            return false;
                        };
                        if !we || !offers || dialing.insert(p, true) == Some(true) {
                            return false;
                        }
                    }
                }
                if l.held() > 4 {
                    return false;
                }
                if (0..4).any(|p| l.is_up(&id(p)) && !mains.contains_key(&id(p))) {
                    return false;
                }
            }
            true
        }
        QuickCheck::new()
            .tests(500)
            .quickcheck(prop as fn(Vec<Ev>) -> bool);
    }
}
