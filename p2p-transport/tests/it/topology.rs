//! The derived topology: symmetric, connected, bounded degrees, the same on every node, and a
//! small change when one member comes or goes.

use std::collections::BTreeSet;

use p2p_core::NodeId;
use p2p_transport::topology::{
    Topology, TopologyError, degree_stats, diameter, edges, is_connected,
};
use quickcheck::{QuickCheck, TestResult};

/// `n` member ids drawn from `seed` (distinct).
fn members(seed: u64, n: usize) -> Vec<NodeId> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            for chunk in id.chunks_mut(8) {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            id[31] = i as u8;
            id[30] = (i >> 8) as u8;
            NodeId(id)
        })
        .collect()
}

/// The bound on changed edges when one member comes or goes, for degree `k`.
fn change_bound(k: usize) -> usize {
    3 * (k.div_ceil(2) + k.div_ceil(4)) + 1
}

fn qc() -> QuickCheck {
    QuickCheck::new().tests(100)
}

#[test]
fn prop_the_derived_graph_is_symmetric_connected_and_of_bounded_degree() {
    fn prop(seed: u64, n: u8, k: u8) -> TestResult {
        let n = 2 + n as usize % 40;
        let k = 2 + k as usize % 10;
        let ids = members(seed, n);
        let topo = Topology::Degree(k);
        let g = topo.graph(&ids).unwrap();
        for (a, nbrs) in &g {
            // The graph each node derives alone is its row of the whole graph.
            assert_eq!(&topo.neighbours(a, &ids), nbrs);
            assert!(!nbrs.contains(a));
            for b in nbrs {
                assert!(g[b].contains(a), "symmetric");
            }
        }
        assert!(is_connected(&g));
        let s = degree_stats(&g);
        assert_eq!(s.nodes, n);
        assert!(
            s.min >= k.min(n - 1),
            "min degree {} < {k} (n = {n})",
            s.min
        );
        assert!(s.max <= 2 * k, "max degree {} > 2k (k = {k})", s.max);
        TestResult::passed()
    }
    qc().quickcheck(prop as fn(u64, u8, u8) -> TestResult);
}

#[test]
fn prop_the_graph_depends_on_the_member_set_only() {
    fn prop(seed: u64, n: u8, k: u8, rot: u8) -> TestResult {
        let n = 2 + n as usize % 40;
        let k = 2 + k as usize % 8;
        let ids = members(seed, n);
        let mut shuffled = ids.clone();
        shuffled.rotate_left(rot as usize % n);
        shuffled.reverse();
        // A duplicate changes nothing either.
        shuffled.push(ids[0]);
        let topo = Topology::Degree(k);
        assert_eq!(topo.graph(&ids), topo.graph(&shuffled));
        for id in &ids {
            assert_eq!(topo.neighbours(id, &ids), topo.neighbours(id, &shuffled));
        }
        TestResult::passed()
    }
    qc().quickcheck(prop as fn(u64, u8, u8, u8) -> TestResult);
}

#[test]
fn prop_one_member_coming_or_going_changes_few_edges() {
    fn prop(seed: u64, n: u8, k: u8, which: u8) -> TestResult {
        let n = 2 + n as usize % 120;
        let k = 2 + k as usize % 10;
        let topo = Topology::Degree(k);
        let all = members(seed, n + 1);
        let without: Vec<NodeId> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != which as usize % (n + 1))
            .map(|(_, id)| *id)
            .collect();
        let before = edges(&topo.graph(&without).unwrap());
        let after = edges(&topo.graph(&all).unwrap());
        let changed = before.symmetric_difference(&after).count();
        assert!(
            changed <= change_bound(k),
            "{changed} edges changed (k = {k}, n = {n})"
        );
        // The members whose neighbours changed: the newcomer and the ends of changed edges.
        let touched: BTreeSet<NodeId> = before
            .symmetric_difference(&after)
            .flat_map(|(a, b)| [*a, *b])
            .collect();
        assert!(touched.len() <= 2 * change_bound(k));
        TestResult::passed()
    }
    qc().quickcheck(prop as fn(u64, u8, u8, u8) -> TestResult);
}

#[test]
fn chords_keep_the_diameter_logarithmic() {
    // The backbone alone would need n / 2r hops (75 for 300 members at k = 4).
    let ids = members(7, 300);
    for (k, bound) in [(2, 10), (4, 8), (8, 6)] {
        let g = Topology::Degree(k).graph(&ids).unwrap();
        let d = diameter(&g).unwrap();
        assert!(d <= bound, "diameter {d} for k = {k}");
    }
}

#[test]
fn all_is_the_full_mesh_and_explicit_keeps_listed_members_only() {
    let ids = members(3, 6);
    let g = Topology::All.graph(&ids).unwrap();
    assert_eq!(degree_stats(&g).min, 5);
    assert_eq!(Topology::All.neighbours(&ids[0], &ids).len(), 5);
    let stranger = members(4, 1)[0];
    let list: BTreeSet<NodeId> = [ids[0], ids[1], ids[2], stranger].into();
    let topo = Topology::Explicit(list);
    // Itself and non-members are never neighbours.
    assert_eq!(topo.neighbours(&ids[0], &ids), [ids[1], ids[2]].into());
    assert_eq!(topo.graph(&ids), None);
    // A small subnet is a full mesh at any degree.
    let g = Topology::Degree(4).graph(&ids[..5]).unwrap();
    assert_eq!(degree_stats(&g).min, 4);
    assert_eq!(
        Topology::Degree(4).neighbours(&ids[0], &ids[..1]),
        BTreeSet::new()
    );
}

#[test]
fn a_degree_below_two_is_refused() {
    assert_eq!(
        Topology::Degree(1).validate(),
        Err(TopologyError::DegreeTooSmall(1))
    );
    Topology::Degree(2).validate().unwrap();
    Topology::All.validate().unwrap();
}
