//! The `summarize` policy's record, here so it is tested natively and other policies can
//! reuse it: the turn as a token record (as `truncate` stores it), and, on the turns that
//! wrote one, the rolling summary that stands for the turns before the window.
//!
//! Layout: a format byte (`S`), the token record's length (varint) and bytes, then either
//! nothing or the summary: how many records it covers (varint), its text (u32 length and
//! UTF-8) and its framed message as token ids (varints to the end). The text is kept for the
//! next summary's prompt, the ids so every node sends exactly the same prompt.

use crate::wire::{Reader, len_u32, put_string, put_varint};

const FORMAT: u8 = b'S';

/// The conversation before the window, as the model summarised it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records `0..folded` are what it summarises; the prompt's window starts at `folded`.
    pub folded: u32,
    pub text: String,
    /// The summary as the message the prompt carries (template frame included).
    pub ids: Vec<u32>,
}

impl Summary {
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.folded);
        put_string(out, &self.text);
        for &id in &self.ids {
            put_varint(out, id);
        }
    }

    /// Reads the summary part [`split`] found.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let folded = r.varint("summary coverage")?;
        let text = r.str("summary text")?.to_owned();
        let mut ids = Vec::new();
        while r.remaining() > 0 {
            ids.push(r.varint("summary token")?);
        }
        Ok(Self { folded, text, ids })
    }
}

/// A record from its token record and the summary it wrote, if any.
pub fn encode(turn: &[u8], summary: Option<&Summary>) -> Vec<u8> {
    let mut out = Vec::with_capacity(turn.len() + 8);
    out.push(FORMAT);
    put_varint(&mut out, len_u32(turn.len()));
    out.extend_from_slice(turn);
    if let Some(summary) = summary {
        summary.encode_into(&mut out);
    }
    out
}

/// A record's token record and its summary bytes (`None` when it wrote none), borrowed: a
/// turn reads every record's head but only the latest summary.
pub fn split(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    let mut r = Reader::new(bytes);
    let format = r.take(1, "format byte")?[0];
    if format != FORMAT {
        return Err(format!("not a summarize record (format byte {format})"));
    }
    let len = r.varint("turn length")? as usize;
    let turn = r.take(len, "turn")?;
    let rest = r.take(r.remaining(), "summary")?;
    Ok((turn, (!rest.is_empty()).then_some(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_with_and_without_a_summary() {
        let summary = Summary {
            folded: 7,
            text: "The dog is called Biscuit.".into(),
            ids: vec![1, 300, 70_000],
        };
        let with = encode(&[1, 0, 0, 5], Some(&summary));
        let (turn, part) = split(&with).unwrap();
        assert_eq!(turn, [1, 0, 0, 5]);
        assert_eq!(Summary::decode(part.unwrap()).unwrap(), summary);
        let without = encode(&[1, 0, 0], None);
        assert_eq!(split(&without).unwrap(), (&[1u8, 0, 0][..], None));
    }

    #[test]
    fn broken_records_are_refused_with_a_reason() {
        assert!(split(&[]).unwrap_err().contains("format byte"));
        assert!(
            split(&[1, 0, 0])
                .unwrap_err()
                .contains("not a summarize record")
        );
        assert!(split(&[b'S', 9, 1]).unwrap_err().contains("turn"));
        assert!(
            Summary::decode(&[3, 9, 0, 0, 0])
                .unwrap_err()
                .contains("summary text")
        );
    }
}
