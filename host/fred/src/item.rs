//! One committed turn as one FReD item, and how it is spelled as a FReD value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::bytes::{Reader, put_str8, put_varint};
use super::pack::{pack, unpack};
use super::reply::{put_reply, read_reply};

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
    /// The reply as returned to the client (JSON), replayed on a retry.
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
/// Format 1 (base64, fixed-width numbers, the reply as JSON text) is still read.
const FORMAT: u8 = 2;
const FORMAT_BASE64: u8 = 1;
const HAS_RECORD: u8 = 1;
const HAS_ORIGIN: u8 = 2;
/// The prompt digest is 16 raw bytes, not its 32-character hex text.
const BINARY_PROMPT_DIGEST: u8 = 4;

impl TurnItem {
    /// Compact binary as UTF-8 text ([`pack`]: text stays text): format, flags, writer, prev,
    /// time, prompt digest, [origin], [record], then the reply ([`put_reply`], which points
    /// into the record for text the record already holds).
    pub fn encode(&self) -> String {
        let record_len = self.record.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(64 + self.reply.len() + record_len);
        let digest = self.binary_digest();
        out.extend([FORMAT, self.flags(digest.is_some())]);
        put_str8(&mut out, &self.writer);
        out.extend(self.prev);
        put_varint(&mut out, self.updated_ms);
        match digest {
            Some(bytes) => out.extend(bytes),
            None => put_str8(&mut out, &self.prompt_sha256),
        }
        if let Some(origin) = &self.origin {
            put_varint(&mut out, origin.user_id.len() as u64);
            out.extend(origin.user_id.as_bytes());
            put_str8(&mut out, &origin.mode);
            put_varint(&mut out, origin.created_ms);
        }
        if let Some(record) = &self.record {
            put_varint(&mut out, record.len() as u64);
            out.extend(record);
        }
        put_reply(&mut out, &self.reply, self.record.as_deref());
        pack(&out)
    }

    /// Reads a value [`TurnItem::encode`] wrote, or one of format 1.
    pub fn decode(value: &str) -> Result<Self, String> {
        let bytes = match value.as_bytes().first() {
            Some(&FORMAT) | Some(0x7f) => unpack(value)?,
            _ => STANDARD_NO_PAD
                .decode(value)
                .map_err(|e| format!("turn item: {e}"))?,
        };
        let mut r = Reader(&bytes);
        let [format, flags] = r.array()?;
        let old = match format {
            FORMAT => false,
            FORMAT_BASE64 => true,
            _ => {
                return Err(format!(
                    "turn item format {format}, this proxy reads {FORMAT_BASE64} and {FORMAT}"
                ));
            }
        };
        let number = |r: &mut Reader| {
            if old {
                Ok(u64::from_le_bytes(r.array()?))
            } else {
                r.varint()
            }
        };
        let writer = r.str8()?;
        let prev = r.array()?;
        let updated_ms = number(&mut r)?;
        let prompt_sha256 = if flags & BINARY_PROMPT_DIGEST != 0 {
            hex::encode(r.array::<16>()?)
        } else {
            r.str8()?
        };
        let origin = if flags & HAS_ORIGIN != 0 {
            Some(Origin {
                user_id: r.string(|r| if old { r.bytes32() } else { r.bytes_varint() })?,
                mode: r.str8()?,
                created_ms: number(&mut r)?,
            })
        } else {
            None
        };
        let (reply, record) = if old {
            let reply = r.string(|r| r.bytes32())?;
            (
                reply,
                (flags & HAS_RECORD != 0).then(|| r.take_rest().to_vec()),
            )
        } else {
            let record = (flags & HAS_RECORD != 0)
                .then(|| r.bytes_varint().map(<[u8]>::to_vec))
                .transpose()?;
            (read_reply(&mut r, record.as_deref())?, record)
        };
        if !r.0.is_empty() {
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

    fn binary_digest(&self) -> Option<Vec<u8>> {
        (self.prompt_sha256.len() == 32)
            .then(|| hex::decode(&self.prompt_sha256).ok())
            .flatten()
    }

    fn flags(&self, binary_digest: bool) -> u8 {
        let mut flags = 0;
        if self.record.is_some() {
            flags |= HAS_RECORD;
        }
        if self.origin.is_some() {
            flags |= HAS_ORIGIN;
        }
        if binary_digest {
            flags |= BINARY_PROMPT_DIGEST;
        }
        flags
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
        assert!(binary.len() + 12 < it.encode().len());
    }

    #[test]
    fn damaged_turn_items_are_refused_not_misread() {
        let encoded = item(None, true).encode();
        assert!(TurnItem::decode("").is_err());
        assert!(TurnItem::decode("!!").is_err());
        assert!(TurnItem::decode(&encoded[..encoded.len() - 4]).is_err());
        let mut bytes = unpack(&encoded).unwrap();
        bytes[0] = 9;
        assert!(TurnItem::decode(&pack(&bytes)).is_err(), "unknown format");
        bytes[0] = FORMAT;
        bytes.push(0);
        assert!(TurnItem::decode(&pack(&bytes)).is_err(), "trailing bytes");
    }

    /// Format 1 as the previous version wrote it: base64, fixed-width numbers, JSON reply.
    fn format1(it: &TurnItem) -> String {
        let mut out = vec![FORMAT_BASE64, it.flags(true)];
        put_str8(&mut out, &it.writer);
        out.extend(it.prev);
        out.extend(it.updated_ms.to_le_bytes());
        out.extend(it.binary_digest().unwrap());
        if let Some(origin) = &it.origin {
            out.extend((origin.user_id.len() as u32).to_le_bytes());
            out.extend(origin.user_id.as_bytes());
            put_str8(&mut out, &origin.mode);
            out.extend(origin.created_ms.to_le_bytes());
        }
        out.extend((it.reply.len() as u32).to_le_bytes());
        out.extend(it.reply.as_bytes());
        out.extend(it.record.as_deref().unwrap_or_default());
        STANDARD_NO_PAD.encode(out)
    }

    #[test]
    fn items_of_the_previous_format_are_still_read() {
        for (record, origin) in [(Some(&b"\x01\x02abc"[..]), true), (None, false)] {
            let it = item(record, origin);
            assert_eq!(TurnItem::decode(&format1(&it)).unwrap(), it);
        }
    }

    #[test]
    fn a_turn_item_costs_little_beyond_its_record() {
        // A raw-like record: the reply's text is in it, so the item holds it once.
        let text = "A twenty-word reply from the model, as the policy keeps it in its record here.";
        let mut record = b"\x02\0\0\0\x04\0\0\0user\x05\0\0\0hello".to_vec();
        record.extend(text.as_bytes());
        let mut it = item(Some(&record), false);
        it.reply = serde_json::json!({"content": text, "stop": true, "stop_type": "eos",
            "stopping_word": "", "tokens_predicted": 20, "tokens_evaluated": 250,
            "truncated": false, "tokens": []})
        .to_string();
        let encoded = it.encode();
        assert_eq!(TurnItem::decode(&encoded).unwrap(), it);
        let fixed = encoded.len() - record.len();
        assert!(fixed < 80, "fixed cost {fixed} bytes");
        // Token ids (binary) cost at most 8/7 of their bytes.
        let ids: Vec<u8> = (0..700u32)
            .flat_map(|i| [0x80 | (i % 128) as u8, (i / 128) as u8])
            .collect();
        let it = item(Some(&ids), false);
        assert!(it.encode().len() < ids.len() * 8 / 7 + 80);
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
