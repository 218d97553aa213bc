//! The roaming warm-up, end to end: two proxies on two FReD TEST nodes (fred-testnode, not
//! FReD), each with its own real llama-server (so each node's prompt cache is its own), the
//! trigger feed on. A conversation's turns 1-3 go to node A, turn 4 roams to node B.

mod common;

use common::fred::FredBed;
use common::{
    LlamaServer, TestProxy, client, complete, context_tokens, llama_url, start_proxy, turn_body,
};
use serde_json::{Value, json};

const MESSAGES: [&str; 4] = [
    "Tell me about the history of Paris in three sentences.",
    "What is the most famous museum there?",
    "How old is the building it is in?",
    "And which river runs through the city?",
];

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Proxy A (the shared test llama-server) and proxy B (`llama_b`), both with the feed.
async fn fed_proxies(bed: &FredBed, llama_b: &str, extra: &[&str]) -> (TestProxy, TestProxy) {
    let start = |i: usize, llama: String| {
        let mut args = bed.proxy_args(i);
        args.extend([
            "--fred-trigger-listen".into(),
            free_port(),
            "--llama-url".into(),
            llama,
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let a = start(0, llama_url());
    let a = start_proxy(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let b = start(1, llama_b.to_owned());
    let b = start_proxy(&b.iter().map(String::as_str).collect::<Vec<_>>()).await;
    (a, b)
}

/// A counter of `/metrics`, e.g. `discedge_warmups_total{outcome="sent"}`.
async fn metric(proxy: &str, series: &str) -> u64 {
    let text = common::metrics_text(proxy).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// How many tokens llama-server makes of `text`.
async fn token_count(llama: &str, text: &str) -> u64 {
    let reply: Value = client()
        .post(format!("{llama}/tokenize"))
        .json(&json!({ "content": text }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["tokens"].as_array().unwrap().len() as u64
}

/// Turns 1-3 of a conversation about `city` on `a`; the session id.
async fn three_turns_on(a: &TestProxy, mode: &str, city: &str) -> String {
    let mut session = None;
    for (turn, message) in MESSAGES[..3].iter().enumerate() {
        let message = message.replace("Paris", city);
        let body = turn_body(mode, session.as_deref(), turn as u32 + 1, &message);
        let (status, reply) = complete(&a.url, &body).await;
        assert_eq!(status, 200, "{reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
    }
    session.unwrap()
}

/// Waits until node B has handled the warm-ups of `n` remote turns (each sent, or replaced by
/// a newer turn of its session).
async fn warm_ups_handled(b: &TestProxy, n: u64) -> u64 {
    let series = |o: &str| format!("discedge_warmups_total{{outcome=\"{o}\"}}");
    for _ in 0..600 {
        let sent = metric(&b.url, &series("sent")).await;
        if sent + metric(&b.url, &series("superseded")).await >= n {
            assert_eq!(metric(&b.url, &series("failed")).await, 0);
            return sent;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("node B did not warm up for {n} remote turns in 30 s");
}

/// Turn 4 on `b`; asserts it is a 200 and returns (prompt tokens evaluated, context tokens,
/// tokens of the new message).
async fn roamed_turn(b: &TestProxy, llama_b: &str, mode: &str, session: &str) -> (u64, u64, u64) {
    let (status, reply) = complete(&b.url, &turn_body(mode, Some(session), 4, MESSAGES[3])).await;
    assert_eq!(status, 200, "{reply}");
    let evaluated = reply["timings"]["prompt_n"].as_u64().unwrap();
    (
        evaluated,
        context_tokens(&reply),
        token_count(llama_b, MESSAGES[3]).await,
    )
}

/// The message and the chat template's markers around it (`<|im_start|>user\n`, `<|im_end|>\n
/// <|im_start|>assistant\n` and the previous reply's end): what a same-node turn evaluates.
const TEMPLATE_TOKENS: u64 = 16;

async fn warmed_roam(mode: &str) {
    let bed = FredBed::start().await;
    let llama_b = LlamaServer::start().await;
    let (a, b) = fed_proxies(&bed, &llama_b.url, &["--warm-up"]).await;
    let session = three_turns_on(&a, mode, "Paris").await;
    assert!(warm_ups_handled(&b, 3).await >= 1);
    let (evaluated, context, message) = roamed_turn(&b, &llama_b.url, mode, &session).await;
    assert!(
        evaluated <= message + TEMPLATE_TOKENS,
        "{mode}: the roamed turn evaluated {evaluated} of {context} prompt tokens; the new \
         message is {message}: the warm-up did not fill node B's cache"
    );
    assert_eq!(
        metric(&b.url, "discedge_roamed_turns_total{warmed=\"yes\"}").await,
        1
    );
    assert_eq!(
        metric(
            &b.url,
            "discedge_roamed_prompt_tokens_evaluated_total{warmed=\"yes\"}"
        )
        .await,
        evaluated
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roamed_tokenized_turn_is_served_from_the_warmed_cache() {
    warmed_roam("tokenized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roamed_raw_turn_is_served_from_the_warmed_cache() {
    warmed_roam("raw").await;
}

/// Without `--warm-up` (the default) the same roamed turn evaluates its whole context on node
/// B; then the handover hint, `POST /sessions/{id}/warm`, does the warm-up on demand.
#[tokio::test(flavor = "multi_thread")]
async fn without_warm_up_a_roamed_turn_misses_and_the_handover_hint_warms() {
    let bed = FredBed::start().await;
    let llama_b = LlamaServer::start().await;
    let (a, b) = fed_proxies(&bed, &llama_b.url, &[]).await;
    let cold = three_turns_on(&a, "tokenized", "Paris").await;
    let (evaluated, context, _) = roamed_turn(&b, &llama_b.url, "tokenized", &cold).await;
    assert!(
        evaluated + 4 >= context,
        "nothing was warmed, yet only {evaluated} of {context} tokens were evaluated"
    );
    assert_eq!(
        metric(&b.url, "discedge_roamed_turns_total{warmed=\"no\"}").await,
        1
    );
    assert_eq!(
        metric(&b.url, "discedge_warmups_total{outcome=\"sent\"}").await,
        0
    );

    let hinted = three_turns_on(&a, "tokenized", "Vienna").await;
    let warm = |user: &str, body: &str| {
        client()
            .post(format!("{}/sessions/{hinted}/warm?user_id={user}", b.url))
            .body(body.to_owned())
            .send()
    };
    let not_owner = warm("mallory", r#"{"turn": 3}"#).await.unwrap();
    assert_eq!(not_owner.status(), 404);
    let bad = warm("tester", r#"{"turn": "three"}"#).await.unwrap();
    assert_eq!(bad.status(), 400);
    let reply: Value = bad.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_json", "{reply}");
    let ahead = warm("tester", r#"{"turn": 9}"#).await.unwrap();
    assert_eq!(ahead.status(), 409);

    let done = warm("tester", r#"{"turn": 3}"#).await.unwrap();
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["turn"], 4, "{done}");
    assert!(done["evaluated"].as_u64().unwrap() > 20, "{done}");
    let (evaluated, context, message) = roamed_turn(&b, &llama_b.url, "tokenized", &hinted).await;
    assert!(
        evaluated <= message + TEMPLATE_TOKENS,
        "after the hint the roamed turn still evaluated {evaluated} of {context} tokens"
    );
    assert_eq!(
        metric(&b.url, "discedge_roamed_turns_total{warmed=\"yes\"}").await,
        1
    );
}
