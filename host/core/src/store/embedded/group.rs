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

use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::journal::Journal;
use super::{HEADS, JOURNAL_MARK, RECORDS, USER_SESSIONS, decode_head, unavailable};
use crate::blocking::run_blocking;
use crate::store::{SessionHead, StoreError, check_next_turn};

/// Most turns written by one group transaction.
const MAX_GROUP: usize = 256;

/// A turn waiting to be written.
struct Commit {
    id: String,
    head: SessionHead,
    record: Option<Vec<u8>>,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// The journal as the writing turn uses it (only the holder of `writing` touches it).
pub(super) struct Log {
    pub(super) journal: Journal,
    /// The last group written (its frame's sequence number).
    pub(super) seq: u64,
    /// Set when a failed frame could not be retracted: every later write fails with it.
    pub(super) broken: Option<String>,
}

/// The waiting turns and the lock the writing turn holds.
pub(super) struct GroupCommit {
    db: Arc<Database>,
    waiting: Mutex<Vec<Commit>>,
    writing: tokio::sync::Mutex<()>,
    log: Mutex<Log>,
    /// Group transactions written (a turn's commit is in exactly one).
    groups: AtomicU64,
}

impl GroupCommit {
    pub(super) fn new(db: Arc<Database>, log: Log) -> Arc<Self> {
        Arc::new(Self {
            db,
            log: Mutex::new(log),
            waiting: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
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
            record: record.map(<[u8]>::to_vec),
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
            // Only the holder of `writing` gets here, so this lock never waits. A panic inside
            // an earlier write may have left a frame its turns were not told of: refuse writes.
            let mut log = this.log.lock().unwrap_or_else(|poisoned| {
                let mut log = poisoned.into_inner();
                log.broken
                    .get_or_insert_with(|| "a store write panicked; restart the node".into());
                log
            });
            write_group(&this.db, &mut log, group);
            this.groups.fetch_add(1, Ordering::Relaxed);
        })
        .await;
    }

    /// Where the journal's next frame goes (for tests of the journal's laps).
    #[cfg(test)]
    pub(super) fn journal_pos(&self) -> u64 {
        self.log.lock().unwrap().journal.pos
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
/// it durable (a journal frame, or a durable redb commit when the frame does not fit), and
/// answers each. A failed check answers that turn only (it wrote nothing); a failed write or
/// commit answers every turn of the group with the error, and nothing of the group is stored.
fn write_group(db: &Database, log: &mut Log, group: Vec<Commit>) {
    let fail_all = |group: Vec<Commit>, e: String| {
        for c in group {
            let _ = c.done.send(Err(StoreError::Unavailable(e.clone())));
        }
    };
    if let Some(broken) = &log.broken {
        return fail_all(group, broken.clone());
    }
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return fail_all(group, e.to_string()),
    };
    let mut results = Vec::with_capacity(group.len());
    let mut frame = Vec::new();
    for c in &group {
        let head_json = serde_json::to_vec(&c.head).expect("a head always serializes");
        match apply(&txn, &c.id, &c.head, &head_json, c.record.as_deref()) {
            Err(StoreError::Unavailable(e)) => return fail_all(group, e),
            Ok(bytes) => {
                encode(&mut frame, &c.id, &head_json, c.record.as_deref());
                results.push(Ok(bytes));
            }
            refused => results.push(refused),
        }
    }
    // Dropping an uncommitted transaction aborts it: nothing half-written.
    if frame.is_empty() {
        drop(txn);
    } else if let Err(e) = make_durable(txn, log, &frame) {
        return fail_all(group, e);
    }
    for (c, result) in group.into_iter().zip(results) {
        let _ = c.done.send(result);
    }
}

/// Commits `txn` (holding a group's writes) durably: through the journal when `frame` fits,
/// else as a durable redb commit that also checkpoints the journal. On an error nothing of
/// the group is stored, now or after a restart.
fn make_durable(
    mut txn: redb::WriteTransaction,
    log: &mut Log,
    frame: &[u8],
) -> Result<(), String> {
    let seq = log.seq + 1;
    let journaled = log.journal.fits(frame.len());
    let next = if journaled {
        log.journal.pos + Journal::framed(frame.len())
    } else {
        0
    };
    set_journal_mark(&txn, seq, next).map_err(|e| e.to_string())?;
    if !journaled {
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(|e| e.to_string())?;
        log.journal.pos = 0;
        log.seq = seq;
        return Ok(());
    }
    txn.set_durability(Durability::None);
    let written = log
        .journal
        .append(seq, frame)
        .map_err(|e| format!("journal write: {e}"))
        .and_then(|_| txn.commit().map_err(|e| e.to_string()));
    if let Err(e) = written {
        if let Err(again) = log.journal.retract() {
            log.broken = Some(format!(
                "the commit journal could not be repaired after a failed write ({again}); \
                 the node needs an operator"
            ));
        }
        return Err(e);
    }
    log.journal.pos = next;
    log.seq = seq;
    Ok(())
}

/// Records in `txn` the last group it holds and where the journal's next frame goes, so
/// replay after a crash starts exactly after what the durable database already holds.
pub(super) fn set_journal_mark(
    txn: &redb::WriteTransaction,
    seq: u64,
    next: u64,
) -> Result<(), StoreError> {
    let mut mark = txn.open_table(JOURNAL_MARK).map_err(unavailable)?;
    mark.insert("next", (seq, next)).map_err(unavailable)?;
    Ok(())
}

/// One turn's writes inside a group transaction, if the stored turn is the one before it.
/// Checks come before writes, so an error other than `Unavailable` wrote nothing.
pub(super) fn apply(
    txn: &redb::WriteTransaction,
    id: &str,
    head: &SessionHead,
    head_json: &[u8],
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
    heads.insert(id, head_json).map_err(unavailable)?;
    Ok((head_json.len() + record.map_or(0, <[u8]>::len)) as u64)
}

/// Appends one turn to a journal frame: id, head JSON and record, each length-prefixed
/// (the record's length + 1, so 0 says "no record").
fn encode(frame: &mut Vec<u8>, id: &str, head_json: &[u8], record: Option<&[u8]>) {
    for part in [id.as_bytes(), head_json] {
        frame.extend_from_slice(&(part.len() as u32).to_le_bytes());
        frame.extend_from_slice(part);
    }
    let record_len = record.map_or(0, |r| r.len() as u32 + 1);
    frame.extend_from_slice(&record_len.to_le_bytes());
    frame.extend_from_slice(record.unwrap_or_default());
}

/// A journal frame's turns, as [`encode`] wrote them.
pub(super) type Turn<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

/// Reads back the turns of a frame; an error means a frame whose checksum held but whose
/// contents do not parse (a bug, not a torn write).
pub(super) fn decode(mut frame: &[u8]) -> Result<Vec<Turn<'_>>, StoreError> {
    fn take<'a>(frame: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if frame.len() < n {
            return Err(StoreError::Corrupt(
                "a journal frame ends inside a turn".into(),
            ));
        }
        let (part, rest) = frame.split_at(n);
        *frame = rest;
        Ok(part)
    }
    fn len(frame: &mut &[u8]) -> Result<usize, StoreError> {
        let bytes = take(frame, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }
    let mut turns = Vec::new();
    while !frame.is_empty() {
        let n = len(&mut frame)?;
        let id = std::str::from_utf8(take(&mut frame, n)?)
            .map_err(|_| StoreError::Corrupt("a journal frame's session id is not UTF-8".into()))?;
        let n = len(&mut frame)?;
        let head = take(&mut frame, n)?;
        let record = match len(&mut frame)? {
            0 => None,
            n => Some(take(&mut frame, n - 1)?),
        };
        turns.push((id, head, record));
    }
    Ok(turns)
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
