//! The latency the proxy adds to a turn, at several numbers of concurrent sessions: turns
//! through a proxy on the embedded store against the FAKE llama-server, compared with the fake
//! called directly at the same concurrency.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BenchProxy, micros, percentiles, turn_request};
use crate::args::BenchArgs;

/// Timed turns per session; sessions start just under the context size so the timed turns
/// see about `--context-tokens` of stored context.
const TURNS_PER_SESSION: usize = 5;
const USER: &str = "Tell me more about how matrices are multiplied, step by step, please.";

/// Prints the `latency` figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let proxy = BenchProxy::start(&args.plugins_dir, args.fake_model.as_deref()).await?;
    let http = reqwest::Client::new();
    // About one token per repetition: a byte with the fake's tokenizer, " x" with a model's.
    let (history, tokenizer) = match &args.fake_model {
        None => ("x".repeat(args.context_tokens), "the fake's /tokenize"),
        Some(_) => (" x".repeat(args.context_tokens), "local, from the GGUF"),
    };
    println!();
    println!(
        "added latency per turn: proxy (embedded store) -> FAKE llama-server, ~{} tokens of context, tokenizer: {tokenizer}",
        args.context_tokens
    );
    println!(
        "{:<12} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "mode", "clients", "median", "p99", "direct", "added", "req/s"
    );
    for &clients in &args.concurrency {
        let requests = args.requests.max(clients * TURNS_PER_SESSION);
        let (mut direct, _) = timed(clients, requests, |_, _| {
            let (http, url, history) = (
                http.clone(),
                format!("{}/completion", proxy.fake.url),
                history.clone(),
            );
            async move {
                http.post(url)
                    .json(&json!({"prompt": history}))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                Ok(())
            }
        })
        .await?;
        let (direct_median, _) = percentiles(&mut direct);
        for mode in proxy.node.proxy.policies.names() {
            let stores = proxy
                .node
                .proxy
                .policies
                .get(&mode)
                .is_some_and(|p| p.info.stores_context);
            let sessions = clients * requests.div_ceil(clients).div_ceil(TURNS_PER_SESSION);
            let fill = args.context_tokens.saturating_sub(TURNS_PER_SESSION * 60) as u64;
            let mut starts = Vec::with_capacity(sessions);
            for _ in 0..sessions {
                starts.push(fill_session(&http, &proxy.url, &mode, stores, fill).await?);
            }
            let starts = std::sync::Arc::new(starts);
            let (mut times, elapsed) = timed(clients, requests, |client, i| {
                let (http, url, mode, history, starts) = (
                    http.clone(),
                    proxy.url.clone(),
                    mode.clone(),
                    history.clone(),
                    starts.clone(),
                );
                async move {
                    // Client `c` owns sessions c, c + clients, ...: one request per session at a time.
                    let slot = (i / clients) % TURNS_PER_SESSION;
                    let session = client + clients * ((i / clients) / TURNS_PER_SESSION);
                    let (id, turn) = &starts[session];
                    let prompt = if stores { USER } else { history.as_str() };
                    turn_request(&http, &url, &mode, id, turn + 1 + slot as u32, prompt).await?;
                    Ok(())
                }
            })
            .await?;
            let (median, p99) = percentiles(&mut times);
            println!(
                "{:<12} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9.0}",
                mode,
                clients,
                micros(median),
                micros(p99),
                micros(direct_median),
                micros(median.saturating_sub(direct_median)),
                requests as f64 / elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// A session filled to about `fill` tokens; returns its id and last turn.
async fn fill_session(
    http: &reqwest::Client,
    url: &str,
    mode: &str,
    stores: bool,
    fill: u64,
) -> anyhow::Result<(Value, u32)> {
    let (mut session, mut turn, mut context) = (Value::Null, 0u32, 0u64);
    while stores && context < fill {
        turn += 1;
        let (_, reply) = turn_request(http, url, mode, &session, turn, USER).await?;
        session = reply["session_id"].clone();
        context = reply["timings"]["prompt_n"].as_u64().unwrap_or(0);
    }
    Ok((session, turn))
}

/// Runs `requests` calls from `clients` concurrent clients (client `c` makes calls c,
/// c + clients, ... in order); returns each call's time and the wall time of all.
async fn timed<F, Fut>(
    clients: usize,
    requests: usize,
    call: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let calls: Vec<Fut> = (client..requests)
            .step_by(clients)
            .map(|i| call(client, i))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(calls.len());
            for call in calls {
                let start = Instant::now();
                call.await?;
                times.push(start.elapsed());
            }
            anyhow::Ok(times)
        }));
    }
    let mut times = Vec::with_capacity(requests);
    for task in tasks {
        times.extend(task.await??);
    }
    Ok((times, started.elapsed()))
}
