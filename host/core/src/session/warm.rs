//! The prompt a session's next turn will start with, sent to llama-server ahead of the turn
//! (the roaming warm-up, see [`crate::warm`]).
//!
//! The policy builds it the way it builds every prompt: its own `prepare`, for the next turn,
//! with an empty message. Everything before the message is then exactly what the real turn
//! will send, so llama-server's prompt cache holds that prefix when the turn comes; what
//! follows the empty message is evaluated again, a handful of template tokens. No change to
//! the policy contract, so every policy, old or new, warms up.
//!
//! llama-server does not stop a prompt it is evaluating when its client goes away (measured:
//! a request sent after a dropped 1,500-token warm-up waited for all of it), and with one slot
//! a real turn queues behind it. So the prefix goes in pieces of [`CHUNK_TOKENS`], each one
//! extending what the cache holds, and no piece starts while a real turn is at the model: a
//! turn waits for one piece at most.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::Proxy;
use super::errors::unknown_session;
use crate::error::{Error, Kind};
use crate::policy::runtime::TurnInput;
use crate::store::RemoteTurn;
use crate::warm::IDLE_WAIT;

/// Tokens per piece of a token prompt; text prompts go in pieces of 4 bytes per token.
const CHUNK_TOKENS: usize = 128;
/// How long the handover hint waits for real turns to leave the model between pieces.
const HINT_IDLE_WAIT: Duration = Duration::from_secs(10);

/// What a warm-up did, as llama-server counted it.
#[derive(Debug, Clone, Serialize)]
pub struct Warmed {
    pub session_id: String,
    /// The turn the prompt cache is now ready for.
    pub turn: u32,
    /// Tokens of the prefix, evaluated now and taken from the cache already.
    pub prompt_tokens: u64,
    pub evaluated: u64,
    pub cached: u64,
    pub ms: f64,
}

impl Proxy {
    /// Sends the next turn's prompt prefix of `session_id` to llama-server with no generation
    /// (`n_predict` 0, `cache_prompt`). With `owner` (the handover hint) a session that is not
    /// theirs is unknown; with `after_turn` the session is waited for until it has that turn,
    /// as a turn waits for replication. `None`: nothing to warm (no stored context).
    pub async fn warm_up(
        &self,
        session_id: &str,
        owner: Option<&str>,
        after_turn: Option<u32>,
    ) -> Result<Option<Warmed>, Error> {
        let started = Instant::now();
        let stored = match after_turn {
            Some(turn) => self.load_caught_up(session_id, turn + 1).await?,
            None => self.store.load(session_id).await?,
        };
        let stored = match (stored, owner) {
            (Some(s), Some(user)) if s.head.user_id != user => None,
            (stored, _) => stored,
        };
        let Some(stored) = stored else {
            return match owner {
                Some(_) => Err(unknown_session(session_id)),
                None => Ok(None),
            };
        };
        let head = stored.head;
        if let Some(turn) = after_turn.filter(|&t| head.turn < t) {
            return Err(Error::new(
                Kind::Conflict,
                "turn_not_here",
                format!(
                    "turn {turn} of session {session_id:?} has not reached this node (it has turn {})",
                    head.turn
                ),
            )
            .with("stored_turn", head.turn));
        }
        let Some(policy) = self.policies.get(&head.mode) else {
            return Ok(None);
        };
        if !policy.info.stores_context {
            return Ok(None);
        }
        let mut settings = self.settings(&Map::new(), None, "{}".into(), false).await;
        let n_ctx = settings.n_ctx;
        let input = TurnInput {
            session_id: session_id.to_owned(),
            user_id: head.user_id.clone(),
            turn: head.turn + 1,
            prompt: String::new(),
        };
        // The next turn's reply budget is unknown: the default one first (a window policy
        // keeps what it would keep), then the least (a policy that refuses a full context
        // still has a prefix to warm, for a turn that asks for a short reply).
        let prepared = match self
            .prepare(
                &policy,
                stored.records.clone(),
                input.clone(),
                settings.clone(),
                None,
            )
            .await
        {
            Err(e) if e.code == "context_full" => {
                settings.reply_budget = 1;
                self.prepare(&policy, stored.records, input, settings, None)
                    .await
            }
            other => other,
        };
        let (_, prepared, _, _) = match prepared {
            // The next turn will summarise (or otherwise ask the model) first: its prompt is
            // not known before that, so there is no prefix to warm.
            Err(e) if e.code == "policy_wants_completion" => return Ok(None),
            other => other?,
        };
        let mut forward = Map::new();
        forward.insert("n_predict".into(), 0.into());
        forward.insert("cache_prompt".into(), true.into());
        let mut body = self
            .model_body(
                forward,
                Value::String(String::new()),
                prepared.prompt,
                &policy,
                n_ctx,
            )
            .await?;
        let prompt = body.remove("prompt").unwrap_or_default();
        let mut warmed = Warmed {
            session_id: session_id.to_owned(),
            turn: head.turn + 1,
            prompt_tokens: 0,
            evaluated: 0,
            cached: 0,
            ms: 0.0,
        };
        for (i, piece) in pieces(&prompt).into_iter().enumerate() {
            let free = match owner {
                // The hint was asked for: wait for real turns to leave the model.
                Some(_) => self.warm.idle_within(HINT_IDLE_WAIT).await,
                None => !self.warm.is_busy(),
            };
            if !free {
                return Err(Error::new(
                    Kind::Unavailable,
                    "model_busy",
                    "real turns kept the model busy; the warm-up stopped",
                ));
            }
            body.insert("prompt".into(), piece);
            let reply = self.llm.complete(&body).await?;
            let count = |key: &str| {
                reply
                    .get("timings")
                    .and_then(|t| t.get(key))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            warmed.evaluated += count("prompt_n");
            if i == 0 {
                warmed.cached = count("cache_n");
            }
            warmed.prompt_tokens = reply
                .get("tokens_evaluated")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        self.warm.remember(session_id, head.turn, true);
        warmed.ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Some(warmed))
    }
}

/// The prompt's growing prefixes, the whole prompt last: ids by [`CHUNK_TOKENS`], text by
/// about as many bytes as that many tokens take, cut before whitespace where there is some
/// (a word's tokens carry the space before it, so a piece then ends where a token does).
fn pieces(prompt: &Value) -> Vec<Value> {
    match prompt {
        Value::Array(ids) => {
            let mut out: Vec<Value> = (1..ids.len().div_ceil(CHUNK_TOKENS))
                .map(|k| Value::Array(ids[..k * CHUNK_TOKENS].to_vec()))
                .collect();
            out.push(prompt.clone());
            out
        }
        Value::String(text) => {
            let step = CHUNK_TOKENS * 4;
            let mut out = Vec::new();
            let mut from = 0;
            while text.len() - from > step {
                let mut cut = from + step;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                let window = &text[from..cut];
                if let Some(space) = window.rfind(char::is_whitespace).filter(|&s| s > step / 2) {
                    cut = from + space;
                }
                out.push(Value::String(text[..cut].to_owned()));
                from = cut;
            }
            out.push(prompt.clone());
            out
        }
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_prompts_go_in_growing_pieces_ending_with_the_whole() {
        let ids: Vec<Value> = (0..300).map(Value::from).collect();
        let lens: Vec<usize> = pieces(&Value::Array(ids.clone()))
            .iter()
            .map(|p| p.as_array().unwrap().len())
            .collect();
        assert_eq!(lens, [128, 256, 300]);
        assert_eq!(pieces(&Value::Array(ids[..128].to_vec())).len(), 1);
        assert_eq!(pieces(&Value::Array(Vec::new())).len(), 1);
    }

    #[test]
    fn text_prompts_are_cut_before_whitespace_on_char_boundaries() {
        let text = "ö".repeat(200) + " " + &"word ".repeat(300);
        let got = pieces(&Value::String(text.clone()));
        let texts: Vec<&str> = got.iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(*texts.last().unwrap(), text);
        assert!(texts[0].len() <= 600, "{}", texts[0].len());
        for pair in texts.windows(2) {
            assert!(pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len());
            assert!(
                pair[1].len() - pair[0].len() <= 600,
                "a piece adds at most ~128 tokens"
            );
        }
        assert!(texts[1].ends_with("word"), "cut before a space");
        assert!(texts[2][texts[1].len()..].starts_with(' '));
        assert_eq!(pieces(&Value::String("short".into())).len(), 1);
    }
}

/// Warms this node's model for the turns `remote` announces (the worker of `--warm-up`), at
/// most `per_second` warm-ups a second. Without `warm_up` it only remembers them, so roamed
/// turns are still told apart in the metrics. Runs until the store's feed ends.
pub async fn run(
    proxy: Arc<Proxy>,
    mut remote: broadcast::Receiver<RemoteTurn>,
    warm_up: bool,
    per_second: f64,
) {
    let warmer = proxy.warm.clone();
    let listener = {
        let warmer = warmer.clone();
        tokio::spawn(async move {
            loop {
                match remote.recv().await {
                    Ok(turn) => warmer.heard(turn, warm_up),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warmer.counts.superseded.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };
    if !warm_up {
        let _ = listener.await;
        return;
    }
    let gap = Duration::from_secs_f64(1.0 / per_second.max(0.001));
    let mut last: Option<Instant> = None;
    loop {
        let job = warmer.next().await;
        if let Some(last) = last {
            tokio::time::sleep_until((last + gap).into()).await;
        }
        if !warmer.idle_within(IDLE_WAIT).await {
            warmer.counts.skipped_busy.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        last = Some(Instant::now());
        tokio::select! {
            warmed = proxy.warm_up(&job.session_id, None, Some(job.turn)) => match warmed {
                Ok(Some(_)) => {
                    warmer.counts.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    warmer.counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(session_id = job.session_id, "warm-up failed: {}", e.message);
                }
            },
            () = warmer.busy_again() => {
                warmer.counts.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        if listener.is_finished() && warmer.pending.lock().expect("warm-up queue").is_empty() {
            return;
        }
    }
}
