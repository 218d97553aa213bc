//! llama-server restarted with another model behind the same URL: the proxy notices from the
//! model named in the next reply and asks for the window (and vocabulary and template
//! tokenizations) again, instead of keeping the old model's until it restarts. Runs two real
//! llama.cpp servers, one after the other on one port, on the test model under two names and
//! with two window sizes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{complete, start_proxy, turn_body};

/// The test model's file, as the running test llama-server names it.
async fn model_path() -> String {
    let models: serde_json::Value = common::client()
        .get(format!("{}/v1/models", common::llama_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = models["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        std::path::Path::new(&path).exists(),
        "the test llama-server's model {path} must be on this machine"
    );
    path
}

/// A llama-server on `port`, killed when dropped.
struct Llama(Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_llama(model: &str, port: u16, ctx: u32) -> Llama {
    let script = common::repo_dir().join("scripts/llama_server.py");
    let (port_arg, ctx_arg) = (port.to_string(), ctx.to_string());
    let child = Command::new("python3")
        .arg(script)
        .args(["--model", model, "--port", &port_arg, "--ctx", &ctx_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs scripts/llama_server.py");
    let llama = Llama(child);
    let health = format!("http://127.0.0.1:{port}/health");
    for _ in 0..240 {
        if let Ok(reply) = common::client().get(&health).send().await
            && reply.status().is_success()
        {
            return llama;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("llama-server on port {port} not healthy after 60 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_model_behind_the_same_url_is_noticed() {
    let model = model_path().await;
    let renamed = tempfile::tempdir().unwrap();
    let other_name = renamed.path().join("another-model.gguf");
    std::os::unix::fs::symlink(&model, &other_name).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let first = start_llama(&model, port, 2048).await;
    let proxy = start_proxy(&["--llama-url", &url]).await;
    let llm = proxy.node.proxy.llm.clone();
    let (status, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "Hi")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(llm.context_size().await.unwrap(), Some(2048));

    drop(first);
    let _second = start_llama(other_name.to_str().unwrap(), port, 1024).await;
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, "Hello")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        llm.context_size().await.unwrap(),
        Some(1024),
        "the new model's window, not the one remembered from the old"
    );
}
