//! `discedge policy test FILE.wasm SCRIPT.yml`: a scenario's messages played through one
//! policy as one session, showing per turn the prompt the model gets, its reply, and the
//! record stored. The model is a real llama-server (`--llama-url`) or the lab's FAKE one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use discedge_core::gguf_tokenizer::TokenizerSource;
use discedge_core::llm::{BlockingTokenizer, LlamaServer, LlmBackend};
use discedge_core::policy::runtime::{Prepared, Prompt, Reply, Settings, TurnInput};
use discedge_core::policy::{
    HostServices, PolicyInstance, check_token_prompt, policy_reply, prepare_blocking,
};
use discedge_core::store::Record;
use discedge_lab::fake_llm::FakeLlm;
use discedge_lab::scenario::file::Scenario;
use serde_json::{Map, Value, json};

use crate::args::TestArgs;
use crate::load::{Opened, open};

/// Longest a record or prompt is shown; the rest is counted.
const SHOWN_CHARS: usize = 2000;

/// Plays the script; fails on the first turn the proxy would fail.
pub async fn run(args: TestArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.script)?;
    // The FAKE llama-server lives as long as this run.
    let mut _fake = None;
    let url = match &args.llama_url {
        Some(url) => url.clone(),
        None => {
            let fake = match &args.gguf {
                Some(gguf) => FakeLlm::start_with_model(gguf).await?,
                None => FakeLlm::start().await?,
            };
            let url = fake.url.clone();
            _fake = Some(fake);
            url
        }
    };
    // The plain fake names no model file: ask its /tokenize straight away rather than
    // warn that no local tokenizer could be found.
    let source = match (&args.llama_url, &args.gguf) {
        (None, None) => TokenizerSource::Http,
        _ => TokenizerSource::Auto,
    };
    let llm: Arc<dyn LlmBackend> =
        Arc::new(LlamaServer::new(&url, Duration::from_secs(300)).with_tokenizer(source));
    llm.prepare_tokenizer().await;
    let services: Arc<dyn HostServices> = Arc::new(BlockingTokenizer::new(
        llm.clone(),
        tokio::runtime::Handle::current(),
    ));
    let n_ctx = match args.window {
        Some(n) => n,
        None => llm
            .context_size()
            .await
            .ok()
            .flatten()
            .unwrap_or(args.model.n_ctx),
    };
    let vocab = llm.vocab_size().await.ok().flatten();
    let opened = {
        let (file, limits, services) = (args.file.clone(), args.limits.clone(), services.clone());
        Arc::new(tokio::task::spawn_blocking(move || open(&file, &limits, services)).await??)
    };
    let model = match &args.llama_url {
        Some(url) => format!("llama-server at {url}"),
        None => "the FAKE llama-server (fixed replies)".into(),
    };
    println!(
        "policy test: {} plays {:?} ({} turns) against {model}; window {n_ctx} tokens, tokenizer {}",
        opened.policy.label(),
        scenario.name,
        scenario.turns(),
        llm.tokenizer_status()["via"]
            .as_str()
            .unwrap_or("llama-server"),
    );
    let template = args.model.template().map_err(anyhow::Error::msg)?;
    let mut records: Vec<Record> = Vec::new();
    let messages = scenario
        .legs
        .iter()
        .flat_map(|leg| leg.messages.iter().map(move |m| (leg, m)));
    for (i, (leg, message)) in messages.enumerate() {
        let turn = i as u32 + 1;
        let where_ = if scenario.roaming {
            format!(" at {}", leg.node)
        } else {
            String::new()
        };
        println!("\n── turn {turn}{where_} ── user: {}", shown(message));
        let settings = Settings {
            n_ctx,
            reply_budget: args.n_predict,
            template: template.clone(),
            system_prompt: if turn == 1 {
                args.model.system_prompt.clone()
            } else {
                None
            },
            request_json: json!({"prompt": message, "n_predict": args.n_predict}).to_string(),
        };
        let input = TurnInput {
            session_id: "policy-test".into(),
            user_id: scenario
                .user_id
                .clone()
                .unwrap_or_else(|| "researcher".into()),
            turn,
            prompt: message.clone(),
        };
        let started = Instant::now();
        let (instance, prepared, input, settings, asked) = prepare(
            &opened,
            &services,
            &llm,
            vocab,
            records.clone(),
            input,
            settings,
        )
        .await?;
        let mut policy_time = started.elapsed();
        for (body, answer) in &asked {
            println!(
                "policy asked the model: {}",
                asked_prompt(&*llm, body).await
            );
            let content = answer
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            println!("model answered the policy: {}", shown(content));
        }
        let prompt = show_prompt(&*llm, &prepared, message, n_ctx, vocab).await?;
        let mut body = Map::new();
        body.insert("prompt".into(), prompt);
        body.insert("n_predict".into(), args.n_predict.into());
        body.insert("cache_prompt".into(), true.into());
        if prepared.want_reply_tokens {
            body.insert("return_tokens".into(), true.into());
        }
        let answer = llm.complete(&body).await.context("the model failed")?;
        let reply = read_reply(&answer, prepared.want_reply_tokens)?;
        println!("model: {}", shown(&reply.content));
        if !opened.policy.info.stores_context {
            println!("record: none (the policy stores nothing; commit is not called)");
            continue;
        }
        let started = Instant::now();
        let record = commit(instance, input, settings, prepared.carry, reply).await?;
        policy_time += started.elapsed();
        match record {
            Some(record) => {
                println!(
                    "record {}: {} bytes: {}",
                    records.len() + 1,
                    record.len(),
                    show_bytes(&record)
                );
                records.push(record.into());
            }
            None => println!("record: none for this turn"),
        }
        println!(
            "policy: {:.2} ms (instantiate + prepare + commit)",
            policy_time.as_secs_f64() * 1e3
        );
    }
    let bytes: usize = records.iter().map(Record::len).sum();
    println!(
        "\n{} turns played; the session holds {} records ({bytes} bytes)",
        scenario.turns(),
        records.len()
    );
    Ok(())
}

/// A completion's prompt as a reader wants it: a token prompt read back as text.
async fn asked_prompt(llm: &dyn LlmBackend, body: &Map<String, Value>) -> String {
    let prompt = body.get("prompt").cloned().unwrap_or_default();
    let ids: Option<Vec<u32>> = prompt.as_array().and_then(|ids| {
        ids.iter()
            .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect()
    });
    match ids {
        Some(ids) => match llm.detokenize(&ids).await {
            Ok(text) => format!("{} tokens: {}", ids.len(), shown(&text)),
            Err(_) => format!("{} tokens", ids.len()),
        },
        None => shown(prompt.as_str().unwrap_or_default()),
    }
}

/// What the policy asked the model before the turn's prompt: each body and answer.
type Asked = Vec<(Map<String, Value>, Map<String, Value>)>;

/// A fresh instance and its `prepare`, on a blocking thread as the proxy runs it, with the
/// completions a policy asks for first sent to the same model.
async fn prepare(
    opened: &Arc<Opened>,
    services: &Arc<dyn HostServices>,
    llm: &Arc<dyn LlmBackend>,
    vocab: Option<u32>,
    records: Vec<Record>,
    input: TurnInput,
    settings: Settings,
) -> anyhow::Result<(PolicyInstance, Prepared, TurnInput, Settings, Asked)> {
    let (opened, services, llm) = (opened.clone(), services.clone(), llm.clone());
    let turn = input.turn;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let driven = prepare_blocking(
            &opened.policy,
            &opened.runtime,
            &services,
            &records,
            &input,
            &settings,
            vocab,
            |body| {
                runtime
                    .block_on(llm.complete(body))
                    .map_err(|e| e.to_string())
            },
        )?;
        Ok((
            driven.instance,
            driven.prepared,
            input,
            settings,
            driven.asked,
        ))
    })
    .await?
    .map_err(|e: discedge_core::policy::CallFailure| {
        anyhow::anyhow!("turn {turn}: prepare failed: {e}")
    })
}

/// `commit` on the instance that prepared the turn.
async fn commit(
    mut instance: PolicyInstance,
    input: TurnInput,
    settings: Settings,
    carry: Vec<u8>,
    reply: Reply,
) -> anyhow::Result<Option<Vec<u8>>> {
    let turn = input.turn;
    tokio::task::spawn_blocking(move || instance.commit(&input, &settings, &carry, &reply))
        .await?
        .map_err(|e| anyhow::anyhow!("turn {turn}: commit failed: {e}"))
}

/// Prints the prompt the model gets and returns it as llama-server's `prompt`; a token
/// prompt the proxy would refuse fails the run.
async fn show_prompt(
    llm: &dyn LlmBackend,
    prepared: &Prepared,
    message: &str,
    n_ctx: u32,
    vocab: Option<u32>,
) -> anyhow::Result<Value> {
    let dropped = match prepared.dropped_records {
        0 => String::new(),
        n => format!(", leaving out the {n} oldest records"),
    };
    Ok(match &prepared.prompt {
        Prompt::Unchanged => {
            println!("prompt: the client's, unchanged{dropped}");
            Value::String(message.into())
        }
        Prompt::Text(text) => {
            let tokens = llm.tokenize(text, true).await.map_or(0, |ids| ids.len());
            println!(
                "prompt: text, {tokens} tokens{dropped}:\n{}",
                indented(&shown(text))
            );
            Value::String(text.clone())
        }
        Prompt::Tokens(ids) => {
            if let Err(why) = check_token_prompt(ids, n_ctx, vocab) {
                bail!("the proxy refuses this turn (policy_bad_output): the policy {why}");
            }
            let text = llm
                .detokenize(ids)
                .await
                .unwrap_or_else(|e| format!("(cannot detokenize: {e})"));
            println!(
                "prompt: {} token ids{dropped}, reading:\n{}",
                ids.len(),
                indented(&shown(&text))
            );
            Value::Array(ids.iter().map(|&id| id.into()).collect())
        }
    })
}

/// What the policy gets of llama-server's answer, read as the proxy reads it.
fn read_reply(answer: &Map<String, Value>, want_tokens: bool) -> anyhow::Result<Reply> {
    policy_reply(answer, want_tokens)
        .map_err(|what| anyhow::anyhow!("llama-server's reply has no {what}"))
}

/// Text cut to [`SHOWN_CHARS`].
fn shown(text: &str) -> String {
    let count = text.chars().count();
    if count <= SHOWN_CHARS {
        return text.into();
    }
    let head: String = text.chars().take(SHOWN_CHARS).collect();
    format!("{head}... ({} more characters)", count - SHOWN_CHARS)
}

fn indented(text: &str) -> String {
    text.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A record as text when it is UTF-8 (only control characters escaped), else as hex.
fn show_bytes(record: &[u8]) -> String {
    match std::str::from_utf8(record) {
        Ok(text) => shown(
            &text
                .chars()
                .flat_map(|c| {
                    let escaped = if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        vec![c]
                    };
                    escaped
                })
                .collect::<String>(),
        ),
        Err(_) => {
            let hex: String = record
                .iter()
                .take(SHOWN_CHARS / 2)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = record.len().saturating_sub(SHOWN_CHARS / 2);
            if more > 0 {
                format!("hex {hex}... ({more} more bytes)")
            } else {
                format!("hex {hex}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_as_text_or_hex() {
        assert_eq!(show_bytes(b"\"hi\"\n"), "\"hi\"\\n");
        assert_eq!(show_bytes(&[0xff, 0x00]), "hex ff00");
    }

    #[test]
    fn reply_needs_the_tokens_the_policy_asked_for() {
        let answer = json!({"content": "ok", "tokens": [1, 2], "stop_type": "eos"});
        let answer = answer.as_object().unwrap();
        assert_eq!(read_reply(answer, true).unwrap().tokens, [1, 2]);
        assert!(read_reply(answer, false).unwrap().tokens.is_empty());
        let bare = json!({"content": "ok"});
        assert!(read_reply(bare.as_object().unwrap(), true).is_err());
    }
}
