//! The model behind the proxy: llama.cpp's server, reached over HTTP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value, json};

use crate::causes::error_chain;
use crate::gguf_tokenizer::{LocalTokenizer, TokenizerSource, load_checked};

/// Why a call to the model failed; the client gets 502/504 and its session is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llama-server is unreachable at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("llama-server did not answer within {0:?}")]
    Timeout(Duration),
    /// llama-server refused the request itself (a 4xx): usually a bad field from the client.
    #[error("llama-server rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("llama-server failed ({status}): {message}")]
    Failed { status: u16, message: String },
    #[error("llama-server sent an unexpected answer: {0}")]
    BadReply(String),
    /// A streamed answer stopped before its last event (connection lost, server error event).
    #[error("llama-server's stream broke off: {0}")]
    StreamBroken(String),
}

/// One event of a streamed completion: llama-server's JSON object, and its text as received
/// (passed on to the client byte for byte when the proxy has nothing to add).
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub fields: Map<String, Value>,
    pub data: Bytes,
}

/// The events of one streamed completion, as they arrive; dropping it closes the connection,
/// which makes llama-server stop generating.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

/// The seam to the model server, so tests and other servers can stand in for llama-server.
#[async_trait]
pub trait LlmBackend: Send + Sync + 'static {
    /// Sends a llama.cpp `/completion` body and returns the reply object.
    async fn complete(&self, body: &Map<String, Value>) -> Result<Map<String, Value>, LlmError>;
    /// Sends a `/completion` body with `"stream": true` (taken, not copied: it holds the whole
    /// prompt); fails before the first event if the server refuses, so the client can still
    /// get a plain HTTP error.
    async fn complete_stream(&self, body: Map<String, Value>) -> Result<EventStream, LlmError>;
    /// The model's tokenizer; never adds a start token.
    async fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError>;
    async fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError>;
    /// The served context window, if the server says.
    async fn context_size(&self) -> Result<Option<u32>, LlmError>;
    /// The model's vocabulary size, if the server says: token ids must be below it.
    async fn vocab_size(&self) -> Result<Option<u32>, LlmError> {
        Ok(None)
    }
    /// [`Self::tokenize`] when it can answer at once, without I/O (a tokenizer in memory), so
    /// a policy's host call needs no hop to the async runtime; `None`: call `tokenize`.
    fn tokenize_now(&self, _text: &str, _parse_special: bool) -> Option<Vec<u32>> {
        None
    }
    /// [`Self::detokenize`] when it can answer at once; see [`Self::tokenize_now`].
    fn detokenize_now(&self, _tokens: &[u32]) -> Option<String> {
        None
    }
    /// Whether [`Self::tokenize_now`] and [`Self::detokenize_now`] answer now.
    fn tokenizes_now(&self) -> bool {
        false
    }
    /// Gets the tokenizer ready before the first turn needs it (start-up).
    async fn prepare_tokenizer(&self) {}
    /// Which tokenizer serves, for `GET /health`.
    fn tokenizer_status(&self) -> Value {
        json!({ "via": "llama-server" })
    }
}

/// A llama.cpp server (`llama-server`, or anything speaking its HTTP API).
pub struct LlamaServer {
    base: String,
    http: reqwest::Client,
    /// For streams: no bound on the whole answer, only on the wait for each piece of it.
    streaming: reqwest::Client,
    timeout: Duration,
    /// What is remembered about the served model; shared with streams, whose last event
    /// names the model too.
    facts: Arc<ModelFacts>,
}

/// What the proxy remembers about the model llama-server serves, forgotten when the model
/// changes (llama-server restarted with another one): stale ids or a stale window would
/// otherwise last until the proxy restarts.
#[derive(Default)]
struct ModelFacts {
    /// The model the last reply named (llama-server's `model`: its path or alias).
    model: Mutex<Option<String>>,
    /// Tokenizations of short texts (template pieces such as `<|im_end|>\n`), reused every turn.
    short_texts: Mutex<HashMap<(String, bool), Vec<u32>>>,
    n_ctx: AtomicU32,
    n_vocab: AtomicU32,
    /// The model's tokenizer read from its GGUF, once checked against `/tokenize`.
    local: LocalTokenizer,
}

impl ModelFacts {
    /// Notes the model a reply (or a stream's event) names; a different one than before
    /// makes everything remembered about the old one be asked for again. Noticed on the
    /// first reply from the new model, so at most that one turn used the old facts.
    fn observe(&self, reply: &Map<String, Value>) {
        let Some(name) = reply.get("model").and_then(Value::as_str) else {
            return;
        };
        let mut model = self.model.lock().unwrap();
        if model.as_deref() == Some(name) {
            return;
        }
        if let Some(previous) = model.replace(name.to_owned()) {
            tracing::info!(
                previous,
                model = name,
                "llama-server serves another model: its window, vocabulary and tokenizations are asked for again"
            );
            self.short_texts.lock().unwrap().clear();
            self.local.forget();
            self.n_ctx.store(UNASKED, Ordering::Relaxed);
            self.n_vocab.store(UNASKED, Ordering::Relaxed);
        }
    }
}

/// Texts up to this many bytes are remembered once tokenized.
const MEMO_TEXT_BYTES: usize = 64;
const MEMO_ENTRIES: usize = 4096;

/// States of a remembered model figure besides the figure itself.
const UNASKED: u32 = 0;
const NOT_REPORTED: u32 = u32::MAX;

impl LlamaServer {
    /// `base_url` like `http://127.0.0.1:8080`; `timeout` bounds every call (a hung model must
    /// not hold a session forever).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let client = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .pool_idle_timeout(Duration::from_secs(90))
        };
        let http = client()
            .timeout(timeout)
            .build()
            .expect("HTTP client builds with static settings");
        let streaming = client()
            .read_timeout(timeout)
            .build()
            .expect("HTTP client builds with static settings");
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            streaming,
            timeout,
            facts: Arc::default(),
        }
    }

    /// Where the tokenizer comes from (default: the served model's GGUF when it passes its
    /// check, else `/tokenize`).
    pub fn with_tokenizer(mut self, source: TokenizerSource) -> Self {
        if let Some(facts) = Arc::get_mut(&mut self.facts) {
            facts.local = LocalTokenizer::new(source);
        }
        self
    }

    /// Reads and checks the model's GGUF if nobody has yet (one caller at a time; the others
    /// go on with `/tokenize` meanwhile).
    async fn ensure_local(&self) {
        let Some(source) = self.facts.local.begin() else {
            return;
        };
        let gguf = match source {
            TokenizerSource::Gguf(path) => Ok(path),
            _ => self.model_path().await,
        };
        let outcome = match gguf {
            Ok(gguf) => {
                load_checked(gguf, |probe, special| self.remote_tokenize(probe, special)).await
            }
            Err(why) => Err(why),
        };
        self.facts.local.finish(outcome);
    }

    /// The GGUF file llama-server says it loaded, if this machine has it.
    async fn model_path(&self) -> Result<PathBuf, String> {
        let url = format!("{}/props", self.base);
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(e));
        let props = match reply {
            Ok(reply) => self.read_json(reply).await,
            Err(e) => Err(e),
        }
        .map_err(|e| format!("cannot ask llama-server for its model file: {e}"))?;
        let path = props
            .get("model_path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or("llama-server's /props names no model_path")?;
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!(
                "llama-server's model {} is not a file here (give --tokenizer GGUF with a copy)",
                path.display()
            ));
        }
        Ok(path)
    }

    /// llama-server's own `/tokenize`, remembering short texts.
    async fn remote_tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError> {
        let memo = text.len() <= MEMO_TEXT_BYTES;
        if memo
            && let Some(ids) = self
                .facts
                .short_texts
                .lock()
                .unwrap()
                .get(&(text.to_owned(), parse_special))
        {
            return Ok(ids.clone());
        }
        let reply = self
            .post(
                "/tokenize",
                &json!({"content": text, "parse_special": parse_special, "add_special": false}),
            )
            .await?;
        let ids = reply
            .get("tokens")
            .and_then(token_ids)
            .ok_or_else(|| LlmError::BadReply("/tokenize reply has no token list".into()))?;
        if memo {
            let mut cache = self.facts.short_texts.lock().unwrap();
            if cache.len() < MEMO_ENTRIES {
                cache.insert((text.to_owned(), parse_special), ids.clone());
            }
        }
        Ok(ids)
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<Value, LlmError> {
        let url = format!("{}{path}", self.base);
        let reply = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        self.read_json(reply).await
    }

    async fn read_json(&self, reply: reqwest::Response) -> Result<Value, LlmError> {
        let status = reply.status().as_u16();
        let bytes = reply.bytes().await.map_err(|e| self.transport(e))?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return value
                .ok_or_else(|| LlmError::BadReply(format!("not JSON: {}", preview(&bytes))));
        }
        let message = value
            .as_ref()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| preview(&bytes));
        if (400..500).contains(&status) && status != 408 && status != 429 {
            Err(LlmError::Rejected { status, message })
        } else {
            Err(LlmError::Failed { status, message })
        }
    }

    /// A number the server reports about its model (found at the first JSON pointer that has
    /// one), fetched once and then remembered; `None` if the server does not report it. An
    /// answer without the number is remembered too, so a server that never reports it costs
    /// one request in all, not one per turn; a server that did not answer is asked again.
    async fn cached_number(
        &self,
        cell: &AtomicU32,
        path: &str,
        pointers: &[&str],
    ) -> Result<Option<u32>, LlmError> {
        match cell.load(Ordering::Relaxed) {
            UNASKED => {}
            NOT_REPORTED => return Ok(None),
            known => return Ok(Some(known)),
        }
        let url = format!("{}{path}", self.base);
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let number = match self.read_json(reply).await {
            Ok(json) => pointers
                .iter()
                .find_map(|p| json.pointer(p).and_then(Value::as_u64))
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n != UNASKED && n != NOT_REPORTED),
            // The server answered, without such an endpoint.
            Err(LlmError::Rejected { .. }) => None,
            Err(e) => return Err(e),
        };
        cell.store(number.unwrap_or(NOT_REPORTED), Ordering::Relaxed);
        Ok(number)
    }

    fn transport(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.timeout)
        } else {
            LlmError::Unreachable {
                url: self.base.clone(),
                message: error_chain(&e),
            }
        }
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

fn token_ids(value: &Value) -> Option<Vec<u32>> {
    value
        .as_array()?
        .iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect()
}

#[async_trait]
impl LlmBackend for LlamaServer {
    async fn complete(&self, body: &Map<String, Value>) -> Result<Map<String, Value>, LlmError> {
        match self.post("/completion", body).await? {
            Value::Object(map) => {
                self.facts.observe(&map);
                Ok(map)
            }
            other => Err(LlmError::BadReply(format!(
                "expected an object, got {other}"
            ))),
        }
    }

    async fn complete_stream(&self, mut body: Map<String, Value>) -> Result<EventStream, LlmError> {
        let url = format!("{}/completion", self.base);
        body.insert("stream".into(), Value::Bool(true));
        let reply = self
            .streaming
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !reply.status().is_success() {
            return Err(self
                .read_json(reply)
                .await
                .err()
                .unwrap_or_else(|| LlmError::BadReply("error status with a JSON body".into())));
        }
        let timeout = self.timeout;
        let facts = self.facts.clone();
        let state = (reply, SseLines::default(), false);
        let events = futures_util::stream::unfold(state, move |(mut reply, mut lines, done)| {
            let facts = facts.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(line) = lines.next_line() {
                        match event_of(line) {
                            Some(Ok(event)) => {
                                facts.observe(&event.fields);
                                return Some((Ok(event), (reply, lines, false)));
                            }
                            Some(Err(e)) => return Some((Err(e), (reply, lines, true))),
                            None => continue,
                        }
                    }
                    match reply.chunk().await {
                        Ok(Some(chunk)) => lines.push(&chunk),
                        Ok(None) => {
                            let rest = lines.finish()?;
                            let event = event_of(rest)?;
                            return Some((event, (reply, lines, true)));
                        }
                        Err(e) => {
                            let e = if e.is_timeout() {
                                LlmError::Timeout(timeout)
                            } else {
                                LlmError::StreamBroken(error_chain(&e))
                            };
                            return Some((Err(e), (reply, lines, true)));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(events))
    }

    async fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError> {
        if let Some(ids) = self.tokenize_now(text, parse_special) {
            return Ok(ids);
        }
        self.ensure_local().await;
        if let Some(ids) = self.tokenize_now(text, parse_special) {
            return Ok(ids);
        }
        self.remote_tokenize(text, parse_special).await
    }

    fn tokenize_now(&self, text: &str, parse_special: bool) -> Option<Vec<u32>> {
        Some(self.facts.local.get()?.tokenize(text, parse_special))
    }

    fn detokenize_now(&self, tokens: &[u32]) -> Option<String> {
        Some(self.facts.local.get()?.detokenize(tokens))
    }

    fn tokenizes_now(&self) -> bool {
        self.facts.local.get().is_some()
    }

    async fn prepare_tokenizer(&self) {
        self.ensure_local().await;
    }

    fn tokenizer_status(&self) -> Value {
        self.facts.local.status()
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError> {
        if let Some(text) = self.detokenize_now(tokens) {
            return Ok(text);
        }
        let reply = self
            .post("/detokenize", &json!({ "tokens": tokens }))
            .await?;
        reply
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| LlmError::BadReply("/detokenize reply has no content".into()))
    }

    async fn context_size(&self) -> Result<Option<u32>, LlmError> {
        self.cached_number(
            &self.facts.n_ctx,
            "/props",
            &["/default_generation_settings/n_ctx", "/n_ctx"],
        )
        .await
    }

    async fn vocab_size(&self) -> Result<Option<u32>, LlmError> {
        self.cached_number(&self.facts.n_vocab, "/v1/models", &["/data/0/meta/n_vocab"])
            .await
    }
}

/// Splits a server-sent-event byte stream into lines, whatever the chunk boundaries.
#[derive(Default)]
struct SseLines {
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
}

impl SseLines {
    fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line, without its line ending.
    fn next_line(&mut self) -> Option<Bytes> {
        let end = self.buffer[self.start..].iter().position(|&b| b == b'\n')? + self.start;
        let mut line = &self.buffer[self.start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let line = Bytes::copy_from_slice(line);
        self.start = end + 1;
        Some(line)
    }

    /// What is left when the stream ends without a final line ending.
    fn finish(&mut self) -> Option<Bytes> {
        let rest = &self.buffer[self.start..];
        self.start = self.buffer.len();
        (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest))
    }
}

/// A `data:` line as an event, an `error:` line (llama-server's way of failing mid-stream) as
/// an error; other lines (blank separators, comments, `[DONE]`) as nothing.
fn event_of(line: Bytes) -> Option<Result<StreamEvent, LlmError>> {
    let field = |name: &[u8]| {
        line.strip_prefix(name)
            .map(|rest| rest.strip_prefix(b" ").unwrap_or(rest).len())
    };
    if let Some(len) = field(b"data:") {
        let data = line.slice(line.len() - len..);
        if &data[..] == b"[DONE]" {
            return None;
        }
        return Some(match serde_json::from_slice::<Map<String, Value>>(&data) {
            Ok(fields) if fields.contains_key("error") => {
                Err(LlmError::StreamBroken(Value::Object(fields).to_string()))
            }
            Ok(fields) => Ok(StreamEvent { fields, data }),
            Err(e) => Err(LlmError::BadReply(format!(
                "stream event is not a JSON object ({e}): {}",
                preview(&data)
            ))),
        });
    }
    field(b"error:").map(|len| Err(LlmError::StreamBroken(preview(&line[line.len() - len..]))))
}

/// Lets synchronous policy code (inside a wasm call on a blocking thread) use the async backend.
pub struct BlockingTokenizer {
    llm: std::sync::Arc<dyn LlmBackend>,
    runtime: tokio::runtime::Handle,
}

impl BlockingTokenizer {
    /// Must be used only from threads outside the async executor (e.g. `spawn_blocking`).
    pub fn new(llm: std::sync::Arc<dyn LlmBackend>, runtime: tokio::runtime::Handle) -> Self {
        Self { llm, runtime }
    }

    /// Refuses to wait for the runtime from a policy call running on an async worker (the
    /// local tokenizer went away after the call began there): the turn fails cleanly instead
    /// of the worker deadlocking.
    fn may_wait(&self) -> Result<(), String> {
        if crate::blocking::on_async_worker() {
            return Err("the local tokenizer went away during the call; retry the turn".into());
        }
        Ok(())
    }
}

impl crate::policy::HostServices for BlockingTokenizer {
    fn answers_in_place(&self) -> bool {
        self.llm.tokenizes_now()
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        if let Some(ids) = self.llm.tokenize_now(text, parse_special) {
            return Ok(ids);
        }
        self.may_wait()?;
        self.runtime
            .block_on(self.llm.tokenize(text, parse_special))
            .map_err(|e| e.to_string())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        if let Some(text) = self.llm.detokenize_now(tokens) {
            return Ok(text);
        }
        self.may_wait()?;
        self.runtime
            .block_on(self.llm.detokenize(tokens))
            .map_err(|e| e.to_string())
    }

    fn tokenize_within(
        &self,
        text: &str,
        parse_special: bool,
        within: Duration,
    ) -> Result<Vec<u32>, String> {
        if let Some(ids) = self.llm.tokenize_now(text, parse_special) {
            return Ok(ids);
        }
        self.may_wait()?;
        // The timer is made inside `block_on`, where the runtime's time driver is at hand.
        let call =
            async { tokio::time::timeout(within, self.llm.tokenize(text, parse_special)).await };
        match self.runtime.block_on(call) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
        }
    }

    fn detokenize_within(&self, tokens: &[u32], within: Duration) -> Result<String, String> {
        if let Some(text) = self.llm.detokenize_now(tokens) {
            return Ok(text);
        }
        self.may_wait()?;
        let call = async { tokio::time::timeout(within, self.llm.detokenize(tokens)).await };
        match self.runtime.block_on(call) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Result<Map<String, Value>, String>> {
        let mut lines = SseLines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk);
            while let Some(line) = lines.next_line() {
                out.extend(event_of(line));
            }
        }
        out.extend(lines.finish().and_then(event_of));
        out.into_iter()
            .map(|e| e.map(|e| e.fields).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn events_survive_any_chunk_boundaries() {
        let stream =
            b"data: {\"content\":\"Hel\"}\n\ndata: {\"content\":\"lo\",\"stop\":true}\r\n\r\n";
        let whole = events(&[stream]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].as_ref().unwrap()["stop"], true);
        for split in 1..stream.len() {
            assert_eq!(
                events(&[&stream[..split], &stream[split..]]),
                whole,
                "split at {split}"
            );
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytewise), whole);
    }

    #[test]
    fn a_last_event_without_line_ending_still_counts() {
        let got = events(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}"]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn error_lines_and_error_objects_break_the_stream() {
        let got = events(&[b"data: {\"content\":\"x\"}\n\nerror: {\"code\":500}\n\n"]);
        assert!(got[0].is_ok());
        assert!(got[1].as_ref().unwrap_err().contains("500"));
        let got = events(&[b"data: {\"error\":{\"message\":\"boom\"}}\n\n"]);
        assert!(got[0].as_ref().unwrap_err().contains("boom"));
        let got = events(&[b"data: not json\n\n: comment\n\ndata: [DONE]\n\n"]);
        assert_eq!(got.len(), 1);
        assert!(got[0].as_ref().unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn data_keeps_the_bytes_as_received() {
        let mut lines = SseLines::default();
        lines.push(b"data:{\"content\":\"\\u00e9\"}\n");
        let event = event_of(lines.next_line().unwrap()).unwrap().unwrap();
        assert_eq!(&event.data[..], b"{\"content\":\"\\u00e9\"}");
        assert_eq!(event.fields["content"], "\u{e9}");
    }
}
