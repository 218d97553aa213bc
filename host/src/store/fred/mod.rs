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
mod log;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fred_proto::{Item, Version};

pub use client::{Confirm, FredClient, FredConfig, FredError};
pub use feed::FeedConfig;
pub use codec::{
    IndexEntry, Origin, TurnItem, turn_key, turn_prefix, user_anchor_key, user_session_key,
};
use cache::SessionCache;
use codec::{is_fred_name, turn_of};
use feed::Feed;
use log::{SessionLog, versions_of};

use super::{ContextStore, SessionHead, StoreError, StoredSession, check_next_turn};

/// Item versions fetched per Scan call (FReD's messages are limited to 4 MiB; a Scan counts
/// versions, not ids).
const SCAN_BATCH: u64 = 256;
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
                peers.push((node, FredClient::connect_to(config, &host, None, true).await?));
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
        let (turn_one, holds) =
            tokio::join!(self.client.read(&first_key), self.catch_up(session_id, &mut log));
        let same_session = match turn_one {
            Ok(versions) => SessionLog::default()
                .resolve(&versions)?
                .is_some_and(|(_, value)| codec::chain(&[0; 16], value) == first),
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

    /// Extends `log` with the turns FReD holds after it, resolving siblings, until the chain
    /// ends (no item, or no version extending it). The first Scan starts at the log's last
    /// turn; `Ok(false)` if that turn no longer wins there (or is gone).
    async fn catch_up(&self, session_id: &str, log: &mut SessionLog) -> Result<bool, StoreError> {
        let prefix = turn_prefix(session_id);
        let mut checked = log.turn() == 0;
        loop {
            log.next_versions.clear();
            let from = if checked { log.turn() + 1 } else { log.turn() };
            let items = match self.client.scan(&turn_key(session_id, from), SCAN_BATCH).await {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => return Ok(checked),
                Err(e) => return Err(e.into()),
            };
            let full = items.len() as u64 >= SCAN_BATCH;
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

    /// After an Update of turn `key` (answered or not): which version of that turn every
    /// node will keep. `Ok(true)` if ours (`value`), `Ok(false)` if another (now in `log`),
    /// `Err` if none extends the chain (the write did not happen). Reads the item here and,
    /// when confirming on replicas, on every other replica at once: an Update returns once
    /// relayed everywhere, so any version of this turn written concurrently elsewhere is by
    /// then on the node that wrote it, and no node will accept another.
    async fn settle(
        &self,
        key: &str,
        value: &str,
        log: &mut SessionLog,
        failure: StoreError,
    ) -> Result<bool, StoreError> {
        let peer_reads = futures_util::future::join_all(self.peers.iter().map(|(node, peer)| async move {
            (node, peer.read(key).await)
        }));
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

    /// Adds a new session to its user's index (the anchor first, if this node has not written
    /// it yet). Idempotent; returns the bytes written.
    async fn index_session(&self, session_id: &str, user_id: &str) -> Result<u64, StoreError> {
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
    async fn indexed_sessions(&self, user_id: &str) -> Result<BTreeSet<String>, StoreError> {
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
        let since = self.cache.mark();
        let log = self.fresh_log(session_id).await?;
        let stored = log.stored();
        self.cache.put(session_id, log, since);
        Ok(stored)
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
        self.load(session_id).await
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
        let key = turn_key(session_id, head.turn);
        let mut written = value.len() as u64;
        for attempt in 0..2 {
            // Create-if-absent (one empty clock), or replace exactly the versions seen there.
            let versions = if log.next_versions.is_empty() {
                vec![Version::default()]
            } else {
                log.next_versions.clone()
            };
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
                Some(Err(e)) => tracing::warn!(session_id, "session not added to its user's index: {e}"),
                None => {}
            }
            // Whatever the Update said (FReD answers "error updating item" both when it
            // refuses the versions and when a trigger failed after writing and relaying),
            // the item tells what happened.
            let failure = match updated {
                Ok(_) => StoreError::Unavailable(format!("turn {key} vanished after writing it")),
                Err(e) => {
                    tracing::info!(session_id, turn = head.turn, "FReD update: {e}");
                    e.into()
                }
            };
            match self.settle(&key, &value, &mut log, failure).await {
                Ok(true) => {
                    self.cache.put(session_id, log, since);
                    return Ok(written);
                }
                Ok(false) => {
                    tracing::info!(session_id, turn = head.turn, "another node committed this turn first");
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
}

#[cfg(test)]
mod tests {
    //! The store contract against one node of `fred-testnode` (a FReD-compatible TEST node in
    //! this repository, not FReD), in this process.
    use std::time::Duration;

    use fred_testnode::{Cluster, NodeHandle, TestPki};

    use super::*;
    use crate::store::contract;

    struct Bed {
        store: FredStore,
        /// Node B's store, in the two-node beds.
        other: Option<FredStore>,
        cluster: Cluster,
        _nodes: Vec<NodeHandle>,
        _dir: tempfile::TempDir,
    }

    fn config(pki: &TestPki, node: &NodeHandle, user: &str) -> FredConfig {
        FredConfig {
            addr: node.addr().to_string(),
            tls_name: None,
            cert: pki.cert(user),
            key: pki.key(user),
            ca: pki.ca(),
            keygroup: "sessions".into(),
            node_id: node.node_id().into(),
            expiry: 0,
            replicas: None,
            grant: Vec::new(),
            timeout: Duration::from_secs(2),
            confirm: Confirm::Replicas,
            feed: None,
        }
    }

    /// `nodes` test nodes, all replicas of the keygroup, with a store on the first two.
    async fn bed_of(nodes: &[&str]) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let mut names = nodes.to_vec();
        names.push("proxy0");
        let pki = TestPki::generate(dir.path(), &names).unwrap();
        let cluster = Cluster::new();
        let mut handles = Vec::new();
        for node in nodes {
            let tls = pki.node_tls(node);
            handles.push(cluster.start_node(node, "127.0.0.1:0".parse().unwrap(), tls).await.unwrap());
        }
        let store = FredStore::connect(&config(&pki, &handles[0], "proxy0")).await.unwrap();
        let other = match handles.get(1) {
            Some(node) => Some(FredStore::connect(&config(&pki, node, "proxy0")).await.unwrap()),
            None => None,
        };
        Bed {
            store,
            other,
            cluster,
            _nodes: handles,
            _dir: dir,
        }
    }

    async fn bed() -> Bed {
        bed_of(&["nodeA"]).await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn appends_and_loads() {
        contract::appends_and_loads(&bed().await.store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refuses_out_of_order_turns() {
        contract::refuses_out_of_order_turns(&bed().await.store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn deletes() {
        contract::deletes(&bed().await.store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn lists_a_users_sessions() {
        contract::lists_a_users_sessions(&bed().await.store).await;
    }

    /// More sessions than one index Scan returns, and index entries whose session is gone.
    #[tokio::test(flavor = "multi_thread")]
    async fn lists_many_sessions_in_batches_and_skips_stale_entries() {
        let bed = bed().await;
        let store = &bed.store;
        let head = |user: &str, updated_ms| SessionHead {
            user_id: user.into(),
            updated_ms,
            ..contract::head(1, 1)
        };
        let n = INDEX_BATCH + 10;
        for i in 0..n {
            store
                .commit_turn(&format!("s{i:04}"), &head("alice", i), Some(b"x"))
                .await
                .unwrap();
        }
        store
            .commit_turn("zzz", &head("bob", 0), Some(b"x"))
            .await
            .unwrap();
        // An entry whose session was never committed (its turn failed after indexing).
        store.index_session("gone", "alice").await.unwrap();
        let listed = store.sessions_of("alice").await.unwrap();
        assert_eq!(listed.len() as u64, n);
        assert_eq!(listed[0].0, format!("s{:04}", n - 1), "newest first");
        assert_eq!(listed[n as usize - 1].0, "s0000");
        assert!(listed.iter().all(|(_, h)| h.user_id == "alice"));
    }

    fn turn(n: u32, reply: &str) -> SessionHead {
        SessionHead {
            last_reply: reply.into(),
            ..contract::head(n, n)
        }
    }

    /// The fork of the FReD-path issue: the same turn committed on two nodes at once (both
    /// written before either relay arrives). One wins on both nodes, the other is told so,
    /// and every later turn works on either node.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_same_turn_on_two_nodes_at_once_has_one_winner_everywhere() {
        let bed = bed_of(&["nodeA", "nodeB"]).await;
        let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
        for round in 0..5 {
            let id = format!("fork{round}");
            a.commit_turn(&id, &turn(1, "one"), Some(b"one")).await.unwrap();
            assert_eq!(b.load(&id).await.unwrap().unwrap().head.turn, 1);
            bed.cluster.set_replication_delay(Duration::from_millis(30));
            let (head_a, head_b) = (turn(2, "a"), turn(2, "b"));
            let (on_a, on_b) = tokio::join!(
                a.commit_turn(&id, &head_a, Some(b"a's two")),
                b.commit_turn(&id, &head_b, Some(b"b's two")),
            );
            bed.cluster.set_replication_delay(Duration::ZERO);
            let wins = [on_a.is_ok(), on_b.is_ok()];
            assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {on_a:?} {on_b:?}");
            let loser = if on_a.is_ok() { on_b } else { on_a };
            assert!(
                matches!(loser, Err(StoreError::Conflict { stored_turn: 2 })),
                "round {round}: the loser is told turn 2 is taken: {loser:?}"
            );
            let winner_records = if wins[0] { b"a's two" } else { b"b's two" };
            for store in [a, b] {
                let s = store.load(&id).await.unwrap().unwrap();
                assert_eq!(s.head.turn, 2);
                assert_eq!(s.records[1], winner_records, "round {round}: the same winner on every node");
            }
            // Turn 3 on the losing node, then turn 4 on the winning one.
            let (loser_store, winner_store) = if wins[0] { (b, a) } else { (a, b) };
            loser_store.commit_turn(&id, &turn(3, "3"), Some(b"three")).await.unwrap();
            winner_store.load(&id).await.unwrap();
            winner_store.commit_turn(&id, &turn(4, "4"), None).await.unwrap();
            let s = loser_store.load(&id).await.unwrap().unwrap();
            assert_eq!((s.head.turn, s.records.len()), (4, 3));
        }
    }

    /// The window a read-back on one node leaves open: nodeA's turn 2 is written and relayed
    /// while nodeB's concurrent version (which wins the tie-break) is still on its way to
    /// nodeA. Confirming on every replica sees nodeB's version where it was written, so nodeA
    /// answers a conflict; confirming locally, nodeA may answer success for a turn that is then
    /// dropped. Either way both nodes end on the same chain, and a node whose cache held the
    /// losing branch repairs itself on its next read instead of getting stuck.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_concurrent_turn_is_seen_where_it_was_written() {
        let on_a = losing_race(Confirm::Replicas).await;
        assert!(matches!(on_a, Err(StoreError::Conflict { stored_turn: 2 })), "{on_a:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_node_on_a_losing_branch_repairs_itself() {
        let on_a = losing_race(Confirm::Local).await;
        eprintln!("confirmed locally, nodeA's own commit answered {on_a:?}");
    }

    /// nodeA commits turn 2 while nodeB writes its own a moment later, before nodeA's relay
    /// reaches it; checks that both nodes converge on nodeB's; returns what nodeA answered.
    async fn losing_race(confirm: Confirm) -> Result<u64, StoreError> {
        let mut bed = bed_of(&["nodeA", "nodeB"]).await;
        if confirm == Confirm::Local {
            bed.store.peers.clear();
        }
        let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
        a.commit_turn("s", &turn(1, "one"), Some(b"one")).await.unwrap();
        let b_log = b.read_log("s").await.unwrap();
        let item = TurnItem {
            writer: "nodeB".into(),
            prev: b_log.chain,
            updated_ms: 2,
            prompt_sha256: String::new(),
            reply: "b".into(),
            record: Some(b"b's two".to_vec()),
            origin: None,
        };
        bed.cluster.set_replication_delay(Duration::from_millis(40));
        let on_b = async {
            tokio::time::sleep(Duration::from_millis(15)).await;
            b.client
                .update(&turn_key("s", 2), item.encode(), vec![Version::default()])
                .await
        };
        let head_a = turn(2, "a");
        let (on_a, on_b) = tokio::join!(a.commit_turn("s", &head_a, Some(b"a's two")), on_b);
        tokio::time::sleep(Duration::from_millis(100)).await;
        bed.cluster.set_replication_delay(Duration::ZERO);
        on_b.expect("nodeB's create was not refused: nodeA's version had not arrived yet");
        let answered = on_a;
        let on_a = a.load("s").await.unwrap().unwrap();
        let on_b = b.load("s").await.unwrap().unwrap();
        assert_eq!(on_a.records, on_b.records, "both nodes agree");
        assert_eq!(on_a.records[1], b"b's two", "nodeB's version won");
        a.commit_turn("s", &turn(3, "3"), None).await.unwrap();
        assert_eq!(b.load("s").await.unwrap().unwrap().head.turn, 3, "and go on");
        answered
    }

    /// A session deleted on one node and begun anew under the same id on another is never
    /// mixed with what a third node cached of the old one.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_session_begun_anew_elsewhere_is_not_mixed_with_the_old_one() {
        let bed = bed_of(&["nodeA", "nodeB"]).await;
        let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
        a.commit_turn("s", &turn(1, "1"), Some(b"old one")).await.unwrap();
        a.commit_turn("s", &turn(2, "2"), Some(b"old two")).await.unwrap();
        assert_eq!(b.load("s").await.unwrap().unwrap().head.turn, 2);
        assert!(a.delete("s").await.unwrap());
        a.commit_turn("s", &turn(1, "1"), Some(b"new one")).await.unwrap();
        let s = b.load("s").await.unwrap().unwrap();
        assert_eq!(s.records, vec![b"new one".to_vec()]);
        b.commit_turn("s", &turn(2, "2"), Some(b"new two")).await.unwrap();
        assert_eq!(a.load("s").await.unwrap().unwrap().records.len(), 2);
    }

    /// A turn read on another node costs one Scan and one Read; a commit one Update and one
    /// Read (the read-back that tells a lost race), never a second Update.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_turn_is_one_update() {
        let bed = bed_of(&["nodeA", "nodeB"]).await;
        let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
        a.commit_turn("s", &turn(1, "1"), Some(b"one")).await.unwrap();
        b.load("s").await.unwrap();
        let node = &bed._nodes[0];
        let before = node.stats();
        a.load("s").await.unwrap();
        a.commit_turn("s", &turn(2, "2"), Some(b"two")).await.unwrap();
        let after = node.stats();
        let calls = |rpc| after.call_count(rpc) - before.call_count(rpc);
        assert_eq!(calls("Update"), 1);
        assert_eq!(calls("Scan") + calls("Read"), 2, "a Scan to load, a Read back");
    }

    fn free_port() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    /// A two-node bed whose stores serve the trigger feed.
    async fn fed_bed() -> (Bed, TestPki, Vec<NodeHandle>) {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "proxy0"]).unwrap();
        let cluster = Cluster::new();
        let mut nodes = Vec::new();
        for node in ["nodeA", "nodeB"] {
            let tls = pki.node_tls(node);
            nodes.push(cluster.start_node(node, "127.0.0.1:0".parse().unwrap(), tls).await.unwrap());
        }
        let fed = |node: &NodeHandle| {
            let listen = free_port();
            FredConfig {
                feed: Some(FeedConfig { listen, advertise: listen.to_string() }),
                ..config(&pki, node, "proxy0")
            }
        };
        let store = FredStore::connect(&fed(&nodes[0])).await.unwrap();
        let other = Some(FredStore::connect(&fed(&nodes[1])).await.unwrap());
        let bed = Bed { store, other, cluster, _nodes: Vec::new(), _dir: dir };
        (bed, pki, nodes)
    }

    fn reads(node: &NodeHandle) -> u64 {
        let s = node.stats();
        s.call_count("Read") + s.call_count("Scan")
    }

    /// With the feed, a node hears every turn as it is stored, so a client roaming to it gets
    /// its turn served with no read; a deletion elsewhere reaches it the same way.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_trigger_feed_keeps_a_roamed_session_in_memory() {
        let (bed, _pki, nodes) = fed_bed().await;
        let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
        for n in 1..=3 {
            a.commit_turn("s", &turn(n, "x"), Some(format!("record {n}").as_bytes())).await.unwrap();
        }
        let before = reads(&nodes[1]);
        let s = b.load_for_turn("s", 4).await.unwrap().unwrap();
        assert_eq!(reads(&nodes[1]), before, "served from memory");
        assert_eq!(s.head.turn, 3);
        assert_eq!(s.records[2], b"record 3");
        b.commit_turn("s", &turn(4, "y"), None).await.unwrap();
        let before = reads(&nodes[0]);
        assert_eq!(a.load_for_turn("s", 5).await.unwrap().unwrap().head.turn, 4);
        assert_eq!(reads(&nodes[0]), before, "and back");
        // A turn number it does not expect is read, not trusted.
        assert_eq!(a.load_for_turn("s", 9).await.unwrap().unwrap().head.turn, 4);
        assert!(reads(&nodes[0]) > before);

        assert!(a.delete("s").await.unwrap());
        assert!(b.load_for_turn("s", 5).await.unwrap().is_none(), "deleted everywhere");
    }

    /// A proxy that stops unregisters its feed; one that dies leaves it registered, and writes
    /// relayed to its node still succeed (FReD records the failed trigger as a missed relay).
    /// A new proxy on that node registers again and is fed.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_proxy_gone_does_not_stop_writes_and_its_successor_is_fed() {
        let (mut bed, pki, nodes) = fed_bed().await;
        bed.store.commit_turn("s", &turn(1, "1"), Some(b"one")).await.unwrap();
        // nodeB's proxy dies without unregistering.
        let gone = bed.other.take().unwrap();
        let listen = gone.feed.as_ref().map(|f| f.id.clone());
        drop(gone);
        assert!(listen.is_some());
        bed.store.commit_turn("s", &turn(2, "2"), Some(b"two")).await.unwrap();
        // Its successor (same id, new address) takes over the registration.
        let port = free_port();
        let config = FredConfig {
            feed: Some(FeedConfig { listen: port, advertise: port.to_string() }),
            ..config(&pki, &nodes[1], "proxy0")
        };
        let b = FredStore::connect(&config).await.unwrap();
        assert_eq!(b.load_for_turn("s", 3).await.unwrap().unwrap().head.turn, 2);
        bed.store.commit_turn("s", &turn(3, "3"), None).await.unwrap();
        let before = reads(&nodes[1]);
        assert_eq!(b.load_for_turn("s", 4).await.unwrap().unwrap().head.turn, 3);
        assert_eq!(reads(&nodes[1]), before, "fed again");
        b.close().await;
        assert!(b.client.triggers().await.unwrap().is_empty(), "unregistered on close");
    }
}
