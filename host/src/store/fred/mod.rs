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

mod cache;
mod client;
mod codec;
mod feed;
mod index;
mod item;
mod log;
mod pack;
mod reply;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fred_proto::{Item, Key, Version};

use cache::SessionCache;
pub use client::{Confirm, FredClient, FredConfig, FredError};
pub use codec::{IndexEntry, turn_key, turn_prefix, user_anchor_key, user_session_key};
use codec::{is_fred_name, turn_of};
use feed::Feed;
pub use feed::FeedConfig;
use item::chain;
pub use item::{Origin, TurnItem};
use log::{SessionLog, versions_of};

use super::{ContextStore, SessionHead, StoreError, StoredSession, check_next_turn};

/// Most item versions fetched per Scan call (FReD's messages are limited to 4 MiB; a Scan
/// counts versions, not ids).
const SCAN_BATCH: u64 = 256;
/// Versions asked for by the first Scan of a session this node holds (its last turn, maybe
/// one more and a sibling) and of one it reads from turn 1; each further Scan asks for 4x.
const FIRST_WARM_SCAN: u64 = 4;
const FIRST_COLD_SCAN: u64 = 16;
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

    /// What this node knows of a session, brought up to date with FReD: one Scan from its
    /// last turn (which must still win there) and, in parallel, a Read of turn 1 (a session
    /// deleted and begun anew elsewhere changes it). Reads everything again when what it had
    /// no longer holds.
    async fn fresh_log(&self, session_id: &str) -> Result<SessionLog, StoreError> {
        let Some((mut log, _)) = self.cache.get(session_id) else {
            return self.read_log(session_id).await;
        };
        let (Some(&first), true) = (log.chains.first(), log.turn() > 1) else {
            // Turn 1 (or none): the Scan from it checks it.
            return match self.catch_up(session_id, &mut log).await? {
                true => Ok(log),
                false => self.read_log(session_id).await,
            };
        };
        let first_key = turn_key(session_id, 1);
        let (turn_one, holds) = tokio::join!(
            self.client.read(&first_key),
            self.catch_up(session_id, &mut log)
        );
        let same_session = match turn_one {
            Ok(versions) => SessionLog::default()
                .resolve(&versions)?
                .is_some_and(|(_, value)| item::chain(&[0; 16], value) == first),
            Err(FredError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if same_session && holds? {
            return Ok(log);
        }
        self.read_log(session_id).await
    }

    /// Reads a session from turn 1.
    async fn read_log(&self, session_id: &str) -> Result<SessionLog, StoreError> {
        let mut log = SessionLog::default();
        self.catch_up(session_id, &mut log).await?;
        Ok(log)
    }

    /// Brings the session up to date from FReD and keeps it in the cache. Asked for by turn
    /// `turn` and still behind it, the turns may be on their way, or their relay to this node
    /// was lost (FReD only notes a failed relay, and a node reads those notes at its next
    /// start): another replica that has them gives them to this node.
    async fn refresh(
        &self,
        session_id: &str,
        turn: Option<u32>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let since = self.cache.mark();
        let mut log = self.fresh_log(session_id).await?;
        if turn.is_some_and(|turn| log.turn() + 1 < turn)
            && self.repair_from_peers(session_id, &mut log).await
        {
            tracing::info!(
                session_id,
                turn = log.turn(),
                "turns this node lacked copied from another replica"
            );
        }
        let stored = log.stored();
        self.cache.put(session_id, log, since);
        Ok(stored)
    }

    /// Extends `log` with the turns FReD holds after it, resolving siblings, until the chain
    /// ends (no item, or no version extending it). The first Scan starts at the log's last
    /// turn; `Ok(false)` if that turn no longer wins there (or is gone).
    async fn catch_up(&self, session_id: &str, log: &mut SessionLog) -> Result<bool, StoreError> {
        let prefix = turn_prefix(session_id);
        let mut checked = log.turn() == 0;
        // A Scan runs on past the session into other items, so ask for few at first: a node
        // that served the last turn expects one or two items, a cold read a short session.
        let mut count = if checked {
            FIRST_COLD_SCAN
        } else {
            FIRST_WARM_SCAN
        };
        loop {
            log.next_versions.clear();
            let from = if checked { log.turn() + 1 } else { log.turn() };
            let items = match self.client.scan(&turn_key(session_id, from), count).await {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => return Ok(checked),
                Err(e) => return Err(e.into()),
            };
            let full = items.len() as u64 >= count;
            count = (count * 4).min(SCAN_BATCH);
            let mut groups = group_turns(&prefix, &items);
            // A full batch may end inside an item's versions: read that item again next round.
            if full && groups.len() > 1 {
                groups.pop();
            }
            for (turn, versions) in groups {
                if !checked {
                    if turn != log.turn() || !log.last_turn_holds(versions)? {
                        return Ok(false);
                    }
                    checked = true;
                    continue;
                }
                if turn != log.turn() + 1 {
                    return Ok(true);
                }
                match log.resolve(versions)? {
                    Some((item, value)) => log.push(item, value)?,
                    None => {
                        log.next_versions = versions_of(versions);
                        return Ok(true);
                    }
                }
            }
            if !full {
                return Ok(checked);
            }
        }
    }

    /// Copies to this node the turns after `log` that another replica holds and this node
    /// lacks, the same bytes, and adds them to `log`; true if any were copied. Failures are
    /// logged: the caller then answers as it would have without the repair.
    async fn repair_from_peers(&self, session_id: &str, log: &mut SessionLog) -> bool {
        let prefix = turn_prefix(session_id);
        let mut copied = false;
        for (node, peer) in &self.peers {
            let start = turn_key(session_id, log.turn() + 1);
            let items = match peer.scan(&start, SCAN_BATCH).await {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(
                        node,
                        session_id,
                        "cannot read the session on this replica: {e}"
                    );
                    continue;
                }
            };
            for (turn, versions) in group_turns(&prefix, &items) {
                let Ok(Some((item, value))) = log.resolve(versions) else {
                    break;
                };
                if turn != log.turn() + 1 {
                    break;
                }
                let key = turn_key(session_id, turn);
                let versions = log.next_turn_versions();
                if let Err(e) = self.client.update(&key, value.to_owned(), versions).await {
                    tracing::warn!(
                        session_id,
                        turn,
                        "cannot copy a turn from another replica: {e}"
                    );
                    return copied;
                }
                if log.push(item, value).is_err() {
                    return copied;
                }
                copied = true;
            }
        }
        copied
    }

    /// After an Update of turn `key` (answered or not): which version of that turn every
    /// node will keep. `Ok(true)` if ours (`value`), `Ok(false)` if another (now in `log`),
    /// `Err` if none extends the chain (the write did not happen). Reads the item here and,
    /// when confirming on replicas, on every other replica at once: an Update returns once
    /// relayed everywhere, so any version of this turn written concurrently elsewhere is by
    /// then on the node that wrote it, and no node will accept another.
    /// Whether `version` (the one this node's Update just wrote) is the only version of `key`
    /// on this node and on every replica that answers: then it won, and the values need not
    /// be read. Asks for the ids and versions only ([`FredClient::keys`]), two entries from
    /// `key`, so a sibling (listed next to it) shows; on this node the trigger feed, when it
    /// can tell ([`SessionCache::alone`]), answers instead of a Keys call. Any doubt answers
    /// false, and [`Self::settle`] reads the values.
    async fn only_version(&self, key: &str, version: &Version, fed: Option<bool>) -> bool {
        let alone = |keys: &[Key]| {
            let mut of_key = keys.iter().filter(|k| k.id == key);
            of_key
                .next()
                .is_some_and(|k| k.version.as_ref() == Some(version))
                && of_key.next().is_none()
        };
        let peers = futures_util::future::join_all(
            self.peers
                .iter()
                .map(|(node, peer)| async move { (node, peer.keys(key, 2).await) }),
        );
        let here = async {
            match fed {
                Some(alone_here) => alone_here,
                None => self.client.keys(key, 2).await.is_ok_and(|keys| alone(&keys)),
            }
        };
        let (here, there) = tokio::join!(here, peers);
        if !here {
            return false;
        }
        there.into_iter().all(|(node, keys)| match keys {
            Ok(keys) => alone(&keys),
            Err(e) => {
                tracing::warn!(node, key, "cannot confirm the turn on this replica: {e}");
                true
            }
        })
    }

    async fn settle(
        &self,
        key: &str,
        value: &str,
        log: &mut SessionLog,
        failure: StoreError,
    ) -> Result<bool, StoreError> {
        let peer_reads = futures_util::future::join_all(
            self.peers
                .iter()
                .map(|(node, peer)| async move { (node, peer.read(key).await) }),
        );
        let (here, there) = tokio::join!(self.client.read(key), peer_reads);
        let mut versions = match here {
            Ok(versions) => versions,
            Err(FredError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if versions.is_empty() {
            return Err(failure);
        }
        for (node, read) in there {
            match read {
                Ok(more) => versions.extend(more),
                Err(e) => tracing::warn!(node, key, "cannot confirm the turn on this replica: {e}"),
            }
        }
        match log.resolve(&versions)? {
            Some((item, winner)) => {
                let ours = winner == value;
                log.push(item, winner)?;
                Ok(ours)
            }
            None => Err(failure),
        }
    }
}

/// The items of `prefix`'s turns in a Scan result, grouped by id (an id's versions are
/// adjacent), with their turn numbers; stops at the first id that is not one of them.
fn group_turns<'a>(prefix: &str, items: &'a [Item]) -> Vec<(u32, &'a [Item])> {
    let mut groups: Vec<(u32, &[Item])> = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let id = &items[start].id;
        let Some(turn) = turn_of(prefix, id) else {
            break;
        };
        let len = items[start..].iter().take_while(|i| &i.id == id).count();
        groups.push((turn, &items[start..start + len]));
        start += len;
    }
    groups
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
        super::newest_first(&mut sessions);
        Ok(sessions)
    }

    fn kind(&self) -> &'static str {
        "fred"
    }

    fn replicated(&self) -> bool {
        true
    }

    fn remote_turns(&self) -> Option<tokio::sync::broadcast::Receiver<crate::store::RemoteTurn>> {
        self.feed.as_ref().map(Feed::remote_turns)
    }
}

#[cfg(test)]
mod tests;
