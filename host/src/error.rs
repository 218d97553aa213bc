//! The one error type every failure becomes at the HTTP edge: a status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::llm::LlmError;
use crate::store::StoreError;

/// An error reply: `{"error": {"code": ..., "message": ..., ...details}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable name (e.g. `turn_mismatch`); clients branch on this.
    pub code: &'static str,
    pub message: String,
    /// Extra fields for the client, such as `expected_turn`.
    pub details: Map<String, Value>,
    /// Seconds after which a retry may succeed (a `Retry-After` header), for 503s that pass.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Tells the client to try again after `seconds` (the `Retry-After` header).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body: `{"error": {"code", "message", ...details}}` (also a failed stream's last event).
    pub fn body(&self) -> Value {
        let mut error = self.details.clone();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.clone().into());
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { stored_turn } => {
                ApiError::new(StatusCode::CONFLICT, "turn_mismatch", e.to_string())
                    .with("expected_turn", stored_turn + 1)
            }
            StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
            StoreError::Corrupt(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_corrupt",
                e.to_string(),
            ),
        }
    }
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        match &e {
            LlmError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "llm_timeout", e.to_string())
            }
            // The conversation outgrew the model's window (raw and client-side modes send text,
            // so only llama-server can tell): not a malformed request.
            LlmError::Rejected { message, .. } if message.contains("context size") => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "context_full",
                    e.to_string(),
                )
            }
            LlmError::Rejected { status, .. } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                ApiError::new(status, "llm_rejected", e.to_string())
            }
            LlmError::Unreachable { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "llm_unreachable", e.to_string())
            }
            LlmError::Failed { .. } | LlmError::BadReply(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "llm_failed", e.to_string())
            }
            LlmError::StreamBroken(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "llm_stream_broken", e.to_string())
            }
        }
    }
}

/// An error with all its causes, for messages that must say what really went wrong
/// (e.g. "connection refused" under "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
