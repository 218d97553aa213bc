//! What a journal frame holds (a group's turns and deletes, in the order they were checked)
//! and how each reaches the database: replayed after a crash, or applied by a checkpoint.

use redb::{ReadableTable, WriteTransaction};

use super::{HEADS, RECORDS, USER_SESSIONS, decode_head, unavailable};
use crate::store::{SessionHead, StoreError, check_next_turn};

/// One change of one session, as journaled.
#[derive(Debug, PartialEq)]
pub(super) enum Op<'a> {
    /// A turn: its head (JSON) replaces the stored one and its record, if any, is appended.
    Turn {
        id: &'a str,
        head_json: &'a [u8],
        record: Option<&'a [u8]>,
    },
    /// The session's head, records and index row go.
    Delete { id: &'a str },
}

/// Appends `op` to a frame's payload: the id, the head JSON (empty for a delete) and the
/// record, each length-prefixed (the record's length + 1, so 0 says "no record").
pub(super) fn encode(payload: &mut Vec<u8>, op: &Op<'_>) {
    let (id, head_json, record) = match *op {
        Op::Turn {
            id,
            head_json,
            record,
        } => (id, head_json, record),
        Op::Delete { id } => (id, &[][..], None),
    };
    for part in [id.as_bytes(), head_json] {
        payload.extend_from_slice(&(part.len() as u32).to_le_bytes());
        payload.extend_from_slice(part);
    }
    let record_len = record.map_or(0, |r| r.len() as u32 + 1);
    payload.extend_from_slice(&record_len.to_le_bytes());
    payload.extend_from_slice(record.unwrap_or_default());
}

/// Reads back the ops of a payload, as [`encode`] wrote them; an error means a frame whose
/// checksum held but whose contents do not parse (a bug, not a torn write).
pub(super) fn decode(mut payload: &[u8]) -> Result<Vec<Op<'_>>, StoreError> {
    fn take<'a>(payload: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if payload.len() < n {
            return Err(StoreError::Corrupt(
                "a journal frame ends inside a turn".into(),
            ));
        }
        let (part, rest) = payload.split_at(n);
        *payload = rest;
        Ok(part)
    }
    fn len(payload: &mut &[u8]) -> Result<usize, StoreError> {
        let bytes = take(payload, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }
    let mut ops = Vec::new();
    while !payload.is_empty() {
        let n = len(&mut payload)?;
        let id = std::str::from_utf8(take(&mut payload, n)?)
            .map_err(|_| StoreError::Corrupt("a journal frame's session id is not UTF-8".into()))?;
        let n = len(&mut payload)?;
        let head_json = take(&mut payload, n)?;
        let record = match len(&mut payload)? {
            0 => None,
            n => Some(take(&mut payload, n - 1)?),
        };
        ops.push(match head_json {
            [] => Op::Delete { id },
            _ => Op::Turn {
                id,
                head_json,
                record,
            },
        });
    }
    Ok(ops)
}

/// Applies one journaled op inside `txn`. Every op passed its check when it was journaled, in
/// this order, so a failed check here means the database and the journal disagree.
pub(super) fn apply(txn: &WriteTransaction, op: &Op<'_>) -> Result<(), StoreError> {
    match *op {
        Op::Turn {
            id,
            head_json,
            record,
        } => apply_turn(txn, id, &decode_head(head_json)?, head_json, record),
        Op::Delete { id } => delete(txn, id).map(drop),
    }
}

/// One turn's writes, if the stored turn is the one before it; checks come before writes.
fn apply_turn(
    txn: &WriteTransaction,
    id: &str,
    head: &SessionHead,
    head_json: &[u8],
    record: Option<&[u8]>,
) -> Result<(), StoreError> {
    let mut heads = txn.open_table(HEADS).map_err(unavailable)?;
    let stored = match heads.get(id).map_err(unavailable)? {
        Some(bytes) => Some(decode_head(bytes.value())?),
        None => None,
    };
    check_next_turn(stored.as_ref(), head)
        .map_err(|e| StoreError::Corrupt(format!("journaled turn of {id}: {e}")))?;
    if stored.is_none() {
        let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
        index
            .insert((head.user_id.as_str(), id), ())
            .map_err(unavailable)?;
    }
    if let Some(record) = record {
        let number = stored.as_ref().map_or(0, |h| h.records);
        let mut records = txn.open_table(RECORDS).map_err(unavailable)?;
        records.insert((id, number), record).map_err(unavailable)?;
    }
    heads.insert(id, head_json).map_err(unavailable)?;
    Ok(())
}

/// Removes a session's head, records and index row inside `txn`; whether it existed.
pub(super) fn delete(txn: &WriteTransaction, id: &str) -> Result<bool, StoreError> {
    let mut heads = txn.open_table(HEADS).map_err(unavailable)?;
    let Some(bytes) = heads.remove(id).map_err(unavailable)? else {
        return Ok(false);
    };
    let head = decode_head(bytes.value())?;
    let mut records = txn.open_table(RECORDS).map_err(unavailable)?;
    for number in 0..head.records {
        records.remove((id, number)).map_err(unavailable)?;
    }
    let mut index = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
    index
        .remove((head.user_id.as_str(), id))
        .map_err(unavailable)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_read_back_as_written() {
        let ops = [
            Op::Turn {
                id: "s1",
                head_json: b"{\"turn\":1}",
                record: Some(b"one"),
            },
            Op::Turn {
                id: "s1",
                head_json: b"{}",
                record: None,
            },
            Op::Turn {
                id: "s2",
                head_json: b"{}",
                record: Some(b""),
            },
            Op::Delete { id: "s1" },
        ];
        let mut payload = Vec::new();
        for op in &ops {
            encode(&mut payload, op);
        }
        assert_eq!(decode(&payload).unwrap(), ops);
        assert!(matches!(
            decode(&payload[..payload.len() - 1]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
