//! The byte-level alphabet of GPT-2-style BPE vocabularies: every byte value stands for one
//! printable character, so a vocabulary's token texts are printable strings while the model
//! still sees raw bytes. Bytes that are already printable and unambiguous (`!`..=`~`,
//! `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68 take the code points from U+0100
//! upwards, in byte order (so the space 0x20 is `Ġ`, U+0120, and the newline `Ċ`).

/// Whether byte `b` stands for itself in the byte-level alphabet.
fn is_self(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character each byte value stands for, indexed by the byte.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        out[b as usize] = if is_self(b) {
            b as char
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are chars");
            next += 1;
            c
        };
    }
    out
}

/// The byte a byte-level character stands for, or None for a character outside the alphabet.
pub(crate) fn char_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 && is_self(u as u8) {
        return Some(u as u8);
    }
    if (0x100..0x100 + 68).contains(&u) {
        let k = (u - 0x100) as usize;
        return (0..=255u8).filter(|&b| !is_self(b)).nth(k);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_with_the_known_landmarks() {
        let chars = byte_chars();
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'\t' as usize], 'ĉ');
        assert_eq!(chars[0], 'Ā');
        assert_eq!(chars[b'a' as usize], 'a');
        assert_eq!(chars[0xAD], 'Ń');
        let mut seen = std::collections::HashSet::new();
        for (b, &c) in chars.iter().enumerate() {
            assert!(seen.insert(c));
            assert_eq!(char_byte(c), Some(b as u8));
        }
        assert_eq!(char_byte('€'), None);
    }
}
