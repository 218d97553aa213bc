//! The sessions API's side of a session: what its owner sees (`GET /sessions/{id}`,
//! `GET /sessions?user_id=`), including the conversation as the session's policy renders it.

use serde_json::{Map, Value, json};

use super::Proxy;
use super::errors::{joined, policy_error};
use crate::error::Error;
use crate::store::{SessionHead, StoredSession};

impl Proxy {
    /// A session as its owner sees it (`GET /sessions/{id}`): what the head says, and the
    /// conversation as the session's policy renders it (null if it cannot).
    pub async fn session_view(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<Map<String, Value>, Error> {
        let stored = self.load_owned(session_id, user_id).await?;
        let mut view = session_summary(session_id, &stored.head);
        view.insert("user_id".into(), user_id.into());
        view.insert("records".into(), stored.head.records.into());
        view.insert("stored_bytes".into(), stored.bytes().into());
        let history = match self.render_history(stored).await {
            Ok(messages) => messages.map(|messages| {
                messages
                    .into_iter()
                    .map(|(role, content)| json!({"role": role, "content": content}))
                    .collect::<Vec<_>>()
            }),
            Err(why) => {
                view.insert("history_unavailable".into(), why.into());
                None
            }
        };
        view.insert("history".into(), history.into());
        Ok(view)
    }

    /// A user's sessions, most recently updated first (`GET /sessions?user_id=`).
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<Map<String, Value>>, Error> {
        let sessions = self.store.sessions_of(user_id).await?;
        Ok(sessions
            .iter()
            .filter(|(_, head)| !self.expired(head))
            .map(|(session_id, head)| session_summary(session_id, head))
            .collect())
    }

    /// The session's conversation through its policy's optional `history` export; `Ok(None)`
    /// if the policy has none, `Err` (a reason for the client) if it failed.
    async fn render_history(
        &self,
        stored: StoredSession,
    ) -> Result<Option<Vec<(String, String)>>, String> {
        let mode = &stored.head.mode;
        let policy = self
            .policies
            .get(mode)
            .ok_or_else(|| format!("mode {mode:?} is not loaded on this node"))?;
        if !policy.has_history() {
            return Ok(None);
        }
        let settings = self.settings(&Map::new(), None, "{}".into(), false).await;
        let (runtime, services) = (self.policies.runtime().clone(), self.services.clone());
        let policy2 = policy.clone();
        let rendered = crate::blocking::run_blocking(move || {
            let mut instance = policy2.instantiate(&runtime, services)?;
            instance.render(&stored.records, &settings)
        })
        .await
        .map_err(|e| joined(e, &policy).message)?;
        rendered.map_err(|e| policy_error(e, &policy).message)
    }
}

/// What a session listing shows of one session.
fn session_summary(session_id: &str, head: &SessionHead) -> Map<String, Value> {
    // The model's context after the last turn: that turn's prompt and its reply.
    let last: Option<Value> = serde_json::from_str(&head.last_reply).ok();
    let count = |key: &str| {
        last.as_ref()
            .and_then(|r| r.get(key))
            .and_then(Value::as_u64)
    };
    let tokens = count("tokens_evaluated")
        .zip(count("tokens_predicted"))
        .map(|(p, r)| p + r);
    let fields = json!({
        "session_id": session_id,
        "mode": head.mode,
        "turns": head.turn,
        "tokens": tokens,
        "created_ms": head.created_ms,
        "updated_ms": head.updated_ms,
    });
    match fields {
        Value::Object(fields) => fields,
        _ => unreachable!("json! of an object is an object"),
    }
}
