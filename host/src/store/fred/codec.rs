//! How a session is laid out in a FReD keygroup.
//!
//! Per session: one item per turn ([`TurnItem`]), written once with a create-if-absent
//! Update, so a turn costs one relayed write whatever the length of the conversation, and
//! two nodes committing the same turn meet on the same item id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
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

/// One committed turn as one FReD item, written once, by one Update: the turn's record (if
/// the policy kept one), what a retry of this turn needs, and the digest of every turn before
/// it. Turn 1 also names the session's owner and mode. A reader rebuilds the head from the
/// last item of the chain, so no item is ever rewritten and a turn costs one relayed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnItem {
    /// The FReD node that committed the turn; orders concurrent versions of one turn.
    pub writer: String,
    /// Chain digest of turns 1..this one ([`chain`]), all zero for turn 1. A version whose
    /// `prev` is not the chain a reader has is of a losing branch or an older session with the
    /// same id, and is skipped.
    pub prev: Digest,
    pub updated_ms: u64,
    /// SHA-256 of the turn's prompt (hex, as the head keeps it), to recognise a retry.
    pub prompt_sha256: String,
    /// The reply as returned to the client, replayed on a retry.
    pub reply: String,
    pub record: Option<Vec<u8>>,
    /// Turn 1 only: who owns the session, its mode, when it began.
    pub origin: Option<Origin>,
}

/// What turn 1 says about the whole session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub user_id: String,
    pub mode: String,
    pub created_ms: u64,
}

/// A 16-byte chain digest.
pub type Digest = [u8; 16];

/// Layout version of [`TurnItem::encode`]; a reader refuses others instead of misreading.
const FORMAT: u8 = 1;
const HAS_RECORD: u8 = 1;
const HAS_ORIGIN: u8 = 2;
/// The prompt digest is 16 raw bytes, not its 32-character hex text.
const BINARY_PROMPT_DIGEST: u8 = 4;

impl TurnItem {
    /// Compact binary, then base64 (FReD values are UTF-8 strings): format, flags, writer,
    /// prev, time, prompt digest, [origin], reply, [record to the end].
    pub fn encode(&self) -> String {
        let mut out =
            Vec::with_capacity(64 + self.reply.len() + self.record.as_ref().map_or(0, Vec::len));
        let digest = (self.prompt_sha256.len() == 32)
            .then(|| hex::decode(&self.prompt_sha256).ok())
            .flatten();
        let flags = if self.record.is_some() { HAS_RECORD } else { 0 }
            | if self.origin.is_some() { HAS_ORIGIN } else { 0 }
            | if digest.is_some() {
                BINARY_PROMPT_DIGEST
            } else {
                0
            };
        out.extend([FORMAT, flags]);
        put_str8(&mut out, &self.writer);
        out.extend(self.prev);
        out.extend(self.updated_ms.to_le_bytes());
        match digest {
            Some(bytes) => out.extend(bytes),
            None => put_str8(&mut out, &self.prompt_sha256),
        }
        if let Some(origin) = &self.origin {
            put_bytes32(&mut out, origin.user_id.as_bytes());
            put_str8(&mut out, &origin.mode);
            out.extend(origin.created_ms.to_le_bytes());
        }
        put_bytes32(&mut out, self.reply.as_bytes());
        if let Some(record) = &self.record {
            out.extend(record);
        }
        STANDARD_NO_PAD.encode(out)
    }

    pub fn decode(value: &str) -> Result<Self, String> {
        let bytes = STANDARD_NO_PAD
            .decode(value)
            .map_err(|e| format!("turn item: {e}"))?;
        let mut r = Reader(&bytes);
        let [format, flags] = r.array()?;
        if format != FORMAT {
            return Err(format!(
                "turn item format {format}, this proxy reads {FORMAT}"
            ));
        }
        let writer = r.str8()?;
        let prev = r.array()?;
        let updated_ms = u64::from_le_bytes(r.array()?);
        let prompt_sha256 = if flags & BINARY_PROMPT_DIGEST != 0 {
            hex::encode(r.array::<16>()?)
        } else {
            r.str8()?
        };
        let origin = if flags & HAS_ORIGIN != 0 {
            Some(Origin {
                user_id: r.string(|r| r.bytes32())?,
                mode: r.str8()?,
                created_ms: u64::from_le_bytes(r.array()?),
            })
        } else {
            None
        };
        let reply = r.string(|r| r.bytes32())?;
        let record = (flags & HAS_RECORD != 0).then(|| r.0.to_vec());
        if record.is_none() && !r.0.is_empty() {
            return Err("turn item: bytes after the end".into());
        }
        Ok(TurnItem {
            writer,
            prev,
            updated_ms,
            prompt_sha256,
            reply,
            record,
            origin,
        })
    }
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend(bytes);
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_le_bytes());
    out.extend(bytes);
}

/// Reads [`TurnItem::encode`]'s fields, failing on truncation instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("turn item: truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn bytes32(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    fn str8(&mut self) -> Result<String, String> {
        self.string(|r| {
            let [n] = r.array()?;
            r.take(n as usize)
        })
    }

    fn string(
        &mut self,
        field: impl FnOnce(&mut Self) -> Result<&'a [u8], String>,
    ) -> Result<String, String> {
        String::from_utf8(field(self)?.to_vec()).map_err(|_| "turn item: text is not UTF-8".into())
    }
}

/// The chain digest after one more turn item (given as stored): every turn's bytes, in order,
/// so two nodes agree on a chain only if they hold exactly the same turns.
pub fn chain(previous: &Digest, value: &str) -> Digest {
    let mut hash = Sha256::new();
    hash.update(previous);
    hash.update(value.as_bytes());
    hash.finalize()[..16].try_into().expect("16 bytes")
}

/// Which of several versions of one turn item wins: every node must pick the same one from
/// the same set, so the order is on the stored values only (writer first, then the bytes).
pub fn wins_over(a: (&TurnItem, &str), b: (&TurnItem, &str)) -> bool {
    (&a.0.writer, a.1) > (&b.0.writer, b.1)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn item(record: Option<&[u8]>, origin: bool) -> TurnItem {
        TurnItem {
            writer: "nodeA".into(),
            prev: [7; 16],
            updated_ms: 1_700_000_000_123,
            prompt_sha256: "00ff".repeat(8),
            reply: r#"{"content":"Say \"hi\"","stop":true}"#.into(),
            record: record.map(<[u8]>::to_vec),
            origin: origin.then(|| Origin {
                user_id: "alice@example.org".into(),
                mode: "tokenized".into(),
                created_ms: 5,
            }),
        }
    }

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

    #[test]
    fn turn_items_round_trip_with_and_without_optional_parts() {
        for (record, origin) in [
            (Some(&[0u8, 1, 2, 255][..]), true),
            (Some(&[][..]), false),
            (None, true),
            (None, false),
        ] {
            let it = item(record, origin);
            assert_eq!(TurnItem::decode(&it.encode()).unwrap(), it);
        }
    }

    #[test]
    fn a_hex_prompt_digest_is_stored_as_bytes_and_read_back_as_hex() {
        let mut it = item(None, false);
        it.prompt_sha256 = "0123456789abcdef0123456789abcdef".into();
        let binary = it.encode();
        assert_eq!(TurnItem::decode(&binary).unwrap(), it);
        it.prompt_sha256 = "0123456789abcdef0123456789abcdeX".into();
        assert_eq!(
            TurnItem::decode(&it.encode()).unwrap(),
            it,
            "not hex: kept as text"
        );
        assert!(binary.len() + 20 < it.encode().len());
    }

    #[test]
    fn damaged_turn_items_are_refused_not_misread() {
        let encoded = item(None, true).encode();
        assert!(TurnItem::decode("").is_err());
        assert!(TurnItem::decode("!!").is_err());
        assert!(TurnItem::decode(&encoded[..encoded.len() - 4]).is_err());
        let mut bytes = STANDARD_NO_PAD.decode(&encoded).unwrap();
        bytes[0] = 9;
        assert!(
            TurnItem::decode(&STANDARD_NO_PAD.encode(&bytes)).is_err(),
            "unknown format"
        );
        bytes[0] = FORMAT;
        bytes.push(0);
        assert!(
            TurnItem::decode(&STANDARD_NO_PAD.encode(&bytes)).is_err(),
            "trailing bytes"
        );
    }

    #[test]
    fn a_turn_item_costs_little_beyond_its_record_and_reply() {
        let it = item(Some(&[0; 300]), false);
        let fixed = it.encode().len() - (300 + it.reply.len()) * 4 / 3;
        assert!(fixed < 110, "fixed cost {fixed} bytes");
    }

    #[test]
    fn chain_depends_on_every_turn_and_their_order() {
        let zero = [0; 16];
        let ab = chain(&chain(&zero, "a"), "b");
        assert_ne!(ab, chain(&chain(&zero, "b"), "a"));
        assert_ne!(ab, chain(&zero, "ab"));
    }

    #[test]
    fn the_same_version_wins_whoever_compares() {
        let a = item(None, false);
        let b = TurnItem {
            writer: "nodeB".into(),
            ..a.clone()
        };
        let (ea, eb) = (a.encode(), b.encode());
        assert!(wins_over((&b, &eb), (&a, &ea)));
        assert!(!wins_over((&a, &ea), (&b, &eb)));
    }
}
