//! Policies that ask the model (contract 0.2.0), against the real llama-server: `summarize`
//! serves a conversation far past the 2048-token window, every prompt inside it, the model's
//! summaries stored in the session; the host hands a policy's answers back in order, counts
//! them, and refuses a policy that asks for ever or sets the host's fields, writing nothing.

mod common;

use common::{
    complete, complete_with_headers, error_code, faulty_plugin, metrics_text, start_proxy,
    turn_body,
};
use discedge_policy_sdk::summary::{self, Summary};
use serde_json::Value;

fn long_message(turn: u32) -> String {
    format!(
        "Turn {turn}. More about my allotment: I grow tomatoes, beans, lettuce, carrots and herbs \
         along the southern fence, and I keep wondering how to space them, when to water them, \
         and which of them grow well together. The soil is heavy clay, the plot slopes gently \
         to the south, a hedge shades the western edge after four in the afternoon, and slugs \
         ate most of my seedlings last spring. Please answer briefly."
    )
}

/// Sends a turn; returns the status, the reply and the policy completions it took.
async fn send(url: &str, body: &Value) -> (u16, Value, u32) {
    let (status, headers, reply) = complete_with_headers(url, body).await;
    let asked = headers
        .get("x-discedge-policy-completions")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, reply, asked)
}

#[tokio::test(flavor = "multi_thread")]
async fn summarize_keeps_a_long_conversation_inside_the_window() {
    let system = "You are a concise gardening assistant.";
    let proxy = start_proxy(&["--system-prompt", system]).await;
    let planted = "My allotment is plot number 47 and my dog is called Biscuit.";
    let mut session: Option<String> = None;
    let mut turns_that_summarised = 0;
    for turn in 1..=24 {
        let message = if turn == 1 {
            format!("{planted} {}", long_message(turn))
        } else {
            long_message(turn)
        };
        let mut body = turn_body("summarize", session.as_deref(), turn, &message);
        body["n_predict"] = 64.into();
        let (status, reply, asked) = send(&proxy.url, &body).await;
        assert_eq!(status, 200, "turn {turn}: {reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
        let context = common::context_tokens(&reply);
        assert!(
            context + 64 <= 2048,
            "turn {turn}: {context} prompt tokens + 64 exceed the window"
        );
        let prompt = reply["prompt"].as_str().unwrap();
        assert!(
            prompt.contains(system),
            "turn {turn}: system prompt dropped"
        );
        assert!(
            prompt.contains(&format!("Turn {turn}.")),
            "turn {turn}: the new message is missing"
        );
        if asked > 0 {
            turns_that_summarised += 1;
            assert!(
                prompt.contains("Summary of the conversation so far: ")
                    && !prompt.contains("Turn 1."),
                "turn {turn} summarised, but its prompt has no summary or still the first turn: {prompt}"
            );
        }
    }
    assert!(
        turns_that_summarised >= 2,
        "24 long turns summarised {turns_that_summarised} times: the test is too gentle"
    );
    // Every turn is stored; the turns that summarised stored their summary, which covers
    // the turns before the window.
    let stored = proxy.stored(session.as_deref().unwrap()).await.unwrap();
    assert_eq!(stored.head.turn, 24);
    let summaries: Vec<Summary> = stored
        .records
        .iter()
        .filter_map(|r| {
            summary::split(r)
                .unwrap()
                .1
                .map(|s| Summary::decode(s).unwrap())
        })
        .collect();
    assert_eq!(
        summaries.len(),
        turns_that_summarised,
        "one summary per summarising turn"
    );
    let last = summaries.last().unwrap();
    assert!(
        !last.text.trim().is_empty() && !last.ids.is_empty(),
        "{last:?}"
    );
    assert!(last.folded > 0 && (last.folded as usize) < stored.records.len());
    eprintln!("last summary (records 0..{}): {}", last.folded, last.text);
    let metrics = metrics_text(&proxy.url).await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("discedge_policy_completions_total "))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap();
    assert!(
        counted >= turns_that_summarised,
        "{counted} completions counted"
    );
    // The owner still sees the whole conversation, the summarised turns included.
    let (status, view) = common::get_as(
        &format!("{}/sessions/{}?user_id=tester", proxy.url, session.unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let history = view["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|m| m["content"].as_str().unwrap().contains("plot number 47")),
        "turn 1 missing from the history"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policys_answers_come_back_in_order_and_are_counted() {
    let plugins = common::plugins_copy(&[]);
    std::fs::copy(faulty_plugin(), plugins.path().join("faulty.wasm")).unwrap();
    let proxy = start_proxy(&["--plugins-dir", plugins.path().to_str().unwrap()]).await;
    let body = turn_body("faulty", None, 1, "ASKTWICE");
    let (status, headers, reply) = complete_with_headers(&proxy.url, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(headers["x-discedge-policy-completions"], "2");
    let timing = headers["server-timing"].to_str().unwrap();
    let policy_llm: f64 = timing
        .split(", ")
        .find_map(|part| part.strip_prefix("policy-llm;dur="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(policy_llm > 0.0, "{timing}");
    // The model saw what the policy made of its two answers: their states, in order.
    assert_eq!(
        reply["prompt"],
        "state [0, 0, 0, 0] answered true; state [1, 0, 0, 0] answered true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_asks_too_much_or_badly_fails_the_turn_and_writes_nothing() {
    let plugins = common::plugins_copy(&[]);
    std::fs::copy(faulty_plugin(), plugins.path().join("faulty.wasm")).unwrap();
    let proxy = start_proxy(&[
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
        "--policy-completions",
        "3",
    ])
    .await;
    let (status, first) = complete(&proxy.url, &turn_body("faulty", None, 1, "hello")).await;
    assert_eq!(status, 200, "{first}");
    let session = first["session_id"].as_str().unwrap();
    for (prompt, says) in [
        ("ASKFOREVER", "more than 3 completions"),
        ("ASKBADOPTIONS", "\"stream\""),
    ] {
        let (status, reply) =
            complete(&proxy.url, &turn_body("faulty", Some(session), 2, prompt)).await;
        assert_eq!(status, 500, "{prompt}: {reply}");
        assert_eq!(error_code(&reply), "policy_bad_output", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{prompt}: {message}");
        let stored = proxy.stored(session).await.unwrap();
        assert_eq!(
            stored.head.turn, 1,
            "{prompt}: the failed turn wrote something"
        );
    }
}
