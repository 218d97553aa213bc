//! The FAKE tokenizer and a policy driven as the host drives it: shared by the benchmarks,
//! the policy tests and the fuzz targets.

use std::sync::Arc;

pub use crate::byte_tokenizer::ByteTokenizer;
use discedge_core::policy::runtime::{Prepared, Prompt, Reply, Settings, TurnInput};
use discedge_core::policy::{Driven, HostServices, LoadedPolicy, PolicyRuntime, prepare_blocking};
use discedge_core::store::Record;
use serde_json::{Map, Value, json};

/// A conversation driven through one policy with fake model replies, as the host drives it.
pub struct Conversation {
    pub policy: Arc<LoadedPolicy>,
    pub runtime: Arc<PolicyRuntime>,
    pub services: Arc<dyn HostServices>,
    pub settings: Settings,
    pub records: Vec<Record>,
    pub turn: u32,
}

impl Conversation {
    /// Runs one turn: prepare, a fake reply of `reply_text`, commit; returns the prepared prompt.
    pub fn turn(&mut self, prompt: &str, reply_text: &str) -> Result<Prepared, String> {
        self.turn += 1;
        let input = turn_input(self.turn, prompt);
        let Driven {
            mut instance,
            prepared,
            ..
        } = prepare_blocking(
            &self.policy,
            &self.runtime,
            &self.services,
            &self.records,
            &input,
            &self.settings,
            None,
            |_| Ok(fake_answer(FAKE_SUMMARY)),
        )
        .map_err(|e| e.to_string())?;
        let reply = fake_reply(reply_text);
        let record = instance
            .commit(&input, &self.settings, &prepared.carry, &reply)
            .map_err(|e| e.to_string())?;
        self.records.extend(record.map(Record::from));
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

/// What the fake model answers a policy's own completion (`summarize`'s summary).
pub const FAKE_SUMMARY: &str = "The user and the assistant talked about the user's plans.";

/// llama-server's answer to a policy's completion, with `text` as what it generated.
fn fake_answer(text: &str) -> Map<String, Value> {
    let tokens = ByteTokenizer.tokenize(text, false).unwrap_or_default();
    let answer = json!({"content": text, "tokens": tokens, "stop_type": "eos"});
    answer.as_object().cloned().unwrap_or_default()
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
