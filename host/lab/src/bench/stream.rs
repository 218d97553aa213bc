//! Streamed turns: how long the first event takes to reach the client through the proxy
//! (load, policy `prepare`, connecting to the model) and how long the whole stream takes
//! (commit included), against the FAKE llama-server streamed directly.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BenchProxy, micros, percentiles};
use crate::args::BenchArgs;

/// Turns per session before a new one starts, so the stored context stays a few hundred tokens.
const TURNS_PER_SESSION: u32 = 10;
const USER: &str = "Tell me more about how matrices are multiplied, step by step, please.";

/// Prints the `stream` figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let proxy = BenchProxy::start(&args.plugins_dir, None).await?;
    let http = reqwest::Client::new();
    let direct_url = format!("{}/completion", proxy.fake.url);
    let mut first_direct = Vec::with_capacity(args.requests);
    let mut whole_direct = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        let body = json!({"prompt": USER, "stream": true});
        let (first, whole, _) = stream(&http, &direct_url, &body).await?;
        first_direct.push(first);
        whole_direct.push(whole);
    }
    let (first_direct, _) = percentiles(&mut first_direct);
    let (whole_direct, _) = percentiles(&mut whole_direct);
    println!();
    println!("streamed turns, one client: proxy (embedded store) -> FAKE llama-server");
    println!(
        "{:<12} {:>14} {:>14} {:>14} {:>14}",
        "mode", "first event", "added", "whole stream", "added"
    );
    for mode in proxy.node.proxy.policies.names() {
        let (mut firsts, mut wholes) = (Vec::new(), Vec::new());
        let mut session = Value::Null;
        for i in 0..args.requests {
            let turn = (i as u32 % TURNS_PER_SESSION) + 1;
            if turn == 1 {
                session = Value::Null;
            }
            let body = json!({"mode": mode, "session_id": session, "turn": turn,
                              "prompt": USER, "n_predict": 32, "stream": true});
            let (first, whole, first_event) = stream(&http, &proxy.url, &body).await?;
            session = first_event["session_id"].clone();
            firsts.push(first);
            wholes.push(whole);
        }
        let (first, _) = percentiles(&mut firsts);
        let (whole, _) = percentiles(&mut wholes);
        println!(
            "{:<12} {:>14} {:>14} {:>14} {:>14}",
            mode,
            micros(first),
            micros(first.saturating_sub(first_direct)),
            micros(whole),
            micros(whole.saturating_sub(whole_direct)),
        );
    }
    println!(
        "(medians of {} turns; direct: first event {}, whole stream {})",
        args.requests,
        micros(first_direct),
        micros(whole_direct)
    );
    Ok(())
}

/// Streams one request; returns the time to the first bytes, to the end, and the first event.
async fn stream(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> anyhow::Result<(Duration, Duration, Value)> {
    let started = Instant::now();
    let mut reply = http.post(url).json(body).send().await?;
    anyhow::ensure!(reply.status().is_success(), "{url}: {}", reply.status());
    let first = reply
        .chunk()
        .await?
        .ok_or_else(|| anyhow::anyhow!("{url}: empty stream"))?;
    let first_at = started.elapsed();
    let mut text = first.to_vec();
    while let Some(chunk) = reply.chunk().await? {
        text.extend_from_slice(&chunk);
    }
    let whole = started.elapsed();
    let text = String::from_utf8_lossy(&text);
    anyhow::ensure!(!text.contains("\"error\""), "{url}: {text}");
    let first_event = text
        .split("\n\n")
        .next()
        .and_then(|event| event.strip_prefix("data: "))
        .and_then(|data| serde_json::from_str(data).ok())
        .unwrap_or(Value::Null);
    Ok((first_at, whole, first_event))
}
