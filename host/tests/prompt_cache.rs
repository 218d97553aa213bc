//! Tokenized sessions store exactly the tokens the model saw plus those it generated, so the
//! next turn's prompt extends the previous one and llama-server serves it from its prompt cache.

mod common;

use common::{complete, start_proxy, turn_body};

#[tokio::test(flavor = "multi_thread")]
async fn second_tokenized_turn_is_served_from_the_prompt_cache() {
    let proxy = start_proxy(&[]).await;
    let first = "Please explain, in a few sentences, what a prime number is and why primes matter.";
    let (status, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, first)).await;
    assert_eq!(status, 200, "{one}");
    let session = one["session_id"].as_str().unwrap();
    let (status, two) = complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "Name three."),
    )
    .await;
    assert_eq!(status, 200, "{two}");

    // Everything turn 1 put into the model's cache is reused: its prompt and its reply.
    common::assert_turn1_cached(&one, &two);
    let evaluated = two["timings"]["prompt_n"].as_u64().unwrap();
    let cached = two["timings"]["cache_n"].as_u64().unwrap();
    assert!(
        cached > evaluated,
        "mostly from cache: {cached} cached vs {evaluated} evaluated"
    );
}
