//! The policy's part of a turn: the settings it gets, its `prepare` and `commit` calls, and the
//! body for llama-server built from its prompt (checked, since a policy is untrusted).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::Proxy;
use super::errors::{joined, policy_error};
use crate::error::{Error, Kind};
use crate::policy::runtime::{Prepared, Prompt, Reply, Settings, TurnInput};
use crate::policy::{LoadedPolicy, PolicyInstance, check_token_prompt};
use crate::store::Record;

impl Proxy {
    pub(super) async fn settings(
        &self,
        forward: &Map<String, Value>,
        system_prompt: Option<String>,
        request_json: String,
        first_turn: bool,
    ) -> Settings {
        let n_ctx = match self.llm.context_size().await {
            Ok(Some(n)) => n,
            _ => self.defaults.n_ctx,
        };
        let reply_budget = forward
            .get("n_predict")
            .and_then(Value::as_i64)
            .filter(|&n| n > 0)
            .map_or(self.defaults.reply_budget, |n| {
                n.min(i64::from(u32::MAX)) as u32
            });
        let system_prompt = if first_turn {
            system_prompt.or_else(|| self.defaults.system_prompt.clone())
        } else {
            None
        };
        Settings {
            n_ctx,
            reply_budget,
            template: self.defaults.template.clone(),
            system_prompt,
            request_json,
        }
    }

    /// Instantiates the policy and runs `prepare`, as blocking work (it may call the tokenizer).
    pub(super) async fn prepare(
        &self,
        policy: &Arc<LoadedPolicy>,
        records: Vec<Record>,
        input: TurnInput,
        settings: Settings,
    ) -> Result<(PolicyInstance, Prepared, TurnInput, Settings), Error> {
        let (policy2, runtime, services) = (
            policy.clone(),
            self.policies.runtime().clone(),
            self.services.clone(),
        );
        let span = tracing::Span::current();
        crate::blocking::run_blocking(move || {
            let _in_turn = span.enter();
            let mut instance = policy2.instantiate(&runtime, services)?;
            let prepared = instance.prepare(&records, &input, &settings)?;
            Ok((instance, prepared, input, settings))
        })
        .await
        .map_err(|e| joined(e, policy))?
        .map_err(|e| policy_error(e, policy))
    }

    pub(super) async fn commit(
        &self,
        policy: &Arc<LoadedPolicy>,
        mut instance: PolicyInstance,
        input: TurnInput,
        settings: Settings,
        carry: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, Error> {
        let span = tracing::Span::current();
        crate::blocking::run_blocking(move || {
            let _in_turn = span.enter();
            instance.commit(&input, &settings, &carry, &reply)
        })
        .await
        .map_err(|e| joined(e, policy))?
        .map_err(|e| policy_error(e, policy))
    }

    /// The `/completion` body for llama-server: the client's own llama.cpp fields (moved, not
    /// copied) with the policy's prompt, checked first if it is token ids.
    pub(super) async fn model_body(
        &self,
        mut forward: Map<String, Value>,
        client_prompt: Value,
        prompt: Prompt,
        policy: &LoadedPolicy,
        n_ctx: u32,
    ) -> Result<Map<String, Value>, Error> {
        let prompt = match prompt {
            Prompt::Unchanged => client_prompt,
            Prompt::Text(text) => Value::String(text),
            Prompt::Tokens(ids) => {
                let vocab = self.llm.vocab_size().await.ok().flatten();
                check_token_prompt(&ids, n_ctx, vocab).map_err(|why| {
                    Error::new(
                        Kind::Internal,
                        "policy_bad_output",
                        format!("policy {} {why}", policy.name),
                    )
                    .with("policy", policy.label())
                })?;
                Value::Array(ids.into_iter().map(Value::from).collect())
            }
        };
        forward.insert("prompt".into(), prompt);
        Ok(forward)
    }
}
