//! Each shipped policy, run through wasmtime exactly as the host runs it (fresh instance per
//! turn, records fed back in), with `ByteTokenizer`, the FAKE one-token-per-byte tokenizer.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use discedge_core::policy::runtime::{ChatTemplate, Prompt, Settings};
use discedge_core::policy::{HostServices, Limits, PolicyRegistry, PolicyRuntime};
use discedge_lab::bench::{ByteTokenizer, Conversation};

/// The fake tokenizer, remembering every text it was asked to tokenize.
#[derive(Default)]
struct CountingTokenizer {
    texts: Mutex<Vec<String>>,
}

impl HostServices for CountingTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        self.texts.lock().unwrap().push(text.to_owned());
        ByteTokenizer.tokenize(text, parse_special)
    }
    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        ByteTokenizer.detokenize(tokens)
    }
}

fn chatml() -> ChatTemplate {
    ChatTemplate {
        bos: String::new(),
        message_prefix: "<|im_start|>{role}\n".into(),
        message_suffix: "<|im_end|>\n".into(),
    }
}

fn settings(n_ctx: u32) -> Settings {
    Settings {
        n_ctx,
        reply_budget: 32,
        template: chatml(),
        system_prompt: Some("Be brief.".into()),
        request_json: "{}".into(),
    }
}

/// One runtime and registry of the shipped policies for every test here: an engine, its
/// instance pool and the loads are set up once. Each conversation brings its own tokenizer
/// (the registry's is only used by the load-time check).
fn shipped() -> &'static (Arc<PolicyRuntime>, PolicyRegistry) {
    static SHIPPED: OnceLock<(Arc<PolicyRuntime>, PolicyRegistry)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let runtime = PolicyRuntime::new(Limits::default()).unwrap();
        let registry = PolicyRegistry::new(
            runtime.clone(),
            common::shipped_plugins(),
            Some(common::POLICY_CACHE.into()),
            Arc::new(ByteTokenizer),
        );
        let report = registry.reload();
        assert!(report.failed.is_empty(), "{report:?}");
        (runtime, registry)
    })
}

fn conversation(mode: &str, n_ctx: u32) -> (Conversation, Arc<CountingTokenizer>) {
    let (runtime, registry) = shipped();
    let tokenizer = Arc::new(CountingTokenizer::default());
    let conversation = Conversation {
        policy: registry.get(mode).unwrap(),
        runtime: runtime.clone(),
        services: tokenizer.clone(),
        settings: settings(n_ctx),
        records: Vec::new(),
        turn: 0,
    };
    (conversation, tokenizer)
}

fn text(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Tokens(ids) => ByteTokenizer.detokenize(ids).unwrap(),
        Prompt::Unchanged => panic!("expected a prompt"),
    }
}

fn ids(prompt: &Prompt) -> Vec<u32> {
    match prompt {
        Prompt::Tokens(ids) => ids.clone(),
        other => panic!("expected token ids, got {other:?}"),
    }
}

#[test]
fn raw_renders_the_whole_history_with_the_template() {
    let (mut c, _) = conversation("raw", 2048);
    c.turn("Hi", "Hello!").unwrap();
    c.turn("How are you?", "Fine.").unwrap();
    let third = c.turn("Bye", "Goodbye.").unwrap();
    assert_eq!(
        text(&third.prompt),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\nFine.<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(!third.want_reply_tokens);
    assert_eq!(c.records.len(), 3, "one record per turn");
}

#[test]
fn tokenized_extends_the_previous_prompt_and_tokenizes_only_new_text() {
    let (mut c, tokenizer) = conversation("tokenized", 4096);
    let mut previous: Option<(Vec<u32>, Vec<u32>)> = None;
    for turn in 1..=8 {
        let reply = format!("Reply number {turn}.");
        tokenizer.texts.lock().unwrap().clear();
        let prepared = c.turn(&format!("Question {turn}?"), &reply).unwrap();
        assert!(prepared.want_reply_tokens);
        let prompt = ids(&prepared.prompt);
        if let Some((before, generated)) = &previous {
            assert!(
                prompt.starts_with(before),
                "turn {turn}: prompt does not extend the previous prompt"
            );
            assert!(
                prompt[before.len()..].starts_with(generated),
                "turn {turn}: generated ids not kept as they were"
            );
        }
        let tokenized: usize = tokenizer
            .texts
            .lock()
            .unwrap()
            .iter()
            .map(String::len)
            .sum();
        assert!(
            tokenized < 120,
            "turn {turn}: {tokenized} bytes tokenized: stored context was re-tokenized"
        );
        previous = Some((prompt, ByteTokenizer.tokenize(&reply, false).unwrap()));
    }
    let last = text(&c.turn("Last?", "Yes.").unwrap().prompt);
    assert!(
        last.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQuestion 1?"),
        "{last}"
    );
    assert_eq!(
        last.matches("<|im_end|><|im_end|>").count(),
        0,
        "no doubled end markers: {last}"
    );
}

#[test]
fn tokenized_does_not_duplicate_an_end_marker_the_model_generated() {
    let (mut c, _) = conversation("tokenized", 4096);
    c.turn("Hi", "Hello!<|im_end|>")
        .unwrap_or_else(|e| panic!("{e}"));
    // The fake reply's ids include `<|im_end|>` only when tokenized with specials, as llama-server returns it.
    let second = text(&c.turn("Again", "Sure.").unwrap().prompt);
    assert!(!second.contains("<|im_end|><|im_end|>"), "{second}");
}

#[test]
fn truncate_stays_in_the_window_and_keeps_system_prompt_and_new_message() {
    let n_ctx = 600;
    let (mut c, _) = conversation("truncate", n_ctx);
    let mut dropped_any = false;
    let mut previous: Option<Vec<u32>> = None;
    for turn in 1..=50 {
        let question =
            format!("Question {turn}: tell me something about the number {turn}, please.");
        let prepared = c
            .turn(&question, &"An answer with some words in it. ".repeat(2))
            .unwrap();
        let prompt = ids(&prepared.prompt);
        assert!(
            prompt.len() as u32 + 32 <= n_ctx,
            "turn {turn}: {} tokens + 32 > {n_ctx}",
            prompt.len()
        );
        let text = text(&prepared.prompt);
        assert!(
            text.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"),
            "turn {turn}: {text}"
        );
        assert!(
            text.ends_with(&format!("{question}<|im_end|>\n<|im_start|>assistant\n")),
            "turn {turn}"
        );
        if prepared.dropped_records > 0 {
            dropped_any = true;
            assert!(
                text.contains("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"),
                "whole turns only"
            );
        }
        if let Some(before) = &previous {
            // Between truncations the prompt extends the previous one, so the prompt cache hits.
            if prompt.starts_with(&before[..before.len().min(40)]) && prepared.dropped_records == 0
            {
                assert!(prompt.starts_with(before), "turn {turn}");
            }
        }
        previous = Some(prompt);
    }
    assert!(dropped_any, "50 turns in a 600-token window must drop some");
}

#[test]
fn client_side_forwards_and_stores_nothing() {
    let (mut c, tokenizer) = conversation("client-side", 2048);
    assert!(!c.policy.info.stores_context);
    let prepared = c.turn("<|im_start|>user\nHi<|im_end|>\n", "Hello").unwrap();
    assert!(matches!(prepared.prompt, Prompt::Unchanged));
    assert!(c.records.is_empty());
    assert!(
        tokenizer.texts.lock().unwrap().is_empty(),
        "nothing tokenized"
    );
}

#[test]
fn unreadable_records_are_a_policy_error_not_a_trap() {
    for mode in ["raw", "tokenized", "truncate"] {
        let (mut c, _) = conversation(mode, 2048);
        c.records = vec![vec![1, 2, 3].into()];
        c.turn = 1;
        let error = c.turn("Hi", "Hello").unwrap_err();
        assert!(error.contains("Internal"), "{mode}: {error}");
    }
}

/// Renders the conversation's records through the policy's optional `history` export.
fn render(c: &Conversation) -> Option<Vec<(String, String)>> {
    let mut instance = c
        .policy
        .instantiate(&c.runtime, c.services.clone())
        .unwrap();
    instance
        .render(&c.records, &c.settings)
        .unwrap_or_else(|e| panic!("render: {e}"))
}

fn messages(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(role, content)| (role.to_string(), content.to_string()))
        .collect()
}

#[test]
fn stored_sessions_render_as_the_messages_of_every_turn() {
    let expected = messages(&[
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "How are you?\nWell?"),
        ("assistant", "Fine."),
        ("user", "Bye"),
        ("assistant", "Goodbye."),
    ]);
    for mode in ["raw", "tokenized", "truncate"] {
        let (mut c, _) = conversation(mode, 2048);
        assert!(c.policy.has_history(), "{mode}");
        c.turn("Hi", "Hello!").unwrap();
        c.turn("How are you?\nWell?", "Fine.").unwrap();
        c.turn("Bye", "Goodbye.").unwrap();
        assert_eq!(render(&c), Some(expected.clone()), "{mode}");
    }
}

#[test]
fn truncate_renders_the_turns_its_window_left_out() {
    let (mut c, _) = conversation("truncate", 600);
    let reply = "An answer with some words in it. ".repeat(2);
    let mut dropped = 0;
    for turn in 1..=30 {
        let prepared = c.turn(&format!("Question {turn}?"), &reply).unwrap();
        dropped = prepared.dropped_records;
    }
    assert!(dropped > 0, "the window must have moved");
    let rendered = render(&c).unwrap();
    assert_eq!(rendered.len(), 1 + 2 * 30);
    assert_eq!(rendered[0], ("system".into(), "Be brief.".into()));
    for turn in 1..=30 {
        assert_eq!(rendered[2 * turn - 1].1, format!("Question {turn}?"));
        assert_eq!(rendered[2 * turn], ("assistant".into(), reply.clone()));
    }
}

#[test]
fn a_policy_without_the_history_export_renders_nothing() {
    let (mut c, _) = conversation("client-side", 2048);
    assert!(!c.policy.has_history());
    c.turn("Hi", "Hello").unwrap();
    assert_eq!(render(&c), None);
}

#[test]
fn unreadable_records_fail_render_with_a_policy_error() {
    for mode in ["raw", "tokenized", "truncate"] {
        let (mut c, _) = conversation(mode, 2048);
        c.records = vec![vec![1, 2, 3].into()];
        let mut instance = c
            .policy
            .instantiate(&c.runtime, c.services.clone())
            .unwrap();
        let error = instance.render(&c.records, &c.settings).unwrap_err();
        assert!(error.to_string().contains("Internal"), "{mode}: {error}");
    }
}

#[test]
fn the_policy_list_says_which_policies_render_history() {
    let history: Vec<(String, bool)> = shipped()
        .1
        .list()
        .into_iter()
        .map(|p| (p.name, p.history))
        .collect();
    assert_eq!(
        history,
        [
            ("client-side".into(), false),
            ("raw".into(), true),
            ("summarize".into(), true),
            ("tokenized".into(), true),
            ("truncate".into(), true),
        ]
    );
}
