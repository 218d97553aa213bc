//! Sessions in FReD, replicated to the other edge nodes so a client can roam.
//!
//! Each turn writes one record item (the turn's delta) and rewrites the small head item, so
//! the bytes replicated per turn do not grow with the conversation. A node keeps the sessions
//! it has seen in memory and, on the next turn, reads the head (one round trip) and fetches
//! only the records it lacks (one Scan), checked against the head's chain digest.
//!
//! A session's first turn also writes an entry in its user's index (see
//! [`codec::user_anchor_key`]), which `sessions_of` scans; later turns never touch it.

mod client;
mod codec;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use fred_proto::{Item, Version};

pub use client::{FredClient, FredConfig, FredError};
pub use codec::{FredHead, IndexEntry, head_key, record_key, user_anchor_key, user_session_key};
use codec::{chain, chain_all, decode_record, encode_record, is_fred_name};

use super::{ContextStore, SessionHead, StoreError, StoredSession, check_next_turn};

/// Sessions kept in memory per node; beyond this the least recently committed are forgotten
/// (and fetched again in full if they come back).
const CACHED_SESSIONS: usize = 10_000;
/// Records fetched per Scan call (FReD's messages are limited to 4 MiB).
const SCAN_BATCH: u32 = 256;
/// User index items fetched per Scan call when listing a user's sessions.
const INDEX_BATCH: u64 = 256;

/// The FReD-backed store.
pub struct FredStore {
    client: FredClient,
    node_id: String,
    cache: Mutex<HashMap<String, Cached>>,
    /// Users whose index anchor this node has written since it started (anchors are never
    /// deleted), so a user's next new session costs one index write, not two.
    anchored: Mutex<HashSet<String>>,
}

/// What this node knows of a session: the head it last read or wrote, with FReD's version of
/// it (for compare-and-set), and the records that head commits to.
#[derive(Clone)]
struct Cached {
    head: FredHead,
    versions: Vec<Version>,
    records: Vec<Vec<u8>>,
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
        Ok(Self {
            client,
            node_id: config.node_id.clone(),
            cache: Mutex::new(HashMap::new()),
            anchored: Mutex::new(HashSet::new()),
        })
    }

    /// Reads the head, resolving siblings left by concurrent turns on two nodes.
    async fn read_head(
        &self,
        session_id: &str,
    ) -> Result<Option<(FredHead, Vec<Version>)>, StoreError> {
        let items = match self.client.read(&head_key(session_id)).await {
            Ok(items) => items,
            Err(FredError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut heads = Vec::with_capacity(items.len());
        for item in items {
            let head = FredHead::decode(&item.val).map_err(StoreError::Corrupt)?;
            heads.push((head, item.version.unwrap_or_default()));
        }
        if heads.len() == 1 {
            let (head, version) = heads.pop().expect("one");
            return Ok(Some((head, vec![version])));
        }
        let all_versions: Vec<Version> = heads.iter().map(|(_, v)| v.clone()).collect();
        let winner = heads
            .into_iter()
            .map(|(head, _)| head)
            .reduce(|best, head| if head.wins_over(&best) { head } else { best })
            .expect("siblings are not empty");
        tracing::info!(
            session_id,
            turn = winner.head.turn,
            writer = winner.writer,
            "resolving concurrent turns"
        );
        // Writing the winner with every sibling's version replaces them all, on every replica.
        match self
            .client
            .update(&head_key(session_id), winner.encode(), all_versions.clone())
            .await
        {
            Ok(version) => Ok(Some((winner, vec![version]))),
            Err(e) => {
                tracing::warn!(session_id, "could not write the resolved head back: {e}");
                Ok(Some((winner, all_versions)))
            }
        }
    }

    /// Fetches records `from..head.records` and checks them against the head's chain.
    async fn fetch_records(
        &self,
        session_id: &str,
        head: &FredHead,
        mut have: Vec<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let total = head.head.records;
        let mut next = have.len() as u32;
        while next < total {
            let count = (total - next).min(SCAN_BATCH);
            let items = match self
                .client
                .scan(&record_key(session_id, next), u64::from(count))
                .await
            {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => return Err(still_replicating(session_id)),
                Err(e) => return Err(e.into()),
            };
            for number in next..next + count {
                let key = record_key(session_id, number);
                let siblings: Vec<&Item> = items.iter().filter(|item| item.id == key).collect();
                let record = self
                    .pick_record(
                        &key,
                        &siblings,
                        (number + 1 == total).then_some(head.writer.as_str()),
                    )
                    .await?;
                have.push(record);
            }
            next += count;
        }
        if chain_all(&have) != head.chain {
            return Err(still_replicating(session_id));
        }
        Ok(have)
    }

    /// One record's bytes. Concurrent versions: the one by the head's writer for the newest
    /// record, else the highest writer id; the choice is written back over all of them.
    async fn pick_record(
        &self,
        key: &str,
        siblings: &[&Item],
        newest_by: Option<&str>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut decoded = Vec::with_capacity(siblings.len());
        for item in siblings {
            let (writer, bytes) =
                decode_record(&item.val).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
            decoded.push((
                writer.to_owned(),
                bytes,
                item.version.clone().unwrap_or_default(),
            ));
        }
        match decoded.len() {
            0 => Err(StoreError::Unavailable(format!(
                "record {key} is still replicating"
            ))),
            1 => Ok(decoded.pop().expect("one").1),
            _ => {
                let versions: Vec<Version> = decoded.iter().map(|(_, _, v)| v.clone()).collect();
                let index = newest_by
                    .and_then(|writer| decoded.iter().position(|(w, _, _)| w == writer))
                    .unwrap_or_else(|| {
                        (0..decoded.len())
                            .max_by(|&a, &b| decoded[a].0.cmp(&decoded[b].0))
                            .expect("siblings")
                    });
                let (writer, bytes, _) = decoded.swap_remove(index);
                if let Err(e) = self
                    .client
                    .update(key, encode_record(&writer, &bytes), versions)
                    .await
                {
                    tracing::warn!(key, "could not write the resolved record back: {e}");
                }
                Ok(bytes)
            }
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
                if !item.id.starts_with(&anchor) {
                    return Ok(sessions);
                }
                if item.id == anchor {
                    continue;
                }
                match IndexEntry::decode(&item.val) {
                    // Another user whose id hashes alike, or an entry not written by us: skip.
                    // (`item.id` starts with the anchor, checked above.)
                    Ok(entry)
                        if entry.user_id == user_id
                            && item.id[anchor.len()..] == entry.session_id =>
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

    fn remember(&self, session_id: &str, cached: Cached) {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHED_SESSIONS && !cache.contains_key(session_id) {
            let mut by_age: Vec<(u64, String)> = cache
                .iter()
                .map(|(id, c)| (c.head.head.updated_ms, id.clone()))
                .collect();
            by_age.sort();
            for (_, id) in by_age.into_iter().take(CACHED_SESSIONS / 10) {
                cache.remove(&id);
            }
        }
        cache.insert(session_id.to_owned(), cached);
    }
}

fn still_replicating(session_id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "session {session_id}: records are still replicating to this node"
    ))
}

#[async_trait]
impl ContextStore for FredStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, StoreError> {
        let Some((head, versions)) = self.read_head(session_id).await? else {
            self.cache.lock().unwrap().remove(session_id);
            return Ok(None);
        };
        // Taken out rather than cloned (it goes back in below): a long session's records are
        // then copied once per load, for the caller, not twice.
        let cached = self.cache.lock().unwrap().remove(session_id);
        let records = match cached {
            Some(c) if c.head.chain == head.chain => c.records,
            // What we have may be a prefix of the new records: fetch only the rest...
            Some(c) if (c.records.len() as u32) < head.head.records => {
                match self.fetch_records(session_id, &head, c.records).await {
                    Ok(records) => records,
                    // ...unless it was a branch that lost a conflict: then fetch everything.
                    Err(_) => self.fetch_records(session_id, &head, Vec::new()).await?,
                }
            }
            _ => self.fetch_records(session_id, &head, Vec::new()).await?,
        };
        let session = StoredSession {
            head: head.head.clone(),
            records: records.clone(),
        };
        self.remember(
            session_id,
            Cached {
                head,
                versions,
                records,
            },
        );
        Ok(Some(session))
    }

    async fn commit_turn(
        &self,
        session_id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        // Taken out rather than cloned: it goes back in, extended, once the head is written.
        let cached = self.cache.lock().unwrap().remove(session_id);
        check_next_turn(cached.as_ref().map(|c| &c.head.head), head)?;
        let (versions, mut records, mut chain_digest) = match cached {
            Some(c) => (c.versions, c.records, c.head.chain),
            None => (Vec::new(), Vec::new(), String::new()),
        };
        let mut written = 0;
        if head.turn == 1 {
            // Indexed before anything else is written: a failure here leaves no session, and
            // an entry left by a turn that fails later names no session and is skipped.
            written += self.index_session(session_id, &head.user_id).await?;
        }
        if let Some(record) = record {
            let key = record_key(session_id, records.len() as u32);
            let value = encode_record(&self.node_id, record);
            written += value.len() as u64;
            self.client.update(&key, value, Vec::new()).await?;
            chain_digest = chain(&chain_digest, record);
            records.push(record.to_vec());
        }
        let fred_head = FredHead {
            head: head.clone(),
            writer: self.node_id.clone(),
            chain: chain_digest,
        };
        let value = fred_head.encode();
        written += value.len() as u64;
        match self
            .client
            .update(&head_key(session_id), value, versions)
            .await
        {
            Ok(version) => {
                self.remember(
                    session_id,
                    Cached {
                        head: fred_head,
                        versions: vec![version],
                        records,
                    },
                );
                Ok(written)
            }
            Err(FredError::Refused(why)) => {
                // Another turn got to this node first: nothing of ours is referenced by a head,
                // and the cache entry stays out, so the next load reads the session afresh.
                tracing::info!(session_id, "turn refused by FReD: {why}");
                let stored_turn = self
                    .read_head(session_id)
                    .await?
                    .map_or(0, |(h, _)| h.head.turn);
                Err(StoreError::Conflict { stored_turn })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the head first, so every node stops seeing the session at once; then the
    /// records and the user index entry (left behind by a failure here, a record is never
    /// read, since no head names it, and an index entry is skipped, since its session is gone).
    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        self.cache.lock().unwrap().remove(session_id);
        let Some((head, _)) = self.read_head(session_id).await? else {
            return Ok(false);
        };
        self.client.delete(&head_key(session_id)).await?;
        for number in 0..head.head.records {
            if let Err(e) = self.client.delete(&record_key(session_id, number)).await {
                tracing::warn!(session_id, number, "record not deleted: {e}");
            }
        }
        let entry = user_session_key(&head.head.user_id, session_id);
        if let Err(e) = self.client.delete(&entry).await {
            tracing::warn!(session_id, "user index entry not deleted: {e}");
        }
        Ok(true)
    }

    /// One Scan per 256 sessions of the user's index, then one Read per session for its head.
    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError> {
        let mut sessions = Vec::new();
        for session_id in self.indexed_sessions(user_id).await? {
            match self.read_head(&session_id).await? {
                Some((head, _)) if head.head.user_id == user_id => {
                    sessions.push((session_id, head.head));
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
        _node: NodeHandle,
        _cluster: Cluster,
        _dir: tempfile::TempDir,
    }

    async fn bed() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path(), &["nodeA", "proxy0"]).unwrap();
        let cluster = Cluster::new();
        let node = cluster
            .start_node(
                "nodeA",
                "127.0.0.1:0".parse().unwrap(),
                pki.node_tls("nodeA"),
            )
            .await
            .unwrap();
        let config = FredConfig {
            addr: node.addr().to_string(),
            tls_name: None,
            cert: pki.cert("proxy0"),
            key: pki.key("proxy0"),
            ca: pki.ca(),
            keygroup: "sessions".into(),
            node_id: "nodeA".into(),
            expiry: 0,
            replicas: Some(Vec::new()),
            grant: Vec::new(),
            timeout: Duration::from_secs(2),
        };
        Bed {
            store: FredStore::connect(&config).await.unwrap(),
            _node: node,
            _cluster: cluster,
            _dir: dir,
        }
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
}
