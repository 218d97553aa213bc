//! Shared by the end-to-end tests: a proxy in this process, a real llama-server by URL.
#![allow(dead_code)]

pub mod fred;

use std::path::PathBuf;

use clap::Parser;
use discedge::config::{Cli, Command};
use discedge::serve::Node;
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

/// A proxy serving on a free loopback port until dropped.
pub struct TestProxy {
    pub url: String,
    pub node: Node,
    pub data: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
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
    // Compiled policies are shared by all tests: compiling them anew for each would dominate.
    let cache = concat!(env!("CARGO_TARGET_TMPDIR"), "/policy-cache");
    let mut argv = vec![
        "discedge",
        "serve",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--policy-cache-dir",
        cache,
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
    let Command::Serve(serve) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    let node = discedge::serve::build(&serve).await.expect("proxy starts");
    let app = discedge::api::router(node.proxy.clone(), serve.max_body_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(discedge::api::no_delay(listener), app)
            .await
            .unwrap();
    });
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
    let reply = client()
        .post(format!("{proxy_url}/completion"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let body = reply.json().await.unwrap_or(Value::Null);
    (status, body)
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
