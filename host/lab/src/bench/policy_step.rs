//! The policy step of a request through wasmtime, at several stored-context sizes.

use std::sync::Arc;
use std::time::Instant;

use super::{ByteTokenizer, Conversation, micros, percentiles, prompt_tokens};
use crate::args::BenchArgs;
use discedge_core::policy::runtime::Settings;
use discedge_core::policy::{HostServices, Limits, PolicyRegistry, PolicyRuntime};

/// Prints the `policy` figures.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
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
    println!(
        "policy step (new store + instantiate + prepare + commit), {} iterations, FAKE byte tokenizer",
        args.iterations
    );
    println!(
        "{:<14} {:>14} {:>10} {:>10}",
        "policy", "context tokens", "median", "p99"
    );
    for &size in &args.sizes {
        // Turns of about a fifth of the context (at most ~400 tokens), so small contexts are
        // reached closely and large ones in a realistic number of turns.
        let turn_bytes = (size / 5).clamp(16, 400);
        let user: String = "Tell me more about matrices, step by step. "
            .chars()
            .cycle()
            .take(turn_bytes / 2)
            .collect();
        let reply: String = "Multiply rows by columns and sum them up. "
            .chars()
            .cycle()
            .take(turn_bytes / 2)
            .collect();
        let settings = Settings {
            // Roomy enough that no policy truncates: we time a full context of this size.
            n_ctx: (size * 4 + 2048) as u32,
            reply_budget: 128,
            template: args.model.template().map_err(anyhow::Error::msg)?,
            system_prompt: Some("You are a helpful assistant.".into()),
            request_json: "{}".into(),
        };
        for name in registry.names() {
            let mut conversation = Conversation {
                policy: registry.get(&name).expect("listed"),
                runtime: runtime.clone(),
                services: services.clone(),
                settings: settings.clone(),
                records: Vec::new(),
                turn: 0,
            };
            let mut context = 0;
            while context < size && conversation.policy.info.stores_context {
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
    }
    Ok(())
}
