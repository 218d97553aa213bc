//! What the two token policies (`tokenized`, `truncate`) do alike with their generated
//! bindings: fold a reply into the turn's record, render the stored history, call the model's
//! tokenizer. Each includes this file (`#[path = "../../shared/token_policy.rs"] mod
//! token_policy;`) because it names the bindings that crate generates; binding-free code
//! lives in `policy-common`.

use policy_common::{Pieces, Template, close_turn, parse_messages, session_tokens};

use crate::discedge::policy::host;
use crate::discedge::policy::types::{PolicyError, Reply, Settings};
use crate::exports::discedge::policy::history::Message as HistoryMessage;

/// The host's chat template as `policy-common`'s plain mirror of it.
pub fn template(settings: &Settings) -> Template {
    let t = &settings.template;
    Template::new(&t.bos, &t.message_prefix, &t.message_suffix)
}

/// `commit`: the record `prepare` carried, with the ids the model generated and the message
/// suffix that closes its reply.
pub fn commit(
    settings: &Settings,
    carry: &[u8],
    reply: &Reply,
) -> Result<Option<Vec<u8>>, PolicyError> {
    let suffix = tokenize(&settings.template.message_suffix)?;
    let record =
        close_turn(carry, &reply.tokens, &reply.content, &suffix).map_err(PolicyError::Internal)?;
    Ok(Some(record))
}

/// `render`: every record, the turns a window left out included, read back through the
/// model's tokenizer and the template that framed them.
pub fn render(
    records: Vec<Vec<u8>>,
    settings: &Settings,
) -> Result<Vec<HistoryMessage>, PolicyError> {
    let ids = session_tokens(&records).map_err(PolicyError::Internal)?;
    drop(records);
    let text =
        host::detokenize(&ids).map_err(|e| PolicyError::HostFailed(format!("detokenize: {e}")))?;
    Ok(parse_messages(&template(settings), &text)
        .into_iter()
        .map(|(role, content)| HistoryMessage { role, content })
        .collect())
}

/// The model's tokenizer on template markup, parsing control tokens since templates write
/// them as text. Never for what a user or the model wrote: see [`tokenize_pieces`].
pub fn tokenize(text: &str) -> Result<Vec<u32>, PolicyError> {
    host_tokenize(text, true)
}

/// The ids of rendered messages: markup with control tokens parsed, message text as plain
/// text, so a message that spells out `<|im_start|>` cannot open a turn of its own.
pub fn tokenize_pieces(pieces: &Pieces) -> Result<Vec<u32>, PolicyError> {
    let mut ids = Vec::new();
    for (text, markup) in pieces.iter() {
        ids.extend(host_tokenize(text, markup)?);
    }
    Ok(ids)
}

fn host_tokenize(text: &str, parse_special: bool) -> Result<Vec<u32>, PolicyError> {
    host::tokenize(text, parse_special)
        .map_err(|e| PolicyError::HostFailed(format!("tokenize: {e}")))
}
