//! A client's turn request, read and checked: the proxy's own fields (`mode`, `session_id`,
//! `user_id`, `turn`, `system_prompt`) validated, the rest kept for llama-server. Shared by
//! `/completion` (the `api` module) and the chat endpoint (`openai`), so neither imports the
//! other for it.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;
use discedge_core::session::{TurnDefaults, TurnRequest};

/// Request fields the proxy owns; every other field goes to llama-server unchanged.
const OWN_FIELDS: [&str; 5] = ["mode", "session_id", "user_id", "turn", "system_prompt"];

/// Validates the proxy's own fields; the rest is llama-server's business.
/// `caller` is the user of the request's API key, when keys are configured.
pub fn parse_turn(
    body: &[u8],
    defaults: &TurnDefaults,
    caller: Option<String>,
) -> Result<TurnRequest, ApiError> {
    let fields = json_object(body)?;
    turn_from_fields(
        fields,
        String::from_utf8_lossy(body).into_owned(),
        defaults,
        caller,
    )
}

/// The body as a JSON object, or the 400 that says why not.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "body must be a JSON object",
        )),
    }
}

/// [`parse_turn`] on a body already read as JSON (`/completion`'s fields; the chat endpoint
/// builds them from a chat request). `request_json` is the body as the client sent it.
pub fn turn_from_fields(
    mut fields: Map<String, Value>,
    request_json: String,
    defaults: &TurnDefaults,
    caller: Option<String>,
) -> Result<TurnRequest, ApiError> {
    let mode = optional_string(&fields, "mode")?.unwrap_or_else(|| defaults.mode.clone());
    let session_id = optional_string(&fields, "session_id")?;
    if let Some(id) = &session_id
        && (id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "session_id must be 1 to 64 ASCII letters and digits",
        )
        .with("field", "session_id"));
    }
    let claimed = optional_string(&fields, "user_id")?;
    let user_id = resolve_user(caller.as_deref(), claimed, &defaults.user_id)?;
    if user_id.is_empty() || user_id.len() > 128 {
        return Err(
            ApiError::bad_request("invalid_field", "user_id must be 1 to 128 bytes")
                .with("field", "user_id"),
        );
    }
    let turn = match fields.get("turn") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|&t| t >= 1)
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_field", "turn must be an integer >= 1")
                        .with("field", "turn")
                })?,
        ),
    };
    let system_prompt = optional_string(&fields, "system_prompt")?;
    let stream = match fields.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_field", "stream must be true or false")
                    .with("field", "stream"),
            );
        }
    };
    let prompt = match fields.remove("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request("missing_field", "prompt is required")
                .with("field", "prompt"));
        }
        Some(prompt) => prompt,
    };
    let prompt_bytes = match &prompt {
        Value::String(text) => text.len(),
        other => other.to_string().len(),
    };
    if prompt_bytes > defaults.max_prompt_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "prompt_too_large",
            format!(
                "prompt of {prompt_bytes} bytes is over the limit of {}",
                defaults.max_prompt_bytes
            ),
        )
        .with("field", "prompt"));
    }
    for field in OWN_FIELDS {
        fields.remove(field);
    }
    Ok(TurnRequest {
        mode,
        session_id,
        user_id,
        turn,
        prompt,
        system_prompt,
        forward: fields,
        request_json,
        stream,
    })
}

fn optional_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(
            ApiError::bad_request("invalid_field", format!("{name} must be a string"))
                .with("field", name),
        ),
    }
}

/// The user a request acts for: the API key's user when keys are configured (a different
/// claimed `user_id` is refused), else the claimed one, else the default user.
pub fn resolve_user(
    caller: Option<&str>,
    claimed: Option<String>,
    default: &str,
) -> Result<String, ApiError> {
    match (caller, claimed) {
        (Some(caller), Some(claimed)) if caller != claimed => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_mismatch",
            "user_id is not the API key's user",
        )
        .with("field", "user_id")),
        (Some(caller), _) => Ok(caller.to_owned()),
        (None, claimed) => Ok(claimed.unwrap_or_else(|| default.to_owned())),
    }
}
