//! Changes that are durable in the journal but not yet in the database, kept in memory so a
//! turn's commit costs one journal write and no database pages.
//!
//! Two layers at most: `pending` (journaled since the last checkpoint began) and `flushing`
//! (the checkpoint under way, writing its frames to the database). A read puts them over
//! what the database holds. The database records the last frame it holds (its mark, written
//! by each checkpoint in the same transaction), so a read that began after a checkpoint's
//! commit skips the layer that commit already holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::{Record, SessionHead, StoreError, StoredSession};

/// What the layers hold for one session, relative to what is below them.
#[derive(Clone, Debug)]
pub(super) struct Change {
    /// The session was deleted first: what lies below no longer counts.
    pub(super) reset: bool,
    /// The head after the change; `None` when the session ends deleted.
    pub(super) head: Option<SessionHead>,
    /// Records the session has below the change (the number of `tail[0]`).
    pub(super) first: u32,
    /// Records appended by the change (shared with the cache, not copied).
    pub(super) tail: Vec<Record>,
}

impl Change {
    /// A turn that follows a session holding `below` records.
    pub(super) fn turn(below: u32, head: SessionHead, record: Option<Record>) -> Self {
        Self {
            reset: false,
            head: Some(head),
            first: below,
            tail: record.into_iter().collect(),
        }
    }

    /// A delete.
    pub(super) fn delete() -> Self {
        Self {
            reset: true,
            head: None,
            first: 0,
            tail: Vec::new(),
        }
    }

    /// Folds in a later change of the same session (one that follows this one's head).
    pub(super) fn then(&mut self, later: Change) {
        if later.reset {
            *self = later;
        } else {
            self.tail.extend(later.tail);
            self.head = later.head;
        }
    }

    /// The session as it is after this change, over `below`.
    pub(super) fn over(
        &self,
        below: Option<StoredSession>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let mut records = match below {
            Some(below) if !self.reset => below.records,
            _ => Vec::new(),
        };
        if records.len() != self.first as usize {
            return Err(StoreError::Corrupt(format!(
                "a journaled change follows record {}, the store below holds {}",
                self.first,
                records.len()
            )));
        }
        records.extend(self.tail.iter().cloned());
        Ok(Some(StoredSession {
            head: head.clone(),
            records,
        }))
    }
}

/// The changes of a run of journal frames.
#[derive(Default)]
pub(super) struct Layer {
    pub(super) changes: HashMap<String, Change>,
    /// The last frame whose changes the layer holds (0: none).
    pub(super) last_seq: u64,
}

impl Layer {
    /// Adds a change of frame `seq`.
    pub(super) fn add(&mut self, id: String, change: Change, seq: u64) {
        match self.changes.get_mut(&id) {
            Some(held) => held.then(change),
            None => {
                self.changes.insert(id, change);
            }
        }
        self.last_seq = seq;
    }
}

/// The changes not yet in the database, bottom (older) layer first when both exist.
#[derive(Default)]
pub(super) struct Layers {
    pub(super) pending: Layer,
    pub(super) flushing: Option<Arc<Layer>>,
}

/// A layer's change of one session with the layer's last frame, taken to be put over a
/// database read (see [`settle`]).
pub(super) type Seen = (u64, Change);

impl Layers {
    /// The newest head the layers know for `id`: `Some(None)` if they hold its delete,
    /// `None` if they hold nothing of it (the database has its newest state).
    pub(super) fn head(&self, id: &str) -> Option<Option<SessionHead>> {
        let change = self
            .pending
            .changes
            .get(id)
            .or_else(|| self.flushing.as_ref()?.changes.get(id))?;
        Some(change.head.clone())
    }

    /// The layers' changes of `id`, bottom first.
    pub(super) fn changes_of(&self, id: &str) -> Vec<Seen> {
        self.bottom_up()
            .filter_map(|layer| Some((layer.last_seq, layer.changes.get(id)?.clone())))
            .collect()
    }

    /// Every session's newest head in each layer, bottom first, for listing `user`'s: the
    /// head if the session is `user`'s, `None` if it is deleted or someone else's.
    pub(super) fn heads_of(&self, user: &str) -> Vec<(u64, String, Option<SessionHead>)> {
        self.bottom_up()
            .flat_map(|layer| {
                layer.changes.iter().map(|(id, c)| {
                    let head = c.head.as_ref().filter(|h| h.user_id == user).cloned();
                    (layer.last_seq, id.clone(), head)
                })
            })
            .collect()
    }

    fn bottom_up(&self) -> impl Iterator<Item = &Layer> {
        self.flushing
            .as_deref()
            .into_iter()
            .chain(std::iter::once(&self.pending))
    }
}

/// Locks the layers.
pub(super) fn lock(layers: &Mutex<Layers>) -> MutexGuard<'_, Layers> {
    // Nothing panics while holding it; poisoned layers are still valid layers.
    layers.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts the changes seen in the layers over a database read whose mark was `mark`,
/// skipping those of a layer the database already held.
pub(super) fn settle(
    mut session: Option<StoredSession>,
    mark: u64,
    seen: Vec<Seen>,
) -> Result<Option<StoredSession>, StoreError> {
    for (last_seq, change) in seen {
        if last_seq > mark {
            session = change.over(session)?;
        }
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::head;

    fn record(bytes: &[u8]) -> Option<Record> {
        Some(Record::copy_from_slice(bytes))
    }

    #[test]
    fn turns_fold_and_settle_over_the_database() {
        let stored = StoredSession {
            head: head(1, 1),
            records: vec![Record::from_static(b"one")],
        };
        let mut change = Change::turn(1, head(2, 2), record(b"two"));
        change.then(Change::turn(2, head(3, 3), record(b"three")));
        let session = settle(Some(stored.clone()), 0, vec![(5, change.clone())])
            .unwrap()
            .unwrap();
        assert_eq!(session.head, head(3, 3));
        assert_eq!(session.records, [&b"one"[..], b"two", b"three"]);
        // A database that already holds frame 5 is newer than the layer: nothing is added.
        let session = settle(Some(stored.clone()), 5, vec![(5, change.clone())]).unwrap();
        assert_eq!(session, Some(stored.clone()));
        // A change over a database that does not hold what it follows is caught, not guessed.
        assert!(matches!(
            settle(None, 0, vec![(5, change)]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_delete_hides_what_is_below_and_a_new_session_starts_over() {
        let stored = StoredSession {
            head: head(4, 4),
            records: vec![Record::from_static(b"old"); 4],
        };
        let mut change = Change::delete();
        assert_eq!(
            settle(Some(stored.clone()), 0, vec![(3, change.clone())]).unwrap(),
            None
        );
        change.then(Change::turn(0, head(1, 1), record(b"new")));
        let session = settle(Some(stored), 0, vec![(3, change)]).unwrap().unwrap();
        assert_eq!(session.records, [&b"new"[..]]);
    }

    #[test]
    fn the_pending_layer_answers_before_the_flushing_one() {
        let mut flushing = Layer::default();
        flushing.add("s".into(), Change::turn(0, head(1, 1), record(b"a")), 1);
        let mut layers = Layers {
            flushing: Some(Arc::new(flushing)),
            ..Layers::default()
        };
        assert_eq!(layers.head("s"), Some(Some(head(1, 1))));
        assert_eq!(layers.head("t"), None);
        layers.pending.add("s".into(), Change::delete(), 2);
        assert_eq!(layers.head("s"), Some(None));
        let seen = layers.changes_of("s");
        assert_eq!(seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(settle(None, 0, seen).unwrap(), None);
    }
}
