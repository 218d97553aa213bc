//! The completions a policy asks for before it builds a turn's prompt (contract 0.2.0): the
//! request checked like any policy output (`policy::completion_body`), sent to the same
//! llama-server within the turn's time for them, its answer handed back to `prepare`.

use std::sync::Arc;
use std::time::Instant;

use super::Proxy;
use super::errors::bad_output;
use crate::error::{Error, Kind};
use crate::metrics::TurnTiming;
use crate::policy::runtime::{Answer, CompletionRequest};
use crate::policy::{LoadedPolicy, answer, completion_body};

impl Proxy {
    /// Runs one completion a policy asked for, before `deadline` (all of a turn's policy
    /// completions share it), and counts it in `timing`.
    pub(super) async fn policy_completion(
        &self,
        policy: &Arc<LoadedPolicy>,
        request: CompletionRequest,
        n_ctx: u32,
        deadline: Instant,
        timing: &mut TurnTiming,
    ) -> Result<Answer, Error> {
        let vocab = self.llm.vocab_size().await.ok().flatten();
        let body =
            completion_body(&request, n_ctx, vocab).map_err(|why| bad_output(policy, &why))?;
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        let completion = match tokio::time::timeout(left, self.llm.complete(&body)).await {
            Ok(completion) => completion?,
            Err(_) => {
                return Err(Error::new(
                    Kind::Timeout,
                    "llm_timeout",
                    format!(
                        "the completions policy {} asked for this turn ran out of time \
                         (one model timeout for all of them)",
                        policy.name
                    ),
                )
                .with("policy", policy.label()));
            }
        };
        timing.policy_llm += started.elapsed();
        timing.policy_completions += 1;
        answer(request.state, &completion).map_err(|why| {
            Error::new(Kind::BadGateway, "llm_failed", why).with("policy", policy.label())
        })
    }
}
