//! Vector clocks and the versions of one item: the causality rules that decide whether a write
//! replaces what a node holds or becomes a sibling of it.

use std::collections::{BTreeMap, HashMap};

/// A vector clock: node id -> counter. Zero entries are never stored, so equal clocks compare
/// equal however a client spelled them.
pub type Clock = BTreeMap<String, u64>;

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

/// The merge of `clocks`, ticked for `node`: the clock of a new local write.
fn merge_tick<'a>(clocks: impl IntoIterator<Item = &'a Clock>, node: &str) -> Clock {
    let mut clock = Clock::new();
    for c in clocks {
        for (k, n) in c {
            let e = clock.entry(k.clone()).or_insert(0);
            *e = (*e).max(*n);
        }
    }
    *clock.entry(node.to_string()).or_insert(0) += 1;
    clock
}

/// One version of an item: its clock and value; `None` is a delete's tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub clock: Clock,
    pub val: Option<String>,
}

/// What a node holds for one item id: the current (mutually concurrent) siblings, tombstones
/// included. Replaced versions are gone, as in FReD's store, which prunes them.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    siblings: Vec<Version>,
}

impl Entry {
    /// Current siblings that are values, not tombstones.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.siblings.iter().filter(|v| v.val.is_some())
    }

    /// All current siblings, tombstones included (what replication and catch-up copy).
    pub fn siblings(&self) -> &[Version] {
        &self.siblings
    }

    /// Whether the node stores anything for this id, a tombstone included (FReD's `exists`,
    /// which Delete, Scan and Keys check).
    pub fn exists(&self) -> bool {
        !self.siblings.is_empty()
    }

    /// Read with versions, as FReD does it: every stored version (tombstones included) that a
    /// given clock is >= to, once per such clock (so duplicates are possible).
    pub fn covered_by_any<'a>(&'a self, given: &'a [Clock]) -> impl Iterator<Item = &'a Version> {
        self.siblings
            .iter()
            .flat_map(move |s| given.iter().filter(|g| covers(g, &s.clock)).map(move |_| s))
    }

    /// Whether `given` covers every current sibling (an Update/Delete naming versions may
    /// proceed). Callers skip the check when a client names no versions.
    pub fn covered_by(&self, given: &[Clock]) -> bool {
        self.siblings
            .iter()
            .all(|s| given.iter().any(|g| covers(g, &s.clock)))
    }

    /// A write by a client on `node`: merges every sibling's clock and `given`, ticks `node`, and
    /// replaces all siblings with the result, which is returned. (With versions, callers first
    /// check [`Entry::covered_by`], so the merge equals FReD's merge of the given clocks.)
    pub fn write_local(&mut self, node: &str, val: Option<String>, given: &[Clock]) -> Version {
        let clock = merge_tick(self.siblings.iter().map(|s| &s.clock).chain(given), node);
        let version = Version { clock, val };
        self.siblings = vec![version.clone()];
        version
    }

    /// Whether a Delete naming `given` may proceed: FReD refuses only a given clock that is
    /// strictly older than a stored version; concurrent ones are fine.
    pub fn delete_allowed(&self, given: &[Clock]) -> bool {
        !given.iter().any(|g| {
            self.siblings
                .iter()
                .any(|s| covers(&s.clock, g) && &s.clock != g)
        })
    }

    /// A Delete naming `given` on `node`: a tombstone with their merge, ticked; siblings
    /// concurrent with it stay, the others go. Returns the tombstone.
    pub fn delete_versions(&mut self, node: &str, given: &[Clock]) -> Version {
        let clock = merge_tick(given, node);
        self.siblings
            .retain(|s| !covers(&clock, &s.clock) && !covers(&s.clock, &clock));
        let version = Version { clock, val: None };
        self.siblings.push(version.clone());
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
        self.siblings.retain(|s| !covers(&version.clock, &s.clock));
        self.siblings.push(version);
        true
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
        let given = [clock(&[("a", 1)]), clock(&[("a", 1), ("b", 1)])];
        assert_eq!(e.covered_by_any(&given).count(), 1, "replaced version gone");
    }

    #[test]
    fn delete_with_versions_keeps_concurrent_siblings() {
        let mut e = Entry::default();
        e.write_local("a", val("x"), &[]);
        e.apply_remote(Version {
            clock: clock(&[("b", 1)]),
            val: val("y"),
        });
        assert!(!e.delete_allowed(&[Clock::new()]), "older than both");
        assert!(e.delete_allowed(&[clock(&[("a", 1)])]));
        let t = e.delete_versions("a", &[clock(&[("a", 1)])]);
        assert_eq!(t.clock, clock(&[("a", 2)]));
        assert_eq!(
            e.live().map(|v| v.val.clone()).collect::<Vec<_>>(),
            [val("y")]
        );
        assert!(e.exists() && e.siblings().len() == 2);
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
        assert!(e.live().next().is_none() && e.exists());
        assert_eq!(e.siblings().len(), 1);
    }

    #[test]
    fn zero_entries_are_dropped() {
        let wire = [("a".to_string(), 0), ("b".to_string(), 2)].into();
        assert_eq!(clock_from_wire(&wire), clock(&[("b", 2)]));
        assert!(covers(&clock(&[("b", 2)]), &clock(&[])));
    }
}
