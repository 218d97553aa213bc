//! The sessions this process read or wrote lately, so a turn's load needs no database read.
//!
//! This process is the database's only writer (redb locks the file), so every change passes
//! through [`SessionCache::committed`] or [`SessionCache::forget`]: a commit extends the entry
//! it follows, and anything else drops it. A load that read the database fills the cache only
//! if no commit or delete of a session in its shard came meanwhile ([`SessionCache::epoch`]),
//! so an old read never overwrites a newer commit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use crate::store::{Record, SessionHead, StoredSession, least_recently_used};

/// Bytes the cache holds at most (records and heads, see [`weight`]); past it the least
/// recently used go until a quarter is free.
const CACHE_BYTES: usize = 64 << 20;
/// Shards of the change counter: a commit holds back the filling loads of its shard only.
const SHARDS: usize = 64;

/// Recently used sessions, as stored.
pub(super) struct SessionCache {
    state: Mutex<State>,
    hasher: RandomState,
}

struct State {
    sessions: HashMap<String, Cached>,
    bytes: usize,
    /// Ticks on every use, to drop the least recently used first.
    clock: u64,
    /// Commits and deletes so far, per shard of session ids.
    epochs: [u64; SHARDS],
}

struct Cached {
    session: StoredSession,
    used: u64,
}

impl SessionCache {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                bytes: 0,
                clock: 0,
                epochs: [0; SHARDS],
            }),
            hasher: RandomState::new(),
        }
    }

    /// The session as last committed, if the cache holds it (a shared copy: records are
    /// reference-counted).
    pub(super) fn get(&self, id: &str) -> Option<StoredSession> {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let cached = state.sessions.get_mut(id)?;
        cached.used = clock;
        Some(cached.session.clone())
    }

    /// The head of the session as last committed, if the cache holds it (for a commit's
    /// turn check; not a use, so the session does not move up the eviction order).
    pub(super) fn head(&self, id: &str) -> Option<SessionHead> {
        Some(self.lock().sessions.get(id)?.session.head.clone())
    }

    /// The change count of `id`'s shard, taken before a database read that may fill.
    pub(super) fn epoch(&self, id: &str) -> u64 {
        let shard = self.shard(id);
        self.lock().epochs[shard]
    }

    /// Keeps a session read from the database, unless its shard changed since `epoch`.
    pub(super) fn fill(&self, id: &str, epoch: u64, session: &StoredSession) {
        let shard = self.shard(id);
        let mut state = self.lock();
        if state.epochs[shard] == epoch {
            state.insert(id, session.clone());
        }
    }

    /// A committed turn: extends the cached session it follows; otherwise the cache keeps
    /// only what it can know whole (a first turn), and drops the rest.
    pub(super) fn committed(&self, id: &str, head: &SessionHead, record: Option<&Record>) {
        let shard = self.shard(id);
        let mut state = self.lock();
        state.epochs[shard] += 1;
        let follows = |s: &StoredSession| {
            s.head.turn + 1 == head.turn
                && s.head.records + u32::from(record.is_some()) == head.records
        };
        let mut records = match state.remove(id) {
            Some(session) if follows(&session) => session.records,
            _ if head.turn == 1 && head.records == u32::from(record.is_some()) => Vec::new(),
            _ => return,
        };
        records.extend(record.cloned());
        let head = head.clone();
        state.insert(id, StoredSession { head, records });
    }

    /// A deleted session (or one whose commit failed in a way that leaves doubt).
    pub(super) fn forget(&self, id: &str) {
        let shard = self.shard(id);
        let mut state = self.lock();
        state.epochs[shard] += 1;
        state.remove(id);
    }

    fn shard(&self, id: &str) -> usize {
        (self.hasher.hash_one(id) % SHARDS as u64) as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned cache is still a valid cache.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn insert(&mut self, id: &str, session: StoredSession) {
        self.remove(id);
        self.clock += 1;
        self.bytes += weight(&session);
        let used = self.clock;
        self.sessions
            .insert(id.to_owned(), Cached { session, used });
        if self.bytes > CACHE_BYTES {
            self.shrink();
        }
    }

    fn remove(&mut self, id: &str) -> Option<StoredSession> {
        let cached = self.sessions.remove(id)?;
        self.bytes -= weight(&cached.session);
        Some(cached.session)
    }

    /// Drops the least recently used sessions until a quarter of the budget is free.
    fn shrink(&mut self) {
        for id in least_recently_used(&self.sessions, |c| c.used) {
            if self.bytes <= CACHE_BYTES / 4 * 3 {
                break;
            }
            self.remove(&id);
        }
    }
}

/// What a cached session costs: its records, its head's stored reply, and a little for the
/// rest, so many small sessions count too.
fn weight(session: &StoredSession) -> usize {
    session.bytes() + session.head.last_reply.len() + 256
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::head;

    fn rec(bytes: &[u8]) -> Record {
        Record::copy_from_slice(bytes)
    }

    fn session(turn: u32, records: &[&[u8]]) -> StoredSession {
        StoredSession {
            head: head(turn, records.len() as u32),
            records: records.iter().map(|r| Record::copy_from_slice(r)).collect(),
        }
    }

    #[test]
    fn commits_build_the_session_from_its_first_turn() {
        let cache = SessionCache::new();
        cache.committed("s", &head(1, 1), Some(&rec(b"one")));
        cache.committed("s", &head(2, 2), Some(&rec(b"two")));
        cache.committed("s", &head(3, 2), None);
        let s = cache.get("s").unwrap();
        assert_eq!(s.head, head(3, 2));
        assert_eq!(s.records, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_commit_that_does_not_follow_the_cached_session_drops_it() {
        let cache = SessionCache::new();
        cache.committed("s", &head(1, 1), Some(&rec(b"one")));
        // Turn 2 never reached the cache (e.g. written before it was filled).
        cache.committed("s", &head(3, 3), Some(&rec(b"three")));
        assert!(cache.get("s").is_none());
    }

    #[test]
    fn a_read_that_a_commit_overtook_does_not_fill() {
        let cache = SessionCache::new();
        let epoch = cache.epoch("s");
        // The read saw turn 1; meanwhile turn 2 was committed (and not cached: no entry).
        cache.committed("s", &head(2, 2), Some(&rec(b"two")));
        cache.fill("s", epoch, &session(1, &[b"one"]));
        assert!(cache.get("s").is_none(), "a stale read must not fill");
        let epoch = cache.epoch("s");
        cache.fill("s", epoch, &session(2, &[b"one", b"two"]));
        assert_eq!(cache.get("s").unwrap().head.turn, 2);
    }

    #[test]
    fn forgetting_drops_and_holds_back_older_reads() {
        let cache = SessionCache::new();
        cache.committed("s", &head(1, 1), Some(&rec(b"one")));
        let epoch = cache.epoch("s");
        cache.forget("s");
        cache.fill("s", epoch, &session(1, &[b"one"]));
        assert!(cache.get("s").is_none());
    }

    #[test]
    fn the_least_recently_used_go_past_the_budget() {
        let cache = SessionCache::new();
        // Eight fit with their heads; a ninth does not.
        let big = Record::from(vec![0u8; CACHE_BYTES / 8 - 1024]);
        for i in 0..8 {
            cache.committed(&format!("s{i}"), &head(1, 1), Some(&big));
        }
        assert!(
            cache.get("s0").is_some(),
            "s0 is now the most recently used"
        );
        cache.committed("s8", &head(1, 1), Some(&big));
        let state = cache.lock();
        assert!(state.bytes <= CACHE_BYTES / 4 * 3, "{}", state.bytes);
        assert!(state.sessions.contains_key("s0") && state.sessions.contains_key("s8"));
        assert!(!state.sessions.contains_key("s1"));
    }
}
