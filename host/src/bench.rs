//! `discedge bench`: figures for the proxy alone, printed.
//!
//! 1. The policy step of a request (new store + instantiate + prepare + commit) for every
//!    loaded policy on a stored context of a given size, with [`ByteTokenizer`], a FAKE
//!    tokenizer (one token per byte), so the figures are the policy's own cost.
//! 2. The latency the proxy adds to a turn: requests through a proxy on the embedded store
//!    against [`FakeLlm`], a FAKE llama-server that answers at once, compared with the same
//!    fake called directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use crate::config::{BenchArgs, Cli, Command};
use crate::fake_llm::FakeLlm;
use crate::policy::runtime::{Prepared, Prompt, Reply, Settings, TurnInput};
use crate::policy::{HostServices, Limits, LoadedPolicy, PolicyRegistry, PolicyRuntime};

/// A FAKE tokenizer for tests and benchmarks: one token per byte, plus ids above 255 for
/// `<|...|>` control tokens when `parse_special` is set. Deterministic and exactly invertible.
pub struct ByteTokenizer;

const SPECIALS: [&str; 6] = [
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

impl HostServices for ByteTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len());
        let mut at = 0;
        'outer: while at < bytes.len() {
            if parse_special {
                for (i, special) in SPECIALS.iter().enumerate() {
                    if bytes[at..].starts_with(special.as_bytes()) {
                        ids.push(256 + i as u32);
                        at += special.len();
                        continue 'outer;
                    }
                }
            }
            ids.push(u32::from(bytes[at]));
            at += 1;
        }
        Ok(ids)
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        let mut bytes = Vec::with_capacity(tokens.len());
        for &id in tokens {
            match id {
                0..=255 => bytes.push(id as u8),
                _ => bytes.extend_from_slice(
                    SPECIALS
                        .get(id as usize - 256)
                        .ok_or(format!("unknown token {id}"))?
                        .as_bytes(),
                ),
            }
        }
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

/// A conversation driven through one policy with fake model replies, as the host drives it.
pub struct Conversation {
    pub policy: Arc<LoadedPolicy>,
    pub runtime: Arc<PolicyRuntime>,
    pub services: Arc<dyn HostServices>,
    pub settings: Settings,
    pub records: Vec<Vec<u8>>,
    pub turn: u32,
}

impl Conversation {
    /// Runs one turn: prepare, a fake reply of `reply_text`, commit; returns the prepared prompt.
    pub fn turn(&mut self, prompt: &str, reply_text: &str) -> Result<Prepared, String> {
        self.turn += 1;
        let input = turn_input(self.turn, prompt);
        let mut instance = self
            .policy
            .instantiate(&self.runtime, self.services.clone())
            .map_err(|e| e.to_string())?;
        let prepared = instance
            .prepare(&self.records, &input, &self.settings)
            .map_err(|e| e.to_string())?;
        let reply = fake_reply(reply_text);
        let record = instance
            .commit(&input, &self.settings, &prepared.carry, &reply)
            .map_err(|e| e.to_string())?;
        self.records.extend(record);
        Ok(prepared)
    }
}

fn turn_input(turn: u32, prompt: &str) -> TurnInput {
    TurnInput {
        session_id: "bench".into(),
        user_id: "bench".into(),
        turn,
        prompt: prompt.into(),
    }
}

/// What the model would return, tokenized by the fake tokenizer (not through the policy's host).
fn fake_reply(text: &str) -> Reply {
    Reply {
        content: text.into(),
        tokens: ByteTokenizer.tokenize(text, true).unwrap_or_default(),
        stop_type: "limit".into(),
    }
}

/// The prompt's length in tokens as the fake tokenizer counts it.
pub fn prompt_tokens(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Unchanged => 0,
        Prompt::Text(text) => ByteTokenizer
            .tokenize(text, true)
            .map_or(0, |ids| ids.len()),
        Prompt::Tokens(ids) => ids.len(),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let policy_args = args.clone();
    tokio::task::spawn_blocking(move || bench(policy_args)).await??;
    added_latency(&args).await
}

/// Median and 99th percentile of some durations (sorted in place).
fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99))
}

/// Timed turns per session in the added-latency figures.
const TURNS_PER_SESSION: usize = 5;

async fn added_latency(args: &BenchArgs) -> anyhow::Result<()> {
    let fake = FakeLlm::start().await?;
    let data =
        std::env::temp_dir().join(format!("discedge-bench-{}", uuid::Uuid::new_v4().simple()));
    let argv = [
        "discedge",
        "serve",
        "--store",
        "embedded",
        "--no-watch",
        "--data-dir",
        &data.display().to_string(),
        "--plugins-dir",
        &args.plugins_dir.display().to_string(),
        "--llama-url",
        &fake.url,
    ];
    let Command::Serve(serve) = Cli::parse_from(argv).command else {
        unreachable!("parsed a serve command")
    };
    let node = crate::serve::build(&serve).await?;
    let app = crate::api::router(node.proxy.clone(), serve.max_body_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/completion", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let history = "x".repeat(args.context_tokens);

    let mut direct = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        let start = Instant::now();
        http.post(format!("{}/completion", fake.url))
            .json(&json!({"prompt": history}))
            .send()
            .await?
            .bytes()
            .await?;
        direct.push(start.elapsed());
    }
    let (direct_median, direct_p99) = percentiles(&mut direct);
    println!();
    println!(
        "added latency per turn: proxy (embedded store) -> FAKE llama-server, 1 client, {} requests per mode",
        args.requests
    );
    println!(
        "{:<14} {:>14} {:>10} {:>10} {:>10}",
        "", "context tokens", "median", "p99", "added"
    );
    println!(
        "{:<14} {:>14} {:>10} {:>10} {:>10}",
        "direct",
        args.context_tokens,
        micros(direct_median),
        micros(direct_p99),
        "-"
    );
    let user = "Tell me more about how matrices are multiplied, step by step, please.";
    for mode in node.proxy.policies.names() {
        let stores = node
            .proxy
            .policies
            .get(&mode)
            .is_some_and(|p| p.info.stores_context);
        // Sessions filled to just under the context size, then served round robin, a few
        // turns each, so the timed turns see about `context_tokens` of stored context.
        let count = args.requests.div_ceil(TURNS_PER_SESSION);
        let fill = args.context_tokens.saturating_sub(TURNS_PER_SESSION * 60) as u64;
        let mut sessions = Vec::new();
        for _ in 0..count {
            let (mut session, mut turn, mut context) = (Value::Null, 0u32, 0u64);
            while stores && context < fill {
                turn += 1;
                let reply = turn_request(&http, &url, &mode, &session, turn, user).await?;
                session = reply["session_id"].clone();
                context = reply["timings"]["prompt_n"].as_u64().unwrap_or(0);
            }
            sessions.push((session, turn, context));
        }
        let mut times = Vec::with_capacity(args.requests);
        for i in 0..args.requests {
            let (session, turn, context) = &mut sessions[i % count];
            *turn += 1;
            let prompt = if stores { user } else { history.as_str() };
            let start = Instant::now();
            let reply = turn_request(&http, &url, &mode, session, *turn, prompt).await?;
            times.push(start.elapsed());
            *session = reply["session_id"].clone();
            *context = reply["timings"]["prompt_n"].as_u64().unwrap_or(0);
        }
        let context = sessions.iter().map(|s| s.2).sum::<u64>() / sessions.len() as u64;
        let (median, p99) = percentiles(&mut times);
        let added = median.saturating_sub(direct_median);
        println!(
            "{:<14} {:>14} {:>10} {:>10} {:>10}",
            mode,
            context,
            micros(median),
            micros(p99),
            micros(added)
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

async fn turn_request(
    http: &reqwest::Client,
    url: &str,
    mode: &str,
    session: &Value,
    turn: u32,
    prompt: &str,
) -> anyhow::Result<Value> {
    let body = json!({"mode": mode, "session_id": session, "turn": turn, "prompt": prompt, "n_predict": 32});
    let reply: Value = http.post(url).json(&body).send().await?.json().await?;
    anyhow::ensure!(reply.get("error").is_none(), "{mode} turn {turn}: {reply}");
    Ok(reply)
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = PolicyRuntime::new(Limits::default())?;
    let services: Arc<dyn HostServices> = Arc::new(ByteTokenizer);
    let registry = PolicyRegistry::new(
        runtime.clone(),
        args.plugins_dir.clone(),
        None,
        services.clone(),
    );
    let report = registry.reload();
    anyhow::ensure!(
        !registry.is_empty(),
        "no policies in {}: {:?}",
        args.plugins_dir.display(),
        report.failed
    );
    let settings = Settings {
        // Roomy enough that no policy truncates: we time a full context of the given size.
        n_ctx: (args.context_tokens * 4) as u32,
        reply_budget: 128,
        template: args.model.template().map_err(anyhow::Error::msg)?,
        system_prompt: Some("You are a helpful assistant.".into()),
        request_json: "{}".into(),
    };
    let user =
        "Tell me more about how matrices are multiplied, step by step, with an example. ".repeat(2);
    let reply =
        "Multiply each row of the first matrix by each column of the second and sum. ".repeat(3);
    println!(
        "policy step (new store + instantiate + prepare + commit), {} iterations, fake byte tokenizer",
        args.iterations
    );
    println!(
        "{:<14} {:>14} {:>10} {:>10}",
        "policy", "context tokens", "median", "p99"
    );
    for name in registry.names() {
        let policy = registry.get(&name).expect("listed");
        let mut conversation = Conversation {
            policy,
            runtime: runtime.clone(),
            services: services.clone(),
            settings: settings.clone(),
            records: Vec::new(),
            turn: 0,
        };
        let mut context = 0;
        while context < args.context_tokens && conversation.policy.info.stores_context {
            let prepared = conversation
                .turn(&user, &reply)
                .map_err(anyhow::Error::msg)?;
            context = prompt_tokens(&prepared.prompt) + reply.len();
        }
        let (records, turn) = (conversation.records.clone(), conversation.turn);
        let mut times = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            conversation.records.clone_from(&records);
            conversation.turn = turn;
            let start = Instant::now();
            conversation
                .turn(&user, &reply)
                .map_err(anyhow::Error::msg)?;
            times.push(start.elapsed());
        }
        let (median, p99) = percentiles(&mut times);
        println!(
            "{:<14} {:>14} {:>10} {:>10}",
            name,
            context,
            micros(median),
            micros(p99)
        );
    }
    Ok(())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
