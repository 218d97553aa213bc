//! A turn between its two halves: where `start_turn` left it and what `finish_turn` needs.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::locks::SessionGuard;
use super::{TurnReply, TurnTiming};
use crate::policy::runtime::{Settings, TurnInput};
use crate::policy::{LoadedPolicy, PolicyInstance};
use crate::store::SessionHead;

/// Where [`Proxy::start_turn`] left a turn.
pub enum StartedTurn {
    /// A retried turn, answered from the store; the model is not asked again.
    Replayed(TurnReply),
    /// Ready for the model (boxed: it holds the policy instance and the session lock).
    Prepared(Box<PreparedTurn>),
}

/// A turn between the policy's `prepare` and `commit`: the session is locked and the body for
/// llama-server is ready. Dropping it abandons the turn, and nothing is written.
pub struct PreparedTurn {
    /// The llama-server `/completion` body: the client's fields with the policy's prompt.
    pub body: Map<String, Value>,
    pub timing: TurnTiming,
    pub session_id: String,
    pub user_id: String,
    pub mode: String,
    pub turn: u32,
    pub(super) policy: Arc<LoadedPolicy>,
    /// `None` for a policy that keeps nothing.
    pub(super) state: Option<PendingCommit>,
    /// The policy asked for the generated ids (`return_tokens` was set for it).
    pub(super) want_reply_tokens: bool,
    pub(super) client_wants_tokens: bool,
    /// Marks the model busy for warm-ups until the turn is done.
    pub(super) busy: crate::warm::BusyGuard,
}

impl PreparedTurn {
    /// The policy and its version, for the `x-discedge-policy` header.
    pub fn policy_label(&self) -> String {
        self.policy.label()
    }

    /// Whether the generated token ids must be kept from llama-server's answer.
    pub fn wants_tokens(&self) -> bool {
        self.want_reply_tokens || self.client_wants_tokens
    }
}

/// What committing a stored turn needs: the session lock, held until then, and the instance
/// `prepare` ran on, with its inputs.
pub(super) struct PendingCommit {
    pub(super) _lock: SessionGuard,
    pub(super) previous: Option<SessionHead>,
    pub(super) prompt_sha256: String,
    pub(super) instance: PolicyInstance,
    pub(super) input: TurnInput,
    pub(super) settings: Settings,
    pub(super) carry: Vec<u8>,
}
