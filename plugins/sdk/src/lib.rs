//! The guest SDK for DisCEdge context policies: what a policy component needs besides its
//! own logic. At the root, plain Rust with no bindings (chat templates, record formats,
//! truncate's window), unit-tested natively (`cargo test -p discedge-policy-sdk`) and also
//! used by the host, which renders client-side prompts with these very templates. With the
//! `guest` feature, the `bindings!` macro generates the contract's bindings (from the one WIT
//! in `wit/`) in a policy's crate, and `token_policy!` adds the token policies' glue.

/// The contract's guest bindings, as macros (feature `guest`).
#[cfg(feature = "guest")]
mod guest;
mod messages;
pub mod summary;
mod template;
mod tokens;
mod window;
mod wire;

pub use messages::{Message, MessageRef, decode_message_refs, decode_messages, encode_messages};
pub use template::{
    MARKER_BREAK, Pieces, Template, markers, message_len, neutralise_markers, opening,
    opening_pieces, parse_messages, push_message, render_message, reply_opening, system_prompt,
    user_turn, user_turn_pieces,
};
pub use tokens::{TokenRecord, TokenRecordHead, append_ids, close_turn, session_tokens};
pub use window::{check_window_heads, choose_window, low_water};
pub use wire::{Reader, len_u32, put_string, put_u32, put_varint};

// The bindings the macros generate in a policy's crate use wit-bindgen's runtime from here.
#[cfg(feature = "guest")]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Decodes every record of a session, naming the index of the first one that cannot be read,
/// so an operator can find the broken record in the store. What `decode` makes may borrow
/// from the records (see [`decode_message_refs`]).
pub fn decode_records<'a, T>(
    records: &'a [Vec<u8>],
    decode: impl Fn(&'a [u8]) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    records
        .iter()
        .enumerate()
        .map(|(i, record)| decode(record).map_err(|e| format!("record {i}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_records_names_the_bad_index() {
        let good = TokenRecord {
            pinned: 0,
            window_start: 0,
            tokens: vec![1],
        }
        .encode();
        let records = vec![good.clone(), good, vec![9]];
        let err = decode_records(&records, TokenRecord::decode).unwrap_err();
        assert!(err.starts_with("record 2:"), "{err}");
    }
}
