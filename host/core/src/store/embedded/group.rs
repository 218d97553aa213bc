//! Group commit without a writer thread: the turns waiting to be stored take turns at writing.
//!
//! A turn puts its commit in the waiting list and then either gets its answer (another turn
//! wrote it) or the write lock. The lock holder checks every waiting commit (up to
//! [`MAX_GROUP`]) against the newest state, writes those that pass as one journal frame with
//! one fdatasync, and only then puts them in the pending layer and the cache and answers
//! each; the next holder writes whatever queued meanwhile. At one client a turn writes its
//! own commit on its own thread; under load, many turns share one fdatasync. The database
//! gets the changes later, many groups at a time (`checkpoint`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::Database;
use tokio::sync::oneshot;

use super::cache::SessionCache;
use super::checkpoint::Checkpointer;
use super::journal::Log;
use super::layers::{self, Change, Layer, Layers};
use super::ops::{self, Op};
use super::{HEADS, decode_head, unavailable};
use crate::blocking::run_blocking;
use crate::store::{Record, SessionHead, StoreError, check_next_turn};

/// Most turns written by one group.
const MAX_GROUP: usize = 256;

/// What a waiting commit asks for.
enum Request {
    Turn {
        head: SessionHead,
        /// Shared with the layers and the cache once written.
        record: Option<Record>,
    },
    Delete,
}

/// A commit waiting to be written; its answer is the bytes a turn wrote, or 1 if a delete
/// found the session and 0 if not.
struct Commit {
    id: String,
    request: Request,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// The waiting commits, the lock the writing turn holds, and what the writes left in memory.
pub(super) struct GroupCommit {
    db: Arc<Database>,
    waiting: Mutex<Vec<Commit>>,
    pub(super) writing: tokio::sync::Mutex<()>,
    log: Mutex<Log>,
    /// Journaled changes the database does not hold yet.
    pub(super) layers: Arc<Mutex<Layers>>,
    pub(super) checkpoints: Arc<Checkpointer>,
    /// Updated by the writer with every turn it stores, whether or not its caller still waits.
    pub(super) cache: SessionCache,
    /// Groups written (a commit is in exactly one).
    groups: AtomicU64,
}

impl GroupCommit {
    pub(super) fn new(db: Arc<Database>, log: Log) -> Arc<Self> {
        let layers = Arc::new(Mutex::default());
        Arc::new(Self {
            checkpoints: Arc::new(Checkpointer::new(db.clone(), layers.clone())),
            db,
            waiting: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
            log: Mutex::new(log),
            layers,
            cache: SessionCache::new(),
            groups: AtomicU64::new(0),
        })
    }

    pub(super) fn groups_written(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Stores one turn; answers once the frame holding it is durable.
    pub(super) async fn commit_turn(
        self: &Arc<Self>,
        id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let request = Request::Turn {
            head: head.clone(),
            record: record.map(Record::copy_from_slice),
        };
        self.commit(id, request).await
    }

    /// Deletes a session; answers once the frame holding the delete is durable.
    pub(super) async fn delete(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
        Ok(self.commit(id, Request::Delete).await? == 1)
    }

    async fn commit(self: &Arc<Self>, id: &str, request: Request) -> Result<u64, StoreError> {
        let (done, mut answer) = oneshot::channel();
        self.lock_waiting().push(Commit {
            id: id.to_owned(),
            request,
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
            let mut log = this.lock_log();
            write_group(&this, &mut log, group);
            this.groups.fetch_add(1, Ordering::Relaxed);
            this.checkpoints.start_if_due(&mut log);
        })
        .await;
    }

    /// The journal; only the holder of `writing` takes it, so it never waits.
    pub(super) fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| {
            // A panic inside an earlier write may have left a frame its turns were not told
            // of: refuse writes from now on.
            let mut log = poisoned.into_inner();
            log.broken
                .get_or_insert_with(|| "a store write panicked; restart the node".into());
            log
        })
    }

    pub(super) fn lock_layers(&self) -> MutexGuard<'_, Layers> {
        layers::lock(&self.layers)
    }

    fn lock_waiting(&self) -> MutexGuard<'_, Vec<Commit>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest head of `id` the store holds: the layers', the cache's, or the database's.
    fn newest_head(&self, id: &str) -> Result<Option<SessionHead>, StoreError> {
        if let Some(head) = self.lock_layers().head(id) {
            return Ok(head);
        }
        if let Some(head) = self.cache.head(id) {
            return Ok(Some(head));
        }
        // Neither layer holds `id`, so no checkpoint under way changes it: the database's
        // head is the newest.
        let txn = self.db.begin_read().map_err(unavailable)?;
        let heads = txn.open_table(HEADS).map_err(unavailable)?;
        match heads.get(id).map_err(unavailable)? {
            Some(bytes) => Ok(Some(decode_head(bytes.value())?)),
            None => Ok(None),
        }
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

/// Checks every commit of `group` in order against the newest state (and the group's own
/// earlier commits), writes those that pass as one journal frame, makes it durable, then
/// puts them in the pending layer and the cache, and answers each. A failed check answers
/// that commit only; a failed write answers every commit of the group with the error, and
/// nothing of the group is stored, now or after a restart.
fn write_group(commits: &GroupCommit, log: &mut Log, group: Vec<Commit>) {
    let fail_all = |group: Vec<Commit>, e: String| {
        for c in group {
            let _ = c.done.send(Err(StoreError::Unavailable(e.clone())));
        }
    };
    if let Some(broken) = &log.broken {
        return fail_all(group, broken.clone());
    }
    // The group's own changes, folded per session as the pending layer folds them.
    let mut changes = Layer::default();
    let mut results = Vec::with_capacity(group.len());
    let mut payload = Vec::new();
    for c in &group {
        let below = match changes.changes.get(&c.id) {
            Some(change) => Ok(change.head.clone()),
            None => commits.newest_head(&c.id),
        };
        let result = below.and_then(|below| check(&c.id, &c.request, below, &mut payload));
        results.push(result.map(|(written, change)| {
            if let Some(change) = change {
                changes.add(c.id.clone(), change, 0);
            }
            written
        }));
    }
    if !payload.is_empty() {
        let seq = log.seq + 1;
        let journal = &log.files[log.current];
        match journal.append(log.pos, seq, &payload) {
            Ok(next) => {
                log.pos = next;
                log.seq = seq;
            }
            Err(e) => {
                if let Err(again) = journal.retract(log.pos) {
                    log.broken = Some(format!(
                        "the commit journal could not be repaired after a failed write \
                         ({again}); the node needs an operator"
                    ));
                }
                return fail_all(group, format!("journal write: {e}"));
            }
        }
        // Durable now. The layers first, then the cache: a load that sees the cache's
        // change count unchanged must also have seen the layers without this group.
        let mut layers = commits.lock_layers();
        for (id, change) in changes.changes {
            layers.pending.add(id, change, seq);
        }
    }
    for (c, result) in group.into_iter().zip(results) {
        if result.is_ok() {
            match &c.request {
                Request::Turn { head, record } => {
                    commits.cache.committed(&c.id, head, record.as_ref())
                }
                Request::Delete => commits.cache.forget(&c.id),
            }
        }
        let _ = c.done.send(result);
    }
}

/// Checks one commit against the session's newest head and, if it passes, adds its op to
/// the frame's `payload`; returns its answer and its change (none for a delete of nothing).
fn check(
    id: &str,
    request: &Request,
    below: Option<SessionHead>,
    payload: &mut Vec<u8>,
) -> Result<(u64, Option<Change>), StoreError> {
    match request {
        Request::Turn { head, record } => {
            check_next_turn(below.as_ref(), head)?;
            let head_json = serde_json::to_vec(head).expect("a head always serializes");
            let op = Op::Turn {
                id,
                head_json: &head_json,
                record: record.as_deref(),
            };
            ops::encode(payload, &op);
            let written = head_json.len() + record.as_ref().map_or(0, |r| r.len());
            let records_below = below.map_or(0, |h| h.records);
            let change = Change::turn(records_below, head.clone(), record.clone());
            Ok((written as u64, Some(change)))
        }
        Request::Delete if below.is_none() => Ok((0, None)),
        Request::Delete => {
            ops::encode(payload, &Op::Delete { id });
            Ok((1, Some(Change::delete())))
        }
    }
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
