//! Reader of a GGUF file's metadata (the key/value section before the tensor infos).
//!
//! Written from the GGUF format description: little-endian; magic `GGUF`, a `u32` version
//! (2 and 3 are read: their layout is the same), a `u64` tensor count, a `u64` key/value count,
//! then each pair as a string key, a `u32` value type and the value. A string is a `u64` byte
//! length and that many bytes (UTF-8 by the spec; kept as bytes here, a vocabulary may carry
//! any). An array is a `u32` element type, a `u64` length and the elements. Only the metadata
//! is read: the tensors (most of the file) are never touched.

use std::collections::HashMap;
use std::io::{self, Read};

use crate::TokenizerError;

/// One metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(Vec<u8>),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as text, when it is a UTF-8 string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as an integer, when it is one of the integer types (or a bool).
    pub(crate) fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => v as i64,
            Value::I8(v) => v as i64,
            Value::U16(v) => v as i64,
            Value::I16(v) => v as i64,
            Value::U32(v) => v as i64,
            Value::I32(v) => v as i64,
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            Value::Bool(v) => v as i64,
            _ => return None,
        })
    }

    /// The elements, when the value is an array.
    pub(crate) fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file: its version and every key/value pair.
#[derive(Debug, Default)]
pub(crate) struct Metadata {
    /// Read for tests and debugging; versions 2 and 3 tokenize alike.
    #[allow(dead_code)]
    pub(crate) version: u32,
    pub(crate) kv: HashMap<String, Value>,
}

impl Metadata {
    /// The value under `key`, if the file has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.kv.get(key)
    }
}

/// No element count or string length in a file we read is believed past this: a corrupt or
/// hostile header must fail cleanly, not allocate without bound.
const MAX_LEN: u64 = 1 << 28;
/// Arrays nest (arrays of arrays); a file that nests deeper than this is refused.
const MAX_DEPTH: u32 = 8;

fn malformed(what: impl Into<String>) -> TokenizerError {
    TokenizerError::Malformed(what.into())
}

struct Cursor<R> {
    r: R,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], TokenizerError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(eof)?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, TokenizerError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, TokenizerError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn len(&mut self, what: &str) -> Result<usize, TokenizerError> {
        let n = self.u64()?;
        if n > MAX_LEN {
            return Err(malformed(format!("{what} length {n} is not believable")));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<Vec<u8>, TokenizerError> {
        let n = self.len("string")?;
        let mut v = Vec::with_capacity(n.min(1 << 16));
        (&mut self.r)
            .take(n as u64)
            .read_to_end(&mut v)
            .map_err(eof)?;
        if v.len() != n {
            return Err(malformed("file ends inside a string"));
        }
        Ok(v)
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, TokenizerError> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(malformed(format!("bool byte {b}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(malformed("arrays nested too deep"));
                }
                let ety = self.u32()?;
                let n = self.len("array")?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            t => return Err(malformed(format!("unknown value type {t}"))),
        })
    }
}

fn eof(e: io::Error) -> TokenizerError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        malformed("file ends inside the metadata")
    } else {
        TokenizerError::Io(e)
    }
}

/// Reads the header and every metadata pair from `r` (positioned at the file's start); stops
/// before the tensor infos.
pub(crate) fn read_metadata<R: Read>(r: R) -> Result<Metadata, TokenizerError> {
    let mut c = Cursor { r };
    let magic = c.bytes::<4>()?;
    if &magic != b"GGUF" {
        return Err(malformed("not a GGUF file (no GGUF magic)"));
    }
    let version = c.u32()?;
    match version {
        2 | 3 => {}
        // A big-endian file shows its version byte-swapped.
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(TokenizerError::Unsupported("big-endian GGUF".into()));
        }
        v => return Err(TokenizerError::Unsupported(format!("GGUF version {v}"))),
    }
    let _tensor_count = c.u64()?;
    let kv_count = c.u64()?;
    if kv_count > MAX_LEN {
        return Err(malformed(format!(
            "key/value count {kv_count} is not believable"
        )));
    }
    let mut kv = HashMap::new();
    for _ in 0..kv_count {
        let key = String::from_utf8(c.string()?).map_err(|_| malformed("key is not UTF-8"))?;
        let ty = c.u32()?;
        let value = c.value(ty, 0)?;
        kv.insert(key, value);
    }
    Ok(Metadata { version, kv })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds GGUF bytes by hand, for tests: each helper appends one field as the format lays it.
    #[derive(Default)]
    pub(crate) struct Builder {
        pub(crate) buf: Vec<u8>,
        count: u64,
    }

    impl Builder {
        pub(crate) fn str_raw(buf: &mut Vec<u8>, s: &[u8]) {
            buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
            buf.extend_from_slice(s);
        }
        fn key(&mut self, k: &str, ty: u32) {
            Self::str_raw(&mut self.buf, k.as_bytes());
            self.buf.extend_from_slice(&ty.to_le_bytes());
            self.count += 1;
        }
        pub(crate) fn string(&mut self, k: &str, v: &str) -> &mut Self {
            self.key(k, 8);
            Self::str_raw(&mut self.buf, v.as_bytes());
            self
        }
        pub(crate) fn u32(&mut self, k: &str, v: u32) -> &mut Self {
            self.key(k, 4);
            self.buf.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
            self.key(k, 7);
            self.buf.push(v as u8);
            self
        }
        pub(crate) fn f32(&mut self, k: &str, v: f32) -> &mut Self {
            self.key(k, 6);
            self.buf.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn strings(&mut self, k: &str, v: &[&str]) -> &mut Self {
            self.key(k, 9);
            self.buf.extend_from_slice(&8u32.to_le_bytes());
            self.buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v {
                Self::str_raw(&mut self.buf, s.as_bytes());
            }
            self
        }
        pub(crate) fn i32s(&mut self, k: &str, v: &[i32]) -> &mut Self {
            self.key(k, 9);
            self.buf.extend_from_slice(&5u32.to_le_bytes());
            self.buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
            self
        }
        /// The whole file: header, then the pairs added so far (no tensors).
        pub(crate) fn finish(&self, version: u32) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
            out.extend_from_slice(&self.count.to_le_bytes());
            out.extend_from_slice(&self.buf);
            out
        }
    }

    #[test]
    fn reads_every_scalar_type_strings_and_arrays() {
        let mut b = Builder::default();
        b.string("general.architecture", "llama")
            .u32("llama.block_count", 30)
            .bool("tokenizer.ggml.add_bos_token", false)
            .f32("llama.rope.freq_base", 100000.0)
            .strings("tokenizer.ggml.tokens", &["a", "Ġb", ""])
            .i32s("tokenizer.ggml.token_type", &[1, 3, -2]);
        // Types the builder has no helper for, laid by hand: u8, i64, u64, f64, nested array.
        b.key("x.u8", 0);
        b.buf.push(7);
        b.key("x.i64", 11);
        b.buf.extend_from_slice(&(-5i64).to_le_bytes());
        b.key("x.u64", 10);
        b.buf.extend_from_slice(&(1u64 << 40).to_le_bytes());
        b.key("x.f64", 12);
        b.buf.extend_from_slice(&1.5f64.to_le_bytes());
        b.key("x.nested", 9);
        b.buf.extend_from_slice(&9u32.to_le_bytes());
        b.buf.extend_from_slice(&1u64.to_le_bytes());
        b.buf.extend_from_slice(&4u32.to_le_bytes());
        b.buf.extend_from_slice(&2u64.to_le_bytes());
        b.buf.extend_from_slice(&10u32.to_le_bytes());
        b.buf.extend_from_slice(&11u32.to_le_bytes());
        let mut bytes = b.finish(3);
        bytes.extend_from_slice(b"tensor infos follow and are not read");

        let m = read_metadata(&bytes[..]).unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.kv.len(), 11);
        assert_eq!(
            m.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(m.get("llama.block_count").unwrap().as_i64(), Some(30));
        assert_eq!(
            m.get("tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(false))
        );
        assert_eq!(m.get("llama.rope.freq_base"), Some(&Value::F32(100000.0)));
        let toks: Vec<_> = m
            .get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(toks, ["a", "Ġb", ""]);
        let types: Vec<_> = m
            .get("tokenizer.ggml.token_type")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(types, [1, 3, -2]);
        assert_eq!(m.get("x.u8"), Some(&Value::U8(7)));
        assert_eq!(m.get("x.i64").unwrap().as_i64(), Some(-5));
        assert_eq!(m.get("x.u64").unwrap().as_i64(), Some(1 << 40));
        assert_eq!(m.get("x.f64"), Some(&Value::F64(1.5)));
        assert_eq!(
            m.get("x.nested"),
            Some(&Value::Array(vec![Value::Array(vec![
                Value::U32(10),
                Value::U32(11)
            ])]))
        );
    }

    #[test]
    fn version_2_reads_like_3() {
        let mut b = Builder::default();
        b.string("k", "v");
        assert_eq!(read_metadata(&b.finish(2)[..]).unwrap().version, 2);
    }

    #[test]
    fn refuses_bad_magic_old_or_big_endian_versions_and_truncation() {
        let mut b = Builder::default();
        b.string("k", "value");
        let good = b.finish(3);

        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_metadata(&bad[..]),
            Err(TokenizerError::Malformed(_))
        ));

        let mut v1 = good.clone();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            read_metadata(&v1[..]),
            Err(TokenizerError::Unsupported(_))
        ));

        let mut be = good.clone();
        be[4..8].copy_from_slice(&3u32.to_be_bytes());
        match read_metadata(&be[..]) {
            Err(TokenizerError::Unsupported(m)) => assert!(m.contains("big-endian")),
            other => panic!("{other:?}"),
        }

        for cut in 0..good.len() {
            assert!(read_metadata(&good[..cut]).is_err(), "cut at {cut} read");
        }
    }

    #[test]
    fn refuses_unknown_types_bad_bools_and_huge_lengths() {
        let mut b = Builder::default();
        b.key("k", 13);
        assert!(matches!(
            read_metadata(&b.finish(3)[..]),
            Err(TokenizerError::Malformed(_))
        ));

        let mut b = Builder::default();
        b.key("k", 7);
        b.buf.push(2);
        assert!(matches!(
            read_metadata(&b.finish(3)[..]),
            Err(TokenizerError::Malformed(_))
        ));

        let mut b = Builder::default();
        b.key("k", 8);
        b.buf.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_metadata(&b.finish(3)[..]),
            Err(TokenizerError::Malformed(_))
        ));
    }
}
