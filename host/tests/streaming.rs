//! `"stream": true`: events reach the client as llama-server sends them, the session fields
//! ride in the first and last, and the turn is committed only when the stream ended normally.
//!
//! Most tests use `FakeLlm`, a FAKE llama-server that streams word by word and can be slowed
//! or told to break off; the last one streams from the real llama-server.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{complete, error_code, start_proxy, turn_body};
use discedge_lab::fake_llm::{Behaviour, FakeLlm, REPLY, reply_ids};
use serde_json::{Value, json};

/// Streams a request to `path` and returns the status, content type and parsed events
/// (`[DONE]` as the string "[DONE]").
async fn stream(url: &str, path: &str, body: &Value) -> (u16, String, Vec<Value>) {
    let reply = common::client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let kind = reply
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = reply.text().await.unwrap();
    let events = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an event: {e:?}"));
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect();
    (status, kind, events)
}

fn streamed(mode: &str, session: Option<&str>, turn: u32, prompt: &str) -> Value {
    let mut body = turn_body(mode, session, turn, prompt);
    body["stream"] = json!(true);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_turn_is_committed_in_every_mode() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    for mode in ["raw", "tokenized", "truncate", "client-side"] {
        let (status, kind, events) =
            stream(&proxy.url, "/completion", &streamed(mode, None, 1, "Hello")).await;
        assert_eq!(status, 200, "{mode}: {events:?}");
        assert_eq!(kind, "text/event-stream");
        let words = REPLY.split_inclusive(' ').count();
        assert_eq!(
            events.len(),
            words + 1,
            "{mode}: one event per word, then the last"
        );
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let session = first["session_id"]
            .as_str()
            .expect("session in the first event");
        assert_eq!(first["turn"], 1);
        assert_eq!(first["mode"], mode);
        assert_eq!(
            last["session_id"], session,
            "{mode}: session in the last event"
        );
        assert_eq!(last["stop"], true);
        assert!(
            events[1].get("session_id").is_none(),
            "middle events pass through"
        );
        let content: String = events
            .iter()
            .filter_map(|e| e["content"].as_str())
            .collect();
        assert_eq!(content, REPLY, "{mode}");
        if mode == "client-side" {
            continue;
        }
        // Turn 1 was committed: turn 2 follows it.
        let (status, two) = complete(&proxy.url, &turn_body(mode, Some(session), 2, "And?")).await;
        assert_eq!(status, 200, "{mode}: {two}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenized_keeps_exactly_the_streamed_token_ids() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (status, _, events) = stream(
        &proxy.url,
        "/completion",
        &streamed("tokenized", None, 1, "Hi"),
    )
    .await;
    assert_eq!(status, 200);
    let turn1_prompt = llama.last_prompt_ids();
    let session = events[0]["session_id"].as_str().unwrap();
    let (status, two) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "Go on"),
    )
    .await;
    assert_eq!(status, 200, "{two}");
    let turn2_prompt = llama.last_prompt_ids();
    let mut expected = turn1_prompt.clone();
    expected.extend(reply_ids());
    assert!(
        turn2_prompt.starts_with(&expected),
        "turn 2's prompt extends turn 1's prompt with exactly the streamed ids"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_changes_nothing() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (status, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "Hi")).await;
    assert_eq!(status, 200);
    let session = one["session_id"].as_str().unwrap();

    llama.set_delay(Duration::from_millis(150));
    let mut reply = common::client()
        .post(format!("{}/completion", proxy.url))
        .json(&streamed("tokenized", Some(session), 2, "Tell me more"))
        .send()
        .await
        .unwrap();
    let first = reply
        .chunk()
        .await
        .unwrap()
        .expect("the first event arrives");
    assert!(String::from_utf8_lossy(&first).contains(session));
    drop(reply);
    common::eventually("the proxy to stop reading llama-server", || {
        llama.streams_abandoned.load(Ordering::SeqCst) == 1
    })
    .await;

    llama.set_delay(Duration::ZERO);
    let again = common::client()
        .post(format!("{}/completion", proxy.url))
        .json(&turn_body("tokenized", Some(session), 2, "Tell me more"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert!(
        again.headers().get("x-discedge-replayed").is_none(),
        "turn 2 was not committed, so it is served anew, not replayed"
    );
    let (status, three) =
        complete(&proxy.url, &turn_body("tokenized", Some(session), 3, "Ok")).await;
    assert_eq!(status, 200, "{three}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_stream_ends_with_an_error_event_and_changes_nothing() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    llama.set(Behaviour::BreakStream);
    let (status, _, events) = stream(
        &proxy.url,
        "/completion",
        &streamed("raw", Some("broken1"), 1, "Hi"),
    )
    .await;
    assert_eq!(status, 200, "the stream had begun");
    let last = events.last().unwrap();
    assert_eq!(error_code(last), "llm_stream_broken", "{events:?}");

    llama.set(Behaviour::Answer);
    let (status, two) = complete(&proxy.url, &turn_body("raw", Some("broken1"), 2, "x")).await;
    assert_eq!(
        (status, error_code(&two)),
        (404, "unknown_session"),
        "turn 1 never committed"
    );
    let (status, _, events) = stream(
        &proxy.url,
        "/completion",
        &streamed("raw", Some("broken1"), 1, "Hi"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap()["stop"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_before_the_first_event_are_plain_http_errors() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (status, body) = complete(&proxy.url, &streamed("raw", Some("nosuch"), 2, "x")).await;
    assert_eq!((status, error_code(&body)), (404, "unknown_session"));
    llama.set(Behaviour::Fail);
    let (status, body) = complete(&proxy.url, &streamed("raw", None, 1, "x")).await;
    assert_eq!((status, error_code(&body)), (502, "llm_failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_streamed_turn_is_replayed_without_the_model() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let body = streamed("truncate", Some("retry1"), 1, "Hi");
    let (_, _, events) = stream(&proxy.url, "/completion", &body).await;
    assert_eq!(events.last().unwrap()["stop"], true);
    let calls = llama.calls.load(Ordering::SeqCst);
    let (status, _, replayed) = stream(&proxy.url, "/completion", &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        llama.calls.load(Ordering::SeqCst),
        calls,
        "the model is not asked again"
    );
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["content"], REPLY);
    assert_eq!(replayed[0]["session_id"], "retry1");
    assert_eq!(replayed[0]["stop"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_streams_in_openai_chunks() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let body = json!({
        "model": "smol", "mode": "tokenized", "user_id": "tester", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    });
    let (status, kind, events) = stream(&proxy.url, "/v1/chat/completions", &body).await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "text/event-stream"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = &events[..events.len() - 1];
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "smol")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let session = chunks[0]["session_id"].as_str().unwrap();
    let closing = chunks.last().unwrap();
    assert_eq!(closing["session_id"], session);
    assert_eq!(closing["choices"][0]["finish_reason"], "stop");
    assert!(closing["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, REPLY);

    // Only the new message is needed for turn 2; the session holds the rest.
    let two = json!({
        "mode": "tokenized", "user_id": "tester", "session_id": session, "turn": 2,
        "messages": [{"role": "user", "content": "More?"}],
    });
    let reply = common::client()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .json(&two)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let two: Value = reply.json().await.unwrap();
    assert_eq!(two["object"], "chat.completion");
    assert_eq!(two["choices"][0]["message"]["content"], REPLY);
    assert_eq!(two["turn"], 2);
}

/// The real llama-server's stream: the stored ids are exact, so turn 2 is served from the
/// prompt cache exactly as after a turn that was not streamed.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_streamed_tokenized_turn_keeps_the_prompt_cache_warm() {
    let proxy = start_proxy(&[]).await;
    let first = "Please explain, in a few sentences, what a prime number is and why primes matter.";
    let (status, _, events) = stream(
        &proxy.url,
        "/completion",
        &streamed("tokenized", None, 1, first),
    )
    .await;
    assert_eq!(status, 200, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["stop"], true, "{last}");
    assert!(events.len() > 2, "the reply came in pieces");
    let session = events[0]["session_id"].as_str().unwrap();
    let (status, two) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "Name three."),
    )
    .await;
    assert_eq!(status, 200, "{two}");
    common::assert_turn1_cached(last, &two);
}
