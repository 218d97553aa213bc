//! What went wrong, in the proxy's own words: a kind, a stable code and details for the
//! client. No HTTP here: the HTTP layer (the server's `error` module) alone turns a [`Kind`]
//! into a status code, so the core could serve another protocol unchanged.

use serde_json::{Map, Value};

use crate::llm::LlmError;
use crate::store::StoreError;

/// The class of a failure, which the HTTP layer maps to a status (in brackets, today's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong (400).
    BadRequest,
    /// No valid key was presented where one is needed (401).
    Unauthorized,
    /// The caller may not do this at all (403).
    Forbidden,
    /// No such session (404).
    NotFound,
    /// The request disagrees with the stored state, e.g. the turn number (409).
    Conflict,
    /// A session or prompt outgrew its configured limit (413).
    TooLarge,
    /// Well-formed but cannot be served, e.g. the model's window is full (422).
    Unprocessable,
    /// A bug or broken state on this node (500).
    Internal,
    /// A dependency (llama-server, a policy's host call) answered wrongly (502).
    BadGateway,
    /// Busy or a dependency is down; a retry may succeed (503).
    Unavailable,
    /// llama-server did not answer in time (504).
    Timeout,
    /// llama-server refused the request with this status; passed on as it is.
    Upstream(u16),
}

/// A failure for the client: `code` is the stable, machine-readable name (e.g.
/// `turn_mismatch`) clients branch on; `details` are extra fields such as `expected_turn`.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
    /// Seconds after which a retry may succeed, for failures that pass.
    pub retry_after: Option<u32>,
}

impl Error {
    /// A failure of this kind, with no details.
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    /// The client's request is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }

    /// Tells the client to try again after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds a detail field for the client (e.g. `expected_turn`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { stored_turn } => {
                Error::new(Kind::Conflict, "turn_mismatch", e.to_string())
                    .with("expected_turn", stored_turn + 1)
            }
            StoreError::Unavailable(_) => {
                Error::new(Kind::Unavailable, "store_unavailable", e.to_string())
            }
            StoreError::Corrupt(_) => Error::new(Kind::Internal, "store_corrupt", e.to_string()),
        }
    }
}

impl From<LlmError> for Error {
    fn from(e: LlmError) -> Self {
        match &e {
            LlmError::Timeout(_) => Error::new(Kind::Timeout, "llm_timeout", e.to_string()),
            // The conversation outgrew the model's window (raw and client-side modes send text,
            // so only llama-server can tell): not a malformed request.
            LlmError::Rejected { message, .. } if message.contains("context size") => {
                Error::new(Kind::Unprocessable, "context_full", e.to_string())
            }
            LlmError::Rejected { status, .. } => {
                Error::new(Kind::Upstream(*status), "llm_rejected", e.to_string())
            }
            LlmError::Unreachable { .. } => {
                Error::new(Kind::BadGateway, "llm_unreachable", e.to_string())
            }
            LlmError::Failed { .. } | LlmError::BadReply(_) => {
                Error::new(Kind::BadGateway, "llm_failed", e.to_string())
            }
            LlmError::StreamBroken(_) => {
                Error::new(Kind::BadGateway, "llm_stream_broken", e.to_string())
            }
        }
    }
}
