//! `policy_boundary`: arbitrary stored records and requests through each shipped policy
//! (plugins/dist/*.wasm), instantiated and called through wasmtime exactly as the host does,
//! with `ByteTokenizer`, the FAKE one-token-per-byte tokenizer, as the model's tokenizer.
//!
//! A policy may decline anything (`CallFailure::Declined`: a 4xx/5xx the client sees); it must
//! never trap, since a trap is a bug in the policy. What it does accept must be right: the
//! prompt fits the window and is exactly the stored conversation plus the new message (minus
//! the turns truncate leaves out), and the record it stores makes the next turn's prompt
//! extend this one (the prompt cache property).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use discedge_core::policy::runtime::{ChatTemplate, Prepared, Prompt, Reply, Settings, TurnInput};
use discedge_core::policy::{
    CallFailure, Driven, HostServices, Limits, LoadedPolicy, PolicyRegistry, PolicyRuntime,
    prepare_blocking,
};
use discedge_core::store::Record;
use discedge_lab::bench::ByteTokenizer;
use discedge_policy_sdk::summary;
use discedge_policy_sdk::{
    Message, Pieces, Template, TokenRecord, choose_window, decode_messages, encode_messages,
    markers, neutralise_markers, opening_pieces, render_message, reply_opening, system_prompt,
    user_turn_pieces,
};
use discedge_server::config::TemplatePreset;

/// The shipped policies, in the order `PolicyCase::mode` picks them.
pub const MODES: [&str; 5] = ["raw", "tokenized", "truncate", "summarize", "client-side"];

/// One turn (and the one after it) of a session in one policy.
#[derive(Arbitrary, Debug)]
pub struct PolicyCase {
    /// Index into [`MODES`] (modulo).
    pub mode: u8,
    /// The session's stored records (ignored for policies that store nothing, as by the host).
    pub records: Vec<RecordInput>,
    pub prompt: String,
    pub turn: u32,
    pub n_ctx: Size,
    pub reply_budget: Size,
    pub template: TemplateInput,
    pub system_prompt: Option<String>,
    pub request_json: String,
    /// The model's reply text.
    pub reply: String,
    /// The ids the model generated; `None`: the fake tokenizer's ids of `reply`.
    pub reply_ids: Option<Vec<u32>>,
    /// The prompt of the turn after, served from the records this turn stored.
    pub next_prompt: String,
}

/// A stored record: any bytes, or a well-formed record of either shipped format, so that the
/// fuzzer gets past the decoders as easily as it gets into them.
#[derive(Arbitrary, Debug)]
pub enum RecordInput {
    Bytes(Vec<u8>),
    Tokens {
        /// Reduced modulo `tokens.len() + 1`, so the record decodes.
        pinned: u16,
        window_start: u8,
        tokens: Vec<u16>,
    },
    Messages(Vec<(String, String)>),
}

impl RecordInput {
    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.clone(),
            Self::Tokens {
                pinned,
                window_start,
                tokens,
            } => TokenRecord {
                pinned: (*pinned as usize % (tokens.len() + 1)) as u32,
                window_start: u32::from(*window_start),
                tokens: tokens.iter().map(|&id| u32::from(id)).collect(),
            }
            .encode(),
            Self::Messages(messages) => encode_messages(messages),
        }
    }
}

/// A size in tokens: mostly small (so windows fill up), sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Small(u16),
    Any(u32),
}

impl Size {
    fn get(self) -> u32 {
        match self {
            Self::Small(n) => u32::from(n),
            Self::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum TemplateInput {
    Chatml,
    Llama3,
    Custom {
        bos: String,
        prefix: String,
        suffix: String,
    },
}

impl TemplateInput {
    fn get(&self) -> ChatTemplate {
        let (bos, prefix, suffix) = match self {
            Self::Chatml => preset(TemplatePreset::Chatml),
            Self::Llama3 => preset(TemplatePreset::Llama3),
            Self::Custom {
                bos,
                prefix,
                suffix,
            } => (bos.as_str(), prefix.as_str(), suffix.as_str()),
        };
        ChatTemplate {
            bos: bos.into(),
            message_prefix: prefix.into(),
            message_suffix: suffix.into(),
        }
    }
}

struct Harness {
    runtime: Arc<PolicyRuntime>,
    registry: PolicyRegistry,
    services: Arc<dyn HostServices>,
}

/// Loads the shipped policies once per process (from `DISCEDGE_FUZZ_PLUGINS_DIR`, else
/// plugins/dist), with the host's default limits.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::var_os("DISCEDGE_FUZZ_PLUGINS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/dist"))
            });
        // Few instances are alive at once here; a small pool keeps the reservation small.
        let limits = Limits {
            instances: 8,
            ..Limits::default()
        };
        let runtime = PolicyRuntime::new(limits).expect("policy runtime");
        let services: Arc<dyn HostServices> = Arc::new(ByteTokenizer);
        let registry = PolicyRegistry::new(runtime.clone(), dir.clone(), None, services.clone());
        let report = registry.reload();
        for mode in MODES {
            assert!(
                registry.get(mode).is_some(),
                "{mode}.wasm not loaded from {} (run scripts/build-plugins.sh): {:?}",
                dir.display(),
                report.failed
            );
        }
        Harness {
            runtime,
            registry,
            services,
        }
    })
}

/// How far a case got; for the replay test's report of what the seeds reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The bytes are too short for a case.
    NoCase,
    /// The policy declined the turn (prepare or commit).
    Declined,
    /// One turn served; the policy stores nothing, or declined the next turn.
    OneTurn,
    /// This turn and the next one, from the record this turn stored, served.
    TwoTurns,
}

/// The fuzz target's input decoding (as `fuzz_target!` does for a typed input), then the case.
pub fn policy_boundary(data: &[u8]) -> (&'static str, Outcome) {
    match PolicyCase::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(case) => run_case(&case),
        Err(_) => ("-", Outcome::NoCase),
    }
}

/// Serves `case`'s turn and then the next one, as the host would, checking every answer.
/// Returns the mode and how far it got.
pub fn run_case(case: &PolicyCase) -> (&'static str, Outcome) {
    let h = harness();
    let mode = MODES[case.mode as usize % MODES.len()];
    let policy = h.registry.get(mode).expect("loaded");
    let stores = policy.info.stores_context;
    let mut records: Vec<Record> = if stores && mode == "summarize" {
        // summarize's records wrap a token record (here without a summary); raw bytes stay
        // as they are, to be refused.
        let wrap = |r: &RecordInput| match r {
            RecordInput::Bytes(bytes) => bytes.clone().into(),
            other => summary::encode(&other.encode(), None).into(),
        };
        case.records.iter().map(wrap).collect()
    } else if stores {
        case.records.iter().map(|r| r.encode().into()).collect()
    } else {
        Vec::new()
    };
    let mut settings = Settings {
        n_ctx: case.n_ctx.get(),
        reply_budget: case.reply_budget.get(),
        template: case.template.get(),
        // The host hands the system prompt only to a session's first turn.
        system_prompt: case.system_prompt.clone().filter(|_| records.is_empty()),
        request_json: case.request_json.clone(),
    };
    let input = TurnInput {
        session_id: "fuzz".into(),
        user_id: "fuzz".into(),
        turn: case.turn,
        prompt: case.prompt.clone(),
    };
    let Some((first, record)) = turn(h, &policy, &records, &input, &settings, case) else {
        return (mode, Outcome::Declined);
    };
    if !stores {
        return (mode, Outcome::OneTurn);
    }
    let record = record.unwrap_or_else(|| panic!("{mode} stored no record"));
    records.push(record.into());
    settings.system_prompt = None;
    let next = TurnInput {
        turn: case.turn.wrapping_add(1),
        prompt: case.next_prompt.clone(),
        ..input
    };
    let Some((second, _)) = turn(h, &policy, &records, &next, &settings, case) else {
        return (mode, Outcome::OneTurn);
    };
    // The turn after extends this prompt with the generated ids (unless truncate moved its
    // window), so llama-server's prompt cache hits: stored ids round-trip exactly.
    if let (Prompt::Tokens(first_ids), Prompt::Tokens(second_ids)) = (&first.prompt, &second.prompt)
        && first.dropped_records == second.dropped_records
    {
        let generated = reply_ids(case, &first);
        assert!(
            second_ids.starts_with(first_ids)
                && second_ids[first_ids.len()..].starts_with(&generated),
            "{mode}: the next prompt does not extend this prompt and its reply"
        );
    }
    (mode, Outcome::TwoTurns)
}

/// One turn on a fresh instance: prepare, a fake reply, commit. `None` when the policy declined.
fn turn(
    h: &Harness,
    policy: &LoadedPolicy,
    records: &[Record],
    input: &TurnInput,
    settings: &Settings,
    case: &PolicyCase,
) -> Option<(Prepared, Option<Vec<u8>>)> {
    let mode = &*policy.name;
    // A completion the policy asks for (summarize's summary) gets a fixed fake answer.
    let summary = "The user talked about plans.";
    let answer = serde_json::json!({
        "content": summary,
        "tokens": tokenize(summary),
        "stop_type": "eos",
    });
    let driven = prepare_blocking(
        policy,
        &h.runtime,
        &h.services,
        records,
        input,
        settings,
        None,
        |_| Ok(answer.as_object().cloned().unwrap_or_default()),
    );
    let Driven {
        mut instance,
        prepared,
        ..
    } = accepted(mode, "prepare", driven)?;
    check_prepared(mode, records, input, settings, &prepared);
    if !policy.info.stores_context {
        // The host never calls commit for a policy that stores nothing.
        return Some((prepared, None));
    }
    let reply = Reply {
        content: case.reply.clone(),
        tokens: reply_ids(case, &prepared),
        stop_type: "limit".into(),
    };
    let record = accepted(
        mode,
        "commit",
        instance.commit(input, settings, &prepared.carry, &reply),
    )?;
    if let Some(record) = &record {
        check_record(mode, record, &reply);
    }
    Some((prepared, record))
}

/// The ids the host hands to commit: only asked for with `want_reply_tokens`.
fn reply_ids(case: &PolicyCase, prepared: &Prepared) -> Vec<u32> {
    if !prepared.want_reply_tokens {
        return Vec::new();
    }
    case.reply_ids
        .clone()
        .unwrap_or_else(|| tokenize(&case.reply))
}

/// A declined call ends the turn; a trap is a bug in the policy and a crash for the fuzzer.
fn accepted<T>(mode: &str, call: &str, result: Result<T, CallFailure>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(CallFailure::Declined(_)) => None,
        Err(CallFailure::Trapped(why)) => panic!("policy {mode} trapped in {call}: {why}"),
        // One call at a time here: no free instance means the harness leaks them.
        Err(CallFailure::Busy(why)) => panic!("no policy instance for {mode} {call}: {why}"),
    }
}

/// A host preset's parts, exactly as `discedge serve --chat-template` uses them.
fn preset(preset: TemplatePreset) -> (&'static str, &'static str, &'static str) {
    preset.parts().expect("a preset, not custom")
}

fn tokenize(text: &str) -> Vec<u32> {
    ByteTokenizer.tokenize(text, true).expect("fake tokenizer")
}

/// Rendered messages as the token policies must tokenize them: control tokens in the
/// template's markup only, never in a message's text.
fn tokenize_pieces(pieces: &Pieces) -> Vec<u32> {
    pieces
        .iter()
        .flat_map(|(text, markup)| {
            ByteTokenizer
                .tokenize(text, markup)
                .expect("fake tokenizer")
        })
        .collect()
}

fn template(settings: &Settings) -> Template {
    let t = &settings.template;
    Template::new(&t.bos, &t.message_prefix, &t.message_suffix)
}

/// The prompt is exactly what the policy promises, and fits the window.
fn check_prepared(
    mode: &str,
    records: &[Record],
    input: &TurnInput,
    settings: &Settings,
    prepared: &Prepared,
) {
    let t = template(settings);
    let first_turn = records.is_empty();
    match mode {
        "client-side" => {
            assert!(
                matches!(prepared.prompt, Prompt::Unchanged),
                "{mode}: {prepared:?}"
            );
            assert!(!prepared.want_reply_tokens);
        }
        "raw" => {
            let Prompt::Text(text) = &prepared.prompt else {
                panic!("{mode}: not a text prompt: {prepared:?}");
            };
            assert!(!prepared.want_reply_tokens);
            let mut messages: Vec<Message> = records
                .iter()
                .flat_map(|r| decode_messages(r).expect("raw accepted an unreadable record"))
                .collect();
            if first_turn && let Some(system) = system_prompt(settings.system_prompt.as_deref()) {
                messages.push(("system".into(), system.into()));
            }
            messages.push(("user".into(), input.prompt.clone()));
            // Message text is sent with the template's markers broken (llama-server parses
            // control tokens in text), so no message can open a turn of its own.
            let markers = markers(&t);
            let mut expected = t.bos.clone();
            for (role, content) in &messages {
                let safe = neutralise_markers(&markers, content);
                assert!(!markers.iter().any(|m| safe.contains(m)));
                expected.push_str(&render_message(&t, role, &safe));
            }
            expected.push_str(&reply_opening(&t));
            assert!(
                *text == expected,
                "{mode}: the prompt is not the conversation"
            );
        }
        "tokenized" | "truncate" => {
            let ids = token_prompt(mode, prepared, settings);
            let history: Vec<TokenRecord> = records
                .iter()
                .map(|r| TokenRecord::decode(r).expect("accepted an unreadable record"))
                .collect();
            let new_ids = tokenize_pieces(&user_turn_pieces(&t, &input.prompt));
            let opening_ids =
                tokenize_pieces(&opening_pieces(&t, settings.system_prompt.as_deref()));
            let expected: Vec<u32> = if mode == "tokenized" {
                assert_eq!(prepared.dropped_records, 0, "{mode} dropped records");
                let new_ids = if first_turn {
                    // Turn 1 starts with the opening.
                    [opening_ids, new_ids].concat()
                } else {
                    new_ids
                };
                history
                    .iter()
                    .flat_map(|r| r.tokens.iter().copied())
                    .chain(new_ids)
                    .collect()
            } else {
                let start = prepared.dropped_records as usize;
                let opening_ids = match history.first() {
                    Some(first) => first.pinned_tokens().to_vec(),
                    None => opening_ids,
                };
                let previous = history.last().map_or(0, |r| r.window_start as usize);
                let lens: Vec<usize> = history.iter().map(|r| r.unpinned_tokens().len()).collect();
                let chosen = choose_window(
                    &lens,
                    opening_ids.len(),
                    previous,
                    new_ids.len(),
                    settings.reply_budget as usize,
                    settings.n_ctx as usize,
                );
                assert_eq!(
                    chosen,
                    Ok(start),
                    "{mode}: not the window choose_window picks"
                );
                opening_ids
                    .iter()
                    .chain(history[start..].iter().flat_map(|r| r.unpinned_tokens()))
                    .chain(&new_ids)
                    .copied()
                    .collect()
            };
            // The newest message is always in, whole, at the end (truncate keeps the newest turn).
            assert!(
                ids == expected.as_slice(),
                "{mode}: the prompt is not the kept conversation"
            );
        }
        "summarize" => {
            // The prompt is the opening, maybe a summary, the window's turns and the new
            // message: it fits, and starts and ends as the conversation does.
            let ids = token_prompt(mode, prepared, settings);
            let opening_ids = match records.first() {
                Some(first) => {
                    let (turn, _) = summary::split(first).expect("accepted an unreadable record");
                    TokenRecord::decode(turn).expect("accepted an unreadable record").pinned_tokens().to_vec()
                }
                None => tokenize_pieces(&opening_pieces(&t, settings.system_prompt.as_deref())),
            };
            let new_ids = tokenize_pieces(&user_turn_pieces(&t, &input.prompt));
            assert!(
                ids.starts_with(&opening_ids) && ids.ends_with(&new_ids),
                "{mode}: the prompt does not open the conversation or end with the new message"
            );
        }
        other => unreachable!("unknown mode {other}"),
    }
}

/// A token policy's prompt: ids, with the reply's ids asked for, leaving the reply budget free.
fn token_prompt<'p>(mode: &str, prepared: &'p Prepared, settings: &Settings) -> &'p [u32] {
    let Prompt::Tokens(ids) = &prepared.prompt else {
        panic!("{mode}: not a token prompt: {prepared:?}");
    };
    assert!(
        prepared.want_reply_tokens,
        "{mode} must ask for the reply's ids"
    );
    let needed = ids.len() as u64 + u64::from(settings.reply_budget);
    assert!(
        needed <= u64::from(settings.n_ctx),
        "{mode}: {} prompt tokens + {} reply budget > n_ctx {}",
        ids.len(),
        settings.reply_budget,
        settings.n_ctx
    );
    ids
}

/// What commit stores reads back in the policy's own format, with the reply in it.
fn check_record(mode: &str, record: &[u8], reply: &Reply) {
    match mode {
        "raw" => {
            let messages = decode_messages(record).expect("raw stored an unreadable record");
            let last = messages.last().expect("raw stored no message");
            assert!(
                last.0 == "assistant" && last.1 == reply.content,
                "raw did not store the reply last"
            );
        }
        "tokenized" | "truncate" | "summarize" => {
            // summarize's record wraps the token record the other two store.
            let turn = match mode {
                "summarize" => summary::split(record).expect("stored an unreadable record").0,
                _ => record,
            };
            let stored = TokenRecord::decode(turn).expect("stored an unreadable record");
            let ids = reply.tokens.as_slice();
            assert!(
                ids.is_empty() || stored.tokens.windows(ids.len()).any(|w| w == ids),
                "{mode} did not store the generated ids"
            );
        }
        other => unreachable!("{other} stores nothing"),
    }
}
