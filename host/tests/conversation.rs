//! A 10-turn conversation in every shipped mode, against the real llama-server: the earlier
//! turns reach the model (the prompt it evaluated grows turn by turn and contains them).

mod common;

use common::{complete, context_tokens, start_proxy, turn_body};

const QUESTIONS: [&str; 10] = [
    "My name is Ada and I live in Lisbon.",
    "What is a matrix?",
    "How do I add two matrices?",
    "And multiply them?",
    "What is an identity matrix?",
    "Give me a 2x2 example.",
    "What is a determinant?",
    "Why does it matter?",
    "What is an inverse?",
    "Summarise what we discussed.",
];

/// Tokens in the model's context for a turn: evaluated now plus reused from its cache.
async fn ten_turns_keep_context(mode: &str) {
    let proxy = start_proxy(&[]).await;
    let mut session: Option<String> = None;
    let mut previous_context = 0;
    for (i, question) in QUESTIONS.iter().enumerate() {
        let turn = i as u32 + 1;
        let (status, reply) = complete(
            &proxy.url,
            &turn_body(mode, session.as_deref(), turn, question),
        )
        .await;
        assert_eq!(status, 200, "{mode} turn {turn}: {reply}");
        assert_eq!(reply["mode"], mode);
        assert_eq!(reply["turn"], turn);
        assert_eq!(reply["user_id"], "tester");
        let id = reply["session_id"].as_str().unwrap().to_owned();
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric()),
            "session id {id:?}"
        );
        if let Some(session) = &session {
            assert_eq!(&id, session, "the session keeps its id");
        }
        session = Some(id);
        let context = context_tokens(&reply);
        assert!(
            context > previous_context,
            "{mode} turn {turn}: context {context} <= {previous_context}"
        );
        previous_context = context;
        let prompt = reply["prompt"].as_str().unwrap();
        for earlier in &QUESTIONS[..=i] {
            assert!(
                prompt.contains(earlier),
                "{mode} turn {turn}: prompt lacks {earlier:?}:\n{prompt}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_keeps_ten_turns() {
    ten_turns_keep_context("raw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenized_keeps_ten_turns() {
    ten_turns_keep_context("tokenized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncate_keeps_ten_turns() {
    ten_turns_keep_context("truncate").await;
}

/// In client-side mode the client carries the history; the proxy forwards it and stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn client_side_forwards_the_clients_history() {
    let proxy = start_proxy(&[]).await;
    let mut history = String::new();
    let mut previous_context = 0;
    for (i, question) in QUESTIONS.iter().enumerate() {
        history.push_str(&format!(
            "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        ));
        let (status, reply) = complete(
            &proxy.url,
            &turn_body("client-side", None, i as u32 + 1, &history),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["prompt"].as_str().unwrap(),
            history,
            "forwarded unchanged"
        );
        let context = context_tokens(&reply);
        assert!(context > previous_context);
        previous_context = context;
        history.push_str(reply["content"].as_str().unwrap());
        history.push_str("<|im_end|>\n");
        let id = reply["session_id"].as_str().unwrap();
        assert!(
            proxy.stored(id).await.is_none(),
            "client-side stores nothing"
        );
    }
}

/// Fields the proxy does not own reach llama-server unchanged (here: n_predict and stop).
#[tokio::test(flavor = "multi_thread")]
async fn llama_fields_pass_through() {
    let proxy = start_proxy(&[]).await;
    let mut body = turn_body("raw", None, 1, "Count from one to ten.");
    body["n_predict"] = 5.into();
    body["stop"] = serde_json::json!(["never-generated-stop-word"]);
    let (status, reply) = complete(&proxy.url, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["generation_settings"]["n_predict"], 5);
    assert_eq!(
        reply["generation_settings"]["stop"][0],
        "never-generated-stop-word"
    );
    assert!(reply["timings"]["predicted_n"].as_u64().unwrap() <= 5);
}

/// Each reply says where the proxy's time went (`Server-Timing`) and what the turn wrote to
/// the store, so clients and scenario runs can split a turn's latency.
#[tokio::test(flavor = "multi_thread")]
async fn replies_say_where_the_time_went() {
    let proxy = start_proxy(&[]).await;
    let reply = common::client()
        .post(format!("{}/completion", proxy.url))
        .json(&turn_body("tokenized", None, 1, "Hello!"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let timing = reply.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let dur = |name: &str| -> f64 {
        let part = timing
            .split(", ")
            .find(|p| p.starts_with(name))
            .unwrap_or_else(|| panic!("{timing}"));
        part.split("dur=").nth(1).unwrap().parse().unwrap()
    };
    assert!(dur("llm;") > 0.0 && dur("policy;") > 0.0, "{timing}");
    assert!(
        dur("store-read;") >= 0.0 && dur("store-write;") >= 0.0,
        "{timing}"
    );
    let bytes: u64 = reply.headers()["x-discedge-store-bytes"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 0, "a stored turn wrote something");
}
