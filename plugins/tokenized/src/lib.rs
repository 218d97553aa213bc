//! The `tokenized` policy: the session is kept as the token ids the model saw and made.
//!
//! Only the new user message is tokenized each turn; stored turns never are again. So each
//! prompt starts with exactly the previous prompt plus the ids the model generated, and
//! llama-server's prompt cache only has to evaluate the new message. Nothing is ever dropped:
//! when the conversation outgrows the context the turn fails (see the `truncate` policy).

use discedge_policy_sdk::{
    TokenRecord, append_ids, decode_records, opening_pieces, user_turn_pieces,
};

discedge_policy_sdk::bindings!("context-policy-with-history");

discedge_policy_sdk::token_policy!();

use discedge::policy::types::{
    Answer, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step, TurnInput,
};
use exports::discedge::policy::history::{Guest as History, Message as HistoryMessage};
use exports::discedge::policy::policy::Guest;
use token_policy::tokenize_pieces;

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Stores token ids; sends the whole conversation as tokens (cache-friendly)".into(),
            stores_context: true,
        }
    }

    fn prepare(
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
        _answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        // Every record is checked, but only sized: a session too long for the context is
        // refused before its ids are held in memory (the policy's memory is limited).
        let heads = decode_records(&records, TokenRecord::head).map_err(PolicyError::Internal)?;
        let t = token_policy::template(&settings);
        // A new conversation starts with its opening (bos and system message).
        let mut new_ids = if records.is_empty() {
            tokenize_pieces(&opening_pieces(&t, settings.system_prompt.as_deref()))?
        } else {
            Vec::new()
        };
        new_ids.extend(tokenize_pieces(&user_turn_pieces(&t, &input.prompt))?);

        let prompt_len = heads.iter().map(|h| h.tokens as u64).sum::<u64>() + new_ids.len() as u64;
        let needed = prompt_len + u64::from(settings.reply_budget);
        if needed > u64::from(settings.n_ctx) {
            return Err(PolicyError::ContextFull(format!(
                "the conversation ({prompt_len} tokens) and the reply budget ({} tokens) need \
                 {needed} tokens, more than the model's context of {}; start a new session or \
                 use mode \"truncate\"",
                settings.reply_budget, settings.n_ctx,
            )));
        }
        // Only now, known to fit the context, are the ids held in memory.
        let mut prompt = Vec::with_capacity(prompt_len as usize);
        for (i, record) in records.iter().enumerate() {
            append_ids(record, 0, &mut prompt)
                .map_err(|e| PolicyError::Internal(format!("record {i}: {e}")))?;
        }
        prompt.extend_from_slice(&new_ids);

        Ok(Step::Ready(Prepared {
            prompt: Prompt::Tokens(prompt),
            want_reply_tokens: true,
            carry: TokenRecord {
                pinned: 0,
                window_start: 0,
                tokens: new_ids,
            }
            .encode(),
            dropped_records: 0,
        }))
    }

    fn commit(
        _input: TurnInput,
        settings: Settings,
        carry: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, PolicyError> {
        token_policy::commit(&settings, &carry, &reply)
    }
}

impl History for Component {
    fn render(
        records: Vec<Vec<u8>>,
        settings: Settings,
    ) -> Result<Vec<HistoryMessage>, PolicyError> {
        token_policy::render(records, &settings)
    }
}

export!(Component);
