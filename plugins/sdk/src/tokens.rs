//! The token record format used by the `tokenized` and `truncate` policies.
//!
//! Layout: a format byte (1), then as unsigned LEB128 varints `pinned`, `window_start` and
//! every token id. Varints keep records small on the wire: ids of a 50k-token vocabulary take
//! 1 to 3 bytes instead of 4, and records are replicated between edge nodes every turn.
//! Storing ids rather than text means a stored turn is never re-tokenized, so the next
//! prompt starts with exactly the ids the model already evaluated and llama-server's
//! prompt cache hits.

use crate::wire::{Reader, put_varint};

/// The first byte of every token record: lets a later build change the layout and still read
/// the sessions stored by this one.
const FORMAT_VARINT: u8 = 1;

/// One committed turn as token ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRecord {
    /// How many leading `tokens` are the conversation opening (bos and system message), which
    /// must never be dropped. Only the first record of a session has any.
    pub pinned: u32,
    /// Index of the oldest record the prompt kept when this turn was served (truncate's
    /// window); 0 for policies that never drop anything.
    pub window_start: u32,
    /// The turn's ids: opening (if any), user message, reply opening, generated ids, suffix.
    pub tokens: Vec<u32>,
}

impl TokenRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + 2 * self.tokens.len());
        out.push(FORMAT_VARINT);
        put_varint(&mut out, self.pinned);
        put_varint(&mut out, self.window_start);
        for &id in &self.tokens {
            put_varint(&mut out, id);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        // Every varint ends with exactly one byte below 0x80: reserve what the ids need, not
        // four bytes per record byte (a long session must fit the policy's memory limit).
        let ids = bytes.iter().skip(1).filter(|&&b| b < 0x80).count();
        let mut tokens = Vec::with_capacity(ids.saturating_sub(2));
        let head = read(bytes, |id| tokens.push(id))?;
        Ok(Self {
            pinned: head.pinned,
            window_start: head.window_start,
            tokens,
        })
    }

    /// Reads and checks a record as [`decode`](Self::decode) does (the same errors), but keeps
    /// only its header and length: so a policy can size and check a long session without
    /// holding every id of it in memory at once.
    pub fn head(bytes: &[u8]) -> Result<TokenRecordHead, String> {
        read(bytes, |_| {})
    }

    /// The record a window policy (`truncate`, `summarize`) carries from `prepare` to
    /// `commit`: on a session's first turn the opening in front of the new ids, pinned so no
    /// window drops it; later the new ids and where the window starts.
    pub fn window_turn(
        first_turn: bool,
        opening: Vec<u32>,
        new: Vec<u32>,
        window_start: u32,
    ) -> Self {
        if first_turn {
            Self {
                pinned: opening.len() as u32,
                window_start: 0,
                tokens: [opening, new].concat(),
            }
        } else {
            Self {
                pinned: 0,
                window_start,
                tokens: new,
            }
        }
    }

    /// The conversation opening this record pins.
    pub fn pinned_tokens(&self) -> &[u32] {
        &self.tokens[..self.pinned_len()]
    }

    /// The tokens a sliding window may drop.
    pub fn unpinned_tokens(&self) -> &[u32] {
        &self.tokens[self.pinned_len()..]
    }

    /// Clamped, so a hand-built record with a bad `pinned` cannot make the slices panic.
    fn pinned_len(&self) -> usize {
        (self.pinned as usize).min(self.tokens.len())
    }
}

/// A token record without its ids: see [`TokenRecord::head`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRecordHead {
    pub pinned: u32,
    pub window_start: u32,
    /// How many ids the record holds (pinned ones included).
    pub tokens: usize,
}

impl TokenRecordHead {
    /// How many of the ids a sliding window may drop.
    pub fn unpinned(&self) -> usize {
        self.tokens - self.pinned as usize
    }
}

/// Checks a record's layout, handing each id to `id`; the one decoder behind `decode` and `head`.
fn read(bytes: &[u8], mut id: impl FnMut(u32)) -> Result<TokenRecordHead, String> {
    let mut r = Reader::new(bytes);
    let format = r.take(1, "format byte")?[0];
    if format != FORMAT_VARINT {
        return Err(format!("unknown token record format {format}"));
    }
    let pinned = r.varint("pinned count")?;
    let window_start = r.varint("window start")?;
    let mut tokens = 0;
    while r.remaining() > 0 {
        id(r.varint("token")?);
        tokens += 1;
    }
    if pinned as usize > tokens {
        return Err(format!("pins {pinned} tokens but holds only {tokens}"));
    }
    Ok(TokenRecordHead {
        pinned,
        window_start,
        tokens,
    })
}

/// Turns the record a token policy carried from `prepare` into the one to store: appends the
/// ids the model generated and the tokenized message suffix. The suffix closes the assistant
/// message, since the model stops at it (or at the limit) and llama-server does not return the
/// stop token; so the stored ids are exactly what the model saw and made.
pub fn close_turn(
    carry: &[u8],
    reply_ids: &[u32],
    reply_text: &str,
    suffix_ids: &[u32],
) -> Result<Vec<u8>, String> {
    let mut record = TokenRecord::decode(carry).map_err(|e| format!("carry: {e}"))?;
    if reply_ids.is_empty() && !reply_text.is_empty() {
        // Storing nothing would silently drop the reply from the conversation.
        return Err("the reply has text but no token ids (was `return_tokens` honoured?)".into());
    }
    record.tokens.extend_from_slice(reply_ids);
    // A model that stopped at its end-of-turn token has generated the suffix's start already
    // (llama-server returns that id in `tokens`): append only the rest, or the stored tokens
    // would differ from what the model saw and the next turn's prompt cache would miss.
    let generated = generated_suffix_len(reply_ids, suffix_ids);
    record.tokens.extend_from_slice(&suffix_ids[generated..]);
    Ok(record.encode())
}

/// Every id of a session's records, oldest first: the whole conversation as the model saw it
/// over time (the opening and the turns a window no longer sends included), for showing the
/// session to its owner. Names the first record that cannot be read.
pub fn session_tokens(records: &[Vec<u8>]) -> Result<Vec<u32>, String> {
    let heads = crate::decode_records(records, TokenRecord::head)?;
    let mut ids = Vec::with_capacity(heads.iter().map(|h| h.tokens).sum());
    for record in records {
        // Checked just above: every record reads.
        append_ids(record, 0, &mut ids)?;
    }
    Ok(ids)
}

/// Appends a record's ids after its first `skip` to `out`, checking the record as
/// [`TokenRecord::decode`] does: a prompt is built from many records without first decoding
/// each into a vector of its own.
pub fn append_ids(record: &[u8], skip: usize, out: &mut Vec<u32>) -> Result<(), String> {
    let mut seen = 0;
    read(record, |id| {
        if seen >= skip {
            out.push(id);
        }
        seen += 1;
    })?;
    Ok(())
}

/// The longest start of `suffix` that `reply` ends with.
fn generated_suffix_len(reply: &[u32], suffix: &[u32]) -> usize {
    (1..=suffix.len().min(reply.len()))
        .rev()
        .find(|&n| reply.ends_with(&suffix[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_turn_pins_the_opening_only_on_the_first_turn() {
        let first = TokenRecord::window_turn(true, vec![1, 2], vec![3], 5);
        assert_eq!(
            (first.pinned, first.window_start, first.tokens),
            (2, 0, vec![1, 2, 3])
        );
        let later = TokenRecord::window_turn(false, vec![1, 2], vec![3], 5);
        assert_eq!(
            (later.pinned, later.window_start, later.tokens),
            (0, 5, vec![3])
        );
    }

    #[test]
    fn append_ids_skips_the_first_ids_and_checks_the_record() {
        let record = TokenRecord {
            pinned: 2,
            window_start: 0,
            tokens: vec![7, 8, 300, 9],
        };
        let mut out = vec![1];
        append_ids(&record.encode(), 0, &mut out).unwrap();
        append_ids(&record.encode(), 2, &mut out).unwrap();
        append_ids(&record.encode(), 9, &mut out).unwrap();
        assert_eq!(out, [1, 7, 8, 300, 9, 300, 9]);
        assert_eq!(
            append_ids(&[9], 0, &mut out),
            TokenRecord::decode(&[9]).map(|_| ())
        );
    }

    #[test]
    fn session_tokens_joins_every_record_in_order() {
        let record = |pinned, tokens: &[u32]| {
            TokenRecord {
                pinned,
                window_start: 0,
                tokens: tokens.to_vec(),
            }
            .encode()
        };
        let records = vec![record(1, &[7, 1, 2]), record(0, &[]), record(0, &[300, 4])];
        assert_eq!(session_tokens(&records).unwrap(), [7, 1, 2, 300, 4]);
        assert_eq!(session_tokens(&[]).unwrap(), Vec::<u32>::new());
        let broken = vec![records[0].clone(), vec![2]];
        assert!(
            session_tokens(&broken)
                .unwrap_err()
                .starts_with("record 1:")
        );
    }

    #[test]
    fn round_trips() {
        for record in [
            TokenRecord::default(),
            TokenRecord {
                pinned: 2,
                window_start: 0,
                tokens: vec![1, 2, 3],
            },
            TokenRecord {
                pinned: 0,
                window_start: 7,
                tokens: vec![0, u32::MAX, 151_645],
            },
        ] {
            assert_eq!(TokenRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let record = TokenRecord {
            pinned: 1,
            window_start: 2,
            tokens: vec![258],
        };
        // format 1, pinned 1, window 2, token 258 = 0b10_0000010 -> [0x82, 0x02]
        assert_eq!(record.encode(), [1, 1, 2, 0x82, 0x02]);
        let small = TokenRecord {
            pinned: 0,
            window_start: 0,
            tokens: vec![5; 100],
        };
        assert_eq!(small.encode().len(), 103, "ids under 128 take one byte");
    }

    #[test]
    fn rejects_garbage() {
        assert!(TokenRecord::decode(&[]).unwrap_err().contains("truncated"));
        assert!(TokenRecord::decode(&[0; 4]).unwrap_err().contains("format"));
        assert!(
            TokenRecord::decode(&[1, 0, 0, 0x80])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(TokenRecord::decode(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        let over_pinned = TokenRecord {
            pinned: 2,
            window_start: 0,
            tokens: vec![5],
        }
        .encode();
        assert!(
            TokenRecord::decode(&over_pinned)
                .unwrap_err()
                .contains("pins 2")
        );
    }

    #[test]
    fn head_reads_the_header_and_counts_the_ids() {
        let record = TokenRecord {
            pinned: 2,
            window_start: 5,
            tokens: vec![1, 300, u32::MAX],
        };
        let head = TokenRecord::head(&record.encode()).unwrap();
        assert_eq!(
            head,
            TokenRecordHead {
                pinned: 2,
                window_start: 5,
                tokens: 3
            }
        );
        assert_eq!(head.unpinned(), 1);
        assert_eq!(
            TokenRecord::head(&[1, 0, 0, 0x80]),
            Err(TokenRecord::decode(&[1, 0, 0, 0x80]).unwrap_err())
        );
    }

    #[test]
    fn decode_reserves_only_what_the_ids_need() {
        // 3-byte ids: four bytes per record byte would reserve four times too much.
        let record = TokenRecord {
            pinned: 0,
            window_start: 0,
            tokens: vec![20_000; 1000],
        };
        let decoded = TokenRecord::decode(&record.encode()).unwrap();
        assert_eq!(decoded.tokens.capacity(), 1000);
    }

    #[test]
    fn splits_pinned_from_unpinned() {
        let record = TokenRecord {
            pinned: 2,
            window_start: 0,
            tokens: vec![1, 2, 3, 4],
        };
        assert_eq!(record.pinned_tokens(), [1, 2]);
        assert_eq!(record.unpinned_tokens(), [3, 4]);
        let bad = TokenRecord {
            pinned: 9,
            ..record
        };
        assert_eq!(bad.unpinned_tokens(), [] as [u32; 0]);
    }

    #[test]
    fn close_turn_appends_reply_then_suffix() {
        let carry = TokenRecord {
            pinned: 1,
            window_start: 3,
            tokens: vec![10, 11],
        }
        .encode();
        let stored = close_turn(&carry, &[20, 21], "hi", &[99]).unwrap();
        let expected = TokenRecord {
            pinned: 1,
            window_start: 3,
            tokens: vec![10, 11, 20, 21, 99],
        };
        assert_eq!(TokenRecord::decode(&stored).unwrap(), expected);
        let stopped_at_end = close_turn(&carry, &[20, 98], "hi", &[98, 99]).unwrap();
        assert_eq!(
            TokenRecord::decode(&stopped_at_end).unwrap().tokens,
            vec![10, 11, 20, 98, 99],
            "an end marker the model generated is not added twice"
        );
        assert!(
            close_turn(&carry, &[], "", &[99]).is_ok(),
            "an empty reply is fine"
        );
        assert!(
            close_turn(&carry, &[], "hi", &[99])
                .unwrap_err()
                .contains("no token ids")
        );
        assert!(
            close_turn(&[1, 2], &[20], "hi", &[99])
                .unwrap_err()
                .starts_with("carry:")
        );
    }
}
