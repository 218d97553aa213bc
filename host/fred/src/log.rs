//! A session as a node knows it: the chain of turn items it has resolved, folded into the
//! head and records the proxy works with.

use fred_proto::{Item, Version};

use super::item::{Digest, TurnItem, chain, wins_over};
use discedge_core::store::{Record, SessionHead, StoreError, StoredSession};

/// The resolved chain of one session, turn 1 to [`SessionLog::turn`].
#[derive(Clone, Debug, Default)]
pub(super) struct SessionLog {
    /// `None` while no turn is known (a new, deleted or not yet replicated session).
    pub head: Option<SessionHead>,
    /// Shared with every turn that loads the session (no copy per turn).
    pub records: Vec<Record>,
    /// Chain digest of every resolved turn (all zero for none).
    pub chain: Digest,
    /// The chain digest after each turn (16 bytes a turn): tells which version of any turn
    /// this log holds, e.g. whether turn 1 changed (a session deleted and begun anew) or a
    /// version announced by the trigger feed is the one already here.
    pub chains: Vec<Digest>,
    /// Versions this node holds of the next turn's item that do not extend this chain (a
    /// losing branch's, or a deleted session's tombstone). The next commit names them, as
    /// FReD only lets an Update replace versions it names.
    pub next_versions: Vec<Version>,
}

impl SessionLog {
    /// The last resolved turn, 0 for none.
    pub fn turn(&self) -> u32 {
        self.head.as_ref().map_or(0, |h| h.turn)
    }

    /// The session as the proxy sees it, if it has any turn.
    pub fn stored(&self) -> Option<StoredSession> {
        Some(StoredSession {
            head: self.head.clone()?,
            records: self.records.clone(),
        })
    }

    /// The version of the next turn that every node picks from `versions` (FReD siblings of
    /// one item): among the live ones that extend this chain, the one [`wins_over`] the rest.
    /// `None` if none extends it (the chain ends here).
    pub fn resolve<'a>(
        &self,
        versions: &'a [Item],
    ) -> Result<Option<(TurnItem, &'a str)>, StoreError> {
        resolve(&self.chain, versions)
    }

    /// The chain digest before turn `turn` (1-based; all zero before turn 1).
    fn before(&self, turn: u32) -> Digest {
        match turn {
            0 | 1 => [0; 16],
            t => self.chains.get(t as usize - 2).copied().unwrap_or([0; 16]),
        }
    }

    /// Whether the last turn this log holds still wins among `versions` of its item: a
    /// version this node could not see when it committed may since have arrived and won.
    pub fn last_turn_holds(&self, versions: &[Item]) -> Result<bool, StoreError> {
        let prev = self.before(self.turn());
        Ok(resolve(&prev, versions)?.is_some_and(|(_, value)| chain(&prev, value) == self.chain))
    }

    /// Whether `value`, a stored version of turn `turn`, is the one this log holds there.
    pub fn holds(&self, turn: u32, prev: &Digest, value: &str) -> bool {
        self.holds_chain(turn, prev, &chain(prev, value))
    }

    /// [`SessionLog::holds`] for a version known by its chain digest `after`.
    pub fn holds_chain(&self, turn: u32, prev: &Digest, after: &Digest) -> bool {
        turn >= 1 && self.chains.get(turn as usize - 1) == Some(after) && self.before(turn) == *prev
    }

    /// The versions an Update of the next turn names: none known there, one empty clock
    /// (create-if-absent); else exactly the versions seen there, which it may replace.
    pub fn next_turn_versions(&self) -> Vec<Version> {
        if self.next_versions.is_empty() {
            vec![Version::default()]
        } else {
            self.next_versions.clone()
        }
    }

    /// Appends the next turn (already resolved), as stored in `value`.
    pub fn push(&mut self, item: TurnItem, value: &str) -> Result<(), StoreError> {
        let mut head = match (self.head.take(), item.origin) {
            (Some(head), _) => SessionHead {
                turn: head.turn + 1,
                ..head
            },
            (None, Some(origin)) => SessionHead {
                user_id: origin.user_id,
                mode: origin.mode,
                turn: 1,
                records: 0,
                last_prompt_sha256: String::new(),
                last_reply: String::new(),
                created_ms: origin.created_ms,
                updated_ms: 0,
            },
            (None, None) => {
                return Err(StoreError::Corrupt(
                    "a session's first turn item names no owner".into(),
                ));
            }
        };
        head.updated_ms = item.updated_ms;
        head.last_prompt_sha256 = item.prompt_sha256;
        head.last_reply = item.reply;
        if let Some(record) = item.record {
            self.records.push(Record::from(record));
            head.records += 1;
        }
        self.head = Some(head);
        self.chain = chain(&self.chain, value);
        self.chains.push(self.chain);
        self.next_versions.clear();
        Ok(())
    }
}

/// The winner among the live `versions` of one turn item that extend `previous`.
fn resolve<'a>(
    previous: &Digest,
    versions: &'a [Item],
) -> Result<Option<(TurnItem, &'a str)>, StoreError> {
    let mut best: Option<(TurnItem, &str)> = None;
    for version in versions.iter().filter(|v| !v.val.is_empty()) {
        let item = TurnItem::decode(&version.val)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", version.id)))?;
        if &item.prev != previous {
            continue;
        }
        let value = version.val.as_str();
        if best
            .as_ref()
            .is_none_or(|(b, bv)| wins_over((&item, value), (b, bv)))
        {
            best = Some((item, value));
        }
    }
    Ok(best)
}

/// The versions of `items`, for an Update that must name them.
pub(super) fn versions_of(items: &[Item]) -> Vec<Version> {
    items
        .iter()
        .map(|i| i.version.clone().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Origin;

    fn turn(log: &SessionLog, writer: &str, record: &[u8]) -> (TurnItem, String) {
        let item = TurnItem {
            writer: writer.into(),
            prev: log.chain,
            updated_ms: 10 + u64::from(log.turn()),
            prompt_sha256: "p".into(),
            reply: format!("reply {}", log.turn() + 1),
            record: Some(record.to_vec()),
            origin: (log.turn() == 0).then(|| Origin {
                user_id: "alice".into(),
                mode: "raw".into(),
                created_ms: 1,
            }),
        };
        let value = item.encode();
        (item, value)
    }

    fn version(id: &str, value: &str) -> Item {
        Item {
            id: id.into(),
            val: value.into(),
            version: None,
        }
    }

    #[test]
    fn turns_fold_into_head_and_records() {
        let mut log = SessionLog::default();
        let (a, va) = turn(&log, "nodeA", b"one");
        log.push(a, &va).unwrap();
        let (b, vb) = turn(&log, "nodeB", b"two");
        log.push(b, &vb).unwrap();
        let s = log.stored().unwrap();
        assert_eq!((s.head.turn, s.head.records), (2, 2));
        assert_eq!(s.head.user_id, "alice");
        assert_eq!(s.head.last_reply, "reply 2");
        assert_eq!((s.head.created_ms, s.head.updated_ms), (1, 11));
        assert_eq!(s.records, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn siblings_resolve_alike_in_any_order_and_other_branches_are_skipped() {
        let mut log = SessionLog::default();
        let (a, va) = turn(&log, "nodeA", b"one");
        log.push(a, &va).unwrap();
        let (_, mine) = turn(&log, "nodeA", b"a's two");
        let (_, theirs) = turn(&log, "nodeB", b"b's two");
        let mut elsewhere = SessionLog::default();
        let (x, vx) = turn(&elsewhere, "nodeC", b"another session's one");
        elsewhere.push(x, &vx).unwrap();
        let (_, orphan) = turn(&elsewhere, "nodeZ", b"not on this chain");
        let items = [
            version("k", &mine),
            version("k", ""),
            version("k", &orphan),
            version("k", &theirs),
        ];
        let mut reversed = items.clone();
        reversed.reverse();
        let pick = |items: &[Item]| log.resolve(items).unwrap().unwrap().1.to_owned();
        assert_eq!(pick(&items), theirs, "nodeB's version wins");
        assert_eq!(pick(&reversed), theirs, "whatever the order");
        assert!(
            log.resolve(&[version("k", &orphan), version("k", "")])
                .unwrap()
                .is_none()
        );
        assert!(log.resolve(&[version("k", "garbage!")]).is_err());

        let mut lost = log.clone();
        let (item, value) = turn(&lost, "nodeA", b"a's two");
        lost.push(item, &value).unwrap();
        assert!(lost.last_turn_holds(&[version("k", &mine)]).unwrap());
        assert!(
            !lost.last_turn_holds(&items).unwrap(),
            "nodeB's version arrived and won"
        );
        assert!(lost.holds(2, &log.chain, &mine));
        assert!(!lost.holds(2, &log.chain, &theirs));
        assert!(lost.holds(1, &[0; 16], &va), "turn 1 too");
        assert!(!lost.holds(3, &lost.chain, &mine), "not a turn it has");
    }
}
