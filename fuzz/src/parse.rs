//! `parse_request`: any bytes as a request body, with or without an API key's user.

use std::time::Duration;

use discedge_core::policy::runtime::ChatTemplate;
use discedge_core::session::TurnDefaults;
use discedge_server::request::parse_turn;
use serde_json::Value;

/// Fields the proxy takes out of the body; none may reach llama-server in `forward`.
const OWN_FIELDS: [&str; 6] = [
    "mode",
    "session_id",
    "user_id",
    "turn",
    "system_prompt",
    "prompt",
];

/// Error codes request parsing may answer with (README, "Errors").
const PARSE_ERRORS: [&str; 6] = [
    "invalid_json",
    "invalid_field",
    "missing_field",
    "unsupported",
    "prompt_too_large",
    "user_mismatch",
];

/// A small prompt limit, so that fuzz-sized inputs reach the 413 path too.
const MAX_PROMPT_BYTES: usize = 64;

fn defaults() -> TurnDefaults {
    TurnDefaults {
        template: ChatTemplate {
            bos: String::new(),
            message_prefix: "<|im_start|>{role}\n".into(),
            message_suffix: "<|im_end|>\n".into(),
        },
        system_prompt: None,
        n_ctx: 2048,
        reply_budget: 256,
        user_id: "anonymous".into(),
        mode: "raw".into(),
        sync_wait: Duration::ZERO,
        session_idle: None,
        max_session_bytes: 16 << 20,
        max_prompt_bytes: MAX_PROMPT_BYTES,
    }
}

/// Input layout: `\x01CALLER\nBODY` parses BODY as sent with an API key of user CALLER (lossy
/// UTF-8); anything else is a body sent without a key. So plain JSON files are seeds as they are.
pub fn parse_request(data: &[u8]) {
    let (caller, body) = match data {
        [1, rest @ ..] => match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (
                Some(String::from_utf8_lossy(&rest[..end]).into_owned()),
                &rest[end + 1..],
            ),
            None => (Some(String::from_utf8_lossy(rest).into_owned()), &[][..]),
        },
        _ => (None, data),
    };
    let defaults = defaults();
    match parse_turn(body, &defaults, caller.clone()) {
        Ok(request) => check_accepted(body, &defaults, caller.as_deref(), &request),
        Err(e) => {
            assert!(
                e.status.is_client_error(),
                "request parsing answered {}: {e}",
                e.status
            );
            assert!(
                PARSE_ERRORS.contains(&e.code),
                "undocumented error code: {e}"
            );
        }
    }
}

/// What was accepted is exactly what the body said, within every limit.
fn check_accepted(
    body: &[u8],
    defaults: &TurnDefaults,
    caller: Option<&str>,
    request: &discedge_core::session::TurnRequest,
) {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        panic!("accepted a body that is not a JSON object");
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str);

    assert_eq!(request.mode, text("mode").unwrap_or(&defaults.mode), "mode");
    assert_eq!(request.session_id.as_deref(), text("session_id"));
    if let Some(id) = &request.session_id {
        assert!(
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "accepted session_id {id:?}"
        );
    }
    let expected_user = caller.or(text("user_id")).unwrap_or(&defaults.user_id);
    assert_eq!(request.user_id, expected_user, "user_id");
    if let (Some(caller), Some(claimed)) = (caller, text("user_id")) {
        assert_eq!(
            caller, claimed,
            "a key's user was overridden by a claimed user_id"
        );
    }
    assert!(
        (1..=128).contains(&request.user_id.len()),
        "accepted user_id of {} bytes",
        request.user_id.len()
    );
    match request.turn {
        Some(turn) => {
            assert!(turn >= 1, "accepted turn {turn}");
            assert_eq!(fields["turn"].as_u64(), Some(u64::from(turn)), "turn");
        }
        None => assert!(
            fields.get("turn").is_none_or(Value::is_null),
            "turn dropped"
        ),
    }
    assert_eq!(request.system_prompt.as_deref(), text("system_prompt"));
    assert_eq!(Some(&request.prompt), fields.get("prompt"), "prompt");
    assert!(!request.prompt.is_null(), "accepted a null prompt");
    let prompt_bytes = match &request.prompt {
        Value::String(text) => text.len(),
        other => other.to_string().len(),
    };
    assert!(
        prompt_bytes <= defaults.max_prompt_bytes,
        "accepted a prompt of {prompt_bytes} bytes"
    );
    assert_eq!(
        request.stream,
        fields.get("stream").and_then(Value::as_bool) == Some(true),
        "stream flag"
    );
    for field in OWN_FIELDS {
        assert!(
            !request.forward.contains_key(field),
            "{field} is forwarded to llama-server"
        );
    }
    for (key, value) in &fields {
        if !OWN_FIELDS.contains(&key.as_str()) {
            assert_eq!(
                request.forward.get(key),
                Some(value),
                "{key} not forwarded as sent"
            );
        }
    }
    assert_eq!(
        request.forward.len(),
        fields
            .keys()
            .filter(|k| !OWN_FIELDS.contains(&k.as_str()))
            .count(),
        "forward has fields the body did not"
    );
    assert_eq!(request.request_json, String::from_utf8_lossy(body));
}
