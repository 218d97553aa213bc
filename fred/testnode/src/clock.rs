//! Vector clocks and the versions of one item: the causality rules that decide whether a write
//! replaces what a node holds or becomes a sibling of it.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// A vector clock: node id -> counter. Zero entries are never stored, so equal clocks compare
/// equal however a client spelled them.
pub type Clock = BTreeMap<String, u64>;

/// Old versions kept per item so a read naming a just-replaced version still finds it.
const HISTORY: usize = 16;

/// Converts a wire clock, dropping zero entries.
pub fn clock_from_wire(map: &HashMap<String, u64>) -> Clock {
    map.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

/// The wire form of a clock.
pub fn clock_to_wire(clock: &Clock) -> fred_proto::Version {
    fred_proto::Version {
        version: clock.iter().map(|(k, n)| (k.clone(), *n)).collect(),
    }
}

/// `a >= b`: `a` has seen everything `b` has.
pub fn covers(a: &Clock, b: &Clock) -> bool {
    b.iter().all(|(k, n)| a.get(k).copied().unwrap_or(0) >= *n)
}

/// One version of an item: its clock and value; `None` is a delete's tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub clock: Clock,
    pub val: Option<String>,
}

/// What a node holds for one item id: the current (mutually concurrent) siblings and a few
/// replaced versions.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    siblings: Vec<Version>,
    history: VecDeque<Version>,
}

impl Entry {
    /// Current siblings that are values, not tombstones.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.siblings.iter().filter(|v| v.val.is_some())
    }

    /// Whether a read finds the item.
    pub fn is_live(&self) -> bool {
        self.live().next().is_some()
    }

    /// All current siblings, tombstones included (what replication and catch-up copy).
    pub fn siblings(&self) -> &[Version] {
        &self.siblings
    }

    /// The version with exactly this clock, current or recently replaced.
    pub fn find(&self, clock: &Clock) -> Option<&Version> {
        self.siblings
            .iter()
            .chain(self.history.iter())
            .find(|v| &v.clock == clock)
    }

    /// Whether `given` covers every current sibling (an Update/Delete naming versions may
    /// proceed). Callers skip the check when a client names no versions.
    pub fn covered_by(&self, given: &[Clock]) -> bool {
        self.siblings
            .iter()
            .all(|s| given.iter().any(|g| covers(g, &s.clock)))
    }

    /// A write by a client on `node`: merges every sibling's clock and `given`, ticks `node`, and
    /// replaces all siblings with the result, which is returned.
    pub fn write_local(&mut self, node: &str, val: Option<String>, given: &[Clock]) -> Version {
        let mut clock = Clock::new();
        for c in self.siblings.iter().map(|s| &s.clock).chain(given) {
            for (k, n) in c {
                let e = clock.entry(k.clone()).or_insert(0);
                *e = (*e).max(*n);
            }
        }
        *clock.entry(node.to_string()).or_insert(0) += 1;
        let version = Version { clock, val };
        let old = std::mem::replace(&mut self.siblings, vec![version.clone()]);
        self.retire(old);
        version
    }

    /// A version arriving from a peer: ignored if some sibling already covers it, otherwise it
    /// replaces the siblings it covers and stays next to concurrent ones. Returns whether it
    /// was taken.
    pub fn apply_remote(&mut self, version: Version) -> bool {
        if self
            .siblings
            .iter()
            .any(|s| covers(&s.clock, &version.clock))
        {
            return false;
        }
        let (replaced, kept) = std::mem::take(&mut self.siblings)
            .into_iter()
            .partition(|s| covers(&version.clock, &s.clock));
        self.siblings = kept;
        self.siblings.push(version);
        self.retire(replaced);
        true
    }

    fn retire(&mut self, old: Vec<Version>) {
        for v in old {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(entries: &[(&str, u64)]) -> Clock {
        entries.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    fn val(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn local_writes_tick_the_writer() {
        let mut e = Entry::default();
        assert_eq!(e.write_local("a", val("1"), &[]).clock, clock(&[("a", 1)]));
        assert_eq!(
            e.write_local("b", val("2"), &[]).clock,
            clock(&[("a", 1), ("b", 1)])
        );
        assert_eq!(e.siblings().len(), 1);
        assert!(
            e.find(&clock(&[("a", 1)])).is_some(),
            "replaced version kept in history"
        );
    }

    #[test]
    fn concurrent_versions_become_siblings_until_a_dominating_write() {
        let mut e = Entry::default();
        e.write_local("a", val("x"), &[]);
        assert!(e.apply_remote(Version {
            clock: clock(&[("b", 1)]),
            val: val("y")
        }));
        assert_eq!(e.live().count(), 2);
        assert!(!e.covered_by(&[clock(&[("a", 1)])]));
        assert!(e.covered_by(&[clock(&[("a", 1)]), clock(&[("b", 1)])]));
        assert!(e.apply_remote(Version {
            clock: clock(&[("a", 1), ("b", 2)]),
            val: val("z")
        }));
        assert_eq!(e.siblings().len(), 1);
        assert!(!e.apply_remote(Version {
            clock: clock(&[("b", 1)]),
            val: val("old")
        }));
    }

    #[test]
    fn tombstones_hide_the_item() {
        let mut e = Entry::default();
        e.write_local("a", val("x"), &[]);
        e.write_local("a", None, &[]);
        assert!(!e.is_live());
        assert_eq!(e.siblings().len(), 1);
    }

    #[test]
    fn zero_entries_are_dropped() {
        let wire = [("a".to_string(), 0), ("b".to_string(), 2)].into();
        assert_eq!(clock_from_wire(&wire), clock(&[("b", 2)]));
        assert!(covers(&clock(&[("b", 2)]), &clock(&[])));
    }
}
