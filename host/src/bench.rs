//! `discedge bench`: times the policy step of a request (instantiate + prepare + commit) for
//! every loaded policy on a stored context of a given size, and prints the figures.
//!
//! The tokenizer here is [`ByteTokenizer`], a fake (one token per byte), so the figures are the
//! policy's own cost; the model's tokenizer round trip is measured end to end, not here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::BenchArgs;
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
    tokio::task::spawn_blocking(move || bench(args)).await?
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
        "{:<14} {:>14} {:>10} {:>10} {:>10}",
        "policy", "context tokens", "median", "p90", "p99"
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
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "{:<14} {:>14} {:>10} {:>10} {:>10}",
            name,
            context,
            micros(at(0.5)),
            micros(at(0.9)),
            micros(at(0.99))
        );
    }
    Ok(())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
