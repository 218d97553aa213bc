//! A retried turn answered from the store: the reply fields kept for it and how they come back.

use serde_json::{Map, Value};

use super::reply::with_session_fields;
use super::{TurnReply, TurnTiming};
use crate::error::{Error, Kind};
use crate::policy::LoadedPolicy;
use crate::store::SessionHead;

/// Reply fields kept for replaying a retried turn. The head is rewritten and replicated every
/// turn, so it carries the answer itself, not llama-server's large per-call diagnostics
/// (`prompt`, `generation_settings`, `timings`, ...).
pub(super) const REPLAYED: [&str; 8] = [
    "content",
    "tokens",
    "stop",
    "stop_type",
    "stopping_word",
    "tokens_predicted",
    "tokens_evaluated",
    "truncated",
];

/// Answers a retried turn from the store.
pub(super) fn replay(
    head: &SessionHead,
    session_id: &str,
    policy: &LoadedPolicy,
) -> Result<TurnReply, Error> {
    let reply: Map<String, Value> = serde_json::from_str(&head.last_reply).map_err(|e| {
        Error::new(
            Kind::Internal,
            "store_corrupt",
            format!("stored reply unreadable: {e}"),
        )
    })?;
    Ok(TurnReply {
        body: with_session_fields(reply, session_id, &head.user_id, &head.mode, head.turn),
        policy: policy.label(),
        replayed: true,
        timing: TurnTiming::default(),
    })
}

pub(super) fn replay_copy(reply: &Map<String, Value>) -> String {
    let kept: Map<String, Value> = reply
        .iter()
        .filter(|(k, _)| REPLAYED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept).to_string()
}
