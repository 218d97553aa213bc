//! The default store: a redb database file on the node's disk, durable across restarts.
//!
//! Turns are committed in groups (`group`): the turns that are ready share one journal frame
//! and one fdatasync (`journal`), each with its own turn check. A turn is answered only once
//! the frame that holds it is durable, and a turn whose check fails changes nothing. The
//! journaled changes stay in memory (`layers`) until a checkpoint writes many groups to the
//! database in one transaction (`checkpoint`); opening replays what a crash left. The
//! sessions used lately are kept in memory too (`cache`), so a turn's load reads nothing.

mod cache;
mod checkpoint;
mod group;
mod journal;
mod layers;
mod ops;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{ContextStore, Record, SessionHead, StoreError, StoredSession};
use crate::blocking::run_blocking;
use group::GroupCommit;
use journal::{Journal, Log};

/// Session id -> JSON of its [`SessionHead`].
const HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("heads");
/// (session id, record number) -> record bytes; a turn's commit inserts one row.
const RECORDS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("records");

/// (user id, session id) -> nothing: each user's sessions, written in the transaction that
/// commits a session's first turn and removed in the one that deletes it, so it always agrees
/// with `HEADS`.
const USER_SESSIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_sessions");

/// "applied" -> the last journal frame the database holds, moved by each checkpoint in its
/// own transaction: replay starts after it, and reads skip the layers it already holds.
const JOURNAL_MARK: TableDefinition<&str, u64> = TableDefinition::new("journal_mark");

/// Sessions in one redb file and its commit journal; every answered turn is durable.
pub struct EmbeddedStore {
    db: Arc<Database>,
    commits: Arc<GroupCommit>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/sessions.redb` and its journal files `dir/journal-0.log` and
    /// `dir/journal-1.log`, and writes into the database the turns the journal holds beyond
    /// it; fails if another process holds the database.
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
        txn.open_table(JOURNAL_MARK).map_err(unavailable)?;
        index_existing_sessions(&txn)?;
        txn.commit().map_err(unavailable)?;
        let files = [0, 1].map(|n| {
            let path = dir.join(format!("journal-{n}.log"));
            Journal::open(&path).map(Arc::new).map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
            })
        });
        let [first, second] = files;
        let files = [first?, second?];
        let seq = checkpoint::recover(&db, &files)?;
        let log = Log {
            files,
            current: 0,
            pos: 0,
            seq,
            broken: None,
        };
        let db = Arc::new(db);
        Ok(Self {
            commits: GroupCommit::new(db.clone(), log),
            db,
        })
    }

    /// Groups written so far, each one journal frame and one fdatasync (for tests and
    /// benchmarks: turns per fsync).
    pub fn groups_written(&self) -> u64 {
        self.commits.groups_written()
    }

    /// Runs blocking database work (a read from the page cache) without holding up the
    /// executor; see [`run_blocking`].
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

impl Drop for EmbeddedStore {
    /// A checkpoint under way finishes first, so the database is closed once this returns
    /// (a store reopened in this process finds it free).
    fn drop(&mut self) {
        self.commits.checkpoints.wait();
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

/// A session as the database holds it, or `None`, and the database's journal mark.
fn read_session(db: &Database, id: &str) -> Result<(Option<StoredSession>, u64), StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mark = journal_mark(&txn.open_table(JOURNAL_MARK).map_err(unavailable)?)?;
    let heads = txn.open_table(HEADS).map_err(unavailable)?;
    let Some(head) = heads.get(id).map_err(unavailable)? else {
        return Ok((None, mark));
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
    Ok((Some(StoredSession { head, records }), mark))
}

/// `user`'s sessions as the database holds them, and its journal mark.
fn read_sessions_of(
    db: &Database,
    user: &str,
) -> Result<(Vec<(String, SessionHead)>, u64), StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mark = journal_mark(&txn.open_table(JOURNAL_MARK).map_err(unavailable)?)?;
    let index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
    let heads = txn.open_table(HEADS).map_err(unavailable)?;
    let mut sessions = Vec::new();
    // Keys order by user first: the user's rows are contiguous from (user, "").
    for row in index.range((user, "")..).map_err(unavailable)? {
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
    Ok((sessions, mark))
}

/// The last journal frame the database holds, as `JOURNAL_MARK` (opened by a read or a
/// write transaction) says.
fn journal_mark(table: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    let mark = table.get("applied").map_err(unavailable)?;
    Ok(mark.map_or(0, |m| m.value()))
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
        // The change count before the layers, the layers before the database: each later
        // look is at least as new as the one before (see `group::write_group`).
        let epoch = cache.epoch(session_id);
        let seen = self.commits.lock_layers().changes_of(session_id);
        let id = session_id.to_owned();
        let (stored, mark) = self.blocking(move |db| read_session(db, &id)).await?;
        let session = layers::settle(stored, mark, seen)?;
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
        self.commits.commit_turn(session_id, head, record).await
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        self.commits.delete(session_id).await
    }

    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError> {
        let seen = self.commits.lock_layers().heads_of(user_id);
        let user = user_id.to_owned();
        let (stored, mark) = self.blocking(move |db| read_sessions_of(db, &user)).await?;
        let mut sessions: std::collections::HashMap<String, SessionHead> =
            stored.into_iter().collect();
        for (last_seq, id, head) in seen {
            if last_seq <= mark {
                continue;
            }
            match head {
                Some(head) => {
                    sessions.insert(id, head);
                }
                None => {
                    sessions.remove(&id);
                }
            }
        }
        let mut sessions: Vec<_> = sessions.into_iter().collect();
        super::newest_first(&mut sessions);
        Ok(sessions)
    }

    /// Writes every journaled change to the database, so the next opening replays nothing.
    async fn close(&self) {
        let _writing = self.commits.writing.lock().await;
        let commits = self.commits.clone();
        let _ = run_blocking(move || commits.checkpoints.finish(&mut commits.lock_log())).await;
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

    /// What a power cut at this moment would leave: the database and journal files as they
    /// are on disk now, copied while the store is open (nothing closed or flushed).
    fn crash_copy(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for file in ["sessions.redb", "journal-0.log", "journal-1.log"] {
            std::fs::copy(from.join(file), to.path().join(file)).unwrap();
        }
        to
    }

    /// The sessions the database file holds by itself, without the journal's replay.
    fn heads_in_database(dir: &Path) -> usize {
        let db = Database::create(dir.join("sessions.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let n = txn.open_table(HEADS).unwrap().len().unwrap();
        n as usize
    }

    async fn commit(store: &EmbeddedStore, id: &str, turn: u32, record: &[u8]) {
        store
            .commit_turn(id, &contract::head(turn, turn), Some(record))
            .await
            .unwrap();
    }

    /// Answered turns are in the journal alone until a checkpoint; a crash then reopening
    /// replays them, in order, and the database holds them after.
    #[tokio::test]
    async fn a_crash_loses_no_answered_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        commit(&store, "s1", 1, b"one").await;
        commit(&store, "s1", 2, b"two").await;
        commit(&store, "s2", 1, b"uno").await;
        assert!(store.delete("s2").await.unwrap());
        commit(&store, "s3", 1, b"eins").await;
        let crashed = crash_copy(dir.path());
        assert_eq!(
            heads_in_database(crashed.path()),
            0,
            "the turns must be in the journal alone for this test to test replay"
        );
        let store = EmbeddedStore::open(crashed.path()).unwrap();
        let s1 = store.load("s1").await.unwrap().unwrap();
        assert_eq!(s1.head.turn, 2);
        assert_eq!(s1.records, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(store.load("s2").await.unwrap(), None);
        assert_eq!(
            store.load("s3").await.unwrap().unwrap().records,
            [b"eins".to_vec()]
        );
        // Replay ended in a durable commit, and the store goes on from there.
        commit(&store, "s1", 3, b"three").await;
        drop(store);
        assert_eq!(heads_in_database(crashed.path()), 2);
        let store = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(store.load("s1").await.unwrap().unwrap().head.turn, 3);
    }

    /// A frame cut short by the crash (its write never finished) is not replayed: its turn
    /// was never answered. The frames before it are.
    #[tokio::test]
    async fn a_torn_frame_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        commit(&store, "s1", 1, b"one").await;
        commit(&store, "s1", 2, b"two").await;
        let end = store.commits.lock_log().pos;
        let crashed = crash_copy(dir.path());
        let journal = crashed.path().join("journal-0.log");
        let mut bytes = std::fs::read(&journal).unwrap();
        bytes[end as usize - 1] ^= 0xff;
        std::fs::write(&journal, &bytes).unwrap();
        let store = EmbeddedStore::open(crashed.path()).unwrap();
        let s1 = store.load("s1").await.unwrap().unwrap();
        assert_eq!(s1.head.turn, 1);
        assert_eq!(s1.records, [b"one".to_vec()]);
    }

    /// Past a checkpoint's worth of journal, the turns go to the database in the background
    /// while new ones go to the other file, lap after lap; a crash at any point replays
    /// exactly what the database lacks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_move_turns_to_the_database_lap_after_lap() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let record = vec![7u8; 256 << 10];
        let per_checkpoint = (checkpoint::CHECKPOINT_BYTES / record.len() as u64) as u32;
        let turns = 3 * per_checkpoint + 3;
        for turn in 1..=turns {
            commit(&store, "big", turn, &record).await;
            // Another session, so the database and the layers hold different things.
            commit(&store, &format!("small{turn}"), 1, b"s").await;
            if turn % per_checkpoint == 0 {
                // A checkpoint that lags (as in a debug build) just starts later; waiting
                // here makes each lap's switch of files happen.
                store.commits.checkpoints.wait();
            }
        }
        store.commits.checkpoints.wait();
        assert!(store.commits.checkpoints.written() >= 2);
        let crashed = crash_copy(dir.path());
        let in_database = heads_in_database(crashed.path());
        assert!(
            in_database > 0 && in_database < turns as usize + 1,
            "some sessions are in the database, the newest in the journal only ({in_database})"
        );
        for dir in [dir.path(), crashed.path()] {
            let reopened;
            let store = if dir == crashed.path() {
                reopened = EmbeddedStore::open(dir).unwrap();
                &reopened
            } else {
                &store
            };
            let big = store.load("big").await.unwrap().unwrap();
            assert_eq!(big.head.turn, turns);
            assert_eq!(big.records.len(), turns as usize);
            assert!(big.records.iter().all(|r| r[..] == record[..]));
            let listed = store.sessions_of("alice").await.unwrap();
            assert_eq!(listed.len(), turns as usize + 1);
        }
    }

    /// Reads that miss the cache while checkpoints move turns to the database always see a
    /// whole session (as many records as its head says) and never an older turn than before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_racing_checkpoints_see_whole_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let record = vec![1u8; 48 << 10];
        let turns = 4 * (checkpoint::CHECKPOINT_BYTES / record.len() as u64) as u32;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for turn in 1..=turns {
                    for id in ["a", "b"] {
                        commit(&store, id, turn, &record).await;
                    }
                }
            })
        };
        let mut seen = [0u32; 2];
        let mut raced = 0;
        while !writer.is_finished() {
            for (i, id) in ["a", "b"].into_iter().enumerate() {
                store.commits.cache.forget(id);
                raced += usize::from(store.commits.lock_layers().flushing.is_some());
                let Some(s) = store.load(id).await.unwrap() else {
                    continue;
                };
                assert_eq!(s.records.len(), s.head.records as usize, "{id} read whole");
                assert!(s.head.turn >= seen[i], "{id} went back");
                seen[i] = s.head.turn;
            }
        }
        writer.await.unwrap();
        store.commits.checkpoints.wait();
        assert!(store.commits.checkpoints.written() >= 1);
        assert!(raced > 0, "no read came while a checkpoint ran");
    }

    /// A checkpoint that cannot finish (here: the database's write lock is held) holds the
    /// writes back once the journal's backlog is full, instead of letting turns pile up in
    /// memory; they go on when it finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_checkpoint_holds_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let record = vec![5u8; 256 << 10];
        let backlog_turns = (checkpoint::BACKLOG_BYTES / record.len() as u64) as u32;
        let stall = store.db.begin_write().unwrap();
        let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let writer = {
            let (store, done, record) = (store.clone(), done.clone(), record.clone());
            tokio::spawn(async move {
                for turn in 1..=backlog_turns + 8 {
                    commit(&store, "s", turn, &record).await;
                    done.store(turn, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // Until no turn was answered for 200 ms (or 10 s went by).
        let (mut stuck_at, mut quiet) = (0, 0);
        for _ in 0..500 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let now = done.load(std::sync::atomic::Ordering::SeqCst);
            quiet = if now == stuck_at { quiet + 1 } else { 0 };
            stuck_at = now;
            if quiet == 10 || writer.is_finished() {
                break;
            }
        }
        assert!(!writer.is_finished(), "writes went on past the backlog");
        // The first file's turns wait for the stalled checkpoint; the backlog fills behind them.
        let per_checkpoint = (checkpoint::CHECKPOINT_BYTES / record.len() as u64) as u32;
        assert!(
            stuck_at <= per_checkpoint + backlog_turns + 1,
            "{stuck_at} turns written while the checkpoint stalled"
        );
        drop(stall);
        writer.await.unwrap();
        let s = store.load("s").await.unwrap().unwrap();
        assert_eq!(s.head.turn, backlog_turns + 8);
    }

    /// A session whose older turns are in the database and newer ones only journaled reads
    /// whole when the cache does not hold it; a delete and a new first turn read right too.
    #[tokio::test]
    async fn reads_put_the_journaled_turns_over_the_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            commit(&store, "s1", 1, b"one").await;
            commit(&store, "s1", 2, b"two").await;
            commit(&store, "gone", 1, b"x").await;
            store.close().await;
        }
        assert_eq!(heads_in_database(dir.path()), 2, "close wrote everything");
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // The cache is empty: turn 3 does not follow anything it holds, so it stays out.
        commit(&store, "s1", 3, b"three").await;
        assert!(store.commits.cache.get("s1").is_none());
        let s1 = store.load("s1").await.unwrap().unwrap();
        assert_eq!(s1.head.turn, 3);
        assert_eq!(
            s1.records,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );

        assert!(store.delete("gone").await.unwrap());
        assert!(!store.delete("gone").await.unwrap());
        assert_eq!(store.load("gone").await.unwrap(), None);
        let listed = store.sessions_of("alice").await.unwrap();
        assert_eq!(listed, [("s1".to_owned(), contract::head(3, 3))]);
        // A stale turn 2 of s1 conflicts against the journaled turn 3.
        let stale = store
            .commit_turn("s1", &contract::head(2, 2), Some(b"late"))
            .await;
        assert!(matches!(
            stale,
            Err(StoreError::Conflict { stored_turn: 3 })
        ));
        commit(&store, "gone", 1, b"again").await;
        store.commits.cache.forget("gone");
        let again = store.load("gone").await.unwrap().unwrap();
        assert_eq!(again.records, [b"again".to_vec()]);
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
