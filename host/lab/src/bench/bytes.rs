//! Store bytes per turn: what our delta scheme writes for each turn of a 50-turn `tokenized`
//! conversation, against what a whole-context rewrite (the original DisCEdge's
//! `{"context":[ids...],"turn":N}` JSON) would write for the same context, in the same run.

use serde_json::{Value, json};

use super::{BenchProxy, turn_request};
use crate::args::BenchArgs;

const TURNS: u32 = 50;

/// Prints the `bytes` figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let proxy = BenchProxy::start(&args.plugins_dir, None).await?;
    let http = reqwest::Client::new();
    println!();
    println!(
        "store bytes per turn, tokenized mode, embedded store, FAKE model (one token per byte), {TURNS} turns"
    );
    println!(
        "{:>4} {:>8} {:>10} {:>12} {:>12} {:>12}",
        "turn", "tokens", "ours", "rewrite", "ours total", "rewrite total"
    );
    let (mut session, mut ours_total, mut rewrite_total) = (Value::Null, 0u64, 0u64);
    for turn in 1..=TURNS {
        let prompt = format!("Question {turn}: one fact about the number {turn}, please.");
        let (headers, reply) =
            turn_request(&http, &proxy.url, "tokenized", &session, turn, &prompt).await?;
        session = reply["session_id"].clone();
        let ours: u64 = headers
            .get("x-discedge-store-bytes")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("turn {turn}: no store bytes header"))?;
        // The whole context after this turn: every id the model saw, plus the ids it generated.
        let mut ids: Vec<Value> = proxy
            .fake
            .last_prompt_ids()
            .into_iter()
            .map(Value::from)
            .collect();
        ids.extend(crate::fake_llm::reply_ids().into_iter().map(Value::from));
        let rewrite = json!({"context": ids, "turn": turn}).to_string().len() as u64;
        ours_total += ours;
        rewrite_total += rewrite;
        if turn <= 3 || turn % 10 == 0 {
            println!(
                "{turn:>4} {:>8} {ours:>10} {rewrite:>12} {ours_total:>12} {rewrite_total:>12}",
                ids.len()
            );
        }
    }
    println!(
        "total over {TURNS} turns: ours {ours_total} B, whole-context rewrite {rewrite_total} B ({:.1}x more)",
        rewrite_total as f64 / ours_total.max(1) as f64
    );
    Ok(())
}
