//! Pre-tokenizers: how a text is cut into pieces before BPE merges run inside each piece
//! (no merge ever crosses a cut). Hand-written scanners, each the exact match semantics of the
//! pattern it names (leftmost alternative first, greedy, backtracking lookahead), so no regex
//! engine is needed and the per-character classes are ours to pin down.

use std::ops::Range;

use unicode_general_category::{GeneralCategory as G, get_general_category};

/// The character classes the patterns tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo).
    Letter,
    /// `\p{N}`: general category N (Nd, Nl, No).
    Number,
    /// `\s`: the Unicode White_Space property (`char::is_whitespace`).
    Space,
    /// Everything else: marks, punctuation, symbols, controls, unassigned.
    Other,
}

const fn ascii_class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Number,
        b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => Class::Space,
        _ => Class::Other,
    }
}

static ASCII: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

/// CJK Unified Ideographs Extension I: the letters Unicode 15.1 adds to 15.0.
const CJK_EXT_I: std::ops::RangeInclusive<char> = '\u{2EBF0}'..='\u{2EE5D}';

/// The class of one character, by Unicode 15.1 (the version of llama.cpp's tables): a
/// character assigned later is unassigned there, so Other.
pub(crate) fn class(c: char) -> Class {
    if c.is_ascii() {
        return ASCII[c as usize];
    }
    if c.is_whitespace() {
        return Class::Space;
    }
    if CJK_EXT_I.contains(&c) {
        return Class::Letter;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// The pre-tokenizers this crate implements, named as a GGUF's `tokenizer.ggml.pre` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// `smollm` (SmolLM, SmolLM2): every `\p{N}` character is a piece of its own; the text
    /// between is cut by GPT-2's pattern
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, in which
    /// the end of each such stretch is the end of the text.
    SmolLm,
}

impl PreTokenizer {
    /// The pre-tokenizer a GGUF's `tokenizer.ggml.pre` value names, if this crate has it.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "smollm" => Some(Self::SmolLm),
            _ => None,
        }
    }

    /// Cuts `text` into pieces, appending their byte ranges (in order, covering all of `text`)
    /// to `out`. `chars` is scratch space, to spare an allocation per call.
    pub(crate) fn split(
        self,
        text: &str,
        chars: &mut Vec<(u32, char, Class)>,
        out: &mut Vec<Range<usize>>,
    ) {
        chars.clear();
        chars.extend(text.char_indices().map(|(i, c)| (i as u32, c, class(c))));
        match self {
            Self::SmolLm => {
                let mut start = 0;
                for k in 0..chars.len() {
                    if chars[k].2 == Class::Number {
                        gpt2(&chars[start..k], off(chars, k, text.len()), out);
                        out.push(chars[k].0 as usize..off(chars, k + 1, text.len()));
                        start = k + 1;
                    }
                }
                gpt2(&chars[start..], text.len(), out);
            }
        }
    }
}

/// Byte offset of character `k` of `s`, or `end` past the last one.
fn off(s: &[(u32, char, Class)], k: usize, end: usize) -> usize {
    s.get(k).map_or(end, |c| c.0 as usize)
}

/// GPT-2's pattern over one stretch `s` of characters (ending at byte offset `end`):
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn gpt2(s: &[(u32, char, Class)], end: usize, out: &mut Vec<Range<usize>>) {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let c = s[i].1;
        let to = |k: usize| off(s, k, end);
        // 's|'t|'re|'ve|'m|'ll|'d (lower case only, as the pattern is written)
        if c == '\'' && i + 1 < n {
            let a = s[i + 1].1;
            if matches!(a, 's' | 't' | 'm' | 'd') {
                out.push(to(i)..to(i + 2));
                i += 2;
                continue;
            }
            if i + 2 < n && matches!((a, s[i + 2].1), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                out.push(to(i)..to(i + 3));
                i += 3;
                continue;
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one optional U+0020, then a run of one class.
        let j = if c == ' ' { i + 1 } else { i };
        if j < n {
            let k = s[j].2;
            if k != Class::Space {
                let mut e = j + 1;
                while e < n && s[e].2 == k {
                    e += 1;
                }
                out.push(to(i)..to(e));
                i = e;
                continue;
            }
        }
        // Here s[i] is whitespace. `\s+(?!\S)`: a run followed by a non-space gives back its
        // last character (which then leads the next piece); a run reaching the end is whole.
        // `\s+`: a single whitespace before a non-space.
        let mut m = i + 1;
        while m < n && s[m].2 == Class::Space {
            m += 1;
        }
        let stop = if m < n && m - i > 1 { m - 1 } else { m };
        out.push(to(i)..to(stop));
        i = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        PreTokenizer::SmolLm.split(text, &mut Vec::new(), &mut out);
        let mut at = 0;
        for r in &out {
            assert_eq!(r.start, at, "pieces must tile the text");
            at = r.end;
        }
        assert_eq!(at, text.len());
        out.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_pattern_cases() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(
            pieces("I'm sure they'll've"),
            ["I", "'m", " sure", " they", "'ll", "'ve"]
        );
        assert_eq!(pieces("DON'T 'Sx"), ["DON", "'", "T", " '", "Sx"]);
        assert_eq!(pieces("'state"), ["'s", "tate"]);
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("a \t\n b"), ["a", " \t\n", " b"]);
        assert_eq!(pieces("a\tb"), ["a", "\t", "b"]);
        assert_eq!(pieces("end   "), ["end", "   "]);
        assert_eq!(pieces("x !?.. y"), ["x", " !?..", " y"]);
        assert_eq!(pieces("café"), ["café"]);
        assert_eq!(pieces("cafe\u{301}s"), ["cafe", "\u{301}", "s"]);
        assert_eq!(pieces(""), Vec::<&str>::new());
        assert_eq!(pieces(" "), [" "]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(pieces("abc 123x"), ["abc", " ", "1", "2", "3", "x"]);
        assert_eq!(pieces("v2.0"), ["v", "2", ".", "0"]);
        assert_eq!(pieces("a  ٣"), ["a", "  ", "٣"]);
        assert_eq!(pieces("x²"), ["x", "²"]);
    }

    #[test]
    fn classes() {
        assert_eq!(class('é'), Class::Letter);
        assert_eq!(class('中'), Class::Letter);
        assert_eq!(class('٣'), Class::Number);
        assert_eq!(class('\u{3000}'), Class::Space);
        assert_eq!(class('\u{a0}'), Class::Space);
        assert_eq!(class('\u{2060}'), Class::Other);
        assert_eq!(class('\u{301}'), Class::Other);
        assert_eq!(class('\0'), Class::Other);
        assert_eq!(class('😀'), Class::Other);
        // Unicode 15.0 and 15.1 letters; 16.0's are unknown to llama.cpp's 15.1 tables.
        assert_eq!(class('\u{11F04}'), Class::Letter);
        assert_eq!(class('\u{2EBF0}'), Class::Letter);
        assert_eq!(class('\u{13460}'), Class::Other);
        assert_eq!(class('\u{16D70}'), Class::Other);
    }
}
