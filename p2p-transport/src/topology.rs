//! Which members a node connects to: the subnet's topology, as a pure function of the member
//! set.
//!
//! [`Topology::All`] connects every pair (a full mesh). [`Topology::Degree`] connects each node
//! to about `k` others through a graph that every node derives alone, with no coordination,
//! from the member ids: the same member set gives the same graph on every node, whatever the
//! registry version or the order of the list. [`Topology::Explicit`] names the neighbours.
//!
//! # The derived graph
//!
//! `Degree(k)` (k >= 2) is the union of rings over the members, each ring ordering them by a
//! hash of their id (SHA-256 of a tag, the ring's number and the id; ties, which need a
//! SHA-256 collision, by id):
//! - ring 0 joins every member to the `r = ceil(k/2)` members on each side of it: a connected
//!   backbone of degree exactly `min(2r, n - 1)`;
//! - rings `1..=c`, `c = ceil(k/4)`, join every member to its two neighbours in an independent
//!   order: chords, so that the graph has a small diameter (a union of random cycles is an
//!   expander) rather than the `n / 2r` of the backbone alone.
//!
//! Hence, for `n` members: the graph is undirected (symmetric), connected for `n >= 2`, every
//! degree is between `min(k, n - 1)` and `2r + 2c <= 2k`, and adding or removing one member
//! changes at most `3r + 1 + 3c` edges: only the ring neighbours of its positions change, and
//! no member's position depends on another's id or on the version. A registry update
//! therefore moves only O(k) connections.
//!
//! A member cannot choose its neighbours except by choosing its node id (its key pair): the
//! positions are hashes of the ids, so landing next to a given node in a ring takes about
//! `n / r` key generations per slot, and surrounding it in every ring takes a registry entry
//! for every one of its `2r + 2c` neighbours.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use p2p_core::NodeId;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The tag hashed with each id, so that positions are not SHA-256 of the ids used elsewhere.
const TAG: &[u8] = b"p2p-transport/topology/v1";

/// Which members a node connects to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Topology {
    /// Every other member: a full mesh (the default).
    #[default]
    All,
    /// About `k` members (at least `min(k, n - 1)`, at most `2k`) chosen by a graph derived
    /// from the member set alone (see the [module documentation](self)); `k >= 2`.
    Degree(usize),
    /// These members (others in the list are ignored until they are members). A connection
    /// needs both ends to list each other: the lower id dials, and the other refuses a member it
    /// does not list.
    Explicit(BTreeSet<NodeId>),
}

/// A [`Topology`] that cannot work.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyError {
    /// A degree below 2 cannot keep every member set connected.
    #[error("a derived topology needs a degree of at least 2, not {0}")]
    DegreeTooSmall(usize),
}

/// An undirected graph: each member and its neighbours.
pub type Graph = BTreeMap<NodeId, BTreeSet<NodeId>>;

/// The degrees of a graph, for status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DegreeStats {
    /// Members.
    pub nodes: usize,
    /// Undirected edges.
    pub edges: usize,
    /// The smallest degree (0 for an empty graph).
    pub min: usize,
    /// The largest degree.
    pub max: usize,
}

impl Topology {
    /// Checks that the topology can work.
    pub fn validate(&self) -> Result<(), TopologyError> {
        match self {
            Topology::Degree(k) if *k < 2 => Err(TopologyError::DegreeTooSmall(*k)),
            _ => Ok(()),
        }
    }

    /// Whether every member is a neighbour (a full mesh).
    pub fn is_full(&self) -> bool {
        matches!(self, Topology::All)
    }

    /// The neighbours of `me` among `members` (`me` counts as a member; it is never its own
    /// neighbour). Duplicates and the order of `members` do not matter.
    pub fn neighbours(&self, me: &NodeId, members: &[NodeId]) -> BTreeSet<NodeId> {
        let mut set: BTreeSet<NodeId> = members.iter().copied().collect();
        let mut out = match self {
            Topology::All => set.clone(),
            Topology::Explicit(list) => list.intersection(&set).copied().collect(),
            Topology::Degree(k) => {
                set.insert(*me);
                let (r, c) = rings(*k);
                let mut out = BTreeSet::new();
                for ring in 0..=c {
                    let order = ring_order(ring, &set);
                    let span = if ring == 0 { r } else { 1 };
                    around(&order, me, span, &mut out);
                }
                out
            }
        };
        out.remove(me);
        out
    }

    /// The whole graph over `members`, for a topology every node derives alike (`All` or
    /// `Degree`); `None` for `Explicit`, whose graph is the union of every node's own list.
    pub fn graph(&self, members: &[NodeId]) -> Option<Graph> {
        if matches!(self, Topology::Explicit(_)) {
            return None;
        }
        let set: BTreeSet<NodeId> = members.iter().copied().collect();
        let mut g: Graph = set.iter().map(|id| (*id, BTreeSet::new())).collect();
        match self {
            Topology::All => {
                for (id, nbrs) in &mut g {
                    nbrs.extend(set.iter().filter(|m| *m != id));
                }
            }
            Topology::Degree(k) => {
                let (r, c) = rings(*k);
                for ring in 0..=c {
                    let order = ring_order(ring, &set);
                    let span = if ring == 0 { r } else { 1 };
                    let n = order.len();
                    for (i, a) in order.iter().enumerate() {
                        for d in 1..=span.min(n.saturating_sub(1)) {
                            let b = order[(i + d) % n];
                            if b != *a {
                                g.entry(*a).or_default().insert(b);
                                g.entry(b).or_default().insert(*a);
                            }
                        }
                    }
                }
            }
            Topology::Explicit(_) => {}
        }
        Some(g)
    }
}

/// The backbone's reach `r` and the number of chord rings `c` for degree `k`.
fn rings(k: usize) -> (usize, usize) {
    let k = k.max(2);
    (k.div_ceil(2), k.div_ceil(4))
}

/// The members in the order of ring `ring`.
fn ring_order(ring: usize, set: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let mut keyed: Vec<([u8; 32], NodeId)> = set
        .iter()
        .map(|id| {
            let mut h = Sha256::new();
            h.update(TAG);
            h.update((ring as u64).to_le_bytes());
            h.update(id.0);
            (h.finalize().into(), *id)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// Adds the members up to `span` places on each side of `me` in the cyclic `order`.
fn around(order: &[NodeId], me: &NodeId, span: usize, out: &mut BTreeSet<NodeId>) {
    let n = order.len();
    let Some(i) = order.iter().position(|id| id == me) else {
        return;
    };
    for d in 1..=span.min(n.saturating_sub(1)) {
        out.insert(order[(i + d) % n]);
        out.insert(order[(i + n - d) % n]);
    }
}

/// Whether every member of `g` reaches every other (true for fewer than two members).
pub fn is_connected(g: &Graph) -> bool {
    let Some(start) = g.keys().next() else {
        return true;
    };
    let mut seen = BTreeSet::from([*start]);
    let mut queue = VecDeque::from([*start]);
    while let Some(a) = queue.pop_front() {
        for b in g.get(&a).into_iter().flatten() {
            if g.contains_key(b) && seen.insert(*b) {
                queue.push_back(*b);
            }
        }
    }
    seen.len() == g.len()
}

/// The degrees of `g`.
pub fn degree_stats(g: &Graph) -> DegreeStats {
    let degrees = g.values().map(BTreeSet::len);
    DegreeStats {
        nodes: g.len(),
        edges: g.values().map(BTreeSet::len).sum::<usize>() / 2,
        min: degrees.clone().min().unwrap_or(0),
        max: degrees.max().unwrap_or(0),
    }
}

/// The undirected edges of `g`, each as (smaller, larger).
pub fn edges(g: &Graph) -> BTreeSet<(NodeId, NodeId)> {
    g.iter()
        .flat_map(|(a, nbrs)| nbrs.iter().map(move |b| ((*a).min(*b), (*a).max(*b))))
        .collect()
}

/// The longest shortest path of `g` (0 for fewer than two members; `None` if disconnected).
pub fn diameter(g: &Graph) -> Option<usize> {
    let mut worst = 0;
    for start in g.keys() {
        let mut dist: BTreeMap<NodeId, usize> = BTreeMap::from([(*start, 0)]);
        let mut queue = VecDeque::from([*start]);
        while let Some(a) = queue.pop_front() {
            let d = dist[&a];
            for b in g.get(&a).into_iter().flatten() {
                if g.contains_key(b) && !dist.contains_key(b) {
                    dist.insert(*b, d + 1);
                    queue.push_back(*b);
                }
            }
        }
        if dist.len() != g.len() {
            return None;
        }
        worst = worst.max(dist.values().copied().max().unwrap_or(0));
    }
    Some(worst)
}
