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
    let (floor, floor_p99) = super::floors::fsync_floor(&proxy.data)?;
    println!(
        "this machine's floors: one 4 KB write + fdatasync in the store's folder {} (p99 {}), \
         under every stored turn's write; one loopback HTTP exchange: the `direct` column, and \
         a proxied turn makes two",
        super::micros(floor),
        super::micros(floor_p99)
    );
    println!(
        "{:<12} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "mode", "clients", "median", "p99", "direct", "added", "req/s"
    );
    for &clients in &args.concurrency {
        let requests = args.requests.max(clients * TURNS_PER_SESSION);
        let (mut direct, _, _) = timed(clients, requests, |_, _| {
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
                Ok(None)
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
            let (mut times, elapsed, stages) = timed(clients, requests, |client, i| {
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
                    let (headers, _) =
                        turn_request(&http, &url, &mode, id, turn + 1 + slot as u32, prompt)
                            .await?;
                    Ok(headers
                        .get("server-timing")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned))
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
            println!("{:<20} {}", "", stage_medians(&stages));
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

/// The median of each part of the proxy's `Server-Timing` over some turns, in the order the
/// parts come: where the added time goes (store-read, policy, llm, store-write).
fn stage_medians(headers: &[String]) -> String {
    let mut parts: Vec<(String, Vec<f64>)> = Vec::new();
    for header in headers {
        for part in header.split(',') {
            let mut fields = part.trim().split(';');
            let name = fields.next().unwrap_or_default();
            let Some(ms) = fields.find_map(|f| f.trim().strip_prefix("dur=")?.parse::<f64>().ok())
            else {
                continue;
            };
            match parts.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(ms),
                None => parts.push((name.to_owned(), vec![ms])),
            }
        }
    }
    let medians: Vec<String> = parts
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(f64::total_cmp);
            format!("{name} {:.1} µs", values[values.len() / 2] * 1000.0)
        })
        .collect();
    format!("medians: {}", medians.join(", "))
}

/// Runs `requests` calls from `clients` concurrent clients (client `c` makes calls c,
/// c + clients, ... in order); returns each call's time, the wall time of all, and the
/// `Server-Timing` each call returned, if any.
async fn timed<F, Fut>(
    clients: usize,
    requests: usize,
    call: F,
) -> anyhow::Result<(Vec<Duration>, Duration, Vec<String>)>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<String>>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let calls: Vec<Fut> = (client..requests)
            .step_by(clients)
            .map(|i| call(client, i))
            .collect();
        tasks.push(tokio::spawn(async move {
            let (mut times, mut stages) = (Vec::with_capacity(calls.len()), Vec::new());
            for call in calls {
                let start = Instant::now();
                stages.extend(call.await?);
                times.push(start.elapsed());
            }
            anyhow::Ok((times, stages))
        }));
    }
    let (mut times, mut stages) = (Vec::with_capacity(requests), Vec::new());
    for task in tasks {
        let (t, s) = task.await??;
        times.extend(t);
        stages.extend(s);
    }
    Ok((times, started.elapsed(), stages))
}
