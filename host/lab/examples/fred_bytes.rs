//! Bytes written to FReD per turn, ours against the whole-context rewrite the original
//! DisCEdge did, for a 50-turn `tokenized` conversation in one run.
//!
//! Runs two FReD-compatible TEST nodes (`fred-testnode`; not FReD) in this process and one
//! proxy on node A, against a real llama-server:
//!
//!     cargo run --release -p discedge --example fred_bytes -- http://127.0.0.1:8081 [TURNS]
//!
//! "ours" is what the proxy wrote to its FReD node (record delta + head), read from the test
//! node's counters; "original" is the JSON the original wrote each turn for the same tokens,
//! `{"context":[ids...],"turn":N}`, computed from the session's stored token ids.

mod support;

use discedge_policy_sdk::TokenRecord;
use fred_testnode::{Cluster, TestPki};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let llama = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8081".into());
    let turns: u32 = args.get(2).map_or(Ok(50), |t| t.parse())?;
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "proxy"])?;
    let cluster = Cluster::new();
    let node_a = cluster
        .start_node("nodeA", "127.0.0.1:0".parse()?, pki.node_tls("nodeA"))
        .await?;
    let node_b = cluster
        .start_node("nodeB", "127.0.0.1:0".parse()?, pki.node_tls("nodeB"))
        .await?;
    let argv = support::fred_proxy_argv(
        &pki,
        "proxy",
        "nodeA",
        &node_a.addr().to_string(),
        &llama,
        dir.path(),
        &[],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let local = discedge_server::serve::start_local(&argv).await?;
    let (node, url) = (local.node, format!("http://{}/completion", local.addr));
    let http = reqwest::Client::new();

    println!(
        "bytes written to FReD per turn, tokenized mode, n_predict 16 (FReD test nodes, real llama-server)"
    );
    println!(
        "{:>4} {:>8} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "turn", "tokens", "ours", "replicated", "original", "ours (total)", "orig (total)"
    );
    let (mut session, mut ours_total, mut original_total) = (Value::Null, 0u64, 0u64);
    for turn in 1..=turns {
        let before = (
            node_a.stats().bytes_written,
            node_b.stats().bytes_replicated_in,
        );
        let body = json!({"mode": "tokenized", "session_id": session, "turn": turn, "n_predict": 16,
                          "temperature": 0, "seed": 42, "prompt": format!("One fact about {turn}?")});
        let reply: Value = http.post(&url).json(&body).send().await?.json().await?;
        anyhow::ensure!(reply.get("error").is_none(), "turn {turn}: {reply}");
        session = reply["session_id"].clone();
        let ours = node_a.stats().bytes_written - before.0;
        let replicated = node_b.stats().bytes_replicated_in - before.1;
        let stored = node
            .proxy
            .store
            .load(session.as_str().unwrap())
            .await?
            .expect("stored");
        let mut ids = Vec::new();
        for record in &stored.records {
            ids.extend(
                TokenRecord::decode(record)
                    .map_err(anyhow::Error::msg)?
                    .tokens,
            );
        }
        let original = json!({"context": ids, "turn": turn}).to_string().len() as u64;
        ours_total += ours;
        original_total += original;
        println!(
            "{turn:>4} {:>8} {ours:>10} {replicated:>10} {original:>12} {ours_total:>14} {original_total:>10}",
            ids.len()
        );
    }
    let stored = node
        .proxy
        .store
        .load(session.as_str().unwrap())
        .await?
        .expect("stored");
    let record_bytes: usize = stored
        .records
        .iter()
        .map(|r| "nodeA.".len() + (r.len() * 4).div_ceil(3))
        .sum();
    let tokens: usize = stored
        .records
        .iter()
        .map(|r| TokenRecord::decode(r).map_or(0, |t| t.tokens.len()))
        .sum();
    let decimal = json!(
        stored
            .records
            .iter()
            .flat_map(|r| TokenRecord::decode(r).unwrap().tokens)
            .collect::<Vec<_>>()
    )
    .to_string()
    .len();
    println!(
        "records on the wire: {record_bytes} B for {tokens} tokens = {:.2} B/token (JSON decimal: {:.2} B/token)",
        record_bytes as f64 / tokens as f64,
        decimal as f64 / tokens as f64
    );
    let stats = node_a.stats();
    println!(
        "total: ours {ours_total} B, original {original_total} B ({:.1}x less); FReD calls on node A: {:?}",
        original_total as f64 / ours_total.max(1) as f64,
        stats.calls
    );
    Ok(())
}
