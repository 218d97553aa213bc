//! Property tests for the pieces the shipped policies are built from: the record formats
//! (round trips, and no panic on any bytes a store could hand back), truncate's window choice
//! (the prompt always fits, keeps the new message, the window only moves forward and only when
//! it must), `close_turn` (the stored ids are exactly what the model saw and made) and
//! `parse_messages` (reads rendered messages back, and any text without panicking).
//!
//! 256 cases per property keeps `cargo test -p discedge-policy-sdk` at a second or two. Run more with
//! `PROPTEST_CASES=100000 cargo test -p discedge-policy-sdk --test properties`.

use discedge_policy_sdk::{
    Message, Template, TokenRecord, TokenRecordHead, choose_window, close_turn,
    decode_message_refs, decode_messages, decode_records, encode_messages, low_water,
    parse_messages, render_message,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// 256 cases per property unless `PROPTEST_CASES` asks for more (or fewer).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

/// Token ids, biased towards the small ids of real vocabularies, with every varint length
/// boundary and the extremes.
fn token_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..512,
        1 => any::<u32>(),
        1 => prop::sample::select(vec![
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
            268_435_456,
            u32::MAX,
        ]),
    ]
}

/// Any record a token policy could write: `pinned` never exceeds the ids it holds.
fn token_record() -> impl Strategy<Value = TokenRecord> {
    (
        prop::collection::vec(token_id(), 0..64),
        any::<Index>(),
        prop_oneof![0u32..8, any::<u32>()],
    )
        .prop_map(|(tokens, pin, window_start)| TokenRecord {
            pinned: pin.index(tokens.len() + 1) as u32,
            window_start,
            tokens,
        })
}

fn messages() -> impl Strategy<Value = Vec<Message>> {
    let text = prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["system", "user", "assistant"]).prop_map(String::from),
        any::<String>(),
    ];
    prop::collection::vec((text.clone(), text), 0..8)
}

/// One change to a byte string: overwrite, insert or delete a byte, or cut the tail.
#[derive(Clone, Debug)]
enum Edit {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..4)
}

/// Garbage that is close to a valid record, which finds far more decoder paths than noise.
fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Set(at, b) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Edit::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            Edit::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// Whatever `TokenRecord::decode` accepts is a record it can write again and read back the same;
/// `TokenRecord::head` accepts and refuses exactly what `decode` does, with the same message.
fn check_token_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let head = TokenRecord::head(bytes);
    match TokenRecord::decode(bytes) {
        Ok(record) => {
            prop_assert!(record.pinned as usize <= record.tokens.len());
            let expected = TokenRecordHead {
                pinned: record.pinned,
                window_start: record.window_start,
                tokens: record.tokens.len(),
            };
            prop_assert_eq!(head, Ok(expected));
            prop_assert_eq!(TokenRecord::decode(&record.encode()), Ok(record));
        }
        Err(message) => prop_assert_eq!(head, Err(message)),
    }
    Ok(())
}

/// The message format has exactly one encoding per message list, so whatever decodes must
/// encode back to the very same bytes; the borrowing decoder agrees with the copying one.
fn check_messages_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let refs = decode_message_refs(bytes);
    match decode_messages(bytes) {
        Ok(messages) => {
            prop_assert_eq!(encode_messages(&messages), bytes);
            let owned = refs.map(|refs| {
                refs.iter()
                    .map(|&(role, content)| (role.to_owned(), content.to_owned()))
                    .collect::<Vec<_>>()
            });
            prop_assert_eq!(owned, Ok(messages));
        }
        Err(message) => prop_assert_eq!(refs, Err(message)),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_records_round_trip_exactly(record in token_record()) {
        let bytes = record.encode();
        prop_assert_eq!(bytes[0], 1, "format byte");
        let decoded = TokenRecord::decode(&bytes);
        prop_assert_eq!(decoded.as_ref().map(|r| r.tokens.capacity()), Ok(record.tokens.len()), "reserves exactly the ids");
        prop_assert_eq!(decoded, Ok(record.clone()));
        check_token_decode(&bytes)?;
        prop_assert_eq!(record.pinned_tokens().len() + record.unpinned_tokens().len(), record.tokens.len());
    }

    #[test]
    fn token_record_decode_survives_any_bytes(
        format_byte in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // With the format byte in front, the garbage reaches the varint decoder.
        let bytes = if format_byte { [&[1u8][..], &tail].concat() } else { tail };
        check_token_decode(&bytes)?;
    }

    #[test]
    fn token_record_decode_survives_damaged_records(record in token_record(), edits in edits()) {
        check_token_decode(&mutate(record.encode(), &edits))?;
    }

    #[test]
    fn messages_round_trip_exactly(messages in messages()) {
        prop_assert_eq!(decode_messages(&encode_messages(&messages)), Ok(messages));
    }

    #[test]
    fn messages_decode_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_messages_decode(&bytes)?;
    }

    #[test]
    fn messages_decode_survives_damaged_records(messages in messages(), edits in edits()) {
        check_messages_decode(&mutate(encode_messages(&messages), &edits))?;
    }

    #[test]
    fn decode_records_names_the_first_bad_record(
        records in prop::collection::vec(
            prop_oneof![
                token_record().prop_map(|r| r.encode()),
                prop::collection::vec(any::<u8>(), 0..8),
            ],
            0..6,
        ),
    ) {
        let first_bad = records.iter().position(|r| TokenRecord::decode(r).is_err());
        match (decode_records(&records, TokenRecord::decode), first_bad) {
            (Ok(decoded), None) => prop_assert_eq!(decoded.len(), records.len()),
            (Err(e), Some(i)) => {
                let prefix = format!("record {i}:");
                prop_assert!(e.starts_with(&prefix), "{}", e);
            }
            (result, first_bad) => prop_assert!(false, "{:?} with first bad record {:?}", result, first_bad),
        }
    }
}

/// Tokens a prompt with history from `start` on takes, reply budget included; exact (no
/// overflow) for any sizes.
fn used(lens: &[usize], pinned: usize, start: usize, new_len: usize, budget: usize) -> u128 {
    let history: u128 = lens[start..].iter().map(|&l| l as u128).sum();
    pinned as u128 + history + new_len as u128 + budget as u128
}

/// Sizes a real conversation has: the window moves often, context-full happens now and then.
fn realistic_window_case() -> impl Strategy<Value = (Vec<usize>, usize, usize, usize, usize, usize)>
{
    (
        prop::collection::vec(0usize..400, 0..24),
        0usize..300,
        0usize..30,
        0usize..600,
        0usize..600,
        0usize..5000,
    )
}

/// Sizes no real request has, near the limits of the integer types.
fn extreme_window_case() -> impl Strategy<Value = (Vec<usize>, usize, usize, usize, usize, usize)> {
    let size = || prop_oneof![0usize..16, (usize::MAX - 16)..=usize::MAX, any::<usize>()];
    (
        prop::collection::vec(size(), 0..8),
        size(),
        size(),
        size(),
        size(),
        size(),
    )
}

fn check_window(
    (lens, pinned, previous_start, new_len, budget, n_ctx): (
        Vec<usize>,
        usize,
        usize,
        usize,
        usize,
        usize,
    ),
) -> Result<(), TestCaseError> {
    let result = choose_window(&lens, pinned, previous_start, new_len, budget, n_ctx);
    let fixed = pinned as u128 + new_len as u128 + budget as u128;
    let limit = n_ctx as u128;
    let previous = previous_start.min(lens.len());
    let used = |start| used(&lens, pinned, start, new_len, budget);
    let start = match result {
        Err(message) => {
            // Context-full only when even the opening, the new message and the budget overflow.
            prop_assert!(
                fixed > limit,
                "refused although {} <= {}: {}",
                fixed,
                limit,
                message
            );
            return Ok(());
        }
        Ok(start) => start,
    };
    prop_assert!(fixed <= limit, "accepted although {} > {}", fixed, limit);
    // The new message is not among `lens`: any start up to lens.len() keeps it.
    prop_assert!(
        start <= lens.len(),
        "start {} past the {} records",
        start,
        lens.len()
    );
    prop_assert!(
        start >= previous,
        "start went back from {} to {}",
        previous,
        start
    );
    prop_assert!(
        used(start) <= limit,
        "{} tokens > n_ctx {}",
        used(start),
        limit
    );
    if used(previous) <= limit {
        prop_assert_eq!(
            start,
            previous,
            "the previous window still fits, so it must stay"
        );
    } else {
        // It moved: down to low water if any start gets there, else to the first that fits;
        // and no further than needed for that.
        let low = low_water(n_ctx) as u128;
        let reaches_low = (previous + 1..=lens.len()).any(|s| used(s) <= low);
        let target = if reaches_low { low } else { limit };
        prop_assert!(
            used(start) <= target,
            "{} tokens > target {}",
            used(start),
            target
        );
        prop_assert!(
            start == previous + 1 || used(start - 1) > target,
            "start {} drops more than needed to reach {}",
            start,
            target
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn window_fits_keeps_the_new_message_and_only_moves_forward(case in realistic_window_case()) {
        check_window(case)?;
    }

    #[test]
    fn window_is_right_for_extreme_sizes(case in extreme_window_case()) {
        check_window(case)?;
    }

    #[test]
    fn low_water_is_three_quarters_rounded_down(n_ctx in any::<usize>()) {
        prop_assert_eq!(low_water(n_ctx) as u128, n_ctx as u128 * 3 / 4);
    }

    #[test]
    fn close_turn_stores_exactly_what_the_model_saw_and_made(
        carry in token_record(),
        // A tiny alphabet, so that replies often end with part of the suffix.
        reply_ids in prop::collection::vec(0u32..4, 0..8),
        reply_text in prop_oneof![Just(String::new()), any::<String>()],
        suffix in prop::collection::vec(0u32..4, 0..5),
    ) {
        let result = close_turn(&carry.encode(), &reply_ids, &reply_text, &suffix);
        if reply_ids.is_empty() && !reply_text.is_empty() {
            let message = result.expect_err("a reply with text but no ids must be refused");
            prop_assert!(message.contains("no token ids"), "{}", message);
            return Ok(());
        }
        let stored = TokenRecord::decode(&result.expect("close_turn failed"))
            .expect("close_turn wrote a record it cannot read");
        // The generated ids may already hold the start of the suffix (the model stopped at its
        // end-of-turn token): the longest such start is not appended a second time.
        let generated = (0..=suffix.len().min(reply_ids.len()))
            .filter(|&n| reply_ids.ends_with(&suffix[..n]))
            .max()
            .unwrap_or(0);
        let expected = [&carry.tokens[..], &reply_ids, &suffix[generated..]].concat();
        prop_assert_eq!(&stored.tokens, &expected);
        prop_assert!(stored.tokens.ends_with(&suffix), "the turn is closed by the suffix");
        prop_assert_eq!(stored.pinned, carry.pinned);
        prop_assert_eq!(stored.window_start, carry.window_start);
    }

    #[test]
    fn close_turn_refuses_a_damaged_carry(
        carry in token_record(),
        edits in edits(),
        reply_ids in prop::collection::vec(token_id(), 1..8),
    ) {
        let damaged = mutate(carry.encode(), &edits);
        let result = close_turn(&damaged, &reply_ids, "reply", &[7]);
        if TokenRecord::decode(&damaged).is_err() {
            let message = result.expect_err("an unreadable carry must be refused");
            prop_assert!(message.starts_with("carry:"), "{}", message);
        } else {
            prop_assert!(result.is_ok());
        }
    }
}

fn chatml() -> Template {
    Template::new("", "<|im_start|>{role}\n", "<|im_end|>\n")
}

/// Text built from template pieces and odd characters, to find the parser's corner cases.
fn template_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<|im_start|>".to_owned()),
        Just("<|im_end|>".to_owned()),
        Just("\n".to_owned()),
        prop::sample::select(vec!["system", "user", "assistant"]).prop_map(String::from),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_messages_reads_rendered_messages_back(
        messages in prop::collection::vec(
            (prop::sample::select(vec!["system", "user", "assistant"]), any::<String>()),
            0..8,
        )
    ) {
        // Content without the template's markers reads back exactly.
        let messages: Vec<Message> = messages
            .into_iter()
            .map(|(role, content)| (role.to_owned(), content.replace('<', "")))
            .collect();
        let t = chatml();
        let text: String = messages.iter().map(|(r, c)| render_message(&t, r, c)).collect();
        prop_assert_eq!(parse_messages(&t, &text), messages);
    }

    #[test]
    fn parse_messages_survives_any_text(text in template_soup(), bos in any::<bool>()) {
        let mut t = chatml();
        if bos {
            t.bos = "<|im_start|>".into();
        }
        let parsed = parse_messages(&t, &text);
        // Nothing is made up: the contents come from the text.
        let content: usize = parsed.iter().map(|(_, c)| c.len()).sum();
        prop_assert!(content <= text.len());
    }
}
