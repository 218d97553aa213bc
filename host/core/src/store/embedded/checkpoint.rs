//! Checkpoints: the pending layer's frames go to the database in one durable transaction, in
//! a thread of their own, while turns go on being journaled to the other file. Opening a
//! store does the same with whatever frames the last run left ([`recover`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};

use super::journal::{Frame, Journal, Log};
use super::layers::{self, Layers};
use super::ops;
use super::{JOURNAL_MARK, journal_mark, unavailable};
use crate::store::StoreError;

/// Journal bytes in the current file past which its frames go to the database. Larger means
/// fewer, bigger database commits, and more memory and replay on opening.
pub(super) const CHECKPOINT_BYTES: u64 = 2 << 20;

/// Journal bytes in the current file past which the writer waits for the running checkpoint
/// before writing more: turns not in the database are held in memory, and a checkpoint that
/// cannot keep up (a slow or failing disk) must hold writes back rather than let them pile up.
pub(super) const BACKLOG_BYTES: u64 = 8 * CHECKPOINT_BYTES;

/// Runs checkpoints, one at a time, each in a thread of its own.
pub(super) struct Checkpointer {
    db: Arc<Database>,
    layers: Arc<Mutex<Layers>>,
    /// The checkpoint thread, while one runs (or after it failed).
    running: Mutex<Option<JoinHandle<()>>>,
    /// Checkpoints that reached the database (for tests).
    written: AtomicU64,
}

impl Checkpointer {
    pub(super) fn new(db: Arc<Database>, layers: Arc<Mutex<Layers>>) -> Self {
        Self {
            db,
            layers,
            running: Mutex::default(),
            written: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits for the running checkpoint, if any, to end.
    pub(super) fn wait(&self) {
        let running = self.lock().take();
        if let Some(thread) = running {
            let _ = thread.join();
        }
    }

    /// After a group: starts a checkpoint if the current journal file holds enough and none
    /// runs, or starts again one that failed. Past [`BACKLOG_BYTES`] it first waits for the
    /// running one. The caller holds the write lock, so waiting holds back the next group.
    pub(super) fn start_if_due(self: &Arc<Self>, log: &mut Log) {
        if log.pos >= BACKLOG_BYTES {
            tracing::warn!(
                journal_bytes = log.pos,
                "store checkpoints do not keep up; writes wait for the running one"
            );
            self.wait();
        }
        self.start(log, false);
    }

    /// Writes every journaled change to the database and waits for it (a clean shutdown, so
    /// the next opening replays nothing). The caller holds the write lock.
    pub(super) fn finish(self: &Arc<Self>, log: &mut Log) {
        // The first may only redo a failed checkpoint; the second then takes the pending layer.
        for _ in 0..2 {
            self.wait();
            self.start(log, true);
        }
        self.wait();
    }

    fn start(self: &Arc<Self>, log: &mut Log, even_small: bool) {
        let mut running = self.lock();
        if running.as_ref().is_some_and(|thread| !thread.is_finished()) {
            return;
        }
        let mut layers = layers::lock(&self.layers);
        let last_seq = match &layers.flushing {
            // The last checkpoint failed (a success clears `flushing`): its frames again.
            Some(layer) => layer.last_seq,
            None if log.pos >= CHECKPOINT_BYTES || (even_small && log.pos > 0) => {
                let layer = Arc::new(std::mem::take(&mut layers.pending));
                let last_seq = layer.last_seq;
                layers.flushing = Some(layer);
                // The other file's frames are all in the database (nothing is flushing).
                log.current ^= 1;
                log.pos = 0;
                last_seq
            }
            None => return,
        };
        drop(layers);
        let journal = log.files[log.current ^ 1].clone();
        let this = self.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || match write(&this.db, &journal, last_seq) {
                Ok(()) => {
                    layers::lock(&this.layers).flushing = None;
                    this.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "store checkpoint failed; its turns stay in the journal and memory, and \
                     it is tried again after the next write"
                ),
            });
        match thread {
            Ok(thread) => *running = Some(thread),
            Err(e) => tracing::error!(error = %e, "cannot start a store checkpoint thread"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes the journal's frames up to `last_seq` that the database lacks, in one durable
/// transaction that also moves the database's mark to `last_seq`.
fn write(db: &Database, journal: &Journal, last_seq: u64) -> Result<(), StoreError> {
    let mut frames = journal.frames().map_err(unreadable)?;
    let txn = db.begin_write().map_err(unavailable)?;
    let mark = mark(&txn)?;
    frames.retain(|f| f.seq > mark && f.seq <= last_seq);
    let reached = apply(&txn, mark, &frames)?;
    if reached != last_seq {
        return Err(StoreError::Corrupt(format!(
            "the journal holds frames up to {reached}, the checkpoint needs up to {last_seq}"
        )));
    }
    txn.commit().map_err(unavailable)
}

/// Applies, in one durable transaction, the frames of both journal files that the database
/// lacks (turns answered before a crash or a stop); returns the last frame's number.
pub(super) fn recover(db: &Database, files: &[Arc<Journal>; 2]) -> Result<u64, StoreError> {
    let mut frames = files[0].frames().map_err(unreadable)?;
    frames.extend(files[1].frames().map_err(unreadable)?);
    let txn = db.begin_write().map_err(unavailable)?;
    let mark = mark(&txn)?;
    frames.retain(|f| f.seq > mark);
    frames.sort_unstable_by_key(|f| f.seq);
    let last = apply(&txn, mark, &frames)?;
    txn.commit().map_err(unavailable)?;
    if !frames.is_empty() {
        tracing::info!(frames = frames.len(), "replayed the commit journal");
    }
    Ok(last)
}

/// Applies `frames`, which must be the ones right after `mark` in order, and moves the mark
/// to the last; returns it.
fn apply(txn: &WriteTransaction, mark: u64, frames: &[Frame]) -> Result<u64, StoreError> {
    let mut last = mark;
    for frame in frames {
        if frame.seq != last + 1 {
            return Err(StoreError::Corrupt(format!(
                "journal frame {} is missing (the database holds up to {mark})",
                last + 1
            )));
        }
        for op in ops::decode(&frame.payload)? {
            ops::apply(txn, &op)?;
        }
        last = frame.seq;
    }
    txn.open_table(JOURNAL_MARK)
        .map_err(unavailable)?
        .insert("applied", last)
        .map_err(unavailable)?;
    Ok(last)
}

/// The last journal frame the database holds.
fn mark(txn: &WriteTransaction) -> Result<u64, StoreError> {
    journal_mark(&txn.open_table(JOURNAL_MARK).map_err(unavailable)?)
}

fn unreadable(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot read the commit journal: {e}"))
}
