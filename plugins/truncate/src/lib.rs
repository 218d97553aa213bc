//! The `truncate` policy: like `tokenized`, but old turns slide out of a window so a
//! conversation can go on for ever.
//!
//! The conversation opening (bos and system message) is pinned and always sent. The window
//! start is stored in each record and only moves when the prompt no longer fits, and then by
//! enough turns that it stays put for a while (see `discedge_policy_sdk::choose_window`): every move
//! changes the prompt's prefix and costs llama-server a full re-evaluation.

use discedge_policy_sdk::{
    TokenRecord, append_ids, check_window_heads, choose_window, decode_records, user_turn_pieces,
};

discedge_policy_sdk::bindings!("context-policy-with-history");

discedge_policy_sdk::token_policy!();

use discedge::policy::host::{self, LogLevel};
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
            description: "Stores token ids; drops the oldest turns when the context fills up, \
                          keeping the system prompt"
                .into(),
            stores_context: true,
        }
    }

    fn prepare(
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
        _answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        // Every record is checked and sized, but only the opening and the turns in the window
        // are decoded: a session grows for ever, the policy's memory does not.
        let heads = decode_records(&records, TokenRecord::head).map_err(PolicyError::Internal)?;
        check_window_heads(&heads).map_err(PolicyError::Internal)?;
        let t = token_policy::template(&settings);

        let opening_ids = token_policy::opening(records.first().map(Vec::as_slice), &settings)?;
        let new_ids = tokenize_pieces(&user_turn_pieces(&t, &input.prompt))?;

        let previous_start = heads.last().map_or(0, |r| r.window_start as usize);
        let lens: Vec<usize> = heads.iter().map(|r| r.unpinned()).collect();
        let start = choose_window(
            &lens,
            opening_ids.len(),
            previous_start,
            new_ids.len(),
            settings.reply_budget as usize,
            settings.n_ctx as usize,
        )
        .map_err(PolicyError::ContextFull)?;
        if start > previous_start {
            let tokens: usize = lens[previous_start..start].iter().sum();
            let n_ctx = settings.n_ctx;
            let message = format!(
                "left records {previous_start}..{start} ({tokens} tokens) out to fit n_ctx {n_ctx}"
            );
            host::log(LogLevel::Info, &message);
        }

        let kept: usize = lens[start..].iter().sum();
        let mut prompt = Vec::with_capacity(opening_ids.len() + kept + new_ids.len());
        prompt.extend_from_slice(&opening_ids);
        for i in start..records.len() {
            append_ids(&records[i], heads[i].pinned as usize, &mut prompt)
                .map_err(|e| PolicyError::Internal(format!("record {i}: {e}")))?;
        }
        prompt.extend_from_slice(&new_ids);
        let carry =
            TokenRecord::window_turn(records.is_empty(), opening_ids, new_ids, start as u32);
        Ok(Step::Ready(Prepared {
            prompt: Prompt::Tokens(prompt),
            want_reply_tokens: true,
            carry: carry.encode(),
            dropped_records: start as u32,
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
