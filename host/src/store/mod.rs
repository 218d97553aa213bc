//! Where sessions live between turns.
//!
//! A session is a small [`SessionHead`] plus an append-only log of opaque per-turn records
//! written by the session's policy. Stores never interpret records, so a new policy needs no
//! store change, and a store can replicate one record per turn instead of the whole context.

mod embedded;
pub mod fred;
mod memory;

pub use embedded::EmbeddedStore;
pub use fred::FredStore;
pub use memory::MemoryStore;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Everything about a session except its records; rewritten on every committed turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHead {
    /// The user that created the session; no one else may read or extend it.
    pub user_id: String,
    /// The policy (mode) that wrote the records; records of one policy mean nothing to another.
    pub mode: String,
    /// The last committed turn (1-based).
    pub turn: u32,
    /// How many records the log holds (a policy may commit a turn without a record).
    pub records: u32,
    /// SHA-256 of the last turn's prompt (first 16 bytes, hex), to recognise a client's retry.
    pub last_prompt_sha256: String,
    /// The last turn's reply as returned to the client, replayed on a retry without calling the model.
    pub last_reply: String,
    /// Unix milliseconds of the first and the latest commit.
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A turn committed on another node: the session and the turn number it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTurn {
    pub session_id: String,
    pub turn: u32,
}

/// A session as loaded for a turn: its head and all its records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub head: SessionHead,
    pub records: Vec<Vec<u8>>,
}

impl StoredSession {
    /// The session's context as stored: the sum of its records' bytes.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }
}

/// Why a store call failed; none of these leave a session half-written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone committed this session's turn first (another node, or a race the lock missed).
    #[error("session was changed concurrently: stored turn is {stored_turn}")]
    Conflict { stored_turn: u32 },
    /// The store cannot be reached or failed to write; retrying later may work.
    #[error("context store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be read back; needs an operator.
    #[error("stored session is corrupt: {0}")]
    Corrupt(String),
}

/// The seam between the proxy and where context is kept (embedded on disk, in memory, FReD).
#[async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// Loads a session's head and records, or `None` if it was never committed.
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, StoreError>;

    /// Loads a session for its turn `turn`: a store that can tell its in-memory copy is
    /// current for that turn may skip reading. By default, [`ContextStore::load`].
    async fn load_for_turn(
        &self,
        session_id: &str,
        turn: u32,
    ) -> Result<Option<StoredSession>, StoreError> {
        let _ = turn;
        self.load(session_id).await
    }

    /// Lets go of what the store holds outside this process (e.g. a FReD trigger
    /// registration) when the proxy shuts down. By default, nothing.
    async fn close(&self) {}

    /// Commits one turn atomically: appends `record` (if any) as the next record and replaces
    /// the head, but only if the stored turn is still `head.turn - 1`; otherwise nothing changes
    /// and the result is [`StoreError::Conflict`]. Only the delta is written, never the history.
    /// Returns the bytes written (what a replicating store sends to its peers).
    async fn commit_turn(
        &self,
        session_id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError>;

    /// Removes a session and its records; `false` if there was none. With FReD the deletion
    /// replicates like a write.
    async fn delete(&self, session_id: &str) -> Result<bool, StoreError>;

    /// The sessions `user_id` created, with their heads, most recently updated first (ties in
    /// session id order). A session enters this list with its first committed turn and leaves
    /// it when deleted; another user's sessions are never listed.
    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError>;

    /// Turns other nodes commit, as this store hears of them (FReD's trigger feed), so the
    /// proxy can warm its model's prompt cache for a client that may roam here. `None` when
    /// it hears of none (a single-node store, or FReD without the feed).
    fn remote_turns(&self) -> Option<tokio::sync::broadcast::Receiver<RemoteTurn>> {
        None
    }

    /// A short name for logs and `/health` (e.g. "embedded", "memory").
    fn kind(&self) -> &'static str;

    /// True when other nodes write the same sessions, so a turn that seems ahead of the store
    /// may just be replication in flight and is worth waiting for.
    fn replicated(&self) -> bool {
        false
    }
}

/// What a commit writes when a store keeps heads as JSON: the head and the record.
pub(crate) fn delta_bytes(head: &SessionHead, record: Option<&[u8]>) -> u64 {
    let head = serde_json::to_vec(head).map_or(0, |h| h.len());
    (head + record.map_or(0, <[u8]>::len)) as u64
}

/// Sorts a user's sessions as [`ContextStore::sessions_of`] returns them.
pub(crate) fn newest_first(sessions: &mut [(String, SessionHead)]) {
    sessions.sort_by(|(a_id, a), (b_id, b)| {
        b.updated_ms.cmp(&a.updated_ms).then_with(|| a_id.cmp(b_id))
    });
}

/// Checks the precondition every store shares: the stored turn must be the one before `head.turn`.
pub(crate) fn check_next_turn(
    stored: Option<&SessionHead>,
    head: &SessionHead,
) -> Result<(), StoreError> {
    let stored_turn = stored.map_or(0, |h| h.turn);
    if stored_turn + 1 == head.turn {
        Ok(())
    } else {
        Err(StoreError::Conflict { stored_turn })
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! One set of checks every [`ContextStore`] must pass.
    use super::*;

    pub fn head(turn: u32, records: u32) -> SessionHead {
        SessionHead {
            user_id: "alice".into(),
            mode: "raw".into(),
            turn,
            records,
            last_prompt_sha256: format!("sha{turn}"),
            last_reply: format!("{{\"content\":\"reply {turn}\"}}"),
            created_ms: 1,
            updated_ms: turn as u64,
        }
    }

    pub async fn appends_and_loads(store: &dyn ContextStore) {
        assert!(store.load("s1").await.unwrap().is_none());
        store
            .commit_turn("s1", &head(1, 1), Some(b"one"))
            .await
            .unwrap();
        store.commit_turn("s1", &head(2, 1), None).await.unwrap();
        store
            .commit_turn("s1", &head(3, 2), Some(b"three"))
            .await
            .unwrap();
        let s = store.load("s1").await.unwrap().unwrap();
        assert_eq!(s.head, head(3, 2));
        assert_eq!(s.records, vec![b"one".to_vec(), b"three".to_vec()]);
        assert!(
            store.load("s2").await.unwrap().is_none(),
            "sessions are separate"
        );
    }

    pub async fn deletes(store: &dyn ContextStore) {
        store
            .commit_turn("s1", &head(1, 1), Some(b"one"))
            .await
            .unwrap();
        store
            .commit_turn("s2", &head(1, 1), Some(b"other"))
            .await
            .unwrap();
        assert!(store.delete("s1").await.unwrap());
        assert!(store.load("s1").await.unwrap().is_none());
        assert!(
            !store.delete("s1").await.unwrap(),
            "a second delete finds nothing"
        );
        store
            .commit_turn("s1", &head(1, 1), Some(b"anew"))
            .await
            .unwrap();
        assert_eq!(
            store.load("s1").await.unwrap().unwrap().records,
            vec![b"anew".to_vec()],
            "a new session starts clean"
        );
        assert_eq!(
            store.load("s2").await.unwrap().unwrap().records,
            vec![b"other".to_vec()]
        );
    }

    pub async fn refuses_out_of_order_turns(store: &dyn ContextStore) {
        let err = store
            .commit_turn("s1", &head(2, 1), Some(b"x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { stored_turn: 0 }),
            "{err}"
        );
        store
            .commit_turn("s1", &head(1, 1), Some(b"one"))
            .await
            .unwrap();
        let err = store
            .commit_turn("s1", &head(1, 2), Some(b"again"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { stored_turn: 1 }),
            "{err}"
        );
        let s = store.load("s1").await.unwrap().unwrap();
        assert_eq!(
            s.records,
            vec![b"one".to_vec()],
            "a refused commit appends nothing"
        );
    }

    fn head_of(user: &str, turn: u32, updated_ms: u64) -> SessionHead {
        SessionHead {
            user_id: user.into(),
            updated_ms,
            ..head(turn, turn)
        }
    }

    fn ids(sessions: &[(String, SessionHead)]) -> Vec<&str> {
        sessions.iter().map(|(id, _)| id.as_str()).collect()
    }

    pub async fn lists_a_users_sessions(store: &dyn ContextStore) {
        assert!(store.sessions_of("alice").await.unwrap().is_empty());
        let a1 = head_of("alice", 1, 10);
        store.commit_turn("a1", &a1, Some(b"one")).await.unwrap();
        store
            .commit_turn("b1", &head_of("bob", 1, 20), Some(b"bob's"))
            .await
            .unwrap();
        store
            .commit_turn("a2", &head_of("alice", 1, 5), Some(b"two"))
            .await
            .unwrap();
        let alice = store.sessions_of("alice").await.unwrap();
        assert_eq!(ids(&alice), ["a1", "a2"], "most recently updated first");
        assert_eq!(alice[0].1, a1, "with their heads");

        // A later turn moves a session to the front.
        let a2 = head_of("alice", 2, 30);
        store
            .commit_turn("a2", &a2, Some(b"two, again"))
            .await
            .unwrap();
        let alice = store.sessions_of("alice").await.unwrap();
        assert_eq!(ids(&alice), ["a2", "a1"]);
        assert_eq!(alice[0].1, a2, "the head of the latest turn");

        let bob = store.sessions_of("bob").await.unwrap();
        assert_eq!(ids(&bob), ["b1"], "another user's sessions are not listed");
        assert!(store.sessions_of("carol").await.unwrap().is_empty());
        assert!(
            store.sessions_of("ali").await.unwrap().is_empty(),
            "no prefix matches"
        );

        assert!(store.delete("a2").await.unwrap());
        assert_eq!(ids(&store.sessions_of("alice").await.unwrap()), ["a1"]);
        assert!(store.delete("b1").await.unwrap());
        assert!(store.sessions_of("bob").await.unwrap().is_empty());
        assert_eq!(
            ids(&store.sessions_of("alice").await.unwrap()),
            ["a1"],
            "deleting bob's session leaves alice's"
        );

        // A deleted id taken again by another user belongs to that user only.
        store
            .commit_turn("a2", &head_of("bob", 1, 40), Some(b"bob's again"))
            .await
            .unwrap();
        assert_eq!(ids(&store.sessions_of("alice").await.unwrap()), ["a1"]);
        assert_eq!(ids(&store.sessions_of("bob").await.unwrap()), ["a2"]);
    }
}
