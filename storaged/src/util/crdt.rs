//! Conflict-free replicated data types: the one merge abstraction every table entry uses.
//!
//! Laws every [`Crdt::merge`] must satisfy (property-tested for each entry type):
//! - commutative: `a.merge(b) == b.merge(a)`
//! - associative: `(a.merge(b)).merge(c) == a.merge(b.merge(c))`
//! - idempotent: `a.merge(a) == a`
//!
//! so replicas that saw the same updates in any order, any number of times, agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A value that merges with another copy of itself.
pub trait Crdt {
    /// Folds `other` into `self`.
    fn merge(&mut self, other: &Self);
}

/// A flag that can only go from false to true (deleted markers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bool(pub bool);

impl Crdt for Bool {
    fn merge(&mut self, other: &Self) {
        self.0 |= other.0;
    }
}

/// Last-writer-wins register: the greater timestamp wins; ties break on the value so that
/// replicas agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    /// Milliseconds, see `util::time::next_timestamp`.
    pub ts: u64,
    /// The value.
    pub v: T,
}

impl<T> Lww<T> {
    /// A register set at `ts`.
    pub fn new(ts: u64, v: T) -> Self {
        Self { ts, v }
    }

    /// Sets the value with a timestamp newer than the current one.
    pub fn update(&mut self, v: T) {
        self.ts = crate::util::time::next_timestamp(self.ts);
        self.v = v;
    }
}

impl<T: Ord + Clone> Crdt for Lww<T> {
    fn merge(&mut self, other: &Self) {
        if (other.ts, &other.v) > (self.ts, &self.v) {
            self.ts = other.ts;
            self.v = other.v.clone();
        }
    }
}

/// A map of last-writer-wins registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwMap<K: Ord, V>(pub BTreeMap<K, Lww<V>>);

impl<K: Ord, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord + Clone, V: Ord + Clone> LwwMap<K, V> {
    /// Sets `k` to `v`, newer than whatever the map held for `k`.
    pub fn set(&mut self, k: K, v: V) {
        let prev = self.0.get(&k).map_or(0, |r| r.ts);
        self.0
            .insert(k, Lww::new(crate::util::time::next_timestamp(prev), v));
    }

    /// The current value of `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k).map(|r| &r.v)
    }

    /// Current key/value pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, r)| (k, &r.v))
    }
}

impl<K: Ord + Clone, V: Ord + Clone> Crdt for LwwMap<K, V> {
    fn merge(&mut self, other: &Self) {
        for (k, r) in &other.0 {
            match self.0.get_mut(k) {
                Some(mine) => mine.merge(r),
                None => {
                    self.0.insert(k.clone(), r.clone());
                }
            }
        }
    }
}

/// Test helpers: check the three CRDT laws on arbitrary values.
#[cfg(test)]
pub(crate) mod laws {
    use super::Crdt;

    /// Asserts commutativity, associativity and idempotence on `a`, `b`, `c`.
    pub(crate) fn check<T: Crdt + Clone + PartialEq + std::fmt::Debug>(a: &T, b: &T, c: &T) {
        let merged = |x: &T, y: &T| {
            let mut m = x.clone();
            m.merge(y);
            m
        };
        assert_eq!(merged(a, b), merged(b, a), "commutative");
        assert_eq!(
            merged(&merged(a, b), c),
            merged(a, &merged(b, c)),
            "associative"
        );
        assert_eq!(merged(a, a), *a, "idempotent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lww() -> impl Strategy<Value = Lww<u8>> {
        (0u64..4, any::<u8>()).prop_map(|(ts, v)| Lww::new(ts, v))
    }

    fn lww_map() -> impl Strategy<Value = LwwMap<u8, u8>> {
        proptest::collection::btree_map(0u8..4, lww(), 0..4).prop_map(LwwMap)
    }

    proptest! {
        #[test]
        fn bool_laws(a: bool, b: bool, c: bool) {
            laws::check(&Bool(a), &Bool(b), &Bool(c));
        }

        #[test]
        fn lww_laws(a in lww(), b in lww(), c in lww()) {
            laws::check(&a, &b, &c);
        }

        #[test]
        fn lww_map_laws(a in lww_map(), b in lww_map(), c in lww_map()) {
            laws::check(&a, &b, &c);
        }
    }
}
