//! Bytes as a FReD value, which must be UTF-8 text, at little more than their own size.
//!
//! A turn item is mostly text (messages, the reply) with some binary around it (digests,
//! lengths, token ids). Base64 costs 4/3 of everything; this keeps every stretch that is
//! already UTF-8 as it is and packs only the binary stretches, 7 bits per character: text
//! costs 1x, binary 8/7 plus 2 characters per stretch. Every byte of a value crosses the link
//! to each replica on every turn, so this is most of what a turn item weighs on the wire.
//!
//! Layout: characters other than [`BINARY`] stand for their own UTF-8 bytes. [`BINARY`] starts
//! a packed stretch: its length n (6 bits per character, low first, 0x40 = more follow), then
//! ceil(8n/7) characters below 0x80, each carrying 7 bits, most significant first.

/// Starts a packed stretch (DEL: ASCII, so one byte, and rare in text).
const BINARY: u8 = 0x7f;
/// Text shorter than this between binary bytes is packed with them: ending a stretch and
/// starting the next costs 2-3 characters, more than packing saves on shorter text (1/7).
const MIN_TEXT: usize = 16;

/// `bytes` as UTF-8 text that [`unpack`] turns back into exactly `bytes`.
pub fn pack(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 7 + 8);
    let mut binary_from = None;
    let mut at = 0;
    while at < bytes.len() {
        let text = text_len(&bytes[at..]);
        // Before any binary, or up to the end, text is cheapest as it is.
        let ends = at + text == bytes.len();
        if text > 0 && (text >= MIN_TEXT || ends || binary_from.is_none()) {
            if let Some(from) = binary_from.take() {
                put_binary(&mut out, &bytes[from..at]);
            }
            out.extend_from_slice(&bytes[at..at + text]);
            at += text;
        } else {
            binary_from.get_or_insert(at);
            at += text.max(1);
        }
    }
    if let Some(from) = binary_from {
        put_binary(&mut out, &bytes[from..]);
    }
    String::from_utf8(out).expect("text stretches are UTF-8 and packed ones ASCII")
}

/// The bytes [`pack`] made `value` from; an error for text it cannot have made.
pub fn unpack(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let Some(start) = bytes[at..].iter().position(|&b| b == BINARY) else {
            out.extend_from_slice(&bytes[at..]);
            break;
        };
        out.extend_from_slice(&bytes[at..at + start]);
        at += start + 1;
        let (n, used) = stretch_len(&bytes[at..])?;
        at += used;
        let chars = (n * 8).div_ceil(7);
        let packed = bytes
            .get(at..at + chars)
            .ok_or("packed value: stretch runs past the end")?;
        unpack_bits(packed, n, &mut out)?;
        at += chars;
    }
    Ok(out)
}

/// How many bytes at the start of `bytes` are whole UTF-8 characters other than [`BINARY`].
fn text_len(bytes: &[u8]) -> usize {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s.len(),
        Err(e) => e.valid_up_to(),
    };
    bytes[..valid]
        .iter()
        .position(|&b| b == BINARY)
        .unwrap_or(valid)
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(BINARY);
    let mut n = bytes.len();
    loop {
        let low = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x40);
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 7 {
            bits -= 7;
            out.push(((acc >> bits) & 0x7f) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (7 - bits)) & 0x7f) as u8);
    }
}

/// A stretch's length and how many characters spelled it.
fn stretch_len(bytes: &[u8]) -> Result<(usize, usize), String> {
    let mut n = 0usize;
    for (i, &c) in bytes.iter().enumerate().take(5) {
        if c >= 0x80 {
            return Err("packed value: bad stretch length".into());
        }
        n |= usize::from(c & 0x3f) << (6 * i);
        if c & 0x40 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err("packed value: bad stretch length".into())
}

fn unpack_bits(packed: &[u8], n: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let (mut acc, mut bits) = (0u32, 0u32);
    let end = out.len() + n;
    for &c in packed {
        if c >= 0x80 {
            return Err("packed value: stretch character above 0x7f".into());
        }
        acc = (acc << 7) | u32::from(c);
        bits += 7;
        if bits >= 8 && out.len() < end {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so failures reproduce.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn anything_round_trips() {
        for len in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 63, 64, 65, 4095, 4096, 70_000] {
            for seed in 0..8 {
                let input = bytes(seed + len as u64, len);
                assert_eq!(
                    unpack(&pack(&input)).unwrap(),
                    input,
                    "len {len} seed {seed}"
                );
            }
        }
        for input in [
            &b"\x7f"[..],
            b"\x7f\x7f\x7fabc\x7f",
            b"abc\xffdef",
            b"\xc3",
            b"\xc3\xa9t\xc3",
            b"\0\0\0\x05user",
        ] {
            assert_eq!(unpack(&pack(input)).unwrap(), input);
        }
    }

    #[test]
    fn text_costs_its_own_size_and_binary_under_a_seventh_more() {
        let text = "Grüße, 世界! A reply\nwith lines and \"quotes\".";
        assert_eq!(pack(text.as_bytes()), text);
        let random = bytes(1, 7_000);
        let packed = pack(&random).len();
        assert!(packed <= 8_000 + 2 * 100, "{packed} bytes for 7000 random");
        // The shape of a raw record: u32 lengths around text.
        let mut record = vec![2, 0, 0, 0, 4, 0, 0, 0];
        record.extend(b"user");
        record.extend([140, 1, 0, 0]);
        record.extend("é".repeat(198).as_bytes());
        assert!(pack(&record).len() <= record.len() + 3);
    }

    #[test]
    fn text_it_did_not_make_is_refused() {
        assert!(unpack("ab\x7f").is_err(), "no length");
        assert!(unpack("ab\x7f\x05").is_err(), "stretch cut short");
        assert!(
            unpack("\x7f\x41\x41\x41\x41\x41").is_err(),
            "endless length"
        );
        assert!(unpack("\x7f\x01é").is_err(), "not 7-bit");
    }
}
