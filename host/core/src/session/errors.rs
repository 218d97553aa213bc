//! What a failed policy call or an unknown session tells the client, as domain errors.

use crate::error::{Error, Kind};
use crate::policy::runtime::PolicyError;
use crate::policy::{CallFailure, LoadedPolicy};

pub(super) fn policy_error(failure: CallFailure, policy: &LoadedPolicy) -> Error {
    let error = match failure {
        CallFailure::Declined(PolicyError::BadInput(m)) => {
            Error::bad_request("policy_rejected_input", m)
        }
        CallFailure::Declined(PolicyError::ContextFull(m)) => {
            Error::new(Kind::Unprocessable, "context_full", m)
        }
        CallFailure::Declined(PolicyError::HostFailed(m)) => {
            Error::new(Kind::BadGateway, "policy_host_call_failed", m)
        }
        CallFailure::Declined(PolicyError::Internal(m)) => Error::new(
            Kind::Internal,
            "policy_failed",
            format!("policy {}: {m}", policy.name),
        ),
        CallFailure::Trapped(m) => Error::new(
            Kind::Internal,
            "policy_trapped",
            format!("policy {} {m}", policy.name),
        ),
        // Every instance is serving a turn (each holds one across the model's answer): the
        // next that ends frees one, so the client may retry soon.
        CallFailure::Busy(m) => Error::new(
            Kind::Unavailable,
            "policy_busy",
            format!("policy {}: {m}; retry shortly", policy.name),
        )
        .retry_after(1),
    };
    error.with("policy", policy.label())
}

/// A policy's output the host refuses to use (a bad prompt, a bad completion request): the
/// policy's bug, not the client's.
pub(super) fn bad_output(policy: &LoadedPolicy, why: &str) -> Error {
    Error::new(
        Kind::Internal,
        "policy_bad_output",
        format!("policy {} {why}", policy.name),
    )
    .with("policy", policy.label())
}

pub(super) fn joined(e: crate::blocking::Aborted, policy: &LoadedPolicy) -> Error {
    Error::new(
        Kind::Internal,
        "policy_trapped",
        format!("policy {} call aborted: {e}", policy.name),
    )
    .with("policy", policy.label())
}

pub(super) fn unknown_session(session_id: &str) -> Error {
    Error::new(
        Kind::NotFound,
        "unknown_session",
        format!("no session {session_id:?}"),
    )
    .with("session_id", session_id)
}
