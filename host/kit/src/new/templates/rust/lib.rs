//! {{name}}: a DisCEdge context policy. It keeps the conversation as messages and sends the
//! model the system prompt and the last KEEP turns, as text.
//!
//! Each committed turn stores one record: that turn's messages (the system message on turn 1,
//! then the user's and the model's), in the SDK's message-list format.

use discedge_policy_sdk::{
    Message, Template, decode_messages, decode_records, encode_messages, markers,
    neutralise_markers, push_message, reply_opening, system_prompt,
};

discedge_policy_sdk::bindings!("context-policy-with-history");

use discedge::policy::types::{
    Answer, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step, TurnInput,
};
use exports::discedge::policy::history::{Guest as History, Message as HistoryMessage};
use exports::discedge::policy::policy::Guest;

/// How many past turns the prompt keeps.
const KEEP: usize = 8;

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!("{{name}}: the system prompt and the last {KEEP} turns, as text"),
            stores_context: true,
        }
    }

    fn prepare(
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
        _answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        let turns = decode_records(&records, decode_messages).map_err(PolicyError::Internal)?;
        // This turn's new messages; on turn 1 the system message is stored with them.
        let mut new: Vec<Message> = Vec::new();
        if records.is_empty()
            && let Some(system) = system_prompt(settings.system_prompt.as_deref())
        {
            new.push(("system".into(), system.into()));
        }
        new.push(("user".into(), input.prompt));

        let t = &settings.template;
        let t = Template::new(&t.bos, &t.message_prefix, &t.message_suffix);
        // llama-server reads control tokens in a text prompt: break the template's markers
        // where a user or the model wrote them, so no message can open a turn of its own.
        let markers = markers(&t);
        let mut text = t.bos.clone();
        let mut send = |(role, content): &Message| {
            push_message(&mut text, &t, role, &neutralise_markers(&markers, content));
        };
        // The system message (stored in the first record) stays; older turns fall out.
        let system = turns.first().into_iter().flatten().filter(|(role, _)| role == "system");
        system.for_each(&mut send);
        let dropped = turns.len().saturating_sub(KEEP);
        let recent = turns[dropped..].iter().flatten().filter(|(role, _)| role != "system");
        recent.for_each(&mut send);
        new.iter().for_each(&mut send);
        text.push_str(&reply_opening(&t));

        Ok(Step::Ready(Prepared {
            prompt: Prompt::Text(text),
            want_reply_tokens: false,
            carry: encode_messages(&new),
            dropped_records: dropped as u32,
        }))
    }

    fn commit(
        _input: TurnInput,
        _settings: Settings,
        carry: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, PolicyError> {
        let mut messages =
            decode_messages(&carry).map_err(|e| PolicyError::Internal(format!("carry: {e}")))?;
        messages.push(("assistant".into(), reply.content));
        Ok(Some(encode_messages(&messages)))
    }
}

impl History for Component {
    fn render(
        records: Vec<Vec<u8>>,
        _settings: Settings,
    ) -> Result<Vec<HistoryMessage>, PolicyError> {
        let turns = decode_records(&records, decode_messages).map_err(PolicyError::Internal)?;
        Ok(turns
            .into_iter()
            .flatten()
            .map(|(role, content)| HistoryMessage { role, content })
            .collect())
    }
}

export!(Component);
