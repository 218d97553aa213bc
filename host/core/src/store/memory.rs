//! A store in process memory: for tests and throwaway runs; everything is lost on exit.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ContextStore, SessionHead, StoreError, StoredSession, check_next_turn};

/// Sessions in a map; same semantics as the durable stores.
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, StoredSession>>,
}

impl MemoryStore {
    /// An empty store, for tests and single-node runs that need no persistence.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, StoreError> {
        Ok(self.sessions.lock().unwrap().get(session_id).cloned())
    }

    async fn commit_turn(
        &self,
        session_id: &str,
        head: &SessionHead,
        record: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let mut sessions = self.sessions.lock().unwrap();
        let existing = sessions.get(session_id);
        check_next_turn(existing.map(|s| &s.head), head)?;
        let session = sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| StoredSession {
                head: head.clone(),
                records: Vec::new(),
            });
        session.head = head.clone();
        if let Some(record) = record {
            session.records.push(super::Record::copy_from_slice(record));
        }
        Ok(super::delta_bytes(head, record))
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.sessions.lock().unwrap().remove(session_id).is_some())
    }

    async fn sessions_of(&self, user_id: &str) -> Result<Vec<(String, SessionHead)>, StoreError> {
        let mut sessions: Vec<(String, SessionHead)> = self
            .sessions
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.head.user_id == user_id)
            .map(|(id, s)| (id.clone(), s.head.clone()))
            .collect();
        super::newest_first(&mut sessions);
        Ok(sessions)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    #[tokio::test]
    async fn appends_and_loads() {
        contract::appends_and_loads(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn refuses_out_of_order_turns() {
        contract::refuses_out_of_order_turns(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn deletes() {
        contract::deletes(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn lists_a_users_sessions() {
        contract::lists_a_users_sessions(&MemoryStore::new()).await;
    }
}
