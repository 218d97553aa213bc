//! `POST /v1/chat/completions`: OpenAI's chat format on the same sessions and policies.
//!
//! A chat request becomes a `/completion` turn: the last message (the user's) is the prompt,
//! a leading system message is the session's system prompt, and the session fields
//! (`session_id`, `user_id`, `mode`, `turn`) travel in the body as with `/completion`
//! (OpenAI clients send them as extra body fields; a client that cannot may name the mode as
//! its `model`). A session keeps its own history, so
//! earlier messages in `messages` are not needed and are ignored, except in a mode that keeps
//! nothing (`client-side`), where the messages are the history and are rendered with the
//! proxy's chat template.

use std::time::{SystemTime, UNIX_EPOCH};

use discedge_policy_sdk::{Template, push_message, reply_opening};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::request::{json_object, turn_from_fields};
use discedge_core::policy::runtime::ChatTemplate;
use discedge_core::session::{TurnDefaults, TurnRequest, copy_session_fields};

/// OpenAI request fields with no llama.cpp `/completion` counterpart: read here or dropped.
const OPENAI_ONLY: [&str; 16] = [
    "messages",
    "model",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stream_options",
    "user",
    "store",
    "metadata",
    "service_tier",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "parallel_tool_calls",
    "modalities",
];

/// What the replies to one chat request share: OpenAI's id, timestamp and model name.
#[derive(Debug, Clone)]
pub struct ChatMeta {
    id: String,
    created: u64,
    model: String,
    /// `stream_options.include_usage`: the closing chunk carries the token counts.
    include_usage: bool,
}

/// Reads a chat request into a turn. `keeps_context(mode)` says whether the mode's policy
/// stores the conversation (`None`: no such mode; the turn itself reports that).
pub fn parse_chat(
    body: &[u8],
    defaults: &TurnDefaults,
    caller: Option<String>,
    keeps_context: impl Fn(&str) -> Option<bool>,
) -> Result<(TurnRequest, ChatMeta), ApiError> {
    let mut fields = json_object(body)?;
    if let Some(n) = fields
        .get("n")
        .filter(|n| !n.is_null() && n.as_u64() != Some(1))
    {
        return Err(ApiError::bad_request(
            "unsupported",
            format!("n must be 1 (one answer per turn), not {n}"),
        )
        .with("field", "n"));
    }
    if fields
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| !tools.is_empty())
    {
        return Err(
            ApiError::bad_request("unsupported", "tools are not supported").with("field", "tools"),
        );
    }
    let messages = read_messages(fields.get("messages"))?;
    // A client that cannot send extra fields picks the mode as its model (see `GET /v1/models`).
    let mode = match (fields.get("mode"), fields.get("model")) {
        (Some(Value::String(mode)), _) => mode.clone(),
        (None, Some(Value::String(model))) if keeps_context(model).is_some() => {
            let mode = model.clone();
            fields.insert("mode".into(), Value::String(mode.clone()));
            mode
        }
        _ => defaults.mode.clone(),
    };
    let (prompt, system_prompt) = if keeps_context(&mode) == Some(false) {
        (render(&defaults.template, &messages), None)
    } else {
        let Some((role, content)) = messages.last().filter(|(role, _)| role == "user") else {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the last message must be the user's new message",
            )
            .with("field", "messages"));
        };
        debug_assert_eq!(role, "user");
        let system = messages
            .first()
            .filter(|(role, _)| role == "system")
            .map(|(_, content)| content.clone());
        (content.clone(), system)
    };

    let meta = ChatMeta {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: match fields.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            _ => mode.clone(),
        },
        include_usage: fields
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let limit = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| fields.get(*key).filter(|v| v.is_u64()).cloned());
    if let (Some(limit), false) = (limit, fields.contains_key("n_predict")) {
        fields.insert("n_predict".into(), limit);
    }
    if let Some(Value::String(stop)) = fields.get("stop") {
        let stop = Value::Array(vec![Value::String(stop.clone())]);
        fields.insert("stop".into(), stop);
    }
    if !fields.contains_key("user_id")
        && let Some(Value::String(user)) = fields.get("user")
    {
        let user = Value::String(user.clone());
        fields.insert("user_id".into(), user);
    }
    for key in OPENAI_ONLY.iter().chain(&["tools", "tool_choice"]) {
        fields.remove(*key);
    }
    fields.insert("prompt".into(), Value::String(prompt));
    if let Some(system) = system_prompt {
        fields
            .entry("system_prompt")
            .or_insert(Value::String(system));
    }
    // Policies with fields of their own read the chat request as the client sent it.
    let request_json = String::from_utf8_lossy(body).into_owned();
    let request = turn_from_fields(fields, request_json, defaults, caller)?;
    Ok((request, meta))
}

/// `(role, text)` of each message; content may be a string or OpenAI's list of text parts.
fn read_messages(messages: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let invalid =
        |why: String| ApiError::bad_request("invalid_field", why).with("field", "messages");
    let Some(Value::Array(messages)) = messages else {
        return Err(invalid("messages must be a list of {role, content}".into()));
    };
    if messages.is_empty() {
        return Err(invalid("messages is empty".into()));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .filter(|role| matches!(*role, "system" | "developer" | "user" | "assistant"))
                .ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}].role must be system, developer, user or assistant"
                    ))
                })?;
            let role = if role == "developer" { "system" } else { role };
            let content = match message.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|part| match (part.get("type"), part.get("text")) {
                        (Some(Value::String(kind)), Some(Value::String(text)))
                            if kind == "text" =>
                        {
                            Ok(text.as_str())
                        }
                        _ => Err(invalid(format!(
                            "messages[{i}].content: only text parts are supported"
                        ))),
                    })
                    .collect::<Result<String, _>>()?,
                _ => {
                    return Err(invalid(format!(
                        "messages[{i}].content must be a string or a list of text parts"
                    )));
                }
            };
            Ok((role.to_owned(), content))
        })
        .collect()
}

/// The whole conversation as a prompt, for a mode where the client keeps the history; framed
/// exactly as the shipped policies frame their stored messages.
fn render(template: &ChatTemplate, messages: &[(String, String)]) -> String {
    let t = Template::new(
        template.bos.as_str(),
        template.message_prefix.as_str(),
        template.message_suffix.as_str(),
    );
    let mut text = t.bos.clone();
    for (role, content) in messages {
        push_message(&mut text, &t, role, content);
    }
    text.push_str(&reply_opening(&t));
    text
}

/// `GET /v1/models`: the loaded modes, as OpenAI's model list, for clients that pick a model.
pub fn model_list(modes: &[String]) -> Value {
    let data: Vec<Value> = modes
        .iter()
        .map(|mode| json!({"id": mode, "object": "model", "created": 0, "owned_by": "discedge"}))
        .collect();
    json!({ "object": "list", "data": data })
}

/// llama.cpp's stop reason in OpenAI's words.
fn finish_reason(reply: &Map<String, Value>) -> &'static str {
    match reply.get("stop_type").and_then(Value::as_str) {
        Some("limit") => "length",
        _ => "stop",
    }
}

fn usage(reply: &Map<String, Value>) -> Value {
    let count = |key: &str| reply.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (prompt, completion) = (count("tokens_evaluated"), count("tokens_predicted"));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

impl ChatMeta {
    /// A whole answer (`chat.completion`) from a turn's reply.
    pub fn completion(&self, reply: Map<String, Value>) -> Value {
        let mut out = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.get("content").and_then(Value::as_str).unwrap_or_default(),
                },
                "finish_reason": finish_reason(&reply),
            }],
            "usage": usage(&reply),
        });
        if let Value::Object(fields) = &mut out {
            copy_session_fields(fields, &reply);
        }
        out
    }

    /// One `chat.completion.chunk`; the first also names the role.
    pub fn chunk(
        &self,
        content: Option<&str>,
        first: bool,
        finish_reason: Option<&str>,
    ) -> Map<String, Value> {
        let mut delta = Map::new();
        if first {
            delta.insert("role".into(), "assistant".into());
        }
        if let Some(content) = content {
            delta.insert("content".into(), content.into());
        }
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        match chunk {
            Value::Object(chunk) => chunk,
            _ => unreachable!("json! of an object is an object"),
        }
    }

    /// The last chunk: the reason generation stopped, and the token counts if asked for.
    pub fn closing_chunk(&self, content: &str, reply: &Map<String, Value>) -> Map<String, Value> {
        let content = (!content.is_empty()).then_some(content);
        let mut chunk = self.chunk(content, false, Some(finish_reason(reply)));
        if self.include_usage {
            chunk.insert("usage".into(), usage(reply));
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TurnDefaults {
        TurnDefaults {
            template: ChatTemplate {
                bos: String::new(),
                message_prefix: "<|im_start|>{role}\n".into(),
                message_suffix: "<|im_end|>\n".into(),
            },
            system_prompt: None,
            n_ctx: 2048,
            reply_budget: 128,
            user_id: "anonymous".into(),
            mode: "tokenized".into(),
            sync_wait: std::time::Duration::ZERO,
            session_idle: None,
            max_session_bytes: 1 << 20,
            max_prompt_bytes: 1 << 16,
        }
    }

    fn parse(body: Value, keeps: bool) -> Result<(TurnRequest, ChatMeta), ApiError> {
        parse_chat(body.to_string().as_bytes(), &defaults(), None, |_| {
            Some(keeps)
        })
    }

    #[test]
    fn the_new_user_message_is_the_prompt_and_the_system_message_the_system_prompt() {
        let (request, meta) = parse(
            json!({"model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": "old answer"},
                {"role": "user", "content": [{"type": "text", "text": "new "}, {"type": "text", "text": "question"}]}
            ], "max_tokens": 7, "stop": "END", "session_id": "s1", "turn": 2, "user": "alice"}),
            true,
        )
        .unwrap();
        assert_eq!(request.prompt, "new question");
        assert_eq!(request.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(request.forward["n_predict"], 7);
        assert_eq!(request.forward["stop"], json!(["END"]));
        assert_eq!(request.user_id, "alice");
        assert_eq!(request.turn, Some(2));
        assert!(!request.forward.contains_key("messages"));
        assert!(!request.forward.contains_key("model"));
        assert!(request.request_json.contains("messages"));
        assert_eq!(meta.model, "m");
    }

    #[test]
    fn a_mode_that_keeps_nothing_gets_the_whole_conversation_rendered() {
        let (request, _) = parse(
            json!({"messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "U"},
            ], "mode": "client-side"}),
            false,
        )
        .unwrap();
        assert_eq!(
            request.prompt,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_loaded_mode_named_as_the_model_is_the_mode() {
        let body = json!({"model": "client-side", "messages": [{"role": "user", "content": "x"}]});
        let keeps = |mode: &str| (mode == "client-side").then_some(false);
        let (request, meta) =
            parse_chat(body.to_string().as_bytes(), &defaults(), None, keeps).unwrap();
        assert_eq!(request.mode, "client-side");
        assert_eq!(meta.model, "client-side");
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]});
        let (request, _) =
            parse_chat(body.to_string().as_bytes(), &defaults(), None, keeps).unwrap();
        assert_eq!(
            request.mode, "tokenized",
            "an unknown model leaves the default mode"
        );
    }

    #[test]
    fn bad_chat_requests_name_the_problem() {
        for (body, field) in [
            (json!({}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"role": "user"}]}), "messages"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}),
                "tools",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "turn": 0}),
                "turn",
            ),
        ] {
            let e = parse(body.clone(), true).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.details["field"], field, "{body}: {e}");
        }
    }

    #[test]
    fn replies_take_openai_shapes() {
        let (_, meta) = parse(
            json!({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            true,
        )
        .unwrap();
        let reply: Map<String, Value> = serde_json::from_value(json!({
            "content": "Hi!", "stop_type": "limit", "tokens_evaluated": 10, "tokens_predicted": 3,
            "session_id": "s", "user_id": "u", "mode": "tokenized", "turn": 1
        }))
        .unwrap();
        let whole = meta.completion(reply.clone());
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "Hi!");
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        assert_eq!(whole["usage"]["total_tokens"], 13);
        assert_eq!(whole["session_id"], "s");
        assert_eq!(whole["model"], "tokenized");
        let first = meta.chunk(Some("H"), true, None);
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        let last = meta.closing_chunk("", &reply);
        assert_eq!(last["choices"][0]["delta"], json!({}));
        assert_eq!(last["usage"]["completion_tokens"], 3);
    }
}
