//! The node's connection policy as a sans-IO state machine: whom to dial and when, which
//! connection to admit, and whom to ban.
//!
//! [`PeerPolicy`] knows the current members and, per member, the connection state. It decides:
//! - **the dial rule**: of two members, the one with the lower [`NodeId`] dials; an inbound
//!   connection from a higher id is refused, so a pair has one connection;
//! - **duplicates**: a second connection from a connected peer (a reconnect that raced the old
//!   connection's teardown) replaces the old one ([`Admit::Replace`]);
//! - **reconnect back-off**: the first dial goes out at once; after a failed attempt or a
//!   short-lived connection the next waits `backoff_min` doubled per attempt, up to
//!   `backoff_max`, jittered down to half from the seeded generator. A connection that lived at
//!   least `backoff_max` resets the back-off;
//! - **bans**: a peer that misbehaved is refused and not dialed for `ban_base`, doubled for
//!   every offence within `forgive_after` of the end of its previous ban, up to `ban_max`;
//! - **churn**: admissions of one member pass a token bucket (`churn_burst` in a row, then one
//!   per `churn_refill`); an inbound connection past it is refused ([`Refusal::Churning`]) and
//!   counts as an offence (a ban, escalating like the others), and dials to a member wait for a
//!   token, so neither side reconnects faster than the limit. The default lets the back-off of an
//!   honest dialer through with room to spare;
//! - **membership**: a new registry version dials the new members (when ours to dial) and
//!   closes the connections of removed ones; a member that leaves and returns starts afresh;
//! - **topology**: only the members that the configured [`Topology`] makes this node's
//!   *neighbours* are dialed and admitted. Each registry version recomputes them: a member that
//!   is no longer a neighbour has its connection closed ([`PolicyAction::Prune`], no ban) and a
//!   new neighbour is dialed. An inbound connection from a member that is not a neighbour is
//!   refused ([`Refusal::NotNeighbour`], no ban) after it passed the churn limit, so a member
//!   cannot reconnect faster than the limit by being refused. With a derived topology every
//!   honest member computes the same graph, so a refusal happens only while two nodes hold
//!   different registry versions, and the dialer's back-off retries until they agree.
//!
//! The driver carries out [`PolicyAction`]s (dial, close) and reports what happened: dial
//! failures, established connections (which it admits or refuses as told), closed connections
//! with their [`CloseCause`]. Time comes in with every call; randomness from the seed.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::Duration;

use p2p_core::rng::{Rng, derive};
use p2p_core::{NodeId, Time};
use thiserror::Error;

use crate::topology::{Topology, TopologyError};

/// Settings of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Delay before the second attempt (default 100 ms).
    pub backoff_min: Duration,
    /// Largest delay between attempts, and the lifetime after which a connection counts as
    /// stable (default 10 s).
    pub backoff_max: Duration,
    /// Ban after a first offence (default 60 s).
    pub ban_base: Duration,
    /// Longest ban (default 1 h).
    pub ban_max: Duration,
    /// An offence this long after the end of the previous ban counts as a first offence
    /// (default 1 h).
    pub forgive_after: Duration,
    /// Admissions of one member in a row before the churn limit applies (default 10: the
    /// first eight reconnects of an honest dialer's back-off, ~6.4 s, fit with room).
    pub churn_burst: u32,
    /// One more admission of a member is allowed per this period (default 1 s). An honest
    /// dialer with the default back-off reconnects at most seven times in 13 s (short-lived
    /// connections after a stable one), about half this rate, and one per 5 s at worst after
    /// that; a member churning at the limit costs at most one admission a second.
    pub churn_refill: Duration,
    /// Which members to connect to (default [`Topology::All`], a full mesh: every member is
    /// one hop from every other, the lowest latency, at the cost of n - 1 connections a node).
    /// A partial topology needs relaying (the core's `auto_relay`) to reach everyone.
    pub topology: Topology,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            ban_base: Duration::from_secs(60),
            ban_max: Duration::from_secs(3600),
            forgive_after: Duration::from_secs(3600),
            churn_burst: 10,
            churn_refill: Duration::from_secs(1),
            topology: Topology::All,
        }
    }
}

/// A [`PolicyConfig`] that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// A zero minimum back-off, or a maximum below the minimum.
    #[error("reconnect back-off needs 0 < min ({min:?}) <= max ({max:?})")]
    Backoff {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
    },
    /// A ban maximum below the base.
    #[error("ban_max ({max:?}) must be at least ban_base ({base:?})")]
    Ban {
        /// The base ban.
        base: Duration,
        /// The longest ban.
        max: Duration,
    },
    /// A churn limit that admits nothing (zero burst or zero refill period).
    #[error("churn limit needs churn_burst ({burst}) >= 1 and churn_refill ({refill:?}) > 0")]
    Churn {
        /// The burst.
        burst: u32,
        /// The refill period.
        refill: Duration,
    },
    /// The topology cannot work.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl PolicyConfig {
    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(PolicyConfigError::Backoff {
                min: self.backoff_min,
                max: self.backoff_max,
            });
        }
        if self.ban_max < self.ban_base {
            return Err(PolicyConfigError::Ban {
                base: self.ban_base,
                max: self.ban_max,
            });
        }
        if self.churn_burst == 0 || self.churn_refill.is_zero() {
            return Err(PolicyConfigError::Churn {
                burst: self.churn_burst,
                refill: self.churn_refill,
            });
        }
        self.topology.validate()?;
        Ok(())
    }
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyAction {
    /// Open a connection to this member (then report [`PeerPolicy::dial_failed`] or
    /// [`PeerPolicy::admit`]).
    Dial(NodeId),
    /// Close the connection to this peer: it is no longer a member.
    Close(NodeId),
    /// Close the connection to this peer without a ban: it is still a member but no longer a
    /// neighbour in the topology. The policy counts it closed already; the core must hear
    /// that it disconnected.
    Prune(NodeId),
}

/// How to admit an established connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Use it.
    New,
    /// Use it and close the peer's previous connection (without reporting it closed).
    Replace,
}

/// Why an established connection is refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is this node.
    #[error("connection to ourselves")]
    Ourselves,
    /// The peer is not in the current registry.
    #[error("not a member of the current registry")]
    NotMember,
    /// The peer is banned.
    #[error("banned for misbehaviour until {until:?}")]
    Banned {
        /// When the ban ends.
        until: Time,
    },
    /// The peer reconnected faster than the churn limit; it is banned until `until`.
    #[error("reconnecting faster than the churn limit; banned until {until:?}")]
    Churning {
        /// When the ban ends.
        until: Time,
    },
    /// A higher id dialed us: the lower id dials.
    #[error("the lower id dials: a higher id must not dial us")]
    WrongDirection,
    /// The peer is a member but not a neighbour of this node in the topology.
    #[error("a member, but not a neighbour in the topology")]
    NotNeighbour,
}

/// Why a connection ended, as the policy needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// The peer broke the protocol or the core cut it off: ban it.
    Misbehaviour,
    /// The connection failed or went quiet, or the peer closed it.
    Lost,
    /// The application asked for it.
    Requested,
}

/// The policy's record of one member.
#[derive(Clone, Debug, Default)]
struct Peer {
    /// Whether the topology makes it a neighbour (only neighbours are dialed and admitted).
    neighbour: bool,
    /// Since when it is connected, if it is.
    connected: Option<Time>,
    /// A dial was handed to the driver and its outcome is not reported yet.
    dialing: bool,
    /// When to dial next (only for peers we dial).
    dial_at: Option<Time>,
    /// Failed attempts (or short-lived connections) since the last stable connection.
    attempts: u32,
    /// Offences counted towards the ban length.
    offences: u32,
    /// The end of the last ban.
    banned_until: Option<Time>,
    /// The churn limit's token bucket, as the theoretical arrival time of the generic cell rate
    /// algorithm: an admission at `t` conforms when `tat <= t + (churn_burst - 1) * churn_refill`,
    /// and then moves `tat` to `max(tat, t) + churn_refill`.
    tat: Option<Time>,
}

/// The node's connection policy; see the [module documentation](self).
pub struct PeerPolicy {
    me: NodeId,
    cfg: PolicyConfig,
    rng: Rng,
    version: Option<u64>,
    peers: BTreeMap<NodeId, Peer>,
    actions: VecDeque<PolicyAction>,
}

impl PeerPolicy {
    /// The policy of node `me`; `seed` drives the jitter.
    pub fn new(me: NodeId, cfg: PolicyConfig, seed: u64) -> Result<Self, PolicyConfigError> {
        cfg.validate()?;
        let stream = u64::from_le_bytes(me.0[..8].try_into().unwrap_or_default());
        Ok(PeerPolicy {
            me,
            cfg,
            rng: Rng::new(derive(seed, stream)),
            version: None,
            peers: BTreeMap::new(),
            actions: VecDeque::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Whether this node dials `peer` (rather than waiting for it) when it is a neighbour: the
    /// lower id dials.
    pub fn dials(&self, peer: &NodeId) -> bool {
        self.me < *peer
    }

    /// Installs the members of registry `version` and the neighbours the topology gives among
    /// them: new neighbours we dial are dialed at once, removed members' connections are
    /// closed and their records (bans included) forgotten, and members that are no longer
    /// neighbours have their connections pruned (their records, bans included, are kept).
    pub fn set_members(
        &mut self,
        now: Time,
        version: u64,
        members: impl IntoIterator<Item = NodeId>,
    ) {
        self.version = Some(version);
        let members: Vec<NodeId> = members.into_iter().collect();
        let neighbours = self.cfg.topology.neighbours(&self.me, &members);
        let mut next: BTreeMap<NodeId, Peer> = BTreeMap::new();
        for id in members {
            if id == self.me || next.contains_key(&id) {
                continue;
            }
            let neighbour = neighbours.contains(&id);
            let mut peer = self.peers.remove(&id).unwrap_or_default();
            if neighbour && !peer.neighbour {
                // A new member, or one that became a neighbour: dialed at once if ours to
                // dial (after its ban, if any).
                peer.attempts = 0;
                peer.dial_at = (self.me < id).then(|| later(now, peer.banned_until));
            } else if !neighbour && peer.neighbour {
                if peer.connected.take().is_some() {
                    self.actions.push_back(PolicyAction::Prune(id));
                }
                // A dial in flight is refused when it completes (or fails quietly).
                peer.dialing = false;
                peer.dial_at = None;
            }
            peer.neighbour = neighbour;
            next.insert(id, peer);
        }
        for (id, old) in std::mem::replace(&mut self.peers, next) {
            if old.connected.is_some() {
                self.actions.push_back(PolicyAction::Close(id));
            }
        }
        // Dials not yet carried out to members that left or are no longer neighbours are
        // dropped.
        let peers = &self.peers;
        self.actions.retain(|a| match a {
            PolicyAction::Dial(id) => peers.get(id).is_some_and(|p| p.neighbour),
            PolicyAction::Close(_) | PolicyAction::Prune(_) => true,
        });
        self.handle_timeout(now);
    }

    /// The registry version installed last.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether `peer` is a current member.
    pub fn is_member(&self, peer: &NodeId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether `peer` is a current member and a neighbour in the topology: one this node
    /// connects to.
    pub fn is_neighbour(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.neighbour)
    }

    /// The current neighbours, in id order.
    pub fn neighbours(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.neighbour)
            .map(|(id, _)| *id)
    }

    /// When `peer`'s ban ends, if it is banned at `now`.
    pub fn banned_until(&self, now: Time, peer: &NodeId) -> Option<Time> {
        self.peers
            .get(peer)
            .and_then(|p| p.banned_until)
            .filter(|t| *t > now)
    }

    /// The members banned at `now`, with the ends of their bans, in id order: what the
    /// admission machine and the TLS verifiers need to refuse them before a handshake
    /// completes.
    pub fn banned(&self, now: Time) -> impl Iterator<Item = (NodeId, Time)> + '_ {
        self.peers
            .iter()
            .filter_map(move |(id, p)| p.banned_until.filter(|t| *t > now).map(|t| (*id, t)))
    }

    /// Whether a connection from or to `peer` may start at `now` (a member, not banned, not us):
    /// what a driver can check before the TLS handshake.
    pub fn may_connect(&self, now: Time, peer: &NodeId) -> bool {
        *peer != self.me && self.is_member(peer) && self.banned_until(now, peer).is_none()
    }

    /// Decides on a connection to `peer` that completed its handshake at `now`; `dialed` says
    /// whether we opened it. An admitted connection is recorded as `peer`'s connection.
    pub fn admit(&mut self, now: Time, peer: NodeId, dialed: bool) -> Result<Admit, Refusal> {
        if peer == self.me {
            return Err(Refusal::Ourselves);
        }
        let dials = self.dials(&peer);
        let banned = self.banned_until(now, &peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(Refusal::NotMember);
        };
        if dialed {
            p.dialing = false;
        }
        if let Some(until) = banned {
            if dialed {
                p.dial_at = Some(until);
            }
            return Err(Refusal::Banned { until });
        }
        if !dialed && dials {
            return Err(Refusal::WrongDirection);
        }
        if let Some(ok_at) = churn_ok_at(&self.cfg, p).filter(|t| *t > now) {
            if dialed {
                // Dials wait for a token, so only a dial that raced one gets here.
                p.dial_at = Some(ok_at);
                return Err(Refusal::Churning { until: ok_at });
            }
            ban(&self.cfg, p, now);
            let until = p.banned_until.unwrap_or(now);
            return Err(Refusal::Churning { until });
        }
        take_token(&self.cfg, p, now);
        if !p.neighbour {
            // Not an offence: the peer may hold another registry version. It took a token, so
            // refusals cannot be provoked faster than the churn limit.
            p.dial_at = None;
            return Err(Refusal::NotNeighbour);
        }
        p.dial_at = None;
        let replaced = p.connected.replace(now).is_some();
        Ok(if replaced { Admit::Replace } else { Admit::New })
    }

    /// A dial to `peer` failed at `now`: it is tried again after the back-off.
    pub fn dial_failed(&mut self, now: Time, peer: NodeId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.dialing = false;
        p.attempts = p.attempts.saturating_add(1);
        if p.connected.is_none() && p.neighbour && self.me < peer {
            let delay = backoff(&self.cfg, &mut self.rng, p.attempts);
            p.dial_at = Some(later(
                later(now + delay, churn_ok_at(&self.cfg, p)),
                p.banned_until,
            ));
        }
    }

    /// `peer`'s connection ended at `now` because of `cause`. A misbehaving peer is banned;
    /// a peer we dial is dialed again after the back-off (and the ban).
    pub fn closed(&mut self, now: Time, peer: NodeId, cause: CloseCause) {
        let dials = self.dials(&peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(since) = p.connected.take() {
            // A connection that lived long resets the back-off; a short-lived one counts as a
            // failed attempt, so a peer that keeps dropping us is not redialed in a tight loop.
            p.attempts = if now.saturating_since(since) >= self.cfg.backoff_max {
                1
            } else {
                p.attempts.saturating_add(1)
            };
        }
        if cause == CloseCause::Misbehaviour {
            ban(&self.cfg, p, now);
        }
        if dials && p.neighbour && !p.dialing {
            let delay = backoff(&self.cfg, &mut self.rng, p.attempts);
            p.dial_at = Some(later(
                later(now + delay, churn_ok_at(&self.cfg, p)),
                p.banned_until,
            ));
        }
    }

    /// `peer` misbehaved at `now` outside a connection's end (e.g. during a handshake): ban it.
    pub fn misbehaved(&mut self, now: Time, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            ban(&self.cfg, p, now);
            if let Some(at) = &mut p.dial_at {
                *at = later(*at, p.banned_until);
            }
        }
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.connected.is_some())
    }

    /// The connected peers, in id order.
    pub fn connected(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected.is_some())
            .map(|(id, _)| *id)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next: the earliest due dial.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.peers
            .values()
            .filter(|p| p.neighbour && !p.dialing && p.connected.is_none())
            .filter_map(|p| p.dial_at)
            .min()
    }

    /// Queues a [`PolicyAction::Dial`] for every dial due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        for (id, p) in &mut self.peers {
            if p.neighbour
                && p.connected.is_none()
                && !p.dialing
                && p.dial_at.is_some_and(|t| t <= now)
            {
                p.dialing = true;
                p.dial_at = None;
                self.actions.push_back(PolicyAction::Dial(*id));
            }
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<PolicyAction> {
        self.actions.pop_front()
    }
}

/// The later of `t` and the end of a ban.
fn later(t: Time, banned_until: Option<Time>) -> Time {
    banned_until.map_or(t, |b| b.max(t))
}

/// The earliest time at which an admission of `p` conforms to the churn limit (`None`: now).
fn churn_ok_at(cfg: &PolicyConfig, p: &Peer) -> Option<Time> {
    let tat = p.tat?;
    let tolerance = cfg
        .churn_refill
        .checked_mul(cfg.churn_burst.saturating_sub(1))
        .unwrap_or(Duration::MAX);
    Some(Time::from_nanos(tat.as_nanos().saturating_sub(
        tolerance.as_nanos().min(u64::MAX as u128) as u64,
    )))
}

/// Takes one admission token of `p` at `now` (the caller checked that it conforms).
fn take_token(cfg: &PolicyConfig, p: &mut Peer, now: Time) {
    let base = p.tat.map_or(now, |t| t.max(now));
    p.tat = Some(base + cfg.churn_refill);
}

/// Records an offence of `p` at `now` and bans it for the escalated length.
fn ban(cfg: &PolicyConfig, p: &mut Peer, now: Time) {
    // Good behaviour counts from the end of the last ban.
    let forgiven = p
        .banned_until
        .is_some_and(|t| now.saturating_since(t) >= cfg.forgive_after);
    p.offences = if forgiven {
        1
    } else {
        p.offences.saturating_add(1)
    };
    let length = cfg
        .ban_base
        .checked_mul(1u32 << (p.offences - 1).min(20))
        .unwrap_or(cfg.ban_max)
        .min(cfg.ban_max);
    p.banned_until = Some(now + length);
}

/// The delay before attempt number `attempts + 1`: none for the first, then the minimum doubled
/// per attempt up to the maximum, with jitter down to half.
fn backoff(cfg: &PolicyConfig, rng: &mut Rng, attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let full = cfg
        .backoff_min
        .checked_mul(1u32 << (attempts - 1).min(20))
        .unwrap_or(cfg.backoff_max)
        .min(cfg.backoff_max);
    let frac = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    full.mul_f64(0.5 + 0.5 * frac)
}
