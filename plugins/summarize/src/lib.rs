//! The `summarize` policy: like `truncate`, old turns leave a window so a conversation can
//! go on for ever, but what leaves is first folded into a rolling summary that the model
//! writes itself (contract 0.2.0's completions), so a fact from turn 1 can still be used at
//! turn 40.
//!
//! The prompt is: the opening (bos and system message, pinned), the summary as a system
//! message, the turns in the window as the token ids the model saw, the new message. The
//! window and the summary only change when the prompt would no longer fit; then the window
//! moves as `truncate`'s does (far enough to stay put for a while) and the turns leaving it
//! are summarised with the previous summary, quoted as a transcript in one user message, in
//! as few completions as fit, before this turn's prompt is built. Between those turns the
//! prompt only grows at its end, so llama-server's prompt cache keeps hitting.
//! The summary is stored in the record of the turn that wrote it, so every node builds the
//! same prompt from the replicated session.

use discedge_policy_sdk::summary::{self, Summary};
use discedge_policy_sdk::{
    Pieces, TokenRecord, TokenRecordHead, append_ids, check_window_heads, choose_window,
    decode_records, parse_messages, user_turn_pieces,
};

discedge_policy_sdk::bindings!("context-policy-with-history");

discedge_policy_sdk::token_policy!();

use discedge::policy::host::{self, LogLevel};
use discedge::policy::types::{
    Answer, CompletionRequest, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step,
    TurnInput,
};
use exports::discedge::policy::history::{Guest as History, Message as HistoryMessage};
use exports::discedge::policy::policy::Guest;
use token_policy::tokenize_pieces;

/// Most tokens a summary may take (and a summarising completion may generate).
const SUMMARY_TOKENS: u32 = 192;
/// Most completions one turn asks for; the host allows 4 by default.
const MAX_ASKS: usize = 3;
/// What the summary message starts with, so the model reads it as what it is.
const SUMMARY_HEADER: &str = "Summary of the conversation so far: ";
/// What ends the summarising prompt's one user message, after the earlier summary and the
/// user's messages as `User: ...` lines. Measured with SmolLM2-135M: it then lists the facts;
/// with the conversation itself in front of a request, or a header such as "Conversation:",
/// it went on chatting or made up a list.
const INSTRUCTION: &str = "\nWrite down the facts above as a short list.";
/// Sampling for summaries: greedy, so a summary is as repeatable as the model allows.
const SUMMARY_OPTIONS: &str = r#"{"temperature": 0, "cache_prompt": true}"#;

struct Component;

/// The session as `prepare` reads it: every record's turn head, the turns' bytes, and the
/// latest summary.
struct Session<'a> {
    turns: Vec<&'a [u8]>,
    heads: Vec<TokenRecordHead>,
    summary: Option<Summary>,
}

impl<'a> Session<'a> {
    fn read(records: &'a [Vec<u8>]) -> Result<Self, PolicyError> {
        let parts = decode_records(records, summary::split).map_err(PolicyError::Internal)?;
        let heads = parts
            .iter()
            .enumerate()
            .map(|(i, (turn, _))| TokenRecord::head(turn).map_err(|e| format!("record {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PolicyError::Internal)?;
        check_window_heads(&heads).map_err(PolicyError::Internal)?;
        let summary = match parts
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, (_, s))| s.map(|s| (i, s)))
        {
            None => None,
            Some((i, bytes)) => Some(
                Summary::decode(bytes)
                    .map_err(|e| PolicyError::Internal(format!("record {i}: summary: {e}")))?,
            ),
        };
        Ok(Self {
            turns: parts.iter().map(|(turn, _)| *turn).collect(),
            heads,
            summary,
        })
    }

    /// The droppable size of each turn in tokens.
    fn lens(&self) -> Vec<usize> {
        self.heads.iter().map(|h| h.unpinned()).collect()
    }

    /// Appends the ids of turns `range` (without the opening record 0 pins).
    fn append_turns(
        &self,
        range: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<(), PolicyError> {
        for i in range {
            append_ids(self.turns[i], self.heads[i].pinned as usize, out)
                .map_err(|e| PolicyError::Internal(format!("record {i}: {e}")))?;
        }
        Ok(())
    }
}

/// What one turn knows before it decides: the frame around the history.
struct Turn {
    opening: Vec<u32>,
    new: Vec<u32>,
    summary_tokens: u32,
}

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Stores token ids; when the context fills up, the model summarises the \
                          oldest turns, and the prompt keeps the system prompt, that summary and \
                          the recent turns"
                .into(),
            stores_context: true,
        }
    }

    fn prepare(
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
        answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        let session = Session::read(&records)?;
        let t = token_policy::template(&settings);
        let opening = token_policy::opening(session.turns.first().copied(), &settings)?;
        let turn = Turn {
            opening,
            new: tokenize_pieces(&user_turn_pieces(&t, &input.prompt))?,
            summary_tokens: SUMMARY_TOKENS.min(settings.n_ctx / 8).max(1),
        };
        let (n_ctx, budget) = (settings.n_ctx as usize, settings.reply_budget as usize);
        let lens = session.lens();
        let previous_start = session.heads.last().map_or(0, |h| h.window_start as usize);
        let kept = session.summary.as_ref().map_or(0, |s| s.ids.len());
        let window = |summary_len: usize| {
            choose_window(
                &lens,
                turn.opening.len() + summary_len,
                previous_start,
                turn.new.len(),
                budget,
                n_ctx,
            )
            .map_err(PolicyError::ContextFull)
        };
        let mut start = window(kept)?;
        let mut written = None;
        if start > previous_start {
            // Turns leave the window: room for the longest summary, then fold them into it.
            let reserve = summary_ids(&t, "", 0)?.len() + turn.summary_tokens as usize;
            start = window(kept.max(reserve))?;
            match fold(&session, &t, &turn, start, &answers, n_ctx)? {
                Folded::Ask(request) => return Ok(Step::Complete(request)),
                Folded::Done(summary) => written = Some(summary),
            }
        }
        let summary = written.as_ref().or(session.summary.as_ref());
        let summary_ids: &[u32] = summary.map_or(&[], |s| &s.ids);
        let kept_turns: usize = lens[start..].iter().sum();
        let mut prompt = Vec::with_capacity(
            turn.opening.len() + summary_ids.len() + kept_turns + turn.new.len(),
        );
        prompt.extend_from_slice(&turn.opening);
        prompt.extend_from_slice(summary_ids);
        session.append_turns(start..session.turns.len(), &mut prompt)?;
        prompt.extend_from_slice(&turn.new);
        let carried =
            TokenRecord::window_turn(records.is_empty(), turn.opening, turn.new, start as u32);
        Ok(Step::Ready(Prepared {
            prompt: Prompt::Tokens(prompt),
            want_reply_tokens: true,
            carry: summary::encode(&carried.encode(), written.as_ref()),
            dropped_records: start as u32,
        }))
    }

    fn commit(
        _input: TurnInput,
        settings: Settings,
        carry: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, PolicyError> {
        let (turn, written) =
            summary::split(&carry).map_err(|e| PolicyError::Internal(format!("carry: {e}")))?;
        let written = written
            .map(Summary::decode)
            .transpose()
            .map_err(|e| PolicyError::Internal(format!("carry: {e}")))?;
        let closed = token_policy::commit(&settings, turn, &reply)?
            .ok_or_else(|| PolicyError::Internal("the token record was not closed".into()))?;
        Ok(Some(summary::encode(&closed, written.as_ref())))
    }
}

/// Where folding the leaving turns into the summary stands.
enum Folded {
    /// Summarise the next turns first.
    Ask(CompletionRequest),
    /// Every leaving turn is folded in: the summary for records `0..start`.
    Done(Summary),
}

/// Folds turns `covered..start` into the summary: replays the answers so far (each one's
/// state is the record index its summary reaches), then asks for the next turns that fit
/// one completion, or returns the finished summary. A turn too long to summarise even alone,
/// or what is left after [`MAX_ASKS`] completions, leaves without being summarised (logged).
fn fold(
    session: &Session,
    t: &discedge_policy_sdk::Template,
    turn: &Turn,
    start: usize,
    answers: &[Answer],
    n_ctx: usize,
) -> Result<Folded, PolicyError> {
    let mut text = session.summary.as_ref().map(|s| s.text.clone());
    let mut covered = session.summary.as_ref().map_or(0, |s| s.folded as usize);
    for (k, answer) in answers.iter().enumerate() {
        let reaches = match answer.state[..] {
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => {
                return Err(PolicyError::Internal(format!(
                    "answer {k}: state is not this policy's"
                )));
            }
        };
        if reaches <= covered || reaches > start {
            return Err(PolicyError::Internal(format!(
                "answer {k}: covers records up to {reaches}, expected {covered}..={start}"
            )));
        }
        let content = answer.reply.content.trim();
        if !content.is_empty() {
            text = Some(content.to_owned());
        }
        covered = reaches;
    }
    let done = |text: Option<String>| -> Result<Folded, PolicyError> {
        let text = text.unwrap_or_default();
        let ids = summary_ids(t, &text, turn.summary_tokens as usize)?;
        Ok(Folded::Done(Summary {
            folded: start as u32,
            text,
            ids,
        }))
    };
    if covered >= start {
        return done(text);
    }
    if answers.len() >= MAX_ASKS {
        let message = format!(
            "records {covered}..{start} leave the window without a summary ({MAX_ASKS} summaries this turn)"
        );
        host::log(LogLevel::Warn, &message);
        return done(text);
    }
    let prompt = summarising_prompt(session, t, text.as_deref(), covered, start, turn, n_ctx)?;
    let Some((prompt, to)) = prompt else {
        let message = format!(
            "records {covered}..{start} are too long to summarise; they leave the window as they are"
        );
        host::log(LogLevel::Warn, &message);
        return done(text);
    };
    host::log(
        LogLevel::Info,
        &format!(
            "summarising records {covered}..{to} ({} prompt tokens)",
            prompt.len()
        ),
    );
    Ok(Folded::Ask(CompletionRequest {
        prompt: Prompt::Tokens(prompt),
        n_predict: turn.summary_tokens,
        options_json: SUMMARY_OPTIONS.into(),
        state: (to as u32).to_le_bytes().to_vec(),
    }))
}

/// The summarising prompt for records `from..` up to `start`, as many as fit the window with
/// the summary's room: one user message holding the earlier summary, the turns' user
/// messages (read back through the tokenizer) and the instruction, all as plain text (what
/// users and the model wrote cannot become control tokens). Returns the ids and where the
/// turns it holds end, or `None` when not even the first turn fits.
fn summarising_prompt(
    session: &Session,
    t: &discedge_policy_sdk::Template,
    earlier: Option<&str>,
    from: usize,
    start: usize,
    turn: &Turn,
    n_ctx: usize,
) -> Result<Option<(Vec<u32>, usize)>, PolicyError> {
    let plain = |text: &str| {
        host::tokenize(text, false).map_err(|e| PolicyError::HostFailed(format!("tokenize: {e}")))
    };
    let mut head = token_policy::tokenize(&format!(
        "{}{}",
        t.bos,
        t.message_prefix.replace("{role}", "user")
    ))?;
    if let Some(earlier) = earlier {
        head.extend(plain(&format!("{}\n", earlier.trim()))?);
    }
    let mut tail = plain(INSTRUCTION)?;
    tail.extend(token_policy::tokenize(&t.message_suffix)?);
    tail.extend(token_policy::tokenize(
        &discedge_policy_sdk::reply_opening(t),
    )?);
    let room = n_ctx.saturating_sub(turn.summary_tokens as usize);
    let mut prompt = head;
    let mut to = from;
    while to < start {
        let mut ids = Vec::new();
        session.append_turns(to..to + 1, &mut ids)?;
        let text = host::detokenize(&ids)
            .map_err(|e| PolicyError::HostFailed(format!("detokenize: {e}")))?;
        let mut lines = String::new();
        // The user's messages only: the facts to keep are what the user said, and measured
        // with SmolLM2-135M its own replies in the transcript drowned them (it answered with
        // a made-up title instead of a list).
        for (role, content) in parse_messages(t, &text) {
            if role == "user" {
                lines.push_str(&format!("User: {}\n", content.trim()));
            }
        }
        let ids = plain(&lines)?;
        if prompt.len() + ids.len() + tail.len() > room {
            break;
        }
        prompt.extend(ids);
        to += 1;
    }
    if to == from {
        return Ok(None);
    }
    prompt.extend(tail);
    Ok(Some((prompt, to)))
}

/// The summary as the system message the prompt carries: the header and at most `limit`
/// tokens of the text, as plain text (a summary that spells a control token cannot forge a
/// turn). `limit` 0 gives the frame alone, for sizing.
fn summary_ids(
    t: &discedge_policy_sdk::Template,
    text: &str,
    limit: usize,
) -> Result<Vec<u32>, PolicyError> {
    let mut frame = Pieces::default();
    frame.message(t, "system", SUMMARY_HEADER);
    let mut ids = tokenize_pieces(&frame)?;
    if !text.is_empty() && limit > 0 {
        let suffix = token_policy::tokenize(&t.message_suffix)?;
        let body = host::tokenize(text, false)
            .map_err(|e| PolicyError::HostFailed(format!("tokenize: {e}")))?;
        // The frame ends with the suffix: put the text in front of it.
        let at = ids.len().saturating_sub(suffix.len());
        let tail = ids.split_off(at);
        ids.extend_from_slice(&body[..body.len().min(limit)]);
        ids.extend(tail);
    }
    Ok(ids)
}

impl History for Component {
    fn render(
        records: Vec<Vec<u8>>,
        settings: Settings,
    ) -> Result<Vec<HistoryMessage>, PolicyError> {
        let turns = decode_records(&records, |r| {
            summary::split(r).map(|(turn, _)| turn.to_vec())
        })
        .map_err(PolicyError::Internal)?;
        drop(records);
        token_policy::render(turns, &settings)
    }
}

export!(Component);
