//! One conversation turn, start to finish: lock the session, load it, check the turn, let the
//! policy build the prompt, ask the model, let the policy fold the reply in, commit.
//! Nothing is written unless every step succeeded, so a failed turn leaves the session as it was.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Kind};
use crate::llm::LlmBackend;
use crate::policy::runtime::{
    ChatTemplate, PolicyError, Prepared, Prompt, Reply, Settings, TurnInput,
};
use crate::policy::{CallFailure, HostServices, LoadedPolicy, PolicyInstance, PolicyRegistry};
use crate::store::{ContextStore, SessionHead, StoredSession};

mod locks;
mod view;
mod warm;

pub use warm::{Warmed, run as run_warm_up};

use locks::{SessionGuard, SessionLocks};

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

/// Reply fields kept for replaying a retried turn. The head is rewritten and replicated every
/// turn, so it carries the answer itself, not llama-server's large per-call diagnostics
/// (`prompt`, `generation_settings`, `timings`, ...).
const REPLAYED: [&str; 8] = [
    "content",
    "tokens",
    "stop",
    "stop_type",
    "stopping_word",
    "tokens_predicted",
    "tokens_evaluated",
    "truncated",
];

impl Proxy {
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
        let (instance, prepared, input, settings) =
            self.prepare(&policy, records, input, settings).await?;
        timing.policy = started.elapsed();
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

    fn check_size(&self, session_id: &str, stored: &StoredSession) -> Result<(), Error> {
        let size = stored.bytes();
        if size <= self.defaults.max_session_bytes {
            return Ok(());
        }
        Err(Error::new(
            Kind::TooLarge,
            "session_too_large",
            format!(
                "session {session_id:?} holds {size} bytes of context, more than the {} allowed; start a new session",
                self.defaults.max_session_bytes
            ),
        ))
    }

    /// Deletes a session of `user_id`; another user's session is reported as unknown.
    pub async fn delete_session(&self, session_id: &str, user_id: &str) -> Result<(), Error> {
        let _lock = self.locks.lock(session_id).await;
        self.load_owned(session_id, user_id).await?;
        self.store.delete(session_id).await?;
        tracing::info!(session_id, "session deleted");
        Ok(())
    }

    /// A live session of `user_id`; one that is gone, expired or another user's is unknown.
    async fn load_owned(&self, session_id: &str, user_id: &str) -> Result<StoredSession, Error> {
        let stored = self.store.load(session_id).await?;
        match self.unless_idle(session_id, stored).await? {
            Some(stored) if stored.head.user_id == user_id => Ok(stored),
            _ => Err(unknown_session(session_id)),
        }
    }

    /// Drops a session that has been idle past `session_idle`, as if it never existed.
    async fn unless_idle(
        &self,
        session_id: &str,
        stored: Option<StoredSession>,
    ) -> Result<Option<StoredSession>, Error> {
        let (Some(idle), Some(session)) = (self.defaults.session_idle, &stored) else {
            return Ok(stored);
        };
        if !self.expired(&session.head) {
            return Ok(stored);
        }
        tracing::info!(session_id, "session expired after {idle:?} idle");
        self.store.delete(session_id).await?;
        Ok(None)
    }

    /// Whether a session has been idle past `session_idle`, and so no longer counts.
    fn expired(&self, head: &SessionHead) -> bool {
        self.defaults
            .session_idle
            .is_some_and(|idle| head.updated_ms + (idle.as_millis() as u64) < unix_ms())
    }

    /// Loads a session; on a replicated store, waits (bounded, with backoff) while the stored
    /// turn is behind the one asked for, since the previous turn may still be on its way from
    /// another node. A repeated or stale turn is not lag and returns at once.
    async fn load_caught_up(
        &self,
        session_id: &str,
        turn: u32,
    ) -> Result<Option<StoredSession>, Error> {
        let deadline = Instant::now() + self.defaults.sync_wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let stored = self.store.load_for_turn(session_id, turn).await?;
            let stored_turn = stored.as_ref().map_or(0, |s| s.head.turn);
            let now = Instant::now();
            if stored_turn + 1 >= turn || !self.store.replicated() || now >= deadline {
                return Ok(stored);
            }
            tracing::debug!(session_id, stored_turn, turn, "waiting for replication");
            if pause == Duration::from_millis(10) {
                self.metrics.replication_wait();
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn settings(
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

    /// Instantiates the policy and runs `prepare` on a blocking thread (it may call the tokenizer).
    async fn prepare(
        &self,
        policy: &Arc<LoadedPolicy>,
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
    ) -> Result<(PolicyInstance, Prepared, TurnInput, Settings), Error> {
        let (policy2, runtime, services) = (
            policy.clone(),
            self.policies.runtime().clone(),
            self.services.clone(),
        );
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _in_turn = span.enter();
            let mut instance = policy2.instantiate(&runtime, services)?;
            let prepared = instance.prepare(&records, &input, &settings)?;
            Ok((instance, prepared, input, settings))
        })
        .await
        .map_err(|e| joined(e, policy))?
        .map_err(|e| policy_error(e, policy))
    }

    async fn commit(
        &self,
        policy: &Arc<LoadedPolicy>,
        mut instance: PolicyInstance,
        input: TurnInput,
        settings: Settings,
        carry: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, Error> {
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _in_turn = span.enter();
            instance.commit(&input, &settings, &carry, &reply)
        })
        .await
        .map_err(|e| joined(e, policy))?
        .map_err(|e| policy_error(e, policy))
    }

    /// The `/completion` body for llama-server: the client's own llama.cpp fields (moved, not
    /// copied) with the policy's prompt, checked first if it is token ids.
    async fn model_body(
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

    /// What the policy needs from llama-server's answer; the token ids it asked for are taken
    /// out of the client's copy unless the client asked for them too.
    fn read_reply(
        &self,
        prepared: &PreparedTurn,
        reply: &mut Map<String, Value>,
    ) -> Result<Reply, Error> {
        let timing = |key: &str| {
            reply
                .get("timings")
                .and_then(|t| t.get(key))
                .and_then(Value::as_u64)
        };
        let (evaluated, cached) = (
            timing("prompt_n").unwrap_or(0),
            timing("cache_n").unwrap_or(0),
        );
        self.metrics.prompt_tokens(evaluated, cached);
        if prepared.busy.roamed {
            self.warm
                .counts
                .roamed_turn(prepared.busy.warmed, evaluated, cached);
        }
        let bad_reply = |what: &str| {
            Error::new(
                Kind::BadGateway,
                "llm_failed",
                format!("llama-server reply has no {what}"),
            )
            .with("policy", prepared.policy.label())
        };
        let content = reply
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_reply("content"))?
            .to_owned();
        let tokens = if prepared.want_reply_tokens {
            reply
                .get("tokens")
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter()
                        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                        .collect()
                })
                .ok_or_else(|| bad_reply("token ids (return_tokens)"))?
        } else {
            Vec::new()
        };
        let stop_type = reply
            .get("stop_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if prepared.want_reply_tokens && !prepared.client_wants_tokens {
            reply.remove("tokens");
        }
        Ok(Reply {
            content,
            tokens,
            stop_type,
        })
    }
}

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
    policy: Arc<LoadedPolicy>,
    /// `None` for a policy that keeps nothing.
    state: Option<PendingCommit>,
    /// The policy asked for the generated ids (`return_tokens` was set for it).
    want_reply_tokens: bool,
    client_wants_tokens: bool,
    /// Marks the model busy for warm-ups until the turn is done.
    busy: crate::warm::BusyGuard,
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
struct PendingCommit {
    _lock: SessionGuard,
    previous: Option<SessionHead>,
    prompt_sha256: String,
    instance: PolicyInstance,
    input: TurnInput,
    settings: Settings,
    carry: Vec<u8>,
}

/// Answers a retried turn from the store.
fn replay(head: &SessionHead, session_id: &str, policy: &LoadedPolicy) -> Result<TurnReply, Error> {
    let reply: Map<String, Value> = serde_json::from_str(&head.last_reply).map_err(|e| {
        Error::new(
            Kind::Internal,
            "store_corrupt",
            format!("stored reply unreadable: {e}"),
        )
    })?;
    Ok(TurnReply {
        body: with_session_fields(reply, session_id, &head.user_id, &head.mode, head.turn),
        policy: policy.label(),
        replayed: true,
        timing: TurnTiming::default(),
    })
}

fn replay_copy(reply: &Map<String, Value>) -> String {
    let kept: Map<String, Value> = reply
        .iter()
        .filter(|(k, _)| REPLAYED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept).to_string()
}

/// The fields every reply carries (every format, streamed or not), so a client can go on.
pub const SESSION_FIELDS: [&str; 4] = ["session_id", "user_id", "mode", "turn"];

/// Adds the [`SESSION_FIELDS`] to a reply or an event.
pub fn add_session_fields(
    fields: &mut Map<String, Value>,
    session_id: &str,
    user_id: &str,
    mode: &str,
    turn: u32,
) {
    fields.insert("session_id".into(), session_id.into());
    fields.insert("user_id".into(), user_id.into());
    fields.insert("mode".into(), mode.into());
    fields.insert("turn".into(), turn.into());
}

/// Copies the [`SESSION_FIELDS`] of a turn's reply into another reply or event.
pub fn copy_session_fields(to: &mut Map<String, Value>, reply: &Map<String, Value>) {
    for key in SESSION_FIELDS {
        if let Some(value) = reply.get(key) {
            to.insert(key.into(), value.clone());
        }
    }
}

fn with_session_fields(
    mut reply: Map<String, Value>,
    session_id: &str,
    user_id: &str,
    mode: &str,
    turn: u32,
) -> Map<String, Value> {
    add_session_fields(&mut reply, session_id, user_id, mode, turn);
    reply
}

fn policy_error(failure: CallFailure, policy: &LoadedPolicy) -> Error {
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

fn joined(e: tokio::task::JoinError, policy: &LoadedPolicy) -> Error {
    Error::new(
        Kind::Internal,
        "policy_trapped",
        format!("policy {} call aborted: {e}", policy.name),
    )
    .with("policy", policy.label())
}

/// A policy's token prompt must leave the model room to answer and use only ids it knows;
/// a policy is untrusted code, and its mistakes must not pass for the client's.
fn check_token_prompt(ids: &[u32], n_ctx: u32, vocab: Option<u32>) -> Result<(), String> {
    if ids.len() >= n_ctx as usize {
        return Err(format!(
            "produced a prompt of {} tokens; the model's window is {n_ctx}",
            ids.len()
        ));
    }
    if let Some((bad, vocab)) =
        vocab.and_then(|v| ids.iter().find(|&&id| id >= v).map(|bad| (bad, v)))
    {
        return Err(format!(
            "produced token id {bad}, outside the model's vocabulary of {vocab}"
        ));
    }
    Ok(())
}

fn unknown_session(session_id: &str) -> Error {
    Error::new(
        Kind::NotFound,
        "unknown_session",
        format!("no session {session_id:?}"),
    )
    .with("session_id", session_id)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
