//! Where sessions live between turns.
//!
//! A session is a small [`SessionHead`] plus an append-only log of opaque per-turn records
//! written by the session's policy. Stores never interpret records, so a new policy needs no
//! store change, and a store can replicate one record per turn instead of the whole context.

mod embedded;
mod memory;

pub use embedded::EmbeddedStore;
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

/// One record as stored: shared, not copied, between a store's cache, the turn and the
/// policy call (whose input is lowered into the guest straight from it).
pub type Record = bytes::Bytes;

/// A session as loaded for a turn: its head and all its records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub head: SessionHead,
    pub records: Vec<Record>,
}

impl StoredSession {
    /// The session's context as stored: the sum of its records' bytes.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(Record::len).sum()
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

/// The ids of a store's in-memory sessions, least recently used first (`used` ticks up on
/// every use), for a cache that must let some go.
pub fn least_recently_used<V>(
    entries: &std::collections::HashMap<String, V>,
    used: impl Fn(&V) -> u64,
) -> Vec<String> {
    let mut by_use: Vec<(u64, &String)> = entries.iter().map(|(id, e)| (used(e), id)).collect();
    by_use.sort_unstable();
    by_use.into_iter().map(|(_, id)| id.clone()).collect()
}

/// Sorts a user's sessions as [`ContextStore::sessions_of`] returns them.
pub fn newest_first(sessions: &mut [(String, SessionHead)]) {
    sessions.sort_by(|(a_id, a), (b_id, b)| {
        b.updated_ms.cmp(&a.updated_ms).then_with(|| a_id.cmp(b_id))
    });
}

/// Checks the precondition every store shares: the stored turn must be the one before `head.turn`.
pub fn check_next_turn(stored: Option<&SessionHead>, head: &SessionHead) -> Result<(), StoreError> {
    let stored_turn = stored.map_or(0, |h| h.turn);
    if stored_turn + 1 == head.turn {
        Ok(())
    } else {
        Err(StoreError::Conflict { stored_turn })
    }
}

/// The checks every store must pass (tests only).
#[cfg(any(test, feature = "contract"))]
pub mod contract;
