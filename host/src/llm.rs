//! The model behind the proxy: llama.cpp's server, reached over HTTP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::error::error_chain;

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
}

/// The seam to the model server, so tests and other servers can stand in for llama-server.
#[async_trait]
pub trait LlmBackend: Send + Sync + 'static {
    /// Sends a llama.cpp `/completion` body and returns the reply object.
    async fn complete(&self, body: &Map<String, Value>) -> Result<Map<String, Value>, LlmError>;
    /// The model's tokenizer; never adds a start token.
    async fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError>;
    async fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError>;
    /// The served context window, if the server says.
    async fn context_size(&self) -> Result<Option<u32>, LlmError>;
    /// The model's vocabulary size, if the server says: token ids must be below it.
    async fn vocab_size(&self) -> Result<Option<u32>, LlmError> {
        Ok(None)
    }
}

/// A llama.cpp server (`llama-server`, or anything speaking its HTTP API).
pub struct LlamaServer {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    /// Tokenizations of short texts (template pieces such as `<|im_end|>\n`), reused every turn.
    short_texts: Mutex<HashMap<(String, bool), Vec<u32>>>,
    n_ctx: AtomicU32,
    n_vocab: AtomicU32,
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("HTTP client builds with static settings");
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            timeout,
            short_texts: Mutex::new(HashMap::new()),
            n_ctx: AtomicU32::new(UNASKED),
            n_vocab: AtomicU32::new(UNASKED),
        }
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
            Value::Object(map) => Ok(map),
            other => Err(LlmError::BadReply(format!(
                "expected an object, got {other}"
            ))),
        }
    }

    async fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError> {
        let memo = text.len() <= MEMO_TEXT_BYTES;
        if memo
            && let Some(ids) = self
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
            let mut cache = self.short_texts.lock().unwrap();
            if cache.len() < MEMO_ENTRIES {
                cache.insert((text.to_owned(), parse_special), ids.clone());
            }
        }
        Ok(ids)
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError> {
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
            &self.n_ctx,
            "/props",
            &["/default_generation_settings/n_ctx", "/n_ctx"],
        )
        .await
    }

    async fn vocab_size(&self) -> Result<Option<u32>, LlmError> {
        self.cached_number(&self.n_vocab, "/v1/models", &["/data/0/meta/n_vocab"])
            .await
    }
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
}

impl crate::policy::HostServices for BlockingTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        self.runtime
            .block_on(self.llm.tokenize(text, parse_special))
            .map_err(|e| e.to_string())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        self.runtime
            .block_on(self.llm.detokenize(tokens))
            .map_err(|e| e.to_string())
    }
}
