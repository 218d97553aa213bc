//! The `client-side` policy: the client keeps the conversation and sends it whole each turn.
//!
//! The baseline without a proxy-side session: the prompt passes through untouched and nothing
//! is stored, so the host skips the session store entirely (`stores-context: false`).

discedge_policy_sdk::bindings!("context-policy");

use discedge::policy::types::{
    Answer, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step, TurnInput,
};
use exports::discedge::policy::policy::Guest;

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Stores nothing; forwards the client's prompt unchanged".into(),
            stores_context: false,
        }
    }

    fn prepare(
        _records: Vec<Vec<u8>>,
        _input: TurnInput,
        _settings: Settings,
        _answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        Ok(Step::Ready(Prepared {
            prompt: Prompt::Unchanged,
            want_reply_tokens: false,
            carry: Vec::new(),
            dropped_records: 0,
        }))
    }

    fn commit(
        _input: TurnInput,
        _settings: Settings,
        _carry: Vec<u8>,
        _reply: Reply,
    ) -> Result<Option<Vec<u8>>, PolicyError> {
        Ok(None)
    }
}

export!(Component);
