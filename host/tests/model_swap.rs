//! llama-server restarted with another model behind the same URL: the proxy notices from the
//! model named in the next reply and asks for the window (and vocabulary and template
//! tokenizations) again, instead of keeping the old model's until it restarts. Runs two real
//! llama.cpp servers, one after the other on one port, on the test model under two names and
//! with two window sizes.

mod common;

use common::{LlamaServer, complete, start_proxy, turn_body};

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

    let first = LlamaServer::start_on(&model, port, 2048).await;
    let proxy = start_proxy(&["--llama-url", &url]).await;
    let llm = proxy.node.proxy.llm.clone();
    let (status, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "Hi")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(llm.context_size().await.unwrap(), Some(2048));

    drop(first);
    let _second = LlamaServer::start_on(other_name.to_str().unwrap(), port, 1024).await;
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, "Hello")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        llm.context_size().await.unwrap(),
        Some(1024),
        "the new model's window, not the one remembered from the old"
    );
}
