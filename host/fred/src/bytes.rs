//! The byte-level primitives of a turn item (lengths, LEB128 numbers, a bounds-checked
//! reader), shared by the item and the reply it carries, so neither imports the other.

/// A string of at most 255 bytes, after its length byte (longer ones are cut).
pub fn put_str8(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend(bytes);
}

/// LEB128: 7 bits per byte, low first.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a turn item's fields, failing on truncation instead of panicking.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// The next `n` bytes, or an error if fewer are left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("turn item: truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// Everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// A LEB128 number.
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let [b] = self.array()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("turn item: number too long".into())
    }

    /// Bytes after a 32-bit little-endian length.
    pub fn bytes32(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    /// Bytes after a LEB128 length.
    pub fn bytes_varint(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "turn item: length too long")?;
        self.take(n)
    }

    /// A string after a one-byte length.
    pub fn str8(&mut self) -> Result<String, String> {
        self.string(|r| {
            let [n] = r.array()?;
            r.take(n as usize)
        })
    }

    /// A field read by `field`, as UTF-8 text.
    pub fn string(
        &mut self,
        field: impl FnOnce(&mut Self) -> Result<&'a [u8], String>,
    ) -> Result<String, String> {
        String::from_utf8(field(self)?.to_vec()).map_err(|_| "turn item: text is not UTF-8".into())
    }
}
