//! Regression: sessions as long as the host lets them grow (`--max-session-bytes`, 16 MiB by
//! default) must not make a policy run out of its memory (`--policy-memory-mib`, 64 MiB by
//! default) and trap. The `truncate` policy trapped from about 14 MiB of stored records (every
//! record decoded at once, at four bytes per record byte), and `tokenized` from about 8 MiB
//! (it built the whole prompt before checking it against the context). Too large for a fuzz
//! input (libFuzzer's inputs stay at 4 KiB), so built here.

use discedge_fuzz::{Outcome, PolicyCase, RecordInput, Size, TemplateInput, run_case};
use discedge_policy_sdk::{TokenRecord, encode_messages};

const SESSION_BYTES: usize = 16 << 20;

fn case(mode: u8, records: Vec<RecordInput>) -> PolicyCase {
    PolicyCase {
        mode,
        records,
        prompt: "And then?".into(),
        turn: 0,
        n_ctx: Size::Any(4096),
        reply_budget: Size::Small(256),
        template: TemplateInput::Chatml,
        system_prompt: None,
        request_json: "{}".into(),
        reply: "Then more.".into(),
        reply_ids: None,
        next_prompt: "And after that?".into(),
    }
}

/// Turns of 1,000 three-byte ids each, the window a few turns back, up to 16 MiB in all.
fn token_session() -> Vec<RecordInput> {
    let mut records = Vec::new();
    let mut bytes = 0;
    while bytes < SESSION_BYTES {
        let i = records.len();
        let record = TokenRecord {
            pinned: if i == 0 { 10 } else { 0 },
            window_start: i.saturating_sub(2) as u32,
            tokens: vec![20_000 + i as u32 % 1000; 1000],
        }
        .encode();
        bytes += record.len();
        records.push(RecordInput::Bytes(record));
    }
    records
}

#[test]
fn truncate_serves_a_session_of_the_largest_size() {
    assert_eq!(
        run_case(&case(2, token_session())),
        ("truncate", Outcome::TwoTurns)
    );
}

#[test]
fn tokenized_refuses_a_session_of_the_largest_size_without_trapping() {
    // Far more than the context: declined as context-full, not a trap.
    assert_eq!(
        run_case(&case(1, token_session())),
        ("tokenized", Outcome::Declined)
    );
}

#[test]
fn raw_serves_a_long_session() {
    let turn = [
        ("user".to_owned(), "q".repeat(1500)),
        ("assistant".to_owned(), "a".repeat(1500)),
    ];
    let record = encode_messages(&turn);
    let records = (0..SESSION_BYTES / record.len())
        .map(|_| RecordInput::Bytes(record.clone()))
        .collect();
    assert_eq!(run_case(&case(0, records)).1, Outcome::TwoTurns);
}
