//! Bad input gets a 4xx with a JSON body naming the problem; a failing model or policy gets a
//! 5xx; and in every case the stored session is exactly as before.
//!
//! These tests use `FakeLlm`, a FAKE llama-server that can be told to fail or hang, so the
//! failure paths run fast and deterministically.

mod common;

use std::sync::atomic::Ordering;

use common::{complete, error_code, start_proxy, turn_body};
use discedge_lab::fake_llm::{Behaviour, FakeLlm};
use serde_json::{Value, json};

async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let reply = common::client()
        .post(format!("{url}/completion"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.expect("error bodies are JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url, "--max-body-bytes", "2000"]).await;
    let url = &proxy.url;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"prompt\": ".into(),
            400,
            "invalid_json",
        ),
        ("not an object", "[1, 2]".into(), 400, "invalid_json"),
        (
            "no prompt",
            json!({"mode": "raw"}).to_string(),
            400,
            "missing_field",
        ),
        (
            "mode not a string",
            json!({"mode": 3, "prompt": "hi"}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "unknown mode",
            json!({"mode": "nope", "prompt": "hi"}).to_string(),
            400,
            "unknown_mode",
        ),
        (
            "turn 0",
            json!({"mode": "raw", "prompt": "hi", "turn": 0}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "turn as text",
            json!({"mode": "raw", "prompt": "hi", "turn": "1"}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "dash in session id",
            json!({"mode": "raw", "prompt": "hi", "session_id": "a-b", "turn": 1}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "user_id not a string",
            json!({"mode": "raw", "prompt": "hi", "user_id": 7}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "token prompt in raw",
            json!({"mode": "raw", "prompt": [1, 2]}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "stream not a boolean",
            json!({"mode": "raw", "prompt": "hi", "stream": "yes"}).to_string(),
            400,
            "invalid_field",
        ),
        (
            "unknown session",
            json!({"mode": "raw", "prompt": "hi", "session_id": "nosuch", "turn": 2}).to_string(),
            404,
            "unknown_session",
        ),
        (
            "oversized body",
            json!({"mode": "raw", "prompt": "x".repeat(5000)}).to_string(),
            413,
            "body_too_large",
        ),
    ];
    for (what, body, status, expected) in cases {
        let (got, reply) = post_raw(url, body).await;
        assert_eq!(got, status, "{what}: {reply}");
        assert_eq!(error_code(&reply), expected, "{what}: {reply}");
        assert!(
            !reply["error"]["message"].as_str().unwrap().is_empty(),
            "{what}: no message"
        );
    }
    assert_eq!(
        llama.calls.load(Ordering::SeqCst),
        0,
        "no bad request reached the model"
    );
    let (status, reply) = post_raw(url, json!({"mode": "nope", "prompt": "hi"}).to_string()).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"]["modes"]
            .as_array()
            .unwrap()
            .contains(&json!("raw")),
        "lists the modes: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_must_follow_and_belong_to_their_user() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (status, one) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    assert_eq!(status, 200, "{one}");
    let session = one["session_id"].as_str().unwrap();

    let (status, reply) = complete(
        &proxy.url,
        &turn_body("raw", Some(session), 3, "skipped one"),
    )
    .await;
    assert_eq!(
        (status, error_code(&reply)),
        (409, "turn_mismatch"),
        "{reply}"
    );
    assert_eq!(reply["error"]["expected_turn"], 2);

    let mut mallory = turn_body("raw", Some(session), 2, "let me in");
    mallory["user_id"] = "mallory".into();
    let (status, reply) = complete(&proxy.url, &mallory).await;
    assert_eq!(
        (status, error_code(&reply)),
        (404, "unknown_session"),
        "not revealed: {reply}"
    );

    let (status, reply) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "other mode"),
    )
    .await;
    assert_eq!(
        (status, error_code(&reply)),
        (409, "mode_mismatch"),
        "{reply}"
    );

    let stored = proxy.stored(session).await.unwrap();
    assert_eq!(stored.head.turn, 1, "refused turns change nothing");
    assert_eq!(stored.records.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_turn_is_answered_from_the_store() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    let calls = llama.calls.load(Ordering::SeqCst);
    let reply = common::client()
        .post(format!("{}/completion", proxy.url))
        .json(&turn_body("raw", Some(session), 1, "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["x-discedge-replayed"], "true");
    let again: Value = reply.json().await.unwrap();
    assert_eq!(again["content"], one["content"]);
    assert_eq!(again["session_id"], session);
    assert_eq!(
        llama.calls.load(Ordering::SeqCst),
        calls,
        "the model was not called again"
    );
    // The same turn number with a different prompt is not a retry.
    let (status, reply) =
        complete(&proxy.url, &turn_body("raw", Some(session), 1, "different")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (409, "turn_mismatch"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_model_leaves_the_session_unchanged() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url, "--llm-timeout-secs", "1"]).await;
    let (_, one) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    let before = proxy.stored(session).await;

    llama.set(Behaviour::Fail);
    let (status, reply) = complete(&proxy.url, &turn_body("raw", Some(session), 2, "again")).await;
    assert_eq!((status, error_code(&reply)), (502, "llm_failed"), "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fake failure"),
        "{reply}"
    );

    llama.set(Behaviour::Hang);
    let (status, reply) = complete(&proxy.url, &turn_body("raw", Some(session), 2, "again")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (504, "llm_timeout"),
        "{reply}"
    );
    assert_eq!(proxy.stored(session).await, before, "session unchanged");

    llama.set(Behaviour::Answer);
    let (status, reply) = complete(&proxy.url, &turn_body("raw", Some(session), 2, "again")).await;
    assert_eq!(
        status, 200,
        "the same turn goes through once the model is back: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_model_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(&["--llama-url", &format!("http://{closed}")]).await;
    let (status, reply) = complete(&proxy.url, &turn_body("raw", Some("fresh1"), 1, "hello")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (502, "llm_unreachable"),
        "{reply}"
    );
    assert!(
        proxy.stored("fresh1").await.is_none(),
        "no session was created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_one_session_are_serialized() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();
    let requests = (0..6).map(|i| {
        let (url, session) = (proxy.url.clone(), session.clone());
        tokio::spawn(async move {
            complete(
                &url,
                &turn_body("raw", Some(&session), 2, &format!("racer {i}")),
            )
            .await
        })
    });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().0);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 409, 409, 409, 409, 409],
        "exactly one turn 2 wins"
    );
    let stored = proxy.stored(&session).await.unwrap();
    assert_eq!((stored.head.turn, stored.records.len()), (2, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_answering_garbage_is_a_502_and_the_turn_can_be_retried() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    llama.set(Behaviour::Garbage);
    let (status, reply) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "again"),
    )
    .await;
    assert_eq!((status, error_code(&reply)), (502, "llm_failed"), "{reply}");
    assert_eq!(proxy.stored(session).await.unwrap().head.turn, 1);
    llama.set(Behaviour::Answer);
    let (status, reply) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "again"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}
