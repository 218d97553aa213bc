//! Sessions in FReD, replicated to the other edge nodes so a client can roam.
//!
//! Each turn is one item ([`TurnItem`]) written once, by one Update that names the versions
//! it may replace (none: create-if-absent), so two nodes committing the same turn cannot
//! overwrite each other: they meet as FReD siblings, and every node resolves them alike
//! ([`SessionLog::resolve`]). A turn's writer reads its item back after the Update (which
//! returns only once relayed to every replica) and answers a conflict, not a success, if its
//! version lost. A node keeps the sessions it has seen in memory and, per turn, reads only
//! what it lacks (one Scan from its last turn, with a Read of turn 1 in parallel, which
//! tells a deleted or re-begun session).
//!
//! A session's first turn also writes an entry in its user's index (see
//! [`codec::user_anchor_key`]), which `sessions_of` scans; later turns never touch it.
//!
//! Here: the store and its `ContextStore` methods. `read` brings a session up to date,
//! `siblings` resolves competing versions, `index` lists a user's sessions, `cache` keeps
//! what this node has seen; `item`, `reply`, `bytes`, `pack` and `codec` spell FReD values.

mod bytes;
mod cache;
mod client;
mod codec;
mod feed;
mod index;
mod item;
mod log;
mod pack;
mod read;
mod reply;
mod scan;
mod siblings;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use cache::SessionCache;
pub use client::{Confirm, FredClient, FredConfig, FredError};
use codec::is_fred_name;
pub use codec::{IndexEntry, turn_key, turn_prefix, user_anchor_key, user_session_key};
use feed::Feed;
pub use feed::FeedConfig;
use item::chain;
pub use item::{Origin, TurnItem};
use log::SessionLog;

use discedge_core::store::{ContextStore, SessionHead, StoreError, StoredSession, check_next_turn};

/// User index items fetched per Scan call when listing a user's sessions.
const INDEX_BATCH: u64 = 256;

/// The FReD-backed store.
pub struct FredStore {
    client: FredClient,
    /// The other replicas' client APIs, where a commit is confirmed (`--fred-confirm replicas`).
    peers: Vec<(String, FredClient)>,
    node_id: String,
    cache: Arc<SessionCache>,
    /// The trigger feed, when configured (`--fred-trigger-listen`).
    feed: Option<Feed>,
    /// Users whose index anchor this node has written since it started (anchors are never
    /// deleted), so a user's next new session costs one index write, not two.
    anchored: Mutex<HashSet<String>>,
}

impl From<FredError> for StoreError {
    fn from(e: FredError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl FredStore {
    /// Connects, then makes sure the keygroup exists, roles are granted and replicas added.
    pub async fn connect(config: &FredConfig) -> anyhow::Result<Self> {
        if !is_fred_name(&config.node_id) {
            anyhow::bail!(
                "--node-id {:?}: must be the FReD node's id (ASCII letters and digits)",
                config.node_id
            );
        }
        let client = FredClient::connect(config).await?;
        client.set_up_keygroup(config).await?;
        let mut peers = Vec::new();
        if config.confirm == Confirm::Replicas {
            for (node, host) in client.other_replicas(&config.node_id).await? {
                tracing::info!(node, host, "commits are confirmed on this replica too");
                peers.push((
                    node,
                    FredClient::connect_to(config, &host, None, true).await?,
                ));
            }
        }
        let cache = Arc::new(SessionCache::default());
        let feed = match &config.feed {
            Some(feed) => {
                let tls = (
                    client::read_pem(&config.cert, "certificate")?,
                    client::read_pem(&config.key, "key")?,
                    client::read_pem(&config.ca, "CA certificate")?,
                );
                let tls = (tls.0.as_slice(), tls.1.as_slice(), tls.2.as_slice());
                Some(Feed::start(feed, tls, client.clone(), &config.node_id, cache.clone()).await?)
            }
            None => None,
        };
        Ok(Self {
            client,
            peers,
            node_id: config.node_id.clone(),
            cache,
            feed,
            anchored: Mutex::new(HashSet::new()),
        })
    }
}

#[async_trait]
impl ContextStore for FredStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, StoreError> {
        self.refresh(session_id, None).await
    }

    /// With the trigger feed live, a session the feed has kept current and whose next turn is
    /// the one asked for needs no read: any later turn stored on this node would have been
    /// announced before its writer was answered (and a turn that raced this one is caught
    /// when it is committed).
    async fn load_for_turn(
        &self,
        session_id: &str,
        turn: u32,
    ) -> Result<Option<StoredSession>, StoreError> {
        if let Some((log, true)) = self.cache.get(session_id)
            && log.turn() + 1 == turn
        {
            return Ok(log.stored());
        }
        self.refresh(session_id, Some(turn)).await
    }

    async fn close(&self) {
        if let Some(feed) = &self.feed {
            feed.stop().await;
        }
    }

    async fn commit_turn(
        &self,
        session_id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let since = self.cache.mark();
        let mut log = match self.cache.get(session_id) {
            Some((log, _)) => log,
            None => self.read_log(session_id).await?,
        };
        check_next_turn(log.head.as_ref(), head)?;
        let item = TurnItem {
            writer: self.node_id.clone(),
            prev: log.chain,
            updated_ms: head.updated_ms,
            prompt_sha256: head.last_prompt_sha256.clone(),
            reply: head.last_reply.clone(),
            record: record.map(<[u8]>::to_vec),
            origin: (head.turn == 1).then(|| Origin {
                user_id: head.user_id.clone(),
                mode: head.mode.clone(),
                created_ms: head.created_ms,
            }),
        };
        let value = item.encode();
        let after = chain(&item.prev, &value);
        let key = turn_key(session_id, head.turn);
        let mut written = value.len() as u64;
        for attempt in 0..2 {
            let versions = log.next_turn_versions();
            let update = self.client.update(&key, value.clone(), versions);
            let (updated, indexed) = if head.turn == 1 && attempt == 0 {
                let (u, i) = tokio::join!(update, self.index_session(session_id, &head.user_id));
                (u, Some(i))
            } else {
                (update.await, None)
            };
            match indexed {
                Some(Ok(bytes)) => written += bytes,
                // An unlisted session still serves turns; the next listing just misses it.
                Some(Err(e)) => {
                    tracing::warn!(session_id, "session not added to its user's index: {e}")
                }
                None => {}
            }
            // Whatever the Update said (FReD answers "error updating item" both when it
            // refuses the versions and when a trigger failed after writing and relaying),
            // the item tells what happened.
            let settled = match updated {
                Ok(version)
                    if self
                        .only_version(
                            &key,
                            &version,
                            self.cache.alone(session_id, head.turn, &after, since),
                        )
                        .await =>
                {
                    log.push(item.clone(), &value).map(|()| true)
                }
                Ok(_) => {
                    let failure =
                        StoreError::Unavailable(format!("turn {key} vanished after writing it"));
                    self.settle(&key, &value, &mut log, failure).await
                }
                Err(e) => {
                    tracing::info!(session_id, turn = head.turn, "FReD update: {e}");
                    self.settle(&key, &value, &mut log, e.into()).await
                }
            };
            match settled {
                Ok(true) => {
                    self.cache.put(session_id, log, since);
                    return Ok(written);
                }
                Ok(false) => {
                    tracing::info!(
                        session_id,
                        turn = head.turn,
                        "another node committed this turn first"
                    );
                    let stored_turn = log.turn();
                    self.cache.put(session_id, log, since);
                    return Err(StoreError::Conflict { stored_turn });
                }
                Err(e) if attempt == 0 => {
                    // Maybe versions this node did not know of (a tombstone, a losing
                    // branch): learn them, then try once more, unless the turn is taken.
                    log = self.read_log(session_id).await?;
                    check_next_turn(log.head.as_ref(), head)?;
                    tracing::debug!(session_id, "retrying the commit: {e}");
                }
                Err(e) => {
                    self.cache.remove(session_id);
                    return Err(e);
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Tombstones turn 1 first, so every node stops seeing the session at once; then the later
    /// turns and the user index entry (left behind by a failure here, a turn item is never
    /// read, since its chain starts at a turn 1 that is gone, and an index entry is skipped).
    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        let since = self.cache.mark();
        let log = self.read_log(session_id).await?;
        let Some(head) = log.head else {
            self.cache.put(session_id, log, since);
            return Ok(false);
        };
        self.cache.remove(session_id);
        let tombstone = self.client.delete(&turn_key(session_id, 1)).await?;
        self.cache.remove(session_id);
        let gone = SessionLog {
            next_versions: vec![tombstone],
            ..SessionLog::default()
        };
        self.cache.put(session_id, gone, self.cache.mark());
        for turn in 2..=head.turn {
            if let Err(e) = self.client.delete(&turn_key(session_id, turn)).await {
                tracing::warn!(session_id, turn, "turn item not deleted: {e}");
            }
        }
        let entry = user_session_key(&head.user_id, session_id);
        if let Err(e) = self.client.delete(&entry).await {
            tracing::warn!(session_id, "user index entry not deleted: {e}");
        }
        Ok(true)
    }

    /// One Scan per 256 sessions of the user's index, then each session brought up to date.
    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError> {
        let mut sessions = Vec::new();
        for session_id in self.indexed_sessions(user_id).await? {
            match self.load(&session_id).await? {
                Some(stored) if stored.head.user_id == user_id => {
                    sessions.push((session_id, stored.head));
                }
                // Deleted (or its id taken again by someone else) since it was indexed.
                _ => {}
            }
        }
        discedge_core::store::newest_first(&mut sessions);
        Ok(sessions)
    }

    fn kind(&self) -> &'static str {
        "fred"
    }

    fn replicated(&self) -> bool {
        true
    }

    fn remote_turns(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<discedge_core::store::RemoteTurn>> {
        self.feed.as_ref().map(Feed::remote_turns)
    }
}

#[cfg(test)]
mod tests;
