//! Little-endian reading helpers for the record formats, which must reject bad input
//! with a message rather than panic (a record may come from an older or broken build).
//! Public so a policy's own record format (summarize's, say) reads and writes the same way.

/// A cursor over bytes that fails, naming what it was reading, instead of running off the end.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// An unsigned LEB128 varint of at most 5 bytes that fits a u32.
    pub fn varint(&mut self, what: &str) -> Result<u32, String> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1, what)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| format!("{what} overflows u32"));
            }
        }
        Err(format!("{what} is a varint longer than 5 bytes"))
    }

    /// A u32 byte length, then that many bytes of UTF-8, borrowed from the input.
    pub fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Appends a u32 byte length and the string's UTF-8.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_u32(out, len_u32(s.len()));
    out.extend_from_slice(s.as_bytes());
}

/// Unsigned LEB128: 7 bits a byte, so most token ids of a 50k vocabulary take 1 or 2 bytes.
pub fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Lengths in records are u32. Nothing a policy holds in memory comes near 4 GiB, so a longer
/// one is a bug worth stopping on rather than silently writing a corrupt record.
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("record field longer than u32::MAX")
}
