//! The default store: a redb database file on the node's disk, durable across restarts.
//!
//! Turns are committed in groups (`group`): the turns that are ready share one transaction
//! and one fsync, each with its own turn check. A turn is answered only once the write that
//! holds it is durable, and a turn whose check fails changes nothing. The sessions used
//! lately are kept in memory too (`cache`), so a turn's load reads nothing.

mod cache;
mod group;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{ContextStore, Record, SessionHead, StoreError, StoredSession};
use crate::blocking::run_blocking;
use group::GroupCommit;

/// Session id -> JSON of its [`SessionHead`].
const HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("heads");
/// (session id, record number) -> record bytes; a turn's commit inserts one row.
const RECORDS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("records");

/// (user id, session id) -> nothing: each user's sessions, written in the transaction that
/// commits a session's first turn and removed in the one that deletes it, so it always agrees
/// with `HEADS`.
const USER_SESSIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_sessions");

/// Sessions in one redb file; every commit is in an fsynced transaction.
pub struct EmbeddedStore {
    db: Arc<Database>,
    commits: Arc<GroupCommit>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/sessions.redb`; fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("sessions.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(HEADS).map_err(unavailable)?;
        txn.open_table(RECORDS).map_err(unavailable)?;
        index_existing_sessions(&txn)?;
        txn.commit().map_err(unavailable)?;
        let db = Arc::new(db);
        Ok(Self {
            commits: GroupCommit::new(db.clone()),
            db,
        })
    }

    /// Group transactions written so far (for tests and benchmarks: turns per fsync).
    pub fn groups_written(&self) -> u64 {
        self.commits.groups_written()
    }

    /// Runs blocking database work (a read from the page cache, or a delete's fsync) without
    /// holding up the executor; see [`run_blocking`].
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        run_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Fills an empty `USER_SESSIONS` from the heads: a database written before the index
/// existed gets one when first opened. (Every head has an index row otherwise, so an empty
/// index next to heads can only mean that.)
fn index_existing_sessions(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
    if !index.is_empty().map_err(unavailable)? {
        return Ok(());
    }
    let heads = txn.open_table(HEADS).map_err(unavailable)?;
    for row in heads.iter().map_err(unavailable)? {
        let (id, bytes) = row.map_err(unavailable)?;
        let head = decode_head(bytes.value())?;
        index
            .insert((head.user_id.as_str(), id.value()), ())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// A session as the database holds it, or `None`.
fn read_session(db: &Database, id: &str) -> Result<Option<StoredSession>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let heads = txn.open_table(HEADS).map_err(unavailable)?;
    let Some(head) = heads.get(id).map_err(unavailable)? else {
        return Ok(None);
    };
    let head = decode_head(head.value())?;
    let table = txn.open_table(RECORDS).map_err(unavailable)?;
    let mut records = Vec::with_capacity(head.records as usize);
    for row in table
        .range((id, 0)..(id, head.records))
        .map_err(unavailable)?
    {
        let (_, value) = row.map_err(unavailable)?;
        records.push(Record::copy_from_slice(value.value()));
    }
    if records.len() != head.records as usize {
        return Err(StoreError::Corrupt(format!(
            "head says {} records, found {}",
            head.records,
            records.len()
        )));
    }
    Ok(Some(StoredSession { head, records }))
}

/// Removes a session's head, records and index row in one durable transaction; whether it
/// existed.
fn delete_session(db: &Database, id: &str) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let existed = {
        let mut heads = txn.open_table(HEADS).map_err(unavailable)?;
        let removed = heads.remove(id).map_err(unavailable)?;
        match removed {
            None => false,
            Some(bytes) => {
                let head = decode_head(bytes.value())?;
                let mut records = txn.open_table(RECORDS).map_err(unavailable)?;
                for number in 0..head.records {
                    records.remove((id, number)).map_err(unavailable)?;
                }
                let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
                index
                    .remove((head.user_id.as_str(), id))
                    .map_err(unavailable)?;
                true
            }
        }
    };
    txn.commit().map_err(unavailable)?;
    Ok(existed)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode_head(bytes: &[u8]) -> Result<SessionHead, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("session head: {e}")))
}

#[async_trait]
impl ContextStore for EmbeddedStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, StoreError> {
        let cache = &self.commits.cache;
        if let Some(session) = cache.get(session_id) {
            return Ok(Some(session));
        }
        let epoch = cache.epoch(session_id);
        let id = session_id.to_owned();
        let session = self.blocking(move |db| read_session(db, &id)).await?;
        if let Some(session) = &session {
            cache.fill(session_id, epoch, session);
        }
        Ok(session)
    }

    async fn commit_turn(
        &self,
        session_id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        self.commits.commit(session_id, head, record).await
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        let id = session_id.to_owned();
        let deleted = self.blocking(move |db| delete_session(db, &id)).await;
        self.commits.cache.forget(session_id);
        deleted
    }

    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
            let heads = txn.open_table(HEADS).map_err(unavailable)?;
            let mut sessions = Vec::new();
            // Keys order by user first: the user's rows are contiguous from (user, "").
            for row in index.range((user.as_str(), "")..).map_err(unavailable)? {
                let (key, _) = row.map_err(unavailable)?;
                let (row_user, id) = key.value();
                if row_user != user {
                    break;
                }
                let Some(head) = heads.get(id).map_err(unavailable)? else {
                    return Err(StoreError::Corrupt(format!(
                        "user {user}'s session {id} is indexed but has no head"
                    )));
                };
                sessions.push((id.to_owned(), decode_head(head.value())?));
            }
            super::newest_first(&mut sessions);
            Ok(sessions)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    #[tokio::test]
    async fn appends_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        contract::appends_and_loads(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn refuses_out_of_order_turns() {
        let dir = tempfile::tempdir().unwrap();
        contract::refuses_out_of_order_turns(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn deletes() {
        let dir = tempfile::tempdir().unwrap();
        contract::deletes(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn lists_a_users_sessions() {
        let dir = tempfile::tempdir().unwrap();
        contract::lists_a_users_sessions(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn indexes_sessions_stored_before_the_index_existed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .commit_turn("s1", &contract::head(1, 1), Some(b"one"))
                .await
                .unwrap();
            // As an older build left it: heads and records, no index rows.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(USER_SESSIONS).unwrap();
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let listed = store.sessions_of("alice").await.unwrap();
        assert_eq!(listed, [("s1".to_owned(), contract::head(1, 1))]);
    }

    /// Concurrent turns share group transactions; each is answered only after its group is
    /// durable (all are there after reopening); a turn whose check fails in a group changes
    /// nothing and does not stop the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_turns_share_durable_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("s{i}");
                store
                    .commit_turn(&id, &contract::head(1, 1), Some(b"one"))
                    .await
                    .unwrap();
                // Every other session also sends turn 1 again, which never follows: a conflict.
                let stale = (i % 2 == 0).then(|| {
                    let store = store.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        store
                            .commit_turn(&id, &contract::head(1, 1), Some(b"x"))
                            .await
                    })
                });
                store
                    .commit_turn(&id, &contract::head(2, 2), Some(b"two"))
                    .await
                    .unwrap();
                if let Some(stale) = stale {
                    assert!(matches!(
                        stale.await.unwrap(),
                        Err(StoreError::Conflict { .. })
                    ));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let groups = store.groups_written();
        assert!(groups < 128, "128 turns took {groups} groups: no sharing");
        drop(Arc::into_inner(store).expect("every task is done"));
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..64 {
            let s = store.load(&format!("s{i}")).await.unwrap().unwrap();
            assert_eq!(s.head.turn, 2);
            assert_eq!(s.records, [b"one".to_vec(), b"two".to_vec()]);
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .commit_turn("s1", &contract::head(1, 1), Some(b"one"))
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let s = store.load("s1").await.unwrap().unwrap();
        assert_eq!(s.head.turn, 1);
        assert_eq!(s.records, vec![b"one".to_vec()]);
    }
}
