//! The proxy tokenizes with the served model's own GGUF, checked against llama-server, so a
//! turn makes no `/tokenize` round trip; and it falls back to `/tokenize`, saying why, when the
//! file is not readable or not the model served. Against the real llama-server of the tests.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::{client, complete, start_proxy, turn_body};
use discedge_lab::fake_llm::FakeLlm;
use serde_json::Value;

/// A relay in front of llama-server that counts the requests per path.
struct CountingRelay {
    url: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl CountingRelay {
    async fn start(to: String) -> Self {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let state = (to, counts.clone(), client());
        let app = axum::Router::new()
            .fallback(relay)
            .with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, counts }
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }
}

type RelayState = Arc<(String, Arc<Mutex<HashMap<String, usize>>>, reqwest::Client)>;

async fn relay(
    State(state): State<RelayState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> impl IntoResponse {
    let (to, counts, http) = &*state;
    *counts
        .lock()
        .unwrap()
        .entry(uri.path().to_owned())
        .or_default() += 1;
    let reply = http
        .request(method, format!("{to}{uri}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap();
    (status, reply.bytes().await.unwrap())
}

async fn tokenizer_status(proxy_url: &str) -> Value {
    let health: Value = client()
        .get(format!("{proxy_url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["tokenizer"].clone()
}

/// Waits until the proxy has settled on a tokenizer (the start-up check runs in the background).
async fn settled_tokenizer(proxy_url: &str) -> Value {
    for _ in 0..300 {
        let status = tokenizer_status(proxy_url).await;
        if status["why"] != "the model's GGUF is not checked yet" {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the proxy did not settle on a tokenizer within 15 s");
}

/// The GGUF file the test llama-server serves (scripts/llama.sh exports it).
fn test_model() -> Option<String> {
    let model = std::env::var("DISCEDGE_TEST_MODEL").ok();
    if model.is_none() && std::env::var_os("CI").is_some() {
        panic!("DISCEDGE_TEST_MODEL is not set: scripts/llama.sh exports it with the server");
    }
    model
}

async fn conversation(proxy_url: &str, mode: &str) {
    let (status, first) = complete(proxy_url, &turn_body(mode, None, 1, "Name a colour.")).await;
    assert_eq!(status, 200, "{first}");
    let session = first["session_id"].as_str().unwrap().to_owned();
    for (turn, prompt) in [(2, "And another one?"), (3, "Which is warmer?")] {
        let (status, reply) =
            complete(proxy_url, &turn_body(mode, Some(&session), turn, prompt)).await;
        assert_eq!(status, 200, "turn {turn}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn next_to_its_llama_server_the_proxy_tokenizes_locally_with_no_tokenize_calls() {
    let relay = CountingRelay::start(common::llama_url()).await;
    let proxy = start_proxy(&["--llama-url", &relay.url]).await;
    let status = settled_tokenizer(&proxy.url).await;
    assert_eq!(status["via"], "local", "{status}");
    assert!(
        relay.count("/tokenize") > 0,
        "the GGUF was checked against /tokenize"
    );
    for mode in ["tokenized", "truncate", "raw"] {
        relay.reset();
        conversation(&proxy.url, mode).await;
        assert_eq!(relay.count("/completion"), 3, "{mode}");
        assert_eq!(
            relay.count("/tokenize"),
            0,
            "{mode}: no /tokenize round trip"
        );
    }

    // Asked to, it uses /tokenize: the same conversation then calls it.
    let http = start_proxy(&["--llama-url", &relay.url, "--tokenizer", "http"]).await;
    assert_eq!(tokenizer_status(&http.url).await["via"], "llama-server");
    relay.reset();
    conversation(&http.url, "tokenized").await;
    assert!(relay.count("/tokenize") > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_gguf_is_not_used_and_the_health_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("model.gguf");
    std::fs::write(&bogus, b"GGUF? no").unwrap();
    let proxy = start_proxy(&["--tokenizer", bogus.to_str().unwrap()]).await;
    let status = settled_tokenizer(&proxy.url).await;
    assert_eq!(status["via"], "llama-server", "{status}");
    assert!(
        status["why"].as_str().unwrap().contains("model.gguf"),
        "{status}"
    );
    conversation(&proxy.url, "tokenized").await;
}

/// The real model's GGUF in front of a server with another tokenizer (the FAKE one, a byte
/// per token): the check against /tokenize refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn a_gguf_that_is_not_the_served_model_fails_its_check_and_is_not_used() {
    let Some(model) = test_model() else {
        eprintln!("!!! DISCEDGE_TEST_MODEL not set: the check against another model is NOT RUN");
        return;
    };
    let fake = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &fake.url, "--tokenizer", &model]).await;
    let status = settled_tokenizer(&proxy.url).await;
    assert_eq!(status["via"], "llama-server", "{status}");
    assert!(
        status["why"].as_str().unwrap().contains("other ids"),
        "{status}"
    );
}
