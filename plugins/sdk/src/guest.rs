//! The contract's guest bindings and the glue that names them, as macros a policy crate calls:
//! `discedge_policy_sdk::bindings!("context-policy")` (or `"context-policy-with-history"`)
//! generates the bindings in the policy's crate from the one WIT in `wit/` (the build script
//! hands it over; nobody copies it), and `discedge_policy_sdk::token_policy!()` adds the token
//! policies' shared glue next to them. Macros, because a component takes its world from the
//! bindings linked into it: bindings compiled here for both worlds would give a plain policy
//! the history world too. Behind the `guest` feature, so the host, which uses this crate's
//! templates, builds no bindings generator.

// `bindings!`, with the WIT text from `wit/policy.wit` (see build.rs).
include!(concat!(env!("OUT_DIR"), "/bindings_macro.rs"));

/// What the two token policies (`tokenized`, `truncate`) do alike with their bindings, as a
/// module `token_policy` in the calling crate: fold a reply into the turn's record, render the
/// stored history, call the model's tokenizer. Needs `bindings!("context-policy-with-history")`
/// at the crate's root.
#[macro_export]
macro_rules! token_policy {
    () => {
        pub mod token_policy {
            //! The token policies' glue (from `discedge_policy_sdk::token_policy!`).

            use $crate::{Pieces, Template, close_turn, parse_messages, session_tokens};

            use crate::discedge::policy::host;
            use crate::discedge::policy::types::{PolicyError, Reply, Settings};
            use crate::exports::discedge::policy::history::Message as HistoryMessage;

            /// The host's chat template as the SDK's plain mirror of it.
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
                let record = close_turn(carry, &reply.tokens, &reply.content, &suffix)
                    .map_err(PolicyError::Internal)?;
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
                let text = host::detokenize(&ids)
                    .map_err(|e| PolicyError::HostFailed(format!("detokenize: {e}")))?;
                Ok(parse_messages(&template(settings), &text)
                    .into_iter()
                    .map(|(role, content)| HistoryMessage { role, content })
                    .collect())
            }

            /// The conversation opening (bos and system message) as ids: what the session's first
            /// record pins, or on turn 1 (no record yet) the opening tokenized on its own, so its
            /// length is known.
            pub fn opening(
                first: Option<&[u8]>,
                settings: &Settings,
            ) -> Result<Vec<u32>, PolicyError> {
                match first {
                    Some(record) => Ok($crate::TokenRecord::decode(record)
                        .map_err(|e| PolicyError::Internal(format!("record 0: {e}")))?
                        .pinned_tokens()
                        .to_vec()),
                    None => tokenize_pieces(&$crate::opening_pieces(
                        &template(settings),
                        settings.system_prompt.as_deref(),
                    )),
                }
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

            /// The host's tokenizer, its failure named as the host's.
            fn host_tokenize(text: &str, parse_special: bool) -> Result<Vec<u32>, PolicyError> {
                host::tokenize(text, parse_special)
                    .map_err(|e| PolicyError::HostFailed(format!("tokenize: {e}")))
            }
        }
    };
}
