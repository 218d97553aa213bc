//! The message-list record format used by the `raw` policy.
//!
//! Layout (all integers u32 little-endian): `count`, then per message
//! `role_len`, role UTF-8, `content_len`, content UTF-8. Nothing may follow.

use crate::wire::{Reader, len_u32, put_string, put_u32};

/// A chat message: (role, content).
pub type Message = (String, String);

/// A chat message borrowed from the record it was read from: (role, content).
pub type MessageRef<'a> = (&'a str, &'a str);

pub fn encode_messages(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, len_u32(messages.len()));
    for (role, content) in messages {
        put_string(&mut out, role);
        put_string(&mut out, content);
    }
    out
}

pub fn decode_messages(bytes: &[u8]) -> Result<Vec<Message>, String> {
    let messages = decode_message_refs(bytes)?;
    Ok(messages
        .into_iter()
        .map(|(role, content)| (role.to_owned(), content.to_owned()))
        .collect())
}

/// Like [`decode_messages`], without copying the text: a long session is rendered straight
/// from its records, within the policy's memory limit.
pub fn decode_message_refs(bytes: &[u8]) -> Result<Vec<MessageRef<'_>>, String> {
    let mut r = Reader::new(bytes);
    let count = r.u32("message count")? as usize;
    // Each message takes at least 8 bytes; don't let a garbage count reserve gigabytes.
    let mut messages = Vec::with_capacity(count.min(r.remaining() / 8));
    for i in 0..count {
        let role = r.str(&format!("role of message {i}"))?;
        let content = r.str(&format!("content of message {i}"))?;
        messages.push((role, content));
    }
    if r.remaining() != 0 {
        return Err(format!(
            "{} stray bytes after {count} messages",
            r.remaining()
        ));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        (role.to_owned(), content.to_owned())
    }

    #[test]
    fn round_trips() {
        for messages in [
            vec![],
            vec![msg("user", "")],
            vec![
                msg("system", "Be brief."),
                msg("user", "Grüße 👋"),
                msg("assistant", "Hi"),
            ],
        ] {
            assert_eq!(
                decode_messages(&encode_messages(&messages)).unwrap(),
                messages
            );
        }
    }

    #[test]
    fn refs_borrow_the_same_messages() {
        let messages = vec![msg("user", "Grüße"), msg("assistant", "")];
        let bytes = encode_messages(&messages);
        let refs = decode_message_refs(&bytes).unwrap();
        assert_eq!(refs, [("user", "Grüße"), ("assistant", "")]);
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode_messages(&[msg("ab", "c")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']
        );
    }

    #[test]
    fn rejects_garbage() {
        let good = encode_messages(&[msg("user", "hello"), msg("assistant", "hi")]);
        // Every strict prefix is truncated somewhere.
        for cut in 0..good.len() {
            assert!(
                decode_messages(&good[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_messages(&trailing).unwrap_err().contains("stray"));
        assert!(decode_messages(&[0xff, 0xff, 0xff, 0xff]).is_err());
        let not_utf8 = [1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0, 0, 0, 0];
        assert!(decode_messages(&not_utf8).unwrap_err().contains("UTF-8"));
    }
}
