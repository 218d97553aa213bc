//! The prompt a session's next turn will start with, sent to llama-server ahead of the turn
//! (the roaming warm-up, see [`crate::warm`]).
//!
//! The policy builds it the way it builds every prompt: its own `prepare`, for the next turn,
//! with an empty message. Everything before the message is then exactly what the real turn
//! will send, so llama-server's prompt cache holds that prefix when the turn comes; what
//! follows the empty message is evaluated again, a handful of template tokens. No change to
//! the policy contract, so every policy, old or new, warms up.

use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Proxy, unknown_session};
use crate::error::ApiError;
use crate::policy::runtime::TurnInput;

/// What a warm-up did, as llama-server counted it.
#[derive(Debug, Clone, Serialize)]
pub struct Warmed {
    pub session_id: String,
    /// The turn the prompt cache is now ready for.
    pub turn: u32,
    /// Tokens of the prefix, evaluated now and taken from the cache already.
    pub prompt_tokens: u64,
    pub evaluated: u64,
    pub cached: u64,
    pub ms: f64,
}

impl Proxy {
    /// Sends the next turn's prompt prefix of `session_id` to llama-server with no generation
    /// (`n_predict` 0, `cache_prompt`). With `owner` (the handover hint) a session that is not
    /// theirs is unknown; with `after_turn` the session is waited for until it has that turn,
    /// as a turn waits for replication. `None`: nothing to warm (no stored context).
    pub async fn warm_up(
        &self,
        session_id: &str,
        owner: Option<&str>,
        after_turn: Option<u32>,
    ) -> Result<Option<Warmed>, ApiError> {
        let started = Instant::now();
        let stored = match after_turn {
            Some(turn) => self.load_caught_up(session_id, turn + 1).await?,
            None => self.store.load(session_id).await?,
        };
        let stored = match (stored, owner) {
            (Some(s), Some(user)) if s.head.user_id != user => None,
            (stored, _) => stored,
        };
        let Some(stored) = stored else {
            return match owner {
                Some(_) => Err(unknown_session(session_id)),
                None => Ok(None),
            };
        };
        let head = stored.head;
        if let Some(turn) = after_turn.filter(|&t| head.turn < t) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "turn_not_here",
                format!(
                    "turn {turn} of session {session_id:?} has not reached this node (it has turn {})",
                    head.turn
                ),
            )
            .with("stored_turn", head.turn));
        }
        let Some(policy) = self.policies.get(&head.mode) else {
            return Ok(None);
        };
        if !policy.info.stores_context {
            return Ok(None);
        }
        let mut settings = self.settings(&Map::new(), None, "{}".into(), false).await;
        let n_ctx = settings.n_ctx;
        let input = TurnInput {
            session_id: session_id.to_owned(),
            user_id: head.user_id.clone(),
            turn: head.turn + 1,
            prompt: String::new(),
        };
        // The next turn's reply budget is unknown: the default one first (a window policy
        // keeps what it would keep), then the least (a policy that refuses a full context
        // still has a prefix to warm, for a turn that asks for a short reply).
        let prepared = match self
            .prepare(&policy, stored.records.clone(), input.clone(), settings.clone())
            .await
        {
            Err(e) if e.code == "context_full" => {
                settings.reply_budget = 1;
                self.prepare(&policy, stored.records, input, settings).await
            }
            other => other,
        };
        let (_, prepared, _, _) = prepared?;
        let mut forward = Map::new();
        forward.insert("n_predict".into(), 0.into());
        forward.insert("cache_prompt".into(), true.into());
        let body = self
            .model_body(
                forward,
                Value::String(String::new()),
                prepared.prompt,
                &policy,
                n_ctx,
            )
            .await?;
        let reply = self.llm.complete(&body).await?;
        let count = |key: &str| {
            reply
                .get("timings")
                .and_then(|t| t.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        self.warm.remember(session_id, head.turn, true);
        Ok(Some(Warmed {
            session_id: session_id.to_owned(),
            turn: head.turn + 1,
            prompt_tokens: reply
                .get("tokens_evaluated")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            evaluated: count("prompt_n"),
            cached: count("cache_n"),
            ms: started.elapsed().as_secs_f64() * 1e3,
        }))
    }
}
