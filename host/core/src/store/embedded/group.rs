//! Group commit without a writer thread: the turns waiting to be stored take turns at writing.
//!
//! A turn puts its commit in the waiting list and then either gets its answer (another turn
//! wrote it) or the write lock. The lock holder writes every waiting commit (up to
//! [`MAX_GROUP`]) in one transaction with one fsync, answers each, and lets the lock go; the
//! next holder writes whatever queued meanwhile. At one client a turn writes its own commit
//! on its own thread (no hand-off to a writer thread and back); under load, many turns share
//! one fsync, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use super::cache::SessionCache;
use super::{HEADS, RECORDS, USER_SESSIONS, decode_head, unavailable};
use crate::blocking::run_blocking;
use crate::store::{Record, SessionHead, StoreError, check_next_turn};

/// Most turns written by one group transaction.
const MAX_GROUP: usize = 256;

/// A turn waiting to be written.
struct Commit {
    id: String,
    head: SessionHead,
    /// Shared with the cache once written.
    record: Option<Record>,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// The waiting turns and the lock the writing turn holds.
pub(super) struct GroupCommit {
    db: Arc<Database>,
    waiting: Mutex<Vec<Commit>>,
    writing: tokio::sync::Mutex<()>,
    /// Updated by the writer with every turn it stores, whether or not its caller still waits.
    pub(super) cache: SessionCache,
    /// Group transactions written (a turn's commit is in exactly one).
    groups: AtomicU64,
}

impl GroupCommit {
    pub(super) fn new(db: Arc<Database>) -> Arc<Self> {
        Arc::new(Self {
            db,
            waiting: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
            cache: SessionCache::new(),
            groups: AtomicU64::new(0),
        })
    }

    pub(super) fn groups_written(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Stores one turn; answers once the transaction holding it is durable.
    pub(super) async fn commit(
        self: &Arc<Self>,
        id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let (done, mut answer) = oneshot::channel();
        self.lock_waiting().push(Commit {
            id: id.to_owned(),
            head: head.clone(),
            record: record.map(Record::copy_from_slice),
            done,
        });
        // Should this future be dropped before its commit is written (a client that went
        // away), someone must still write it, as a writer thread would have.
        let mut unwritten = Unwritten(Some(self.clone()));
        let result = loop {
            tokio::select! {
                biased;
                result = &mut answer => break result,
                _writing = self.writing.lock() => {
                    // While we waited for the lock, the group written before may have held ours.
                    if let Ok(result) = answer.try_recv() {
                        break Ok(result);
                    }
                    self.write_next_group().await;
                }
            }
        };
        unwritten.0 = None;
        result.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the store write was aborted".into(),
            ))
        })
    }

    /// Writes the oldest waiting commits as one group; the caller holds `writing`.
    async fn write_next_group(self: &Arc<Self>) {
        let group: Vec<Commit> = {
            let mut waiting = self.lock_waiting();
            let n = waiting.len().min(MAX_GROUP);
            waiting.drain(..n).collect()
        };
        if group.is_empty() {
            return;
        }
        let this = self.clone();
        // A panic drops the group's answer senders: each of its turns hears "aborted".
        let _ = run_blocking(move || {
            write_group(&this.db, &this.cache, group);
            this.groups.fetch_add(1, Ordering::Relaxed);
        })
        .await;
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<Commit>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes what is waiting if its turn's future is dropped first (see [`GroupCommit::commit`]).
struct Unwritten(Option<Arc<GroupCommit>>);

impl Drop for Unwritten {
    fn drop(&mut self) {
        let (Some(group), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _writing = group.writing.lock().await;
            group.write_next_group().await;
        });
    }
}

/// Applies every commit of `group` in one transaction, each after its own turn check, makes
/// it durable, and answers each. A failed check answers that turn only (it wrote nothing); a
/// failed write or commit answers every turn of the group with the error, and nothing of the
/// group is stored.
fn write_group(db: &Database, cache: &SessionCache, group: Vec<Commit>) {
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            let e = e.to_string();
            for c in group {
                let _ = c.done.send(Err(StoreError::Unavailable(e.clone())));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(group.len());
    let mut failed = None;
    for c in &group {
        match apply(&txn, &c.id, &c.head, c.record.as_deref()) {
            Err(StoreError::Unavailable(e)) => {
                failed = Some(e);
                break;
            }
            result => results.push(result),
        }
    }
    // Dropping an uncommitted transaction aborts it: nothing half-written.
    let failed = match failed {
        Some(e) => Some(e),
        None => txn.commit().err().map(|e| e.to_string()),
    };
    match failed {
        Some(e) => {
            for c in group {
                let _ = c.done.send(Err(StoreError::Unavailable(e.clone())));
            }
        }
        None => {
            for (c, result) in group.into_iter().zip(results) {
                if result.is_ok() {
                    cache.committed(&c.id, &c.head, c.record.as_ref());
                }
                let _ = c.done.send(result);
            }
        }
    }
}

/// One turn's writes inside a group transaction, if the stored turn is the one before it.
/// Checks come before writes, so an error other than `Unavailable` wrote nothing.
fn apply(
    txn: &redb::WriteTransaction,
    id: &str,
    head: &SessionHead,
    record: Option<&[u8]>,
) -> Result<u64, StoreError> {
    let mut heads = txn.open_table(HEADS).map_err(unavailable)?;
    let stored = match heads.get(id).map_err(unavailable)? {
        Some(bytes) => Some(decode_head(bytes.value())?),
        None => None,
    };
    check_next_turn(stored.as_ref(), head)?;
    if stored.is_none() {
        let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
        index
            .insert((head.user_id.as_str(), id), ())
            .map_err(unavailable)?;
    }
    if let Some(record) = record {
        let number = stored.as_ref().map_or(0, |h| h.records);
        let mut records = txn.open_table(RECORDS).map_err(unavailable)?;
        records.insert((id, number), record).map_err(unavailable)?;
    }
    let bytes = serde_json::to_vec(head).expect("a head always serializes");
    heads.insert(id, bytes.as_slice()).map_err(unavailable)?;
    Ok((bytes.len() + record.map_or(0, <[u8]>::len)) as u64)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::super::EmbeddedStore;
    use crate::store::{ContextStore, contract};

    /// A turn whose future is dropped while it waits for the write lock (its client went away)
    /// is still written, as with a writer thread: a retry then finds it stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_turn_went_away_is_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let writing = store.commits.writing.lock().await;
        {
            let head = contract::head(1, 1);
            let mut commit = pin!(store.commit_turn("s1", &head, Some(b"one")));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                commit.as_mut().poll(&mut cx).is_pending(),
                "it must wait for the lock"
            );
        }
        assert_eq!(
            store.commits.lock_waiting().len(),
            1,
            "the dropped turn still waits"
        );
        drop(writing);
        for _ in 0..200 {
            if store.commits.groups_written() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let stored = store.load("s1").await.unwrap().expect("written after all");
        assert_eq!(stored.records, [b"one".to_vec()]);
    }
}
