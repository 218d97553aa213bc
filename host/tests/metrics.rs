//! `GET /metrics` counts what operators watch: requests by mode and status, where turns spend
//! their time, tokens evaluated vs cached, store bytes, policy loads. Uses `FakeLlm`, a FAKE
//! llama-server.

mod common;

use common::{complete, start_proxy, turn_body};
use discedge_lab::fake_llm::FakeLlm;

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_shows_the_requests_made() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&proxy.url, &turn_body("tokenized", None, 1, "hello")).await;
    let session = one["session_id"].as_str().unwrap();
    complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 2, "again"),
    )
    .await;
    complete(&proxy.url, &turn_body("nope", None, 1, "hello")).await;
    complete(
        &proxy.url,
        &turn_body("tokenized", Some(session), 9, "skipped"),
    )
    .await;
    // A streamed turn and a chat turn count like any other, once their stream has ended.
    let mut streamed = turn_body("raw", None, 1, "hello");
    streamed["stream"] = true.into();
    let events = common::client()
        .post(format!("{}/completion", proxy.url))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("\"stop\":true"), "{events}");
    let chat = serde_json::json!({"mode": "raw", "messages": [{"role": "user", "content": "hi"}]});
    let reply = common::client()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let reply = common::client()
        .get(format!("{}/metrics", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.text().await.unwrap();
    for line in [
        "discedge_requests_total{mode=\"tokenized\",status=\"200\",code=\"\"} 2",
        "discedge_requests_total{mode=\"unknown\",status=\"400\",code=\"unknown_mode\"} 1",
        "discedge_requests_total{mode=\"tokenized\",status=\"409\",code=\"turn_mismatch\"} 1",
        "discedge_requests_total{mode=\"raw\",status=\"200\",code=\"\"} 2",
        "discedge_turn_seconds_count{stage=\"llm\"} 4",
        "discedge_turn_seconds_count{stage=\"store_write\"} 4",
        "discedge_policies_loaded 5",
        "discedge_policy_loads_total 5",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let value = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("discedge_store_bytes_written_total") > 0);
    assert!(value("discedge_prompt_tokens_evaluated_total") > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_chosen_modes_do_not_grow_the_metrics() {
    use futures_util::StreamExt;
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("discedge_requests_total{"))
            .count()
    };
    let scrape = || common::metrics_text(&proxy.url);
    let client = common::client();
    let statuses: Vec<u16> = futures_util::stream::iter(0..10_000)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{}/completion", proxy.url));
            async move {
                let body = turn_body(&format!("mode-{i}-{}", i * 7919 % 10_007), None, 1, "x");
                let reply = client.post(url).json(&body).send().await.unwrap();
                reply.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 400));
    let text = scrape().await;
    assert!(series(&text) <= 2, "{} series:\n{text}", series(&text));
    assert!(
        text.lines()
            .any(|l| l == "discedge_requests_total{mode=\"unknown\",status=\"400\",code=\"unknown_mode\"} 10000"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_a_policy_left_out_are_counted() {
    let llama = FakeLlm::start().await.unwrap();
    let plugins = common::plugins_copy(&["raw"]);
    std::fs::copy(common::faulty_plugin(), plugins.path().join("faulty.wasm")).unwrap();
    let proxy = start_proxy(&[
        "--llama-url",
        &llama.url,
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
    ])
    .await;
    for prompt in ["DROP DROP", "no drop", "DROP"] {
        let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, prompt)).await;
        assert_eq!(status, 200, "{reply}");
    }
    let text = common::metrics_text(&proxy.url).await;
    for line in [
        "discedge_dropped_records_total 3",
        "discedge_turns_dropping_records_total 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}
