//! Loading a session for a turn: its owner, idle expiry, waiting for replication to catch up,
//! the size limit, and deleting it.

use std::time::{Duration, Instant};

use super::errors::unknown_session;
use super::{Proxy, unix_ms};
use crate::error::{Error, Kind};
use crate::store::{SessionHead, StoredSession};

impl Proxy {
    pub(super) fn check_size(&self, session_id: &str, stored: &StoredSession) -> Result<(), Error> {
        let size = stored.bytes();
        if size <= self.defaults.max_session_bytes {
            return Ok(());
        }
        Err(Error::new(
            Kind::TooLarge,
            "session_too_large",
            format!(
                "session {session_id:?} holds {size} bytes of context, more than the {} allowed; start a new session",
                self.defaults.max_session_bytes
            ),
        ))
    }

    /// Deletes a session of `user_id`; another user's session is reported as unknown.
    pub async fn delete_session(&self, session_id: &str, user_id: &str) -> Result<(), Error> {
        let _lock = self.locks.lock(session_id).await;
        self.load_owned(session_id, user_id).await?;
        self.store.delete(session_id).await?;
        tracing::info!(session_id, "session deleted");
        Ok(())
    }

    /// A live session of `user_id`; one that is gone, expired or another user's is unknown.
    pub(super) async fn load_owned(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<StoredSession, Error> {
        let stored = self.store.load(session_id).await?;
        match self.unless_idle(session_id, stored).await? {
            Some(stored) if stored.head.user_id == user_id => Ok(stored),
            _ => Err(unknown_session(session_id)),
        }
    }

    /// Drops a session that has been idle past `session_idle`, as if it never existed.
    pub(super) async fn unless_idle(
        &self,
        session_id: &str,
        stored: Option<StoredSession>,
    ) -> Result<Option<StoredSession>, Error> {
        let (Some(idle), Some(session)) = (self.defaults.session_idle, &stored) else {
            return Ok(stored);
        };
        if !self.expired(&session.head) {
            return Ok(stored);
        }
        tracing::info!(session_id, "session expired after {idle:?} idle");
        self.store.delete(session_id).await?;
        Ok(None)
    }

    /// Whether a session has been idle past `session_idle`, and so no longer counts.
    pub(super) fn expired(&self, head: &SessionHead) -> bool {
        self.defaults
            .session_idle
            .is_some_and(|idle| head.updated_ms + (idle.as_millis() as u64) < unix_ms())
    }

    /// Loads a session; on a replicated store, waits (bounded, with backoff) while the stored
    /// turn is behind the one asked for, since the previous turn may still be on its way from
    /// another node. A repeated or stale turn is not lag and returns at once.
    pub(super) async fn load_caught_up(
        &self,
        session_id: &str,
        turn: u32,
    ) -> Result<Option<StoredSession>, Error> {
        let deadline = Instant::now() + self.defaults.sync_wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let stored = self.store.load_for_turn(session_id, turn).await?;
            let stored_turn = stored.as_ref().map_or(0, |s| s.head.turn);
            let now = Instant::now();
            if stored_turn + 1 >= turn || !self.store.replicated() || now >= deadline {
                return Ok(stored);
            }
            tracing::debug!(session_id, stored_turn, turn, "waiting for replication");
            if pause == Duration::from_millis(10) {
                self.metrics.replication_wait();
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}
