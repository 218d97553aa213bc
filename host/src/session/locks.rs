//! One async mutex per session in use, so two requests for the same session run one after
//! the other (a streamed turn holds it until its stream ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One async mutex per session in use, so two requests for a session run one after the other.
/// Entries are dropped when the last holder leaves, so the map does not grow with old sessions.
#[derive(Default)]
pub(super) struct SessionLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

pub(super) struct SessionGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    session_id: String,
}

impl SessionLocks {
    pub(super) async fn lock(&self, session_id: &str) -> SessionGuard {
        let lock = self
            .locks
            .lock()
            .unwrap()
            .entry(session_id.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        SessionGuard {
            guard: Some(guard),
            lock,
            locks: self.locks.clone(),
            session_id: session_id.to_owned(),
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.lock().unwrap();
        // The map and this guard hold the only references: nobody else waits for this session.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
