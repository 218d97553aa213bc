//! One async mutex per session in use, so two requests for the same session run one after
//! the other (a streamed turn holds it until its stream ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Session -> its mutex and how many requests hold or wait for it.
type LockMap = Arc<Mutex<HashMap<String, (Arc<tokio::sync::Mutex<()>>, usize)>>>;

/// One async mutex per session in use, so two requests for a session run one after the other.
/// An entry is dropped when the last request holding or waiting for it leaves, so the map
/// does not grow with old sessions.
#[derive(Default)]
pub(super) struct SessionLocks {
    locks: LockMap,
}

/// A request's interest in a session's entry, from the moment it starts waiting: counted
/// explicitly (not by `Arc` references), so a waiter that is cancelled (its client went away)
/// gives its interest back too.
struct Interest {
    locks: LockMap,
    session_id: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap();
        if let Some((_, users)) = locks.get_mut(&self.session_id) {
            *users -= 1;
            if *users == 0 {
                locks.remove(&self.session_id);
            }
        }
    }
}

pub(super) struct SessionGuard {
    // Fields drop in order: the mutex is released before the entry may go.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _interest: Interest,
}

impl SessionLocks {
    pub(super) async fn lock(&self, session_id: &str) -> SessionGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap();
            let (lock, users) = locks.entry(session_id.to_owned()).or_default();
            *users += 1;
            lock.clone()
        };
        let interest = Interest {
            locks: self.locks.clone(),
            session_id: session_id.to_owned(),
        };
        let guard = lock.lock_owned().await;
        SessionGuard {
            _guard: guard,
            _interest: interest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn session_locks_serialize_and_clean_up() {
        let locks = SessionLocks::default();
        let first = locks.lock("a").await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a")).await;
        assert!(waiting.is_err(), "a second holder must wait");
        let other =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "other sessions do not wait");
        drop(other);
        drop(first);
        assert!(
            locks.locks.lock().unwrap().is_empty(),
            "idle sessions leave no entry"
        );
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry() {
        let locks = SessionLocks::default();
        let first = locks.lock("a").await;
        let mut waiting = Box::pin(locks.lock("a"));
        assert!((&mut waiting).now_or_never().is_none(), "it waits");
        // The holder leaves while the other still waits, then the waiter is cancelled.
        drop(first);
        drop(waiting);
        assert!(
            locks.locks.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
        // And the session can still be locked.
        drop(locks.lock("a").await);
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
