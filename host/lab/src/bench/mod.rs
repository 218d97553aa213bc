//! `discedge bench`: figures for the proxy alone, printed. Every figure runs against FAKE
//! parts (a one-token-per-byte tokenizer, a llama-server stand-in that answers at once), so it
//! measures the proxy, not the model:
//!
//! - `policy`: the policy step of a request (new store + instantiate + prepare + commit) at
//!   several context sizes;
//! - `latency`: the latency a proxy on the embedded store adds to a turn, at several numbers
//!   of concurrent sessions, and requests per second;
//! - `stream`: time to the first event and to the end of a streamed turn, added to the model's;
//! - `swap`: how soon a replaced policy serves, and failed requests during swaps under load;
//! - `bytes`: store bytes per turn for 50 turns, our delta scheme against a whole-context
//!   rewrite, in the same run.

mod bytes;
mod conversation;
mod floors;
mod latency;
mod policy_step;
mod stream;
mod swap;

use std::time::Duration;

use serde_json::{Value, json};

pub use conversation::{ByteTokenizer, Conversation, prompt_tokens};
pub use swap::new_build;

use crate::args::BenchArgs;
use crate::fake_llm::FakeLlm;
use discedge_server::serve::Node;

/// `discedge bench`: every figure asked for, printed.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    if wanted("policy") {
        let policy_args = args.clone();
        tokio::task::spawn_blocking(move || policy_step::run(&policy_args)).await??;
    }
    if wanted("latency") {
        latency::run(&args).await?;
    }
    if wanted("stream") {
        stream::run(&args).await?;
    }
    if wanted("swap") {
        swap::run(&args).await?;
    }
    if wanted("bytes") {
        bytes::run(&args).await?;
    }
    Ok(())
}

/// A proxy on the embedded store in a temporary folder, serving on loopback, in front of a
/// fresh [`FakeLlm`]; removed when dropped.
struct BenchProxy {
    url: String,
    fake: FakeLlm,
    node: Node,
    data: std::path::PathBuf,
}

impl BenchProxy {
    /// `fake_model`: the fake tokenizes with this GGUF, so the proxy tokenizes locally (as
    /// next to a real llama-server) instead of asking the fake's `/tokenize`.
    async fn start(
        plugins_dir: &std::path::Path,
        fake_model: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let fake = match fake_model {
            Some(gguf) => FakeLlm::start_with_model(gguf).await?,
            None => FakeLlm::start().await?,
        };
        let data =
            std::env::temp_dir().join(format!("discedge-bench-{}", uuid::Uuid::new_v4().simple()));
        let argv = [
            "discedge",
            "serve",
            "--store",
            "embedded",
            "--data-dir",
            &data.display().to_string(),
            "--plugins-dir",
            &plugins_dir.display().to_string(),
            "--llama-url",
            &fake.url,
        ];
        let local = discedge_server::serve::start_local(&argv).await?;
        let (node, url) = (local.node, format!("http://{}/completion", local.addr));
        if fake_model.is_some() {
            let llm = &node.proxy.llm;
            let started = std::time::Instant::now();
            while llm.tokenizer_status()["via"] != "local" {
                if started.elapsed() > std::time::Duration::from_secs(20) {
                    anyhow::bail!(
                        "the proxy does not tokenize locally: {}",
                        llm.tokenizer_status()
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(Self {
            url,
            fake,
            node,
            data,
        })
    }
}

impl Drop for BenchProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Sends one turn; returns the reply's headers and body, or why it failed.
async fn turn_request(
    http: &reqwest::Client,
    url: &str,
    mode: &str,
    session: &Value,
    turn: u32,
    prompt: &str,
) -> anyhow::Result<(reqwest::header::HeaderMap, Value)> {
    let body = json!({"mode": mode, "session_id": session, "turn": turn, "prompt": prompt, "n_predict": 32});
    let reply = http.post(url).json(&body).send().await?;
    let headers = reply.headers().clone();
    let reply: Value = reply.json().await?;
    anyhow::ensure!(reply.get("error").is_none(), "{mode} turn {turn}: {reply}");
    Ok((headers, reply))
}

/// Median and 99th percentile of some durations (sorted in place).
fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99))
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
