//! llama-server's answer read for the policy, and the session fields every reply carries.

use serde_json::{Map, Value};

use super::Proxy;
use super::turn::PreparedTurn;
use crate::error::{Error, Kind};
use crate::policy::policy_reply;
use crate::policy::runtime::Reply;

impl Proxy {
    /// What the policy needs from llama-server's answer; the token ids it asked for are taken
    /// out of the client's copy unless the client asked for them too.
    pub(super) fn read_reply(
        &self,
        prepared: &PreparedTurn,
        reply: &mut Map<String, Value>,
    ) -> Result<Reply, Error> {
        let timing = |key: &str| {
            reply
                .get("timings")
                .and_then(|t| t.get(key))
                .and_then(Value::as_u64)
        };
        let (evaluated, cached) = (
            timing("prompt_n").unwrap_or(0),
            timing("cache_n").unwrap_or(0),
        );
        self.metrics.prompt_tokens(evaluated, cached);
        if prepared.busy.roamed {
            self.warm
                .counts
                .roamed_turn(prepared.busy.warmed, evaluated, cached);
        }
        let model_reply = policy_reply(reply, prepared.want_reply_tokens).map_err(|what| {
            Error::new(
                Kind::BadGateway,
                "llm_failed",
                format!("llama-server reply has no {what}"),
            )
            .with("policy", prepared.policy.label())
        })?;
        if prepared.want_reply_tokens && !prepared.client_wants_tokens {
            reply.remove("tokens");
        }
        Ok(model_reply)
    }
}

/// The fields every reply carries (every format, streamed or not), so a client can go on.
pub const SESSION_FIELDS: [&str; 4] = ["session_id", "user_id", "mode", "turn"];

/// Adds the [`SESSION_FIELDS`] to a reply or an event.
pub fn add_session_fields(
    fields: &mut Map<String, Value>,
    session_id: &str,
    user_id: &str,
    mode: &str,
    turn: u32,
) {
    fields.insert("session_id".into(), session_id.into());
    fields.insert("user_id".into(), user_id.into());
    fields.insert("mode".into(), mode.into());
    fields.insert("turn".into(), turn.into());
}

/// Copies the [`SESSION_FIELDS`] of a turn's reply into another reply or event.
pub fn copy_session_fields(to: &mut Map<String, Value>, reply: &Map<String, Value>) {
    for key in SESSION_FIELDS {
        if let Some(value) = reply.get(key) {
            to.insert(key.into(), value.clone());
        }
    }
}

pub(super) fn with_session_fields(
    mut reply: Map<String, Value>,
    session_id: &str,
    user_id: &str,
    mode: &str,
    turn: u32,
) -> Map<String, Value> {
    add_session_fields(&mut reply, session_id, user_id, mode, turn);
    reply
}
