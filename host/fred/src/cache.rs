//! The sessions a node holds in memory, kept coherent by FReD's trigger feed when it runs.
//!
//! An entry is *fed* when the node can trust it without asking FReD: it was read or written
//! while the feed was live, and every trigger event for that session since then agreed with it
//! (or extended it). Only fed entries skip the reads of a turn; anything doubtful drops the
//! mark or the entry, and the next turn reads FReD as if there were no feed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use discedge_core::store::least_recently_used;

use super::item::{TurnItem, chain};
use super::log::SessionLog;

/// Sessions kept in memory per node; beyond this the least recently used tenth is forgotten
/// (and read again in full if they come back; a turn in flight then reads, never fails).
const CACHED_SESSIONS: usize = 10_000;
/// Trigger events remembered to check reads and commits that overlapped them.
const RECENT_EVENTS: usize = 4096;

/// What a node knows of the sessions it has seen.
#[derive(Default)]
pub(super) struct SessionCache {
    state: Mutex<State>,
    /// Ticks on every use, to forget the least recently used first.
    clock: AtomicU64,
    /// Whether the trigger feed is registered and serving (see [`super::feed`]).
    live: AtomicBool,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Trigger events, newest last: (sequence number, session id, what they said).
    recent: VecDeque<(u64, String, Event)>,
    /// Sequence number of the next event.
    next_event: u64,
}

struct Entry {
    log: SessionLog,
    used: u64,
    fed: bool,
}

/// What a trigger told about one session.
#[derive(Clone)]
enum Event {
    /// A version of turn `turn` was stored; `after` is its chain digest.
    Turn {
        turn: u32,
        after: [u8; 16],
        prev: [u8; 16],
    },
    /// A turn item was deleted (or could not be read).
    Gone,
}

/// Where an operation that reads or writes FReD started, to tell what happened meanwhile.
#[derive(Clone, Copy)]
pub(super) struct Mark(u64);

impl SessionCache {
    pub fn mark(&self) -> Mark {
        Mark(self.state.lock().unwrap().next_event)
    }

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            for entry in self.state.lock().unwrap().entries.values_mut() {
                entry.fed = false;
            }
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// A copy of what this node holds of a session, and whether it is fed.
    pub fn get(&self, session_id: &str) -> Option<(SessionLog, bool)> {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        let entry = state.entries.get_mut(session_id)?;
        entry.used = used;
        Some((entry.log.clone(), entry.fed && self.is_live()))
    }

    pub fn remove(&self, session_id: &str) {
        self.state.lock().unwrap().entries.remove(session_id);
    }

    /// Keeps `log`, read or written since `since`: fed if the feed is live and every event
    /// for this session since then agrees with it.
    pub fn put(&self, session_id: &str, log: SessionLog, since: Mark) {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        let seen_all = state
            .recent
            .front()
            .is_none_or(|(seq, _, _)| *seq <= since.0)
            || state.next_event == since.0;
        let agrees = state
            .recent
            .iter()
            .filter(|(seq, id, _)| *seq >= since.0 && id == session_id)
            .all(|(_, _, event)| match event {
                Event::Turn { turn, after, prev } => log.holds_chain(*turn, prev, after),
                Event::Gone => false,
            });
        let fed = self.is_live() && seen_all && agrees;
        if state.entries.len() >= CACHED_SESSIONS && !state.entries.contains_key(session_id) {
            let oldest = least_recently_used(&state.entries, |e| e.used);
            for id in oldest.into_iter().take(CACHED_SESSIONS / 10) {
                state.entries.remove(&id);
            }
        }
        state
            .entries
            .insert(session_id.to_owned(), Entry { log, used, fed });
    }

    /// Whether the version of `turn` whose chain digest is `ours` (this node's write, begun
    /// after `since`) is the only one this node stored, as the feed tells it: FReD calls the
    /// feed for every version its node stores, ours included, before it answers the Update. So
    /// when our own event is in and no other version of the turn is, a Keys call on this node
    /// would say the same; it is skipped. `None` when the feed cannot tell (not live, events
    /// forgotten, our event missing, a delete meanwhile): then ask the node.
    pub fn alone(&self, session_id: &str, turn: u32, ours: &[u8; 16], since: Mark) -> Option<bool> {
        if !self.is_live() {
            return None;
        }
        let state = self.state.lock().unwrap();
        let seen_all = state
            .recent
            .front()
            .is_none_or(|(seq, _, _)| *seq <= since.0);
        if !seen_all {
            return None;
        }
        let mut saw_ours = false;
        for (_, _, event) in state
            .recent
            .iter()
            .filter(|(seq, id, _)| *seq >= since.0 && id == session_id)
        {
            match event {
                Event::Turn { turn: t, after, .. } if *t == turn => {
                    if after != ours {
                        return Some(false);
                    }
                    saw_ours = true;
                }
                Event::Turn { .. } => {}
                Event::Gone => return None,
            }
        }
        saw_ours.then_some(true)
    }

    /// A trigger said a version of turn `turn` of a session was stored (`value` empty: a
    /// relayed delete). Extends the entry when it is the next turn of its chain, starts one on
    /// turn 1, leaves it when it is the version already held, and drops it otherwise. Returns
    /// the node that wrote the version (`None` for a delete or a value it cannot read), so the
    /// feed tells turns committed elsewhere without decoding the value again.
    pub fn stored(&self, session_id: &str, turn: u32, value: &str) -> Option<String> {
        let item = if value.is_empty() {
            None
        } else {
            TurnItem::decode(value).ok()
        };
        let mut state = self.state.lock().unwrap();
        let event = match &item {
            Some(item) => Event::Turn {
                turn,
                after: chain(&item.prev, value),
                prev: item.prev,
            },
            None => Event::Gone,
        };
        record(&mut state, session_id, event);
        let Some(item) = item else {
            state.entries.remove(session_id);
            return None;
        };
        let writer = item.writer.clone();
        let live = self.is_live();
        let keep = match state.entries.get_mut(session_id) {
            None if turn == 1 && item.prev == [0; 16] => {
                let mut log = SessionLog::default();
                if log.push(item, value).is_ok() {
                    let used = self.clock.fetch_add(1, Ordering::Relaxed);
                    let entry = Entry {
                        log,
                        used,
                        fed: live,
                    };
                    state.entries.insert(session_id.to_owned(), entry);
                }
                true
            }
            None => true,
            Some(entry) if entry.log.holds(turn, &item.prev, value) => true,
            Some(entry) if turn == entry.log.turn() + 1 && item.prev == entry.log.chain => {
                entry.log.push(item, value).is_ok()
            }
            Some(_) => false,
        };
        if !keep {
            state.entries.remove(session_id);
        }
        Some(writer)
    }

    /// A trigger said a turn item of a session was deleted.
    pub fn deleted(&self, session_id: &str) {
        let mut state = self.state.lock().unwrap();
        record(&mut state, session_id, Event::Gone);
        state.entries.remove(session_id);
    }
}

fn record(state: &mut State, session_id: &str, event: Event) {
    let seq = state.next_event;
    state.next_event += 1;
    if state.recent.len() == RECENT_EVENTS {
        state.recent.pop_front();
    }
    state.recent.push_back((seq, session_id.to_owned(), event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Origin;

    fn next(log: &SessionLog, writer: &str) -> (TurnItem, String) {
        let item = TurnItem {
            writer: writer.into(),
            prev: log.chain,
            updated_ms: u64::from(log.turn()),
            prompt_sha256: String::new(),
            reply: "r".into(),
            record: Some(vec![log.turn() as u8]),
            origin: (log.turn() == 0).then(|| Origin {
                user_id: "u".into(),
                mode: "raw".into(),
                created_ms: 0,
            }),
        };
        let value = item.encode();
        (item, value)
    }

    fn live_cache() -> SessionCache {
        let cache = SessionCache::default();
        cache.set_live(true);
        cache
    }

    #[test]
    fn the_feed_builds_and_extends_sessions() {
        let cache = live_cache();
        let mut log = SessionLog::default();
        let mut last = String::new();
        for _ in 0..3 {
            let (item, value) = next(&log, "nodeA");
            cache.stored("s", log.turn() + 1, &value);
            log.push(item, &value).unwrap();
            last = value;
        }
        let (held, fed) = cache.get("s").unwrap();
        assert!(fed);
        assert_eq!(held.chain, log.chain);
        // The same version again (a write's echo) changes nothing.
        cache.stored("s", 3, &last);
        let (held, fed) = cache.get("s").unwrap();
        assert!(fed);
        assert_eq!(held.chain, log.chain);
        cache.stored("t", 2, &last);
        assert!(
            cache.get("t").is_none(),
            "a session seen from its middle is not built"
        );
    }

    #[test]
    fn a_concurrent_version_or_a_gap_or_a_delete_drops_the_entry() {
        let cache = live_cache();
        let mut log = SessionLog::default();
        let (item, one) = next(&log, "nodeA");
        log.push(item, &one).unwrap();
        let (_, mine) = next(&log, "nodeA");
        let (_, theirs) = next(&log, "nodeB");
        cache.put("s", log.clone(), cache.mark());
        cache.stored("s", 2, &mine);
        assert_eq!(cache.get("s").unwrap().0.turn(), 2);
        cache.stored("s", 2, &theirs);
        assert!(cache.get("s").is_none(), "a sibling: read again");

        cache.put("s", log.clone(), cache.mark());
        cache.stored("s", 5, &mine);
        assert!(cache.get("s").is_none(), "a gap");

        cache.put("s", log.clone(), cache.mark());
        cache.stored("s", 1, "");
        assert!(cache.get("s").is_none(), "a relayed delete");
    }

    #[test]
    fn the_feed_tells_whether_a_write_stands_alone() {
        let cache = live_cache();
        let mut log = SessionLog::default();
        let (item, one) = next(&log, "nodeA");
        log.push(item, &one).unwrap();
        let (_, mine) = next(&log, "nodeA");
        let (_, theirs) = next(&log, "nodeB");
        let ours = chain(&log.chain, &mine);

        let since = cache.mark();
        assert_eq!(
            cache.alone("s", 2, &ours, since),
            None,
            "our own event not in yet"
        );
        cache.stored("other", 2, &theirs);
        cache.stored("s", 1, &one);
        cache.stored("s", 2, &mine);
        assert_eq!(cache.alone("s", 2, &ours, since), Some(true));
        cache.stored("s", 2, &theirs);
        assert_eq!(
            cache.alone("s", 2, &ours, since),
            Some(false),
            "a sibling came in"
        );

        let since = cache.mark();
        cache.stored("s", 2, &mine);
        cache.deleted("s");
        assert_eq!(
            cache.alone("s", 2, &ours, since),
            None,
            "deleted meanwhile: ask FReD"
        );

        let since = cache.mark();
        cache.stored("s", 2, &mine);
        cache.set_live(false);
        assert_eq!(
            cache.alone("s", 2, &ours, since),
            None,
            "no feed, no answer"
        );
    }

    #[test]
    fn a_read_that_overlapped_a_disagreeing_event_is_not_fed() {
        let cache = live_cache();
        let mut log = SessionLog::default();
        let (item, one) = next(&log, "nodeA");
        log.push(item, &one).unwrap();
        let since = cache.mark();
        let (_, two) = next(&log, "nodeB");
        cache.stored("s", 2, &two); // arrives while "reading"; no entry yet, so ignored
        cache.put("s", log.clone(), since);
        assert!(!cache.get("s").unwrap().1, "missed turn 2: not trusted");

        let since = cache.mark();
        cache.stored("other", 1, &one);
        cache.put("s", log.clone(), since);
        assert!(
            cache.get("s").unwrap().1,
            "events of other sessions do not matter"
        );

        cache.set_live(false);
        assert!(!cache.get("s").unwrap().1, "no feed, no trust");
    }
}
