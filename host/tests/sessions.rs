//! The sessions API: an owner reads a session (turns, mode, size, the conversation as its
//! policy renders it), lists their sessions, and deletes one; nobody else sees them.
//! Sessions are made with the real llama-server; the API-key test uses `FakeLlm`, a FAKE.

mod common;

use common::{
    ALICE_KEY as ALICE, BOB_KEY as BOB, api_keys, complete, complete_as, error_code, get_as,
    start_proxy, turn_body,
};
use discedge_lab::fake_llm::FakeLlm;

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_reads_lists_and_deletes_sessions_in_every_mode() {
    let proxy = start_proxy(&["--system-prompt", "You are a helpful assistant."]).await;
    let url = &proxy.url;
    let mut sessions = Vec::new();
    for mode in ["raw", "tokenized", "truncate"] {
        let prompts = ["What is the capital of France?", "And of Italy?"];
        let (status, one) = complete(url, &turn_body(mode, None, 1, prompts[0])).await;
        assert_eq!(status, 200, "{one}");
        let session = one["session_id"].as_str().unwrap().to_owned();
        let (status, two) = complete(url, &turn_body(mode, Some(&session), 2, prompts[1])).await;
        assert_eq!(status, 200, "{two}");

        let (status, view) =
            get_as(&format!("{url}/sessions/{session}?user_id=tester"), None).await;
        assert_eq!(status, 200, "{view}");
        eprintln!("{mode}: {view}");
        assert_eq!(view["mode"], mode);
        assert_eq!(view["turns"], 2);
        assert_eq!(view["user_id"], "tester");
        let tokens = view["tokens"].as_u64().unwrap();
        assert_eq!(
            tokens,
            two["tokens_evaluated"].as_u64().unwrap() + two["tokens_predicted"].as_u64().unwrap(),
            "the model's context after turn 2"
        );
        assert!(view["updated_ms"].as_u64() >= view["created_ms"].as_u64());
        let history = view["history"]
            .as_array()
            .expect("shipped policies render history");
        let roles: Vec<&str> = history
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant"],
            "{mode}"
        );
        assert_eq!(history[0]["content"], "You are a helpful assistant.");
        assert_eq!(history[1]["content"], prompts[0]);
        assert_eq!(history[3]["content"], prompts[1]);
        assert_eq!(
            history[2]["content"], one["content"],
            "{mode}: the reply as the client got it"
        );
        assert_eq!(history[4]["content"], two["content"], "{mode}");

        let (status, other) =
            get_as(&format!("{url}/sessions/{session}?user_id=mallory"), None).await;
        assert_eq!((status, error_code(&other)), (404, "unknown_session"));
        sessions.push(session);
    }

    let (status, list) = get_as(&format!("{url}/sessions?user_id=tester"), None).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = sessions.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(list["sessions"][0]["turns"], 2);
    let (_, none) = get_as(&format!("{url}/sessions?user_id=mallory"), None).await;
    assert_eq!(none["sessions"], serde_json::json!([]));

    let deleted = common::client()
        .delete(format!("{url}/sessions/{}?user_id=tester", sessions[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, _) = get_as(
        &format!("{url}/sessions/{}?user_id=tester", sessions[0]),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = get_as(&format!("{url}/sessions?user_id=tester"), None).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2, "{list}");

    // client-side keeps nothing, so there is nothing to show.
    let (_, reply) = complete(url, &turn_body("client-side", None, 1, "Hi")).await;
    let session = reply["session_id"].as_str().unwrap();
    let (status, _) = get_as(&format!("{url}/sessions/{session}?user_id=tester"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_api_keys_the_key_names_the_owner() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url, "--api-keys", &api_keys()]).await;
    let url = &proxy.url;
    let mut body = turn_body("tokenized", None, 1, "hello");
    body.as_object_mut().unwrap().remove("user_id");
    let (status, reply) = complete_as(url, Some(ALICE), &body).await;
    assert_eq!(status, 200, "{reply}");
    let session = reply["session_id"].as_str().unwrap();

    let (status, view) = get_as(&format!("{url}/sessions/{session}"), Some(ALICE)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["user_id"], "alice");
    let (status, list) = get_as(&format!("{url}/sessions"), Some(ALICE)).await;
    assert_eq!(
        (status, list["sessions"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, _) = get_as(&format!("{url}/sessions/{session}"), Some(BOB)).await;
    assert_eq!(status, 404, "bob cannot see alice's session");
    let (status, e) = get_as(&format!("{url}/sessions?user_id=alice"), Some(BOB)).await;
    assert_eq!((status, error_code(&e)), (403, "user_mismatch"));
    let (status, e) = get_as(&format!("{url}/sessions"), None).await;
    assert_eq!((status, error_code(&e)), (401, "unauthorized"));
}
