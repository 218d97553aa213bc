//! How a session is laid out in a FReD keygroup.
//!
//! Per session: one item per turn ([`super::item::TurnItem`]), written once with a create-if-absent
//! Update, so a turn costs one relayed write whatever the length of the conversation, and
//! two nodes committing the same turn meet on the same item id.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Whether FReD accepts `name` as a keygroup name, node id or item id (`^[a-zA-Z0-9]+$`).
pub fn is_fred_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// What every turn item id of a session starts with. Item ids must be `[A-Za-z0-9]+`; the
/// session id's length keeps ids of different sessions apart (`t05abcde00000003`).
pub fn turn_prefix(session_id: &str) -> String {
    format!("t{:02}{session_id}", session_id.len())
}

/// The item holding turn `turn` (1-based); zero-padded, so a session's turns are contiguous
/// and in order for one Scan.
pub fn turn_key(session_id: &str, turn: u32) -> String {
    format!("{}{turn:08}", turn_prefix(session_id))
}

/// The turn number of an item id that starts with `prefix`, if it is one of its turn items.
pub fn turn_of(prefix: &str, id: &str) -> Option<u32> {
    let rest = id.strip_prefix(prefix)?;
    (rest.len() == 8).then(|| rest.parse().ok()).flatten()
}

/// The session id and turn of a turn item's id, if `id` is one.
pub fn parse_turn_key(id: &str) -> Option<(&str, u32)> {
    let rest = id.strip_prefix('t')?;
    let len: usize = rest.get(..2)?.parse().ok()?;
    let session_id = rest.get(2..2 + len)?;
    let turn = rest.get(2 + len..)?;
    (turn.len() == 8 && turn.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Some((session_id, turn.parse().ok()?)))
        .flatten()
}

/// Each user's session index: items `u{hash}1{session id}`, one per session, after an anchor
/// item `u{hash}0` (a Scan must start at an existing id). The hash is the first 8 bytes of the
/// user id's SHA-256 in hex, so any user id makes a valid item id of fixed length. FReD's
/// stores order items by `id|`, so an id sorts after longer ids it is a prefix of: the `0` and
/// `1` put the anchor before the entries and keep one user's items contiguous. The values
/// name the user, so the (unlikely) sessions of another user with the same hash are told apart.
pub fn user_prefix(user_id: &str) -> String {
    format!("u{}", hex::encode(&Sha256::digest(user_id.as_bytes())[..8]))
}

pub fn user_anchor_key(user_id: &str) -> String {
    user_prefix(user_id) + "0"
}

pub fn user_session_key(user_id: &str, session_id: &str) -> String {
    user_prefix(user_id) + "1" + session_id
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_alphanumeric_ordered_and_unambiguous() {
        assert_eq!(turn_key("abc", 7), "t03abc00000007");
        assert!(turn_key("abc", 9) < turn_key("abc", 10));
        assert!(
            !turn_key("ab0", 1).starts_with(&turn_prefix("ab")),
            "another session's turns never interleave"
        );
        assert!(is_fred_name(&turn_key("x", 1)));
        assert_eq!(turn_of(&turn_prefix("abc"), &turn_key("abc", 42)), Some(42));
        assert_eq!(turn_of(&turn_prefix("abc"), "t03abc0000004"), None);
        assert_eq!(turn_of(&turn_prefix("abc"), "t03abd00000001"), None);
        assert_eq!(parse_turn_key(&turn_key("abc", 42)), Some(("abc", 42)));
        assert_eq!(
            parse_turn_key(&turn_key("a1b2c3d4e5f6", 1)),
            Some(("a1b2c3d4e5f6", 1))
        );
        for other in [
            "t03abc0000004",
            "u03abc00000001",
            "t",
            "t9",
            "t03ab",
            "t03abc0000000x",
        ] {
            assert_eq!(parse_turn_key(other), None, "{other}");
        }
    }

    #[test]
    fn user_index_keys_are_alphanumeric_and_contiguous() {
        let anchor = user_anchor_key("alice@example.org");
        assert_eq!(anchor.len(), 18);
        assert!(is_fred_name(&anchor));
        let entry = user_session_key("alice@example.org", "abc");
        assert_eq!(entry, format!("{}1abc", user_prefix("alice@example.org")));
        // FReD iterates `id|`: the anchor must come first that way too.
        assert!(
            format!("{anchor}|") < format!("{entry}|"),
            "the anchor comes first in a Scan"
        );
        assert!(entry.starts_with(&user_prefix("alice@example.org")));
        assert_ne!(user_anchor_key("bob"), anchor);
        let value = IndexEntry {
            user_id: "alice".into(),
            session_id: "abc".into(),
        };
        assert_eq!(IndexEntry::decode(&value.encode()).unwrap(), value);
        assert!(IndexEntry::decode("garbage").is_err());
    }
}
