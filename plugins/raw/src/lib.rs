//! The `raw` policy: the session is the list of chat messages, rendered as text every turn.
//!
//! The simplest policy that keeps context. llama-server re-tokenizes the whole conversation
//! each turn, so it is the baseline the token-based policies are measured against.

use discedge_policy_sdk::{
    Message, MessageRef, Template, decode_message_refs, decode_messages, decode_records,
    encode_messages, markers, message_len, neutralise_markers, push_message, reply_opening,
    system_prompt,
};

discedge_policy_sdk::bindings!("context-policy-with-history");

use discedge::policy::types::{
    Answer, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step, TurnInput,
};
use exports::discedge::policy::history::{Guest as History, Message as HistoryMessage};
use exports::discedge::policy::policy::Guest;

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Stores the messages; sends the whole conversation as text".into(),
            stores_context: true,
        }
    }

    fn prepare(
        records: Vec<Vec<u8>>,
        input: TurnInput,
        settings: Settings,
        _answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        // Borrowed from the records, and the text reserved at its exact size: a long session
        // is held about twice (records and prompt), within the policy's memory limit.
        let history =
            decode_records(&records, decode_message_refs).map_err(PolicyError::Internal)?;
        // This turn's new messages; on turn 1 the system message is stored along with them.
        let mut new: Vec<Message> = Vec::new();
        if records.is_empty()
            && let Some(system) = system_prompt(settings.system_prompt.as_deref())
        {
            new.push(("system".into(), system.into()));
        }
        new.push(("user".into(), input.prompt));

        let t = &settings.template;
        let t = Template::new(&t.bos, &t.message_prefix, &t.message_suffix);
        let messages = || {
            let new = new
                .iter()
                .map(|(role, content)| (role.as_str(), content.as_str()));
            history.iter().flatten().copied().chain(new)
        };
        let opening = reply_opening(&t);
        // llama-server parses control tokens in a text prompt: a message that spells out the
        // template's markers is sent with them broken, or it could open turns of its own.
        // Stored messages keep the text as written; borrowed unless a marker was broken.
        let markers = markers(&t);
        let safe: Vec<_> = messages()
            .map(|(role, content): MessageRef| (role, neutralise_markers(&markers, content)))
            .collect();
        let rendered: usize = safe
            .iter()
            .map(|(role, content)| message_len(&t, role, content))
            .sum();
        let len = t.bos.len() + rendered + opening.len();
        let mut text = String::with_capacity(len);
        text.push_str(&t.bos);
        for (role, content) in &safe {
            push_message(&mut text, &t, role, content);
        }
        text.push_str(&opening);

        Ok(Step::Ready(Prepared {
            prompt: Prompt::Text(text),
            want_reply_tokens: false,
            carry: encode_messages(&new),
            dropped_records: 0,
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
        // The records are the messages: system (turn 1), then each turn's user and assistant.
        let turns = decode_records(&records, decode_messages).map_err(PolicyError::Internal)?;
        Ok(turns
            .into_iter()
            .flatten()
            .map(|(role, content)| HistoryMessage { role, content })
            .collect())
    }
}

export!(Component);
