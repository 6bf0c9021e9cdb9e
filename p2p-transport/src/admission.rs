//! Admission of accepted sockets before any TLS, as a sans-IO state machine.
//!
//! A stranger (not in the registry) can open TCP connections and start TLS handshakes that it
//! can never complete. [`Admission`] decides, per accepted socket and by its source IP address
//! alone, whether the socket may start its handshake, so that such sockets cannot hold the
//! pending-handshake slots that members need to reach this node:
//! - **banned members**: a source IP that is the registry address IP of exactly one member,
//!   and that member is banned, is refused ([`PreTlsRefusal::Banned`]). A banned member that
//!   dials from another address is refused inside TLS instead (the verifiers of
//!   [`tls`](crate::tls) read the banned ids from the [`Members`](crate::tls::Members)
//!   snapshot);
//! - **registry addresses only** (on by default): a source IP that is no member's registry
//!   address IP is refused ([`PreTlsRefusal::NotMemberAddress`]). Turn it off where members'
//!   source addresses differ from their registry addresses (NAT);
//! - **a cap per source IP** on pending handshakes ([`PreTlsRefusal::AddressFull`]); a member
//!   dials at most one connection at a time, plus a reconnect racing the old one;
//! - **a global cap** on pending handshakes. When it is reached, an arrival from a registry
//!   address IP evicts the oldest pending handshake from a non-registry address, or failing
//!   that the oldest one from the address holding the most; any other arrival is refused
//!   ([`PreTlsRefusal::PoolFull`]). Strangers therefore never starve members: a member arrival
//!   below its address's cap is always admitted;
//! - **a deadline** for the whole pre-authentication phase (TLS and the connection hello):
//!   [`Admission::handle_timeout`] evicts the handshakes past it.
//!
//! The driver reports every admitted socket's end with [`Admission::finished`] and carries out
//! every [`Eviction`] by aborting that handshake. Time comes in with every call.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use p2p_core::{NodeId, Time};
use smallvec::SmallVec;
use thiserror::Error;

/// Settings of the admission machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Refuse source IPs that are no member's registry address IP (default on). Turn it off
    /// where members reach this node from addresses other than their registry ones (NAT).
    pub registry_only: bool,
    /// Pending handshakes at once, from all addresses (default 64).
    pub max_pending: usize,
    /// Pending handshakes at once from one source IP (default 4: a member dials one connection
    /// at a time, plus a reconnect racing the old one).
    pub max_pending_per_address: usize,
    /// Deadline of the whole pre-authentication phase: TLS and the hello (default 2 s).
    pub deadline: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            registry_only: true,
            max_pending: 64,
            max_pending_per_address: 4,
            deadline: Duration::from_secs(2),
        }
    }
}

/// An [`AdmissionConfig`] that cannot work.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmissionConfigError {
    /// A cap of zero.
    #[error("max_pending ({global}) and max_pending_per_address ({per_address}) must be >= 1")]
    ZeroCap {
        /// The global cap.
        global: usize,
        /// The cap per address.
        per_address: usize,
    },
    /// A zero deadline.
    #[error("the pre-authentication deadline must be positive")]
    ZeroDeadline,
}

impl AdmissionConfig {
    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), AdmissionConfigError> {
        if self.max_pending == 0 || self.max_pending_per_address == 0 {
            return Err(AdmissionConfigError::ZeroCap {
                global: self.max_pending,
                per_address: self.max_pending_per_address,
            });
        }
        if self.deadline.is_zero() {
            return Err(AdmissionConfigError::ZeroDeadline);
        }
        Ok(())
    }
}

/// What the machine needs from the node's owner of the registry and the policy: the members'
/// registry address IPs and the bans in force. Drivers send a new one when either changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionView {
    /// Each member with its registry address IP.
    pub members: Vec<(NodeId, IpAddr)>,
    /// The banned members with the ends of their bans.
    pub banned: Vec<(NodeId, Time)>,
}

impl AdmissionView {
    /// The view of `registry`'s addresses with `banned` in force.
    pub fn new(
        registry: &crate::registry::Registry,
        banned: impl IntoIterator<Item = (NodeId, Time)>,
    ) -> Self {
        AdmissionView {
            members: registry
                .members
                .iter()
                .map(|m| (m.id, m.addr.ip()))
                .collect(),
            banned: banned.into_iter().collect(),
        }
    }
}

/// One admitted socket's place in the pending pool (issued in arrival order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// Why an accepted socket is refused before TLS.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PreTlsRefusal {
    /// The source IP is the registry address IP of exactly one member, which is banned.
    #[error("the only member at this address, {member}, is banned until {until:?}")]
    Banned {
        /// The banned member.
        member: NodeId,
        /// When its ban ends.
        until: Time,
    },
    /// Registry-only admission is on and the source IP is no member's registry address IP.
    #[error("not the address of any registry member")]
    NotMemberAddress,
    /// The source IP already holds its cap of pending handshakes.
    #[error("{pending} handshakes already pending from this address")]
    AddressFull {
        /// Its pending handshakes.
        pending: usize,
    },
    /// The pool is full and the source IP is no member's address.
    #[error("{pending} handshakes pending: the pool is full")]
    PoolFull {
        /// The pending handshakes.
        pending: usize,
    },
}

impl PreTlsRefusal {
    /// A short name of the reason, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            PreTlsRefusal::Banned { .. } => "banned",
            PreTlsRefusal::NotMemberAddress => "not_member_address",
            PreTlsRefusal::AddressFull { .. } => "address_full",
            PreTlsRefusal::PoolFull { .. } => "pool_full",
        }
    }
}

/// Why a pending handshake is cut off; the driver aborts it.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum EvictReason {
    /// The pool was full and a member's address arrived: the oldest handshake from a
    /// non-registry address made room.
    #[error("evicted for an arrival from a member's address (oldest from a stranger's address)")]
    StrangerForMember,
    /// The pool was full of registry addresses' handshakes and a member's address arrived:
    /// the oldest handshake of the address holding the most made room.
    #[error("evicted for an arrival from a member's address (oldest of the busiest address)")]
    BusiestForMember,
    /// The pre-authentication deadline passed.
    #[error("the pre-authentication deadline passed")]
    Deadline,
}

/// A pending handshake the driver must abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The handshake.
    pub ticket: Ticket,
    /// Its source IP.
    pub ip: IpAddr,
    /// Why.
    pub reason: EvictReason,
}

/// An admitted socket: it may start its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Its place in the pool; report its end with [`Admission::finished`].
    pub ticket: Ticket,
    /// When its pre-authentication phase must be over.
    pub deadline: Time,
    /// A pending handshake evicted to make room, which the driver must abort.
    pub evicted: Option<Eviction>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    ip: IpAddr,
    deadline: Time,
}

/// The admission machine; see the [module documentation](self).
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    /// Registry address IPs and the members listed at each.
    addrs: BTreeMap<IpAddr, SmallVec<[NodeId; 1]>>,
    /// Banned members and when their bans end.
    banned: BTreeMap<NodeId, Time>,
    /// Pending handshakes in arrival order.
    pending: BTreeMap<Ticket, Pending>,
    /// Pending handshakes per source IP (no zero entries).
    per_ip: BTreeMap<IpAddr, usize>,
    next: u64,
}

/// The address as compared: IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Admission {
    /// A machine with no members and no bans.
    pub fn new(cfg: AdmissionConfig) -> Result<Self, AdmissionConfigError> {
        cfg.validate()?;
        Ok(Admission {
            cfg,
            addrs: BTreeMap::new(),
            banned: BTreeMap::new(),
            pending: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            next: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// Installs the registry members and their address IPs (pending handshakes stay).
    pub fn set_members(&mut self, members: impl IntoIterator<Item = (NodeId, IpAddr)>) {
        self.addrs.clear();
        for (id, ip) in members {
            let ids = self.addrs.entry(canonical(ip)).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    /// Installs the banned members with the ends of their bans.
    pub fn set_banned(&mut self, banned: impl IntoIterator<Item = (NodeId, Time)>) {
        self.banned = banned.into_iter().collect();
    }

    /// Installs a view: [`set_members`](Self::set_members) and
    /// [`set_banned`](Self::set_banned) at once.
    pub fn set_view(&mut self, view: &AdmissionView) {
        self.set_members(view.members.iter().copied());
        self.set_banned(view.banned.iter().copied());
    }

    /// Whether `ip` is some member's registry address IP.
    pub fn is_member_address(&self, ip: IpAddr) -> bool {
        self.addrs.contains_key(&canonical(ip))
    }

    /// Pending handshakes.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Pending handshakes from `ip`.
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&canonical(ip)).copied().unwrap_or(0)
    }

    /// Decides on a socket from `ip` accepted at `now`.
    pub fn arrive(&mut self, now: Time, ip: IpAddr) -> Result<Admitted, PreTlsRefusal> {
        let ip = canonical(ip);
        let members = self.addrs.get(&ip);
        if let Some([member]) = members.map(|m| m.as_slice())
            && let Some(&until) = self.banned.get(member)
            && until > now
        {
            return Err(PreTlsRefusal::Banned {
                member: *member,
                until,
            });
        }
        let member_address = members.is_some();
        if self.cfg.registry_only && !member_address {
            return Err(PreTlsRefusal::NotMemberAddress);
        }
        let from_ip = self.pending_from(ip);
        if from_ip >= self.cfg.max_pending_per_address {
            return Err(PreTlsRefusal::AddressFull { pending: from_ip });
        }
        let mut evicted = None;
        if self.pending.len() >= self.cfg.max_pending {
            if !member_address {
                return Err(PreTlsRefusal::PoolFull {
                    pending: self.pending.len(),
                });
            }
            evicted = self.make_room();
        }
        let ticket = Ticket(self.next);
        self.next += 1;
        let deadline = now + self.cfg.deadline;
        self.pending.insert(ticket, Pending { ip, deadline });
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Admitted {
            ticket,
            deadline,
            evicted,
        })
    }

    /// Evicts one pending handshake for a member's arrival: the oldest from a non-registry
    /// address, else the oldest of the address holding the most.
    fn make_room(&mut self) -> Option<Eviction> {
        let stranger = self
            .pending
            .iter()
            .find(|(_, p)| !self.addrs.contains_key(&p.ip))
            .map(|(t, _)| (*t, EvictReason::StrangerForMember));
        let victim = stranger.or_else(|| {
            let most = self.per_ip.values().copied().max()?;
            self.pending
                .iter()
                .find(|(_, p)| self.per_ip.get(&p.ip) == Some(&most))
                .map(|(t, _)| (*t, EvictReason::BusiestForMember))
        })?;
        let (ticket, reason) = victim;
        let ip = self.remove(ticket)?;
        Some(Eviction { ticket, ip, reason })
    }

    /// Forgets `ticket`; returns its IP if it was pending.
    fn remove(&mut self, ticket: Ticket) -> Option<IpAddr> {
        let p = self.pending.remove(&ticket)?;
        if let Some(n) = self.per_ip.get_mut(&p.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&p.ip);
            }
        }
        Some(p.ip)
    }

    /// The handshake of `ticket` ended (completed or failed); returns whether it was pending
    /// (an evicted one is not).
    pub fn finished(&mut self, ticket: Ticket) -> bool {
        self.remove(ticket).is_some()
    }

    /// The earliest deadline of a pending handshake.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Evicts every pending handshake whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Time) -> Vec<Eviction> {
        let due: Vec<Ticket> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        due.into_iter()
            .filter_map(|ticket| {
                let ip = self.remove(ticket)?;
                Some(Eviction {
                    ticket,
                    ip,
                    reason: EvictReason::Deadline,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn machine(registry_only: bool, global: usize, per: usize) -> Admission {
        let mut a = Admission::new(AdmissionConfig {
            registry_only,
            max_pending: global,
            max_pending_per_address: per,
            deadline: Duration::from_secs(2),
        })
        .unwrap();
        // Members 1 and 2 share 127.0.0.1; member 3 is alone at 127.0.0.3.
        a.set_members([(node(1), ip(1)), (node(2), ip(1)), (node(3), ip(3))]);
        a
    }

    const T0: Time = Time::from_millis(1000);

    #[test]
    fn strangers_are_refused_when_registry_only_and_admitted_otherwise() {
        let mut a = machine(true, 8, 4);
        assert_eq!(a.arrive(T0, ip(9)), Err(PreTlsRefusal::NotMemberAddress));
        assert!(a.arrive(T0, ip(1)).is_ok());
        let mut a = machine(false, 8, 4);
        assert!(a.arrive(T0, ip(9)).is_ok());
        assert_eq!(a.pending(), 1);
    }

    #[test]
    fn an_address_holds_at_most_its_cap_until_one_finishes() {
        let mut a = machine(false, 64, 2);
        let first = a.arrive(T0, ip(9)).unwrap();
        a.arrive(T0, ip(9)).unwrap();
        assert_eq!(
            a.arrive(T0, ip(9)),
            Err(PreTlsRefusal::AddressFull { pending: 2 })
        );
        assert!(a.arrive(T0, ip(10)).is_ok());
        assert!(a.finished(first.ticket));
        assert!(!a.finished(first.ticket));
        assert!(a.arrive(T0, ip(9)).is_ok());
    }

    #[test]
    fn a_full_pool_refuses_strangers_and_evicts_the_oldest_stranger_for_a_member() {
        let mut a = machine(false, 3, 2);
        let s1 = a.arrive(T0, ip(9)).unwrap();
        let s2 = a.arrive(T0, ip(10)).unwrap();
        a.arrive(T0, ip(1)).unwrap();
        assert_eq!(
            a.arrive(T0, ip(11)),
            Err(PreTlsRefusal::PoolFull { pending: 3 })
        );
        let m = a.arrive(T0, ip(3)).unwrap();
        assert_eq!(
            m.evicted,
            Some(Eviction {
                ticket: s1.ticket,
                ip: ip(9),
                reason: EvictReason::StrangerForMember
            })
        );
        let m = a.arrive(T0, ip(1)).unwrap();
        assert_eq!(m.evicted.map(|e| e.ticket), Some(s2.ticket));
        assert_eq!(a.pending(), 3);
        assert_eq!(a.pending_from(ip(9)), 0);
    }

    #[test]
    fn a_pool_full_of_member_addresses_evicts_from_the_busiest() {
        let mut a = machine(true, 3, 4);
        let first = a.arrive(T0, ip(3)).unwrap();
        let busy = a.arrive(T0, ip(1)).unwrap();
        a.arrive(T0, ip(1)).unwrap();
        let m = a.arrive(T0, ip(3)).unwrap();
        let e = m.evicted.unwrap();
        assert_eq!(e.ticket, busy.ticket);
        assert_eq!(e.reason, EvictReason::BusiestForMember);
        assert_ne!(e.ticket, first.ticket);
        assert_eq!(a.pending_from(ip(1)), 1);
        assert_eq!(a.pending_from(ip(3)), 2);
    }

    #[test]
    fn the_only_member_at_a_banned_address_is_refused_until_its_ban_ends() {
        let mut a = machine(true, 8, 4);
        let until = T0 + Duration::from_secs(60);
        a.set_banned([(node(3), until), (node(1), until)]);
        assert_eq!(
            a.arrive(T0, ip(3)),
            Err(PreTlsRefusal::Banned {
                member: node(3),
                until
            })
        );
        // 127.0.0.1 is shared by members 1 and 2: the address alone cannot tell who dials.
        assert!(a.arrive(T0, ip(1)).is_ok());
        assert!(a.arrive(until, ip(3)).is_ok());
        // An IPv4-mapped IPv6 source is the same address.
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 3).to_ipv6_mapped());
        assert!(matches!(
            a.arrive(T0, mapped),
            Err(PreTlsRefusal::Banned { .. })
        ));
    }

    #[test]
    fn handshakes_past_the_deadline_are_evicted() {
        let mut a = machine(false, 8, 4);
        let x = a.arrive(T0, ip(9)).unwrap();
        let later = T0 + Duration::from_secs(1);
        let y = a.arrive(later, ip(9)).unwrap();
        assert_eq!(a.poll_timeout(), Some(x.deadline));
        assert!(
            a.handle_timeout(Time::from_nanos(x.deadline.as_nanos() - 1))
                .is_empty()
        );
        let gone = a.handle_timeout(x.deadline);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].ticket, x.ticket);
        assert_eq!(gone[0].reason, EvictReason::Deadline);
        assert_eq!(a.poll_timeout(), Some(y.deadline));
        assert!(!a.finished(x.ticket));
        assert!(a.finished(y.ticket));
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn zero_caps_and_deadlines_are_refused() {
        for cfg in [
            AdmissionConfig {
                max_pending: 0,
                ..AdmissionConfig::default()
            },
            AdmissionConfig {
                max_pending_per_address: 0,
                ..AdmissionConfig::default()
            },
            AdmissionConfig {
                deadline: Duration::ZERO,
                ..AdmissionConfig::default()
            },
        ] {
            assert!(Admission::new(cfg).is_err());
        }
    }

    /// One step of a run: an arrival from a source, the end of a pending handshake, or time.
    #[derive(Clone, Debug)]
    enum Step {
        /// Arrival from 127.0.0.x: 1 and 3 are member addresses, others strangers.
        Arrive(u8),
        /// The n-th pending handshake (in arrival order, modulo their count) finishes.
        Finish(usize),
        /// Time passes, in milliseconds.
        Wait(u16),
    }

    impl Arbitrary for Step {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 8 {
                0..=3 => Step::Arrive(1 + u8::arbitrary(g) % 12),
                4 | 5 => Step::Finish(usize::arbitrary(g)),
                _ => Step::Wait(u16::arbitrary(g) % 1500),
            }
        }
    }

    /// Whatever strangers and members do: the pool and every address stay within their caps,
    /// and an arrival from a member's address holding fewer than its cap (and not banned) is
    /// always admitted; only such an arrival evicts.
    fn prop_caps_hold_and_members_are_never_starved(
        registry_only: bool,
        global: u8,
        per: u8,
        steps: Vec<Step>,
    ) -> bool {
        let global = 1 + usize::from(global % 16);
        let per = 1 + usize::from(per % 5);
        let mut a = machine(registry_only, global, per);
        let mut now = T0;
        let mut live: Vec<Ticket> = Vec::new();
        for step in steps {
            match step {
                Step::Arrive(last) => {
                    let src = ip(last);
                    let member = a.is_member_address(src);
                    let below_cap = a.pending_from(src) < per;
                    match a.arrive(now, src) {
                        Ok(adm) => {
                            if let Some(e) = adm.evicted {
                                if !member {
                                    return false;
                                }
                                live.retain(|t| *t != e.ticket);
                            }
                            live.push(adm.ticket);
                        }
                        Err(_) if member && below_cap => return false,
                        Err(_) => {}
                    }
                }
                Step::Finish(n) => {
                    if !live.is_empty() {
                        let t = live.remove(n % live.len());
                        if !a.finished(t) {
                            return false;
                        }
                    }
                }
                Step::Wait(ms) => {
                    now = now + Duration::from_millis(u64::from(ms));
                    for e in a.handle_timeout(now) {
                        live.retain(|t| *t != e.ticket);
                    }
                }
            }
            if a.pending() > global || a.pending() != live.len() {
                return false;
            }
            if (1..=12).any(|x| a.pending_from(ip(x)) > per) {
                return false;
            }
        }
        true
    }

    #[test]
    fn prop_admission_keeps_caps_and_admits_members() {
        QuickCheck::new().tests(500).quickcheck(
            prop_caps_hold_and_members_are_never_starved as fn(bool, u8, u8, Vec<Step>) -> bool,
        );
    }
}
