//! A FAKE llama-server, in process: for benchmarks that must measure the proxy alone, and for
//! fast tests of failure paths. It speaks the few endpoints the proxy uses, with the FAKE
//! one-token-per-byte tokenizer ([`crate::byte_tokenizer::ByteTokenizer`]). Never a stand-in for the
//! real model in end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::byte_tokenizer::ByteTokenizer;
use discedge_core::policy::HostServices;

/// How the fake answers `/completion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// A short reply that echoes the prompt, like llama-server's JSON.
    Answer = 0,
    /// HTTP 500 with a llama-style error body.
    Fail = 1,
    /// No answer for 30 s.
    Hang = 2,
    /// HTTP 200 with a body that is not JSON.
    Garbage = 3,
    /// A streamed answer that breaks off after two events (the connection is cut).
    BreakStream = 4,
}

/// A running fake; stops when the process ends.
pub struct FakeLlm {
    pub url: String,
    /// `/completion` calls received.
    pub calls: Arc<AtomicUsize>,
    behaviour: Arc<AtomicU8>,
    knobs: Arc<Knobs>,
    last_prompt: Arc<std::sync::Mutex<Vec<u32>>>,
    /// Streamed answers the proxy stopped reading before their end.
    pub streams_abandoned: Arc<AtomicUsize>,
}

/// Finer faults, for load tests.
#[derive(Default)]
struct Knobs {
    /// Every n-th `/completion` fails with a 500 (0: none).
    fail_one_in: AtomicUsize,
    /// Milliseconds each answer takes (for a streamed answer: each event).
    delay_ms: AtomicU64,
    /// `/tokenize` answers only after 30 s.
    hang_tokenize: std::sync::atomic::AtomicBool,
}

/// The fake's vocabulary: a byte per token, or a real model's tokenizer read from its GGUF
/// (named in `/props` like llama-server does), so benchmarks can measure the proxy tokenizing
/// locally. The replies stay fake either way.
enum Vocabulary {
    Bytes,
    Model {
        tokenizer: discedge_tokenizer::Tokenizer,
        gguf: PathBuf,
    },
}

impl Vocabulary {
    fn tokenize(&self, text: &str, special: bool) -> Vec<u32> {
        match self {
            Self::Bytes => ByteTokenizer.tokenize(text, special).unwrap_or_default(),
            Self::Model { tokenizer, .. } => tokenizer.tokenize(text, special),
        }
    }

    fn detokenize(&self, ids: &[u32]) -> String {
        match self {
            Self::Bytes => ByteTokenizer.detokenize(ids).unwrap_or_default(),
            Self::Model { tokenizer, .. } => tokenizer.detokenize(ids),
        }
    }

    fn props(&self) -> Value {
        let mut props = json!({"default_generation_settings": {"n_ctx": N_CTX}});
        if let Self::Model { gguf, .. } = self {
            props["model_path"] = json!(gguf);
        }
        props
    }

    fn n_vocab(&self) -> u32 {
        match self {
            Self::Bytes => N_VOCAB,
            Self::Model { tokenizer, .. } => tokenizer.vocab_size() as u32,
        }
    }
}

#[derive(Clone)]
struct Shared {
    vocabulary: Arc<Vocabulary>,
    calls: Arc<AtomicUsize>,
    behaviour: Arc<AtomicU8>,
    knobs: Arc<Knobs>,
    last_prompt: Arc<std::sync::Mutex<Vec<u32>>>,
    streams_abandoned: Arc<AtomicUsize>,
}

/// The ids of [`REPLY`], as the fake returns them with `return_tokens` (byte vocabulary).
pub fn reply_ids() -> Vec<u32> {
    ByteTokenizer.tokenize(REPLY, false).unwrap_or_default()
}

/// The context window the fake reports: large, so benchmarks can grow sessions freely.
pub const N_CTX: u32 = 32768;

/// Ids the fake tokenizer uses: bytes, plus a few control tokens above 255.
pub const N_VOCAB: u32 = 512;

/// The fixed reply text.
pub const REPLY: &str = "This is the fake model's reply.";

impl FakeLlm {
    /// Starts a FAKE llama-server on a free loopback port, answering at once.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Vocabulary::Bytes).await
    }

    /// The same, tokenizing with the model in `gguf` and naming it in `/props`: a proxy next to
    /// it then tokenizes locally, as next to a real llama-server.
    pub async fn start_with_model(gguf: &Path) -> anyhow::Result<Self> {
        let tokenizer = discedge_tokenizer::Tokenizer::from_gguf(gguf)?;
        let gguf = gguf.to_owned();
        Ok(Self::start_with(Vocabulary::Model { tokenizer, gguf }).await?)
    }

    async fn start_with(vocabulary: Vocabulary) -> std::io::Result<Self> {
        let vocabulary = Arc::new(vocabulary);
        let (props, n_vocab) = (vocabulary.props(), vocabulary.n_vocab());
        let shared = Shared {
            vocabulary,
            calls: Arc::new(AtomicUsize::new(0)),
            behaviour: Arc::new(AtomicU8::new(0)),
            knobs: Arc::new(Knobs::default()),
            last_prompt: Arc::default(),
            streams_abandoned: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/props", get(|| async { Json(props) }))
            .route(
                "/v1/models",
                get(move || async move {
                    Json(json!({"data": [{"meta": {"n_vocab": n_vocab, "n_ctx": N_CTX}}]}))
                }),
            )
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .route("/completion", post(completion))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(
            async move { axum::serve(discedge_server::api::no_delay(listener), app).await },
        );
        Ok(Self {
            url,
            calls: shared.calls,
            behaviour: shared.behaviour,
            knobs: shared.knobs,
            last_prompt: shared.last_prompt,
            streams_abandoned: shared.streams_abandoned,
        })
    }

    /// Changes how it answers from the next request on, for tests of failures.
    pub fn set(&self, behaviour: Behaviour) {
        self.behaviour.store(behaviour as u8, Ordering::SeqCst);
    }
    /// The token ids of the last `/completion` whose prompt was ids (empty if none yet).
    pub fn last_prompt_ids(&self) -> Vec<u32> {
        self.last_prompt.lock().unwrap().clone()
    }

    /// Makes every `n`-th completion fail (0: none).
    pub fn fail_one_in(&self, n: usize) {
        self.knobs.fail_one_in.store(n, Ordering::SeqCst);
    }

    /// Makes `/tokenize` hang (answer after 30 s) or answer at once again.
    pub fn hang_tokenize(&self, hang: bool) {
        self.knobs.hang_tokenize.store(hang, Ordering::SeqCst);
    }

    /// Makes every answer take `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.knobs
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn tokenize(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    if shared.knobs.hang_tokenize.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let text = body["content"].as_str().unwrap_or_default();
    let special = body["parse_special"].as_bool().unwrap_or(true);
    Json(json!({ "tokens": shared.vocabulary.tokenize(text, special) }))
}

async fn detokenize(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let ids: Vec<u32> = serde_json::from_value(body["tokens"].clone()).unwrap_or_default();
    Json(json!({ "content": shared.vocabulary.detokenize(&ids) }))
}

async fn completion(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let call = shared.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let delay = shared.knobs.delay_ms.load(Ordering::SeqCst);
    let streamed = body["stream"].as_bool() == Some(true);
    if delay > 0 && !streamed {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail_one_in = shared.knobs.fail_one_in.load(Ordering::SeqCst);
    let failure = (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": {"code": 500, "message": "fake failure"}})),
    );
    const FAIL: u8 = Behaviour::Fail as u8;
    const HANG: u8 = Behaviour::Hang as u8;
    const GARBAGE: u8 = Behaviour::Garbage as u8;
    const BREAK_STREAM: u8 = Behaviour::BreakStream as u8;
    let behaviour = shared.behaviour.load(Ordering::SeqCst);
    match behaviour {
        FAIL => return failure.into_response(),
        HANG => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Json(json!({})).into_response();
        }
        GARBAGE => return (StatusCode::OK, "<html>not json</html>").into_response(),
        _ if fail_one_in > 0 && call.is_multiple_of(fail_one_in) => return failure.into_response(),
        _ => {}
    }
    let (prompt, prompt_n) = match &body["prompt"] {
        Value::String(text) => (text.clone(), text.len()),
        Value::Array(ids) => {
            let ids: Vec<u32> = ids
                .iter()
                .filter_map(|id| id.as_u64().map(|id| id as u32))
                .collect();
            let text = shared.vocabulary.detokenize(&ids);
            let count = ids.len();
            *shared.last_prompt.lock().unwrap() = ids;
            (text, count)
        }
        other => (other.to_string(), 0),
    };
    let mut reply = json!({
        "content": REPLY, "prompt": prompt, "stop": true, "stop_type": "eos", "tokens_predicted": REPLY.len(),
        "tokens_evaluated": prompt_n, "truncated": false,
        "timings": {"prompt_n": prompt_n, "cache_n": 0, "prompt_ms": 0.0, "predicted_n": REPLY.len(), "predicted_ms": 0.0},
    });
    if body["return_tokens"].as_bool() == Some(true) {
        reply["tokens"] = json!(shared.vocabulary.tokenize(REPLY, false));
    }
    if streamed {
        let delay = Duration::from_millis(delay);
        return stream(
            &shared.vocabulary,
            reply,
            delay,
            behaviour == BREAK_STREAM,
            shared.streams_abandoned,
        );
    }
    Json(reply).into_response()
}

/// The reply as llama-server streams it: one event per word with its text and ids, then a
/// last event with `stop: true`, empty content and the rest of the reply's fields.
fn stream(
    vocabulary: &Vocabulary,
    mut reply: Value,
    delay: Duration,
    break_off: bool,
    abandoned: Arc<AtomicUsize>,
) -> Response {
    let mut events: Vec<Result<Vec<u8>, std::io::Error>> = REPLY
        .split_inclusive(' ')
        .map(|word| {
            let ids = vocabulary.tokenize(word, false);
            let event = json!({"content": word, "tokens": ids, "stop": false});
            Ok(format!("data: {event}\n\n").into_bytes())
        })
        .collect();
    reply["content"] = json!("");
    reply["tokens"] = json!([]);
    events.push(Ok(format!("data: {reply}\n\n").into_bytes()));
    if break_off {
        events.truncate(2);
        events.push(Err(std::io::Error::other("fake stream broken")));
    }
    /// Counts the stream as abandoned if it is dropped before its last event was taken.
    struct Watch(Arc<AtomicUsize>, bool);
    impl Drop for Watch {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    // A break comes after a pause, so the events before it have left (as with a real break).
    let delay = if break_off {
        delay.max(Duration::from_millis(50))
    } else {
        delay
    };
    let state = (events.into_iter(), Watch(abandoned, break_off));
    let body = futures_util::stream::unfold(state, move |(mut events, mut watch)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let event = events.next()?;
        if events.len() == 0 {
            watch.1 = true;
        }
        Some((event, (events, watch)))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}
