//! A turn's reply as a turn item keeps it for retries, in few bytes.
//!
//! The reply is the JSON object the client got (the fields a replay returns). Its `content`
//! is usually also in the policy's record (`raw` and `truncate` keep the reply text): then the
//! item names where, instead of carrying the text twice. The other fields are a handful of
//! llama-server's (`stop`, `tokens_predicted`, ...), stored as a code and a binary value
//! instead of their JSON text. Anything else is kept as JSON, so nothing a replay returns is
//! lost whatever llama-server adds.

use serde_json::{Map, Number, Value};

use super::bytes::{Reader, put_varint};

/// llama-server's reply fields that a replay returns, by code (the index); `content` first.
const KEYS: [&str; 8] = [
    "content",
    "tokens",
    "stop",
    "stop_type",
    "stopping_word",
    "tokens_predicted",
    "tokens_evaluated",
    "truncated",
];
/// Key code: the key's name follows.
const NAMED: u8 = 15;

/// How a field's value is stored (the high half of its code byte).
const FALSE: u8 = 0;
const TRUE: u8 = 1;
const NULL: u8 = 2;
const UINT: u8 = 3;
const STRING: u8 = 4;
const EMPTY_ARRAY: u8 = 5;
const JSON: u8 = 6;
/// A string value that is the record's bytes ending `distance` bytes before its end.
const IN_RECORD: u8 = 7;

/// Not a JSON object (a store written by hand, say): the text as it is.
const VERBATIM: u8 = 0;
const OBJECT: u8 = 1;

/// Appends `reply` (JSON text) to `out`, pointing into `record` where it holds the content.
pub fn put_reply(out: &mut Vec<u8>, reply: &str, record: Option<&[u8]>) {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(reply) else {
        out.push(VERBATIM);
        put_bytes(out, reply.as_bytes());
        return;
    };
    out.push(OBJECT);
    put_varint(out, fields.len() as u64);
    for (key, value) in &fields {
        let code = KEYS
            .iter()
            .position(|k| k == key)
            .map_or(NAMED, |i| i as u8);
        let (kind, body) = kind_of(value, key == "content", record);
        out.push(kind << 4 | code);
        if code == NAMED {
            put_bytes(out, key.as_bytes());
        }
        out.extend(body);
    }
}

/// Reads what [`put_reply`] wrote, with the same record, back to JSON text.
pub fn read_reply(r: &mut Reader<'_>, record: Option<&[u8]>) -> Result<String, String> {
    let [form] = r.array()?;
    if form == VERBATIM {
        return r.string(|r| r.bytes_varint());
    }
    if form != OBJECT {
        return Err(format!("turn item: reply form {form}"));
    }
    let count = r.varint()?;
    let mut fields = Map::new();
    for _ in 0..count {
        let [code] = r.array()?;
        let key = match code & 0x0f {
            NAMED => r.string(|r| r.bytes_varint())?,
            i => KEYS
                .get(usize::from(i))
                .ok_or("turn item: unknown reply field")?
                .to_string(),
        };
        let value = match code >> 4 {
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            NULL => Value::Null,
            UINT => Value::Number(Number::from(r.varint()?)),
            STRING => Value::String(r.string(|r| r.bytes_varint())?),
            EMPTY_ARRAY => Value::Array(Vec::new()),
            JSON => serde_json::from_str(&r.string(|r| r.bytes_varint())?)
                .map_err(|e| format!("turn item: reply field: {e}"))?,
            IN_RECORD => Value::String(from_record(r, record)?),
            kind => return Err(format!("turn item: reply value kind {kind}")),
        };
        fields.insert(key, value);
    }
    Ok(Value::Object(fields).to_string())
}

/// How `value` is stored: its kind and the bytes after the code.
fn kind_of(value: &Value, is_content: bool, record: Option<&[u8]>) -> (u8, Vec<u8>) {
    let mut body = Vec::new();
    let kind = match value {
        Value::Bool(false) => FALSE,
        Value::Bool(true) => TRUE,
        Value::Null => NULL,
        Value::Number(n) if n.as_u64().is_some() => {
            put_varint(&mut body, n.as_u64().expect("checked"));
            UINT
        }
        Value::String(s) => {
            let distance = record
                .filter(|_| is_content && !s.is_empty())
                .and_then(|r| Some(r.len() - memchr::memmem::rfind(r, s.as_bytes())? - s.len()));
            if let Some(distance) = distance {
                put_varint(&mut body, distance as u64);
                put_varint(&mut body, s.len() as u64);
                IN_RECORD
            } else {
                put_bytes(&mut body, s.as_bytes());
                STRING
            }
        }
        Value::Array(a) if a.is_empty() => EMPTY_ARRAY,
        other => {
            put_bytes(&mut body, other.to_string().as_bytes());
            JSON
        }
    };
    (kind, body)
}

fn from_record(r: &mut Reader<'_>, record: Option<&[u8]>) -> Result<String, String> {
    let distance = r.varint()? as usize;
    let len = r.varint()? as usize;
    let record = record.ok_or("turn item: reply points into a record it does not have")?;
    let end = record
        .len()
        .checked_sub(distance)
        .ok_or("turn item: reply points past its record")?;
    let start = end
        .checked_sub(len)
        .ok_or("turn item: reply points past its record")?;
    String::from_utf8(record[start..end].to_vec())
        .map_err(|_| "turn item: reply text is not UTF-8".into())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(reply: &str, record: Option<&[u8]>) -> (String, usize) {
        let mut out = Vec::new();
        put_reply(&mut out, reply, record);
        let mut r = Reader(&out);
        let back = read_reply(&mut r, record).unwrap();
        assert!(r.0.is_empty(), "read every byte");
        (back, out.len())
    }

    #[test]
    fn a_llama_reply_comes_back_as_the_same_json_text() {
        let fields: Map<String, Value> = serde_json::from_str(
            r#"{"content":"Hi \"there\" – é","tokens":[],"stop":true,"stop_type":"eos",
               "stopping_word":"","tokens_predicted":31,"tokens_evaluated":1200,
               "truncated":false,"probs":[{"p":0.5}],"n":-3,"x":1.5,"z":null}"#,
        )
        .unwrap();
        let reply = Value::Object(fields).to_string();
        let (back, len) = round_trip(&reply, None);
        assert_eq!(back, reply);
        assert!(
            len < reply.len() / 2 + 40,
            "{len} bytes for {}",
            reply.len()
        );
    }

    #[test]
    fn content_kept_in_the_record_is_not_stored_twice() {
        let text = "This is the fake model's reply, twenty words long or so.";
        let reply = serde_json::json!({"content": text, "stop": true}).to_string();
        let record = [b"\x02\0\0\0user".as_slice(), text.as_bytes(), b"\x09\0\0\0"].concat();
        let (back, len) = round_trip(&reply, Some(&record));
        assert_eq!(back, reply);
        assert!(len < 10, "{len} bytes");
        let (inline, inline_len) = round_trip(&reply, Some(b"token ids only"));
        assert_eq!(inline, reply);
        assert!(inline_len > text.len());
    }

    #[test]
    fn other_text_is_kept_verbatim_and_damage_is_refused() {
        for reply in ["", "not json", "[1,2]", "\"s\""] {
            assert_eq!(round_trip(reply, None).0, reply);
        }
        let mut out = Vec::new();
        put_reply(&mut out, r#"{"content":"abc"}"#, Some(b"xxabcxx"));
        assert!(read_reply(&mut Reader(&out), Some(b"ab")).is_err());
        assert!(read_reply(&mut Reader(&out), None).is_err());
        assert!(read_reply(&mut Reader(&[9]), None).is_err());
        assert!(read_reply(&mut Reader(&[OBJECT, 1, 0x0e]), None).is_err());
    }
}
