//! The completions a policy may ask for before a turn's prompt (contract 0.2.0): the request
//! checked and turned into llama-server's `/completion` body, and `prepare` driven to its
//! prompt with a blocking model, for tools that run a policy without a proxy (the kit, the
//! benchmarks). The proxy runs the same rounds asynchronously (`session::policy_calls`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::runtime::{
    Answer, CallFailure, CompletionRequest, PolicyError, Prepared, Prompt, Reply, Settings, Step,
    TurnInput,
};
use super::{HostServices, LoadedPolicy, PolicyInstance, PolicyRuntime, check_token_prompt};
use crate::store::Record;

/// What a policy's `commit` gets of llama-server's `/completion` answer: its content, the
/// generated ids when the policy asked for them, and why generation stopped. `Err` names
/// the part the answer lacks, for the caller's own error.
pub fn policy_reply(answer: &Map<String, Value>, want_tokens: bool) -> Result<Reply, &'static str> {
    let content = answer
        .get("content")
        .and_then(Value::as_str)
        .ok_or("content")?
        .to_owned();
    let tokens = if want_tokens {
        answer
            .get("tokens")
            .and_then(Value::as_array)
            .and_then(|ids| {
                ids.iter()
                    .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                    .collect()
            })
            .ok_or("token ids (return_tokens)")?
    } else {
        Vec::new()
    };
    let stop_type = answer
        .get("stop_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Reply {
        content,
        tokens,
        stop_type,
    })
}

/// `/completion` fields a policy's request may not set: the host sets them.
const HOST_FIELDS: [&str; 4] = ["prompt", "n_predict", "stream", "return_tokens"];

/// The `/completion` body for a policy's request: its options, then the host's fields, the
/// prompt checked as a turn's prompt is. `Err` says what is wrong, for "policy X {why}".
pub fn completion_body(
    request: &CompletionRequest,
    n_ctx: u32,
    vocab: Option<u32>,
) -> Result<Map<String, Value>, String> {
    let mut body = match request.options_json.trim() {
        "" => Map::new(),
        text => serde_json::from_str::<Map<String, Value>>(text).map_err(|e| {
            format!("asked for a completion with options-json that is not a JSON object: {e}")
        })?,
    };
    if let Some(field) = HOST_FIELDS.iter().find(|f| body.contains_key(**f)) {
        return Err(format!(
            "asked for a completion setting {field:?} in options-json; the host sets it"
        ));
    }
    let n_predict = request.n_predict;
    if n_predict == 0 {
        return Err("asked for a completion of 0 tokens".into());
    }
    let prompt = match &request.prompt {
        Prompt::Unchanged => {
            return Err(
                "asked for a completion of the client's prompt (`unchanged`); say text or tokens"
                    .into(),
            );
        }
        Prompt::Text(text) => Value::String(text.clone()),
        Prompt::Tokens(ids) => {
            check_token_prompt(ids, n_ctx, vocab)
                .map_err(|why| format!("asked for a completion that {why}"))?;
            if ids.len() + n_predict as usize > n_ctx as usize {
                return Err(format!(
                    "asked for a completion of {n_predict} tokens after {} prompt tokens; the model's window is {n_ctx}",
                    ids.len()
                ));
            }
            Value::Array(ids.iter().map(|&id| Value::from(id)).collect())
        }
    };
    body.insert("prompt".into(), prompt);
    body.insert("n_predict".into(), n_predict.into());
    body.insert("return_tokens".into(), true.into());
    body.insert("stream".into(), false.into());
    Ok(body)
}

/// The [`Answer`] `prepare` gets: the request's `state` and llama-server's completion read
/// as [`policy_reply`] reads it. `Err` names what the completion lacks. The proxy and
/// [`prepare_blocking`] both read completions here.
pub fn answer(state: Vec<u8>, reply: &Map<String, Value>) -> Result<Answer, String> {
    let reply = policy_reply(reply, true)
        .map_err(|what| format!("llama-server's answer to a policy completion has no {what}"))?;
    Ok(Answer { state, reply })
}

/// What [`prepare_blocking`] made of a turn.
pub struct Driven {
    /// The instance whose `prepare` gave the prompt: `commit` goes to it.
    pub instance: PolicyInstance,
    pub prepared: Prepared,
    /// The completions the policy asked for, in order, with the model's answers.
    pub asked: Vec<(Map<String, Value>, Map<String, Value>)>,
}

/// `prepare` as the proxy runs it, each round on a fresh instance, the policy's completions
/// sent to `complete` (llama-server's `/completion`: body in, answer out). At most `limit`
/// completions; a bad request or a failed completion comes back as the policy's failure to
/// prepare, as the proxy would refuse the turn.
#[allow(clippy::too_many_arguments)]
pub fn prepare_blocking(
    policy: &LoadedPolicy,
    runtime: &PolicyRuntime,
    services: &Arc<dyn HostServices>,
    records: &[Record],
    input: &TurnInput,
    settings: &Settings,
    vocab: Option<u32>,
    mut complete: impl FnMut(&Map<String, Value>) -> Result<Map<String, Value>, String>,
) -> Result<Driven, CallFailure> {
    let limit = runtime.limits().completions_per_turn as usize;
    let mut answers = Vec::new();
    let mut asked = Vec::new();
    loop {
        let mut instance = policy.instantiate(runtime, services.clone())?;
        let request = match instance.prepare(records, input, settings, &answers)? {
            Step::Ready(prepared) => {
                return Ok(Driven {
                    instance,
                    prepared,
                    asked,
                });
            }
            Step::Complete(request) => request,
        };
        drop(instance);
        if answers.len() >= limit {
            return Err(CallFailure::Trapped(format!(
                "asked for more than {limit} completions in one turn"
            )));
        }
        let body =
            completion_body(&request, settings.n_ctx, vocab).map_err(CallFailure::Trapped)?;
        let reply =
            complete(&body).map_err(|e| CallFailure::Declined(PolicyError::HostFailed(e)))?;
        answers.push(
            answer(request.state, &reply)
                .map_err(|e| CallFailure::Declined(PolicyError::HostFailed(e)))?,
        );
        asked.push((body, reply));
    }
}
