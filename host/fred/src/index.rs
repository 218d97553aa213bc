//! Each user's session index in FReD: written on a session's first turn, scanned to list a
//! user's sessions (see [`super::codec::user_anchor_key`]).

use std::collections::BTreeSet;

use super::codec::{self, IndexEntry, user_anchor_key, user_session_key};
use super::{FredError, FredStore, INDEX_BATCH};
use discedge_core::store::StoreError;

impl FredStore {
    /// Adds a new session to its user's index (the anchor first, if this node has not written
    /// it yet). Idempotent; returns the bytes written.
    pub(super) async fn index_session(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        if !self.anchored.lock().unwrap().contains(user_id) {
            let anchor = IndexEntry {
                user_id: user_id.to_owned(),
                session_id: String::new(),
            }
            .encode();
            written += anchor.len() as u64;
            self.client
                .update(&user_anchor_key(user_id), anchor, Vec::new())
                .await?;
            self.anchored.lock().unwrap().insert(user_id.to_owned());
        }
        let entry = IndexEntry {
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
        }
        .encode();
        written += entry.len() as u64;
        self.client
            .update(&user_session_key(user_id, session_id), entry, Vec::new())
            .await?;
        Ok(written)
    }

    /// The session ids in a user's index: a Scan from the anchor, in batches, until the ids
    /// leave the user's prefix. Entries may name sessions that are gone (or not replicated yet).
    pub(super) async fn indexed_sessions(
        &self,
        user_id: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let anchor = user_anchor_key(user_id);
        let prefix = codec::user_prefix(user_id);
        let mut sessions = BTreeSet::new();
        let mut start = anchor.clone();
        loop {
            let items = match self.client.scan(&start, INDEX_BATCH).await {
                Ok(items) => items,
                // No anchor: this user never created a session (that reached this node).
                Err(FredError::NotFound(_)) if start == anchor => return Ok(sessions),
                Err(FredError::NotFound(_)) => {
                    return Err(StoreError::Unavailable(format!(
                        "user {user_id}'s sessions changed while listing them; try again"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let Some(last) = items.last().map(|item| item.id.clone()) else {
                return Ok(sessions);
            };
            for item in &items {
                if !item.id.starts_with(&prefix) {
                    return Ok(sessions);
                }
                // The anchor, and deleted entries (a Scan returns tombstones, empty).
                if item.id == anchor || item.val.is_empty() {
                    continue;
                }
                match IndexEntry::decode(&item.val) {
                    // Another user whose id hashes alike, or an entry not written by us: skip.
                    Ok(entry)
                        if entry.user_id == user_id
                            && item.id == user_session_key(user_id, &entry.session_id) =>
                    {
                        sessions.insert(entry.session_id);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(id = item.id, "skipping user index item: {e}"),
                }
            }
            // Fewer than asked for: the keygroup ends here. Else go on from the last id seen
            // (a Scan includes the id it starts at, which is then read twice, harmlessly).
            if (items.len() as u64) < INDEX_BATCH {
                return Ok(sessions);
            }
            start = last;
        }
    }
}
