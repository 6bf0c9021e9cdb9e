//! A bounded memory of recently seen artifact ids: the oldest is forgotten first.

use crate::hash::{Map, SaltedState};
use crate::types::ArtifactId;
use std::collections::VecDeque;

/// Ids remembered with a value each, at most a given number, oldest forgotten first.
///
/// Invariants: `order` holds exactly the keys of `map`, each once, in the order they were
/// first remembered; after [`remember`](Recent::remember) with bound `max`, at most `max` are
/// kept.
pub(crate) struct Recent<V> {
    map: Map<ArtifactId, V>,
    order: VecDeque<ArtifactId>,
}

impl<V> Recent<V> {
    /// An empty memory whose table hashes with `hasher` (ids are chosen by peers).
    pub(crate) fn new(hasher: SaltedState) -> Self {
        Recent {
            map: Map::with_hasher(hasher),
            order: VecDeque::new(),
        }
    }

    /// The value remembered for `id`.
    pub(crate) fn get(&self, id: &ArtifactId) -> Option<&V> {
        self.map.get(id)
    }

    /// The value remembered for `id`, to change.
    pub(crate) fn get_mut(&mut self, id: &ArtifactId) -> Option<&mut V> {
        self.map.get_mut(id)
    }

    /// Whether nothing is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Ids remembered.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Remembers `value` for `id` (replacing the value of an id already known, which keeps its
    /// place), then forgets the oldest ids past `max`. With `max` 0 nothing is remembered.
    pub(crate) fn remember(&mut self, id: ArtifactId, value: V, max: usize) {
        if max == 0 {
            return;
        }
        if self.map.insert(id, value).is_none() {
            self.order.push_back(id);
            while self.order.len() > max {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;
    use crate::hash::SaltedState;
    use crate::types::ArtifactId;

    fn id(n: u8) -> ArtifactId {
        ArtifactId([n; 32])
    }

    #[test]
    fn the_oldest_id_is_forgotten_first() {
        let mut r = Recent::new(SaltedState::new(1));
        for n in 0..5 {
            r.remember(id(n), n, 3);
        }
        assert_eq!(r.len(), 3);
        assert!(r.get(&id(0)).is_none() && r.get(&id(1)).is_none());
        assert_eq!(r.get(&id(4)), Some(&4));
    }

    #[test]
    fn remembering_a_known_id_replaces_its_value_and_keeps_its_place() {
        let mut r = Recent::new(SaltedState::new(1));
        r.remember(id(1), 10, 2);
        r.remember(id(2), 20, 2);
        r.remember(id(1), 11, 2);
        assert_eq!(r.get(&id(1)), Some(&11));
        r.remember(id(3), 30, 2);
        assert!(r.get(&id(1)).is_none(), "id 1 was still the oldest");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_bound_of_zero_remembers_nothing_and_clear_forgets_all() {
        let mut r = Recent::new(SaltedState::new(1));
        r.remember(id(1), (), 0);
        assert!(r.is_empty());
        r.remember(id(1), (), 4);
        *r.get_mut(&id(1)).expect("remembered") = ();
        r.clear();
        assert!(r.is_empty());
        r.remember(id(2), (), 1);
        assert_eq!(r.len(), 1);
    }
}
