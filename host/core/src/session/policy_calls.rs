//! The policy's part of a turn: the settings it gets, its `prepare` and `commit` calls, and the
//! body for llama-server built from its prompt (checked, since a policy is untrusted).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::Proxy;
use super::errors::{bad_output, joined, policy_error};
use crate::error::Error;
use crate::metrics::TurnTiming;
use crate::policy::runtime::{
    Answer, CompletionRequest, Prepared, Prompt, Reply, Settings, Step, TurnInput,
};
use crate::policy::{LoadedPolicy, PolicyInstance, check_token_prompt};
use crate::store::Record;

/// What one `prepare` call takes, moved into the blocking call and back.
struct Round {
    records: Vec<Record>,
    input: TurnInput,
    settings: Settings,
    /// The completions answered so far this turn, oldest first.
    answers: Vec<Answer>,
}

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

    /// Instantiates the policy and runs `prepare`, as blocking work (it may call the
    /// tokenizer), running the completions it asks for first (contract 0.2.0): each on the
    /// model with no instance alive meanwhile, then `prepare` again on a fresh instance.
    /// `timing` counts them; `None` (a warm-up, which must not cost the model a generation)
    /// refuses a policy that asks, with code `policy_wants_completion`.
    pub(super) async fn prepare(
        &self,
        policy: &Arc<LoadedPolicy>,
        records: Vec<Record>,
        input: TurnInput,
        settings: Settings,
        mut timing: Option<&mut TurnTiming>,
    ) -> Result<(PolicyInstance, Prepared, TurnInput, Settings), Error> {
        let limits = self.policies.runtime().limits().clone();
        let deadline = Instant::now() + limits.completions_time;
        let mut round = Round {
            records,
            input,
            settings,
            answers: Vec::new(),
        };
        loop {
            let (back, outcome) = self.prepare_round(policy, round).await?;
            round = back;
            let request = match outcome {
                Ok(ready) => return Ok((ready.0, ready.1, round.input, round.settings)),
                Err(request) => request,
            };
            let Some(timing) = timing.as_deref_mut() else {
                let mut refused = bad_output(policy, "asks for a completion to warm up");
                refused.code = "policy_wants_completion";
                return Err(refused);
            };
            if round.answers.len() >= limits.completions_per_turn as usize {
                let limit = limits.completions_per_turn;
                return Err(bad_output(
                    policy,
                    &format!(
                        "asked for more than {limit} completions in one turn (--policy-completions)"
                    ),
                ));
            }
            let answer = self
                .policy_completion(policy, request, round.settings.n_ctx, deadline, timing)
                .await?;
            round.answers.push(answer);
        }
    }

    /// One `prepare` call on a fresh instance: the instance and its prompt, or the completion
    /// it asks for (the instance then dropped before anything waits).
    async fn prepare_round(
        &self,
        policy: &Arc<LoadedPolicy>,
        round: Round,
    ) -> Result<(Round, Result<(PolicyInstance, Prepared), CompletionRequest>), Error> {
        let (policy2, runtime, services) = (
            policy.clone(),
            self.policies.runtime().clone(),
            self.services.clone(),
        );
        let span = tracing::Span::current();
        crate::blocking::run_short(services.answers_in_place(), move || {
            let _in_turn = span.enter();
            let mut instance = policy2.instantiate(&runtime, services)?;
            let step = instance.prepare(
                &round.records,
                &round.input,
                &round.settings,
                &round.answers,
            )?;
            let outcome = match step {
                Step::Ready(prepared) => Ok((instance, prepared)),
                Step::Complete(request) => Err(request),
            };
            Ok((round, outcome))
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
        crate::blocking::run_short(self.services.answers_in_place(), move || {
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
                check_token_prompt(&ids, n_ctx, vocab).map_err(|why| bad_output(policy, &why))?;
                Value::Array(ids.into_iter().map(Value::from).collect())
            }
        };
        forward.insert("prompt".into(), prompt);
        Ok(forward)
    }
}
