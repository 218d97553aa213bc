//! One conversation turn, start to finish: lock the session, load it, check the turn, let the
//! policy build the prompt, ask the model, let the policy fold the reply in, commit.
//! Nothing is written unless every step succeeded, so a failed turn leaves the session as it was.
//!
//! This file is the orchestration; the steps live by concern: `load` (the stored session),
//! `policy_calls` (prepare, commit, the model's body), `reply` (the model's answer, session
//! fields), `replay` (retried turns), `turn` (a turn between its halves), `errors`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Kind};
use crate::llm::LlmBackend;
use crate::policy::runtime::{ChatTemplate, TurnInput};
use crate::policy::{HostServices, PolicyRegistry};
use crate::store::{ContextStore, SessionHead};

mod completions;
mod errors;
mod load;
mod locks;
mod policy_calls;
mod replay;
mod reply;
mod turn;
mod view;
mod warm;

pub use reply::{SESSION_FIELDS, add_session_fields, copy_session_fields};
pub use turn::{PreparedTurn, StartedTurn};
pub use warm::{Warmed, run as run_warm_up};

use errors::unknown_session;
use replay::{replay, replay_copy};
use reply::with_session_fields;
use turn::PendingCommit;

use locks::SessionLocks;

/// Settings that apply when a request does not say otherwise.
#[derive(Debug, Clone)]
pub struct TurnDefaults {
    pub template: ChatTemplate,
    pub system_prompt: Option<String>,
    /// Context window if llama-server's `/props` does not tell.
    pub n_ctx: u32,
    pub reply_budget: u32,
    pub user_id: String,
    pub mode: String,
    /// How long to wait for replication when a turn arrives before its predecessor (roaming).
    pub sync_wait: Duration,
    /// Sessions untouched for longer are gone (deleted when next seen); `None`: kept forever.
    pub session_idle: Option<Duration>,
    /// Largest stored context (sum of record bytes) a session may reach.
    pub max_session_bytes: usize,
    /// Largest `prompt` a request may carry.
    pub max_prompt_bytes: usize,
}

/// Everything a turn needs, shared by all requests.
pub struct Proxy {
    pub store: Arc<dyn ContextStore>,
    pub llm: Arc<dyn LlmBackend>,
    pub policies: Arc<PolicyRegistry>,
    /// What policies call back into (tokenizer); blocking, used from blocking threads only.
    pub services: Arc<dyn HostServices>,
    pub defaults: TurnDefaults,
    /// Optional API keys; set by the server after construction.
    pub api_keys: crate::auth::ApiKeys,
    /// Counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Which real turns are at the model (warm-ups wait for none), and roamed sessions.
    pub warm: Arc<crate::warm::Warmer>,
    locks: SessionLocks,
}

/// A client's `/completion` request, validated.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub mode: String,
    pub session_id: Option<String>,
    pub user_id: String,
    /// `None` only for a new session, which starts at turn 1.
    pub turn: Option<u32>,
    pub prompt: Value,
    pub system_prompt: Option<String>,
    /// The llama.cpp fields, passed to llama-server unchanged (all but the proxy's own).
    pub forward: Map<String, Value>,
    /// The body as received, for policies that read fields of their own.
    pub request_json: String,
    /// The client asked for server-sent events (`"stream": true`).
    pub stream: bool,
}

/// The reply to send, and which policy version produced it.
#[derive(Debug)]
pub struct TurnReply {
    pub body: Map<String, Value>,
    pub policy: String,
    /// True when a retried turn was answered from the store without calling the model.
    pub replayed: bool,
    /// Where the proxy's time went, for clients that measure (`Server-Timing`).
    pub timing: TurnTiming,
}

/// Where a turn's time went; defined with the metrics that count it.
pub use crate::metrics::TurnTiming;

impl Proxy {
    /// A proxy with default keys, metrics and warm-up state; `serve` sets those it configures.
    pub fn new(
        store: Arc<dyn ContextStore>,
        llm: Arc<dyn LlmBackend>,
        policies: Arc<PolicyRegistry>,
        services: Arc<dyn HostServices>,
        defaults: TurnDefaults,
    ) -> Self {
        Self {
            store,
            llm,
            policies,
            services,
            defaults,
            api_keys: crate::auth::ApiKeys::default(),
            metrics: crate::metrics::Metrics::default(),
            warm: Arc::default(),
            locks: SessionLocks::default(),
        }
    }

    /// Counts an answered turn in the metrics. The mode label is a loaded policy's name or
    /// `unknown`: a client picks `mode` freely, and each new label would be a new series kept
    /// for ever.
    pub fn count_request(
        &self,
        mode: &str,
        status: u16,
        code: &'static str,
        timing: Option<&TurnTiming>,
    ) {
        let label = if self.policies.get(mode).is_some() {
            mode
        } else {
            "unknown"
        };
        self.metrics.request(label, status, code, timing);
    }

    /// Serves one turn.
    pub async fn turn(&self, request: TurnRequest) -> Result<TurnReply, Error> {
        let mut prepared = match self.start_turn(request).await? {
            StartedTurn::Replayed(reply) => return Ok(reply),
            StartedTurn::Prepared(prepared) => prepared,
        };
        let started = Instant::now();
        let reply = self.llm.complete(&prepared.body).await?;
        prepared.timing.llm = started.elapsed();
        self.finish_turn(prepared, reply).await
    }

    /// Everything before the model: lock and load the session, check the turn, run the
    /// policy's `prepare`. A retried turn is answered from the store here.
    pub async fn start_turn(&self, request: TurnRequest) -> Result<StartedTurn, Error> {
        let TurnRequest {
            mode,
            session_id: requested_id,
            user_id,
            turn: requested_turn,
            prompt,
            system_prompt,
            forward,
            request_json,
            stream: _,
        } = request;
        let policy = self.policies.get(&mode).ok_or_else(|| {
            Error::bad_request("unknown_mode", format!("unknown mode {mode:?}"))
                .with("modes", self.policies.names())
        })?;
        if policy.info.stores_context && !prompt.is_string() {
            return Err(Error::bad_request(
                "invalid_field",
                format!("prompt must be a string (the new user message) in mode {mode:?}"),
            ));
        }
        let session_id = match &requested_id {
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        tracing::Span::current().record("session_id", session_id.as_str());
        let turn = match (requested_turn, &requested_id) {
            (Some(turn), _) => turn,
            (None, None) => 1,
            (None, Some(_)) if !policy.info.stores_context => 1,
            (None, Some(_)) => {
                return Err(Error::bad_request(
                    "missing_field",
                    "turn is required when continuing a session",
                ));
            }
        };
        let busy = self.warm.turn_started(&session_id, turn);
        let mut timing = TurnTiming::default();
        let mut kept = None;
        let mut records = Vec::new();
        if policy.info.stores_context {
            let lock = self.locks.lock(&session_id).await;
            let started = Instant::now();
            let stored = self.load_caught_up(&session_id, turn).await?;
            timing.store_read = started.elapsed();
            let stored = self.unless_idle(&session_id, stored).await?;
            let prompt_text = prompt.as_str().unwrap_or_default();
            let prompt_sha256 = hex::encode(&Sha256::digest(prompt_text.as_bytes())[..16]);
            let previous = match stored {
                None if turn == 1 => None,
                None => return Err(unknown_session(&session_id)),
                Some(stored) => {
                    let head = &stored.head;
                    // Another user's session looks exactly like one that does not exist.
                    if head.user_id != user_id {
                        return Err(unknown_session(&session_id));
                    }
                    self.check_size(&session_id, &stored)?;
                    if head.mode != mode {
                        return Err(Error::new(
                            Kind::Conflict,
                            "mode_mismatch",
                            format!(
                                "session {session_id:?} is kept by mode {:?}, not {mode:?}",
                                head.mode
                            ),
                        )
                        .with("mode", head.mode.clone()));
                    }
                    if turn == head.turn && head.last_prompt_sha256 == prompt_sha256 {
                        return replay(head, &session_id, &policy).map(StartedTurn::Replayed);
                    }
                    if turn != head.turn + 1 {
                        return Err(Error::new(
                            Kind::Conflict,
                            "turn_mismatch",
                            format!("turn {turn} does not follow stored turn {}", head.turn),
                        )
                        .with("expected_turn", head.turn + 1));
                    }
                    records = stored.records;
                    Some(stored.head)
                }
            };
            kept = Some((lock, previous, prompt_sha256));
        }

        let input = TurnInput {
            session_id: session_id.clone(),
            user_id: user_id.clone(),
            turn,
            prompt: match &prompt {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
        };
        let settings = self
            .settings(&forward, system_prompt, request_json, turn == 1)
            .await;
        let n_ctx = settings.n_ctx;
        let started = Instant::now();
        let (instance, prepared, input, settings) = self
            .prepare(&policy, records, input, settings, Some(&mut timing))
            .await?;
        timing.policy = started.elapsed().saturating_sub(timing.policy_llm);
        timing.dropped_records = prepared.dropped_records;
        let want_reply_tokens = prepared.want_reply_tokens;
        let client_wants_tokens = forward
            .get("return_tokens")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut body = self
            .model_body(forward, prompt, prepared.prompt, &policy, n_ctx)
            .await?;
        if want_reply_tokens {
            body.insert("return_tokens".into(), Value::Bool(true));
        }
        let state = kept.map(|(lock, previous, prompt_sha256)| PendingCommit {
            _lock: lock,
            previous,
            prompt_sha256,
            instance,
            input,
            settings,
            carry: prepared.carry,
        });
        Ok(StartedTurn::Prepared(Box::new(PreparedTurn {
            body,
            timing,
            session_id,
            user_id,
            mode,
            turn,
            policy,
            state,
            want_reply_tokens,
            client_wants_tokens,
            busy,
        })))
    }

    /// Everything after the model: let the policy fold the reply in and commit the turn.
    /// `reply` is llama-server's answer (for a stream: its last event, holding the whole
    /// `content` and `tokens`).
    pub async fn finish_turn(
        &self,
        prepared: Box<PreparedTurn>,
        mut reply: Map<String, Value>,
    ) -> Result<TurnReply, Error> {
        let model_reply = self.read_reply(&prepared, &mut reply)?;
        let PreparedTurn {
            mut timing,
            session_id,
            user_id,
            mode,
            turn,
            policy,
            state,
            ..
        } = *prepared;
        let Some(pending) = state else {
            return Ok(TurnReply {
                body: with_session_fields(reply, &session_id, &user_id, &mode, turn),
                policy: policy.label(),
                replayed: false,
                timing,
            });
        };
        let started = Instant::now();
        let record = self
            .commit(
                &policy,
                pending.instance,
                pending.input,
                pending.settings,
                pending.carry,
                model_reply,
            )
            .await?;
        timing.policy += started.elapsed();

        let now = unix_ms();
        let previous = pending.previous.as_ref();
        let head = SessionHead {
            user_id,
            mode,
            turn,
            records: previous.map_or(0, |h| h.records) + u32::from(record.is_some()),
            last_prompt_sha256: pending.prompt_sha256,
            last_reply: replay_copy(&reply),
            created_ms: previous.map_or(now, |h| h.created_ms),
            updated_ms: now,
        };
        let started = Instant::now();
        timing.store_bytes = self
            .store
            .commit_turn(&session_id, &head, record.as_deref())
            .await?;
        timing.store_write = started.elapsed();
        Ok(TurnReply {
            body: with_session_fields(reply, &session_id, &head.user_id, &head.mode, turn),
            policy: policy.label(),
            replayed: false,
            timing,
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
