//! The truncate policy keeps a session inside the model's window: 50 long turns all succeed,
//! where the tokenized policy (which never drops anything) runs out of room and says so.

mod common;

use common::{complete, start_proxy, turn_body};

fn long_message(turn: u32) -> String {
    format!(
        "Turn {turn}. Here is some more background about my garden project, in detail: I am planting \
         tomatoes, beans, lettuce, carrots and herbs along the southern fence, and I want to know how \
         to space them, when to water them, and which of them grow well together. Please answer briefly."
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_long_turns_stay_inside_the_window() {
    let proxy = start_proxy(&["--system-prompt", "You are a concise gardening assistant."]).await;
    let mut session: Option<String> = None;
    let mut truncated_once = false;
    for turn in 1..=50 {
        let mut body = turn_body("truncate", session.as_deref(), turn, &long_message(turn));
        body["n_predict"] = 64.into();
        let (status, reply) = complete(&proxy.url, &body).await;
        assert_eq!(status, 200, "turn {turn}: {reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
        let prompt = reply["prompt"].as_str().unwrap();
        let context = common::context_tokens(&reply);
        assert!(
            context + 64 <= 2048,
            "turn {turn}: {context} prompt tokens + 64 exceed the window"
        );
        assert!(
            prompt.contains("You are a concise gardening assistant."),
            "turn {turn}: system prompt dropped"
        );
        assert!(
            prompt.contains(&format!("Turn {turn}.")),
            "turn {turn}: the new message is missing"
        );
        if !prompt.contains("Turn 1.") {
            truncated_once = true;
        }
    }
    assert!(
        truncated_once,
        "50 long turns never needed truncation: the test is too gentle"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenized_says_when_the_window_is_full() {
    let proxy = start_proxy(&[]).await;
    let mut session: Option<String> = None;
    for turn in 1..=60 {
        let mut body = turn_body(
            "tokenized",
            session.as_deref(),
            turn,
            &long_message(turn).repeat(3),
        );
        body["n_predict"] = 8.into();
        let (status, reply) = complete(&proxy.url, &body).await;
        if status == 422 {
            assert_eq!(reply["error"]["code"], "context_full", "{reply}");
            assert!(turn > 3, "full too early, at turn {turn}");
            let stored = proxy.stored(session.as_deref().unwrap()).await.unwrap();
            assert_eq!(
                stored.head.turn,
                turn - 1,
                "the refused turn changed nothing"
            );
            return;
        }
        assert_eq!(status, 200, "turn {turn}: {reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
    }
    panic!("the window never filled");
}
