//! Sessions belong to their owner: another user cannot see or extend them, API keys bind the
//! user when configured, owners delete sessions, idle sessions expire, and sizes are bounded.
//! Uses `FakeLlm`, a FAKE llama-server, since none of this depends on the model.

mod common;

use std::time::Duration;

use common::{
    ALICE_KEY as ALICE, BOB_KEY as BOB, api_keys, complete, complete_as, error_code, start_proxy,
    turn_body,
};
use discedge_lab::fake_llm::FakeLlm;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn with_api_keys_the_key_is_the_user() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url, "--api-keys", &api_keys()]).await;
    let mut body = turn_body("raw", None, 1, "hello");
    body.as_object_mut().unwrap().remove("user_id");

    let (status, reply) = complete_as(&proxy.url, None, &body).await;
    assert_eq!(
        (status, error_code(&reply)),
        (401, "unauthorized"),
        "{reply}"
    );
    let (status, reply) = complete_as(&proxy.url, Some("not-a-key-at-all-000"), &body).await;
    assert_eq!(
        (status, error_code(&reply)),
        (401, "unauthorized"),
        "{reply}"
    );

    let (status, reply) = complete_as(&proxy.url, Some(ALICE), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["user_id"], "alice");
    let session = reply["session_id"].as_str().unwrap();

    let mut claim = turn_body("raw", Some(session), 2, "I am alice, really");
    claim["user_id"] = "alice".into();
    let (status, reply) = complete_as(&proxy.url, Some(BOB), &claim).await;
    assert_eq!(
        (status, error_code(&reply)),
        (403, "user_mismatch"),
        "a key's user cannot be overridden: {reply}"
    );
    claim.as_object_mut().unwrap().remove("user_id");
    let (status, reply) = complete_as(&proxy.url, Some(BOB), &claim).await;
    assert_eq!(
        (status, error_code(&reply)),
        (404, "unknown_session"),
        "bob cannot see alice's session: {reply}"
    );
    let (status, reply) = complete_as(&proxy.url, Some(ALICE), &claim).await;
    assert_eq!(status, 200, "{reply}");

    let delete = |key: &'static str| {
        let url = format!("{}/sessions/{session}", proxy.url);
        async move {
            common::client()
                .delete(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(BOB).await, 404, "bob cannot delete it either");
    assert_eq!(delete(ALICE).await, 200);
    assert_eq!(delete(ALICE).await, 404, "gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_delete_their_sessions() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    let url = format!("{}/sessions/{session}", proxy.url);
    let reply = common::client()
        .delete(format!("{url}?user_id=mallory"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let reply = common::client()
        .delete(format!("{url}?user_id=tester"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body, json!({"deleted": session}));
    assert!(proxy.stored(session).await.is_none());
    let (status, reply) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "again"),
    )
    .await;
    assert_eq!(
        (status, error_code(&reply)),
        (404, "unknown_session"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url, "--session-idle-secs", "1"]).await;
    let (_, one) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    let (status, _) = complete(&proxy.url, &turn_body("raw", Some(session), 2, "soon")).await;
    assert_eq!(status, 200, "not idle yet");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, reply) = complete(&proxy.url, &turn_body("raw", Some(session), 3, "late")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (404, "unknown_session"),
        "{reply}"
    );
    assert!(
        proxy.stored(session).await.is_none(),
        "deleted from the store"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_and_sessions_are_bounded() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&[
        "--llama-url",
        &llama.url,
        "--max-prompt-bytes",
        "100",
        "--max-session-bytes",
        "300",
    ])
    .await;
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, &"x".repeat(101))).await;
    assert_eq!(
        (status, error_code(&reply)),
        (413, "prompt_too_large"),
        "{reply}"
    );

    let (_, one) = complete(&proxy.url, &turn_body("raw", None, 1, &"y".repeat(90))).await;
    let session = one["session_id"].as_str().unwrap().to_owned();
    let mut turn = 1;
    let (status, reply) = loop {
        turn += 1;
        let (status, reply) = complete(
            &proxy.url,
            &turn_body("raw", Some(&session), turn, &"z".repeat(90)),
        )
        .await;
        if status != 200 || turn > 10 {
            break (status, reply);
        }
    };
    assert_eq!(
        (status, error_code(&reply)),
        (413, "session_too_large"),
        "{reply}"
    );
    let stored = proxy.stored(&session).await.unwrap();
    assert_eq!(
        stored.head.turn,
        turn - 1,
        "the refused turn changed nothing"
    );
}
