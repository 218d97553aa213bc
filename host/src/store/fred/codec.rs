//! How a session is laid out in a FReD keygroup, and how siblings are resolved.
//!
//! Per session: one head item, rewritten each turn (small: turn, lengths, chain digest, the
//! last reply for retries), and one item per record, written once. So a turn writes its own
//! delta plus the head, whatever the length of the conversation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::SessionHead;

/// Item ids must be `[A-Za-z0-9]+`; the session id's length keeps ids of different sessions
/// apart (`h05abcde`, `r05abcde00000003`), and the zero-padded record number keeps a
/// Whether FReD accepts `name` as a keygroup name, node id or item id (`^[a-zA-Z0-9]+$`).
pub fn is_fred_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// session's records contiguous and in order for one Scan.
pub fn head_key(session_id: &str) -> String {
    format!("h{:02}{session_id}", session_id.len())
}

pub fn record_key(session_id: &str, number: u32) -> String {
    format!("r{:02}{session_id}{number:08}", session_id.len())
}

/// Each user's session index: an anchor item `u{hash}` (a Scan must start at an existing id)
/// followed, in id order, by one item `u{hash}{session id}` per session. The hash is the first
/// 8 bytes of the user id's SHA-256 in hex, so any user id makes a valid item id of fixed
/// length, and one user's items are contiguous. The values name the user, so the (unlikely)
/// sessions of another user with the same hash are told apart.
pub fn user_anchor_key(user_id: &str) -> String {
    format!("u{}", hex::encode(&Sha256::digest(user_id.as_bytes())[..8]))
}

pub fn user_session_key(user_id: &str, session_id: &str) -> String {
    user_anchor_key(user_id) + session_id
}

/// The value of a user index item: whose it is and, except for the anchor, which session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub user_id: String,
    /// Empty for the anchor.
    pub session_id: String,
}

impl IndexEntry {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an index entry always serializes")
    }

    pub fn decode(value: &str) -> Result<Self, String> {
        serde_json::from_str(value).map_err(|e| format!("user index entry: {e}"))
    }
}

/// The head as stored in FReD: the store-independent head plus what replication needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FredHead {
    #[serde(flatten)]
    pub head: SessionHead,
    /// The node that committed this turn; breaks ties between concurrent heads.
    pub writer: String,
    /// Digest over all records in order ([`chain`]); tells a node whether the records it has
    /// cached (or just fetched) are exactly the ones this head commits to.
    pub chain: String,
}

impl FredHead {
    pub fn decode(value: &str) -> Result<Self, String> {
        let mut json: serde_json::Value =
            serde_json::from_str(value).map_err(|e| format!("session head: {e}"))?;
        if let Some(reply) = json.get_mut("last_reply").filter(|r| !r.is_string()) {
            *reply = serde_json::Value::String(reply.to_string());
        }
        serde_json::from_value(json).map_err(|e| format!("session head: {e}"))
    }

    /// JSON, with the last reply embedded as JSON rather than as an escaped string: the head
    /// is written every turn, so every byte counts.
    pub fn encode(&self) -> String {
        let mut json = serde_json::to_value(self).expect("a head always serializes");
        if let Ok(reply) = serde_json::from_str::<serde_json::Value>(&self.head.last_reply) {
            json["last_reply"] = reply;
        }
        json.to_string()
    }

    /// Concurrent heads (FReD siblings): the higher turn wins, ties go to the higher node id.
    /// Every node picks the same winner, so resolutions written by different nodes agree.
    pub fn wins_over(&self, other: &FredHead) -> bool {
        (self.head.turn, &self.writer, &self.chain) > (other.head.turn, &other.writer, &other.chain)
    }
}

/// Extends a chain digest by one record (the empty string is the chain of no records).
pub fn chain(previous: &str, record: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(previous.as_bytes());
    hash.update((record.len() as u64).to_le_bytes());
    hash.update(record);
    hex::encode(&hash.finalize()[..16])
}

pub fn chain_all<'a>(records: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    records
        .into_iter()
        .fold(String::new(), |digest, record| chain(&digest, record))
}

/// `WRITER.BASE64`: FReD values are UTF-8 strings, so record bytes travel as base64 (4 chars
/// per 3 bytes, no padding); the writer tells concurrent versions of one record apart.
pub fn encode_record(writer: &str, record: &[u8]) -> String {
    let mut value = String::with_capacity(writer.len() + 1 + record.len().div_ceil(3) * 4);
    value.push_str(writer);
    value.push('.');
    STANDARD_NO_PAD.encode_string(record, &mut value);
    value
}

pub fn decode_record(value: &str) -> Result<(&str, Vec<u8>), String> {
    let (writer, data) = value.split_once('.').ok_or("record without writer")?;
    let bytes = STANDARD_NO_PAD
        .decode(data)
        .map_err(|e| format!("record: {e}"))?;
    Ok((writer, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(turn: u32, writer: &str) -> FredHead {
        FredHead {
            head: SessionHead {
                user_id: "u".into(),
                mode: "tokenized".into(),
                turn,
                records: turn,
                last_prompt_sha256: String::new(),
                last_reply: "{}".into(),
                created_ms: 0,
                updated_ms: 0,
            },
            writer: writer.into(),
            chain: String::new(),
        }
    }

    #[test]
    fn keys_are_alphanumeric_ordered_and_unambiguous() {
        assert_eq!(head_key("abc"), "h03abc");
        assert_eq!(record_key("abc", 7), "r03abc00000007");
        assert!(record_key("abc", 9) < record_key("abc", 10));
        assert!(
            !record_key("ab0", 1).starts_with("r02ab"),
            "another session's records never interleave"
        );
        assert!(is_fred_name(&record_key("x", 1)));
    }

    #[test]
    fn user_index_keys_are_alphanumeric_and_contiguous() {
        let anchor = user_anchor_key("alice@example.org");
        assert_eq!(anchor.len(), 17);
        assert!(is_fred_name(&anchor));
        let entry = user_session_key("alice@example.org", "abc");
        assert_eq!(entry, format!("{anchor}abc"));
        assert!(anchor < entry, "the anchor comes first in a Scan");
        assert_ne!(user_anchor_key("bob"), anchor);
        let value = IndexEntry {
            user_id: "alice".into(),
            session_id: "abc".into(),
        };
        assert_eq!(IndexEntry::decode(&value.encode()).unwrap(), value);
        assert!(IndexEntry::decode("garbage").is_err());
    }

    #[test]
    fn records_round_trip() {
        let value = encode_record("nodeA", &[0, 1, 2, 255]);
        assert_eq!(
            decode_record(&value).unwrap(),
            ("nodeA", vec![0, 1, 2, 255])
        );
        assert!(decode_record("garbage").is_err());
    }

    #[test]
    fn higher_turn_then_higher_node_wins() {
        assert!(head(3, "a").wins_over(&head(2, "z")));
        assert!(head(3, "b").wins_over(&head(3, "a")));
        assert!(!head(3, "a").wins_over(&head(3, "b")));
    }

    #[test]
    fn chain_depends_on_every_record_and_their_order() {
        let (a, b) = (vec![1u8], vec![2u8]);
        assert_ne!(chain_all([&a, &b]), chain_all([&b, &a]));
        assert_eq!(chain(&chain_all([&a]), &b), chain_all([&a, &b]));
        assert_eq!(chain_all([]), "");
    }

    #[test]
    fn heads_round_trip() {
        let mut h = head(4, "nodeB");
        assert_eq!(FredHead::decode(&h.encode()).unwrap(), h);
        h.head.last_reply = r#"{"content":"Say \"hi\"","stop_type":"eos"}"#.into();
        let encoded = h.encode();
        assert!(
            encoded.contains(r#""last_reply":{"content""#),
            "embedded, not escaped: {encoded}"
        );
        assert_eq!(FredHead::decode(&encoded).unwrap(), h);
    }
}
