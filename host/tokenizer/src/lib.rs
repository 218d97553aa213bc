//! A tokenizer read from the same GGUF file the llama-server loads, giving exactly the token
//! ids that llama-server's `POST /tokenize` gives (with `"add_special": false`), so the proxy
//! can count and cut a turn's tokens without an HTTP round trip.
//!
//! It reads only what it can reproduce exactly: GPT-2-style byte-level BPE vocabularies
//! (`tokenizer.ggml.model = "gpt2"`) whose pre-tokenizer (`tokenizer.ggml.pre`) it implements.
//! Anything else is [`TokenizerError::Unsupported`], and the caller keeps using `/tokenize`.

#![warn(missing_docs)]

mod bpe;
mod bytelevel;
mod gguf;
mod pretok;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::path::Path;

use bpe::Merges;
use pretok::{Class, PreTokenizer};

/// Short texts that together take every path of the supported pre-tokenizer and of special
/// token parsing (contractions, digits, whitespace runs, scripts, emoji, marks, controls,
/// chat markup, characters of each Unicode version near llama.cpp's): for a start-up
/// self-check that compares [`Tokenizer::tokenize`] with the live `/tokenize` (both values of
/// parse_special) before trusting the local tokenizer, and falls back to `/tokenize` on any
/// difference (a model file other than the served one, or a llama.cpp of other behaviour).
pub const PROBES: &[&str] = &[
    "Hello world! It's 2024-05-17, they'll've paid $1,234.56 (≈€1.1k) — DON'T 'Sx",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi  there\t\n\n  <|im_end|>\n<|im_start|>assistant\n",
    "fn main() {\n    println!(\"{:?}\", vec![1, 22, 333]);\n}   \n",
    "你好，世界 日本語カタカナ مرحبا Привет नमस्ते ٣½² 👨‍👩‍👧 🇩🇪 1️⃣ e\u{301} a\u{2060}b \u{a0}\u{3000}x",
    "\0\u{1}\u{4}\u{7f}\u{80} \u{11F04}'t \u{2EBF0}'t \u{13460}'t \u{16D70}'t aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Why a tokenizer could not be built from a file.
#[derive(Debug)]
pub enum TokenizerError {
    /// The file could not be read; the caller may retry or fall back to `/tokenize`.
    Io(io::Error),
    /// The file is not a well-formed GGUF (or its tokenizer data contradicts itself).
    Malformed(String),
    /// A well-formed model whose tokenizer this crate does not reproduce (vocabulary type,
    /// pre-tokenizer, token kind): the caller must fall back to `/tokenize`.
    Unsupported(String),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the GGUF file: {e}"),
            Self::Malformed(m) => write!(f, "malformed GGUF file: {m}"),
            Self::Unsupported(m) => write!(f, "tokenizer not supported locally: {m}"),
        }
    }
}

impl std::error::Error for TokenizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for TokenizerError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;

/// Symbols from here up stand for a byte that has no token (see `byte_fallback`); token ids
/// stay below (the loader refuses larger vocabularies).
const MISSING: u32 = u32::MAX - 255;

/// A special token that the text may name literally.
#[derive(Debug)]
struct Special {
    text: String,
    id: u32,
}

/// A model's tokenizer, built once from its GGUF file and shared (it is immutable: `Sync`).
#[derive(Debug)]
pub struct Tokenizer {
    pre: PreTokenizer,
    pre_name: String,
    /// The token of each byte value's byte-level character (`MISSING + byte` when it has none).
    byte_token: [u32; 256],
    /// What a byte without a token of its own becomes in the output (most often nothing).
    byte_fallback: [Vec<u32>; 256],
    merges: Merges,
    /// Control and unknown-type tokens, longest text first: the order they are looked for.
    specials: Vec<Special>,
    /// What each token detokenizes to: its bytes (byte-level decoded, or a special's text).
    pieces: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Reads the tokenizer of the GGUF model at `path` (only the metadata at the file's start is
    /// read, not the tensors).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Self::from_gguf_reader(BufReader::with_capacity(1 << 20, File::open(path)?))
    }

    /// Reads the tokenizer from a GGUF file's bytes, positioned at its start: for callers that
    /// already hold the file open, and for tests that build a GGUF in memory.
    pub fn from_gguf_reader(r: impl Read) -> Result<Self, TokenizerError> {
        let meta = gguf::read_metadata(r)?;
        let text = |key: &str| -> Result<Option<&str>, TokenizerError> {
            match meta.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(Some)
                    .ok_or_else(|| TokenizerError::Malformed(format!("{key} is not text"))),
            }
        };
        let model = text("tokenizer.ggml.model")?.ok_or_else(|| {
            TokenizerError::Unsupported("the file names no tokenizer.ggml.model".into())
        })?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported(format!(
                "vocabulary type {model:?} (only \"gpt2\", byte-level BPE, is read)"
            )));
        }
        let pre_name = text("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
            TokenizerError::Unsupported(format!(
                "pre-tokenizer {pre_name:?} (only \"smollm\" is read)"
            ))
        })?;

        let strings = |key: &str| -> Result<Vec<&[u8]>, TokenizerError> {
            let arr = meta.get(key).and_then(|v| v.as_array()).ok_or_else(|| {
                TokenizerError::Malformed(format!("{key} is missing or not an array"))
            })?;
            arr.iter()
                .map(|v| match v {
                    gguf::Value::String(b) => Ok(b.as_slice()),
                    _ => Err(TokenizerError::Malformed(format!(
                        "{key} holds a non-string"
                    ))),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        if tokens.is_empty() || tokens.len() >= MISSING as usize {
            return Err(TokenizerError::Malformed(format!(
                "{} tokens",
                tokens.len()
            )));
        }
        let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
            None => vec![TYPE_NORMAL; tokens.len()],
            Some(v) => v
                .as_array()
                .ok_or_else(|| TokenizerError::Malformed("token_type is not an array".into()))?
                .iter()
                .map(|t| {
                    t.as_i64().ok_or_else(|| {
                        TokenizerError::Malformed("token_type holds a non-integer".into())
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if types.len() != tokens.len() {
            return Err(TokenizerError::Malformed(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        // Text to id; a text given twice names its last token.
        let mut ids: HashMap<&[u8], u32> = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.insert(t, i as u32);
        }

        // A byte whose character is no token (SmolLM2 has 21: bytes such as 0x04 or 0xF5 that
        // its training text never held) is a symbol no merge names; llama.cpp then looks up each
        // byte of that symbol's UTF-8 text as a one-byte token, and drops it when there is none
        // (so such a byte vanishes from the ids). That symbol is `MISSING + byte` here.
        let byte_chars = bytelevel::byte_chars();
        let mut byte_token = [0u32; 256];
        let mut byte_fallback: [Vec<u32>; 256] = std::array::from_fn(|_| Vec::new());
        for (b, c) in byte_chars.iter().enumerate() {
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            byte_token[b] = match ids.get(enc) {
                Some(&id) => id,
                None => {
                    byte_fallback[b] = enc
                        .iter()
                        .filter_map(|x| ids.get(std::slice::from_ref(x)).copied())
                        .collect();
                    MISSING + b as u32
                }
            };
        }

        let merges_text = strings("tokenizer.ggml.merges")?;
        let mut merges = Merges::with_capacity(merges_text.len());
        for (rank, m) in merges_text.iter().enumerate() {
            // "left right": the cut is the first space after the first byte.
            let cut = m
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizerError::Malformed(format!("merge #{rank} has no space")))?;
            let (l, r) = (&m[..cut], &m[cut + 1..]);
            let joined = [l, r].concat();
            let (Some(&li), Some(&ri), Some(&ji)) =
                (ids.get(l), ids.get(r), ids.get(joined.as_slice()))
            else {
                return Err(TokenizerError::Unsupported(format!(
                    "merge #{rank} {:?} names or makes a text that is no token",
                    String::from_utf8_lossy(m)
                )));
            };
            merges.insert(li, ri, rank as u32, ji);
        }

        let mut specials = Vec::new();
        let mut pieces = Vec::with_capacity(tokens.len());
        for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            match ty {
                TYPE_NORMAL => {
                    let s = std::str::from_utf8(t).map_err(|_| {
                        TokenizerError::Malformed(format!(
                            "token {i} of a byte-level vocabulary is not UTF-8"
                        ))
                    })?;
                    pieces.push(s.chars().flat_map(bytelevel_or_utf8).collect());
                }
                TYPE_CONTROL | TYPE_UNKNOWN => {
                    let s = String::from_utf8(t.to_vec()).map_err(|_| {
                        TokenizerError::Malformed(format!("special token {i} is not UTF-8"))
                    })?;
                    if !s.is_empty() {
                        specials.push(Special {
                            text: s,
                            id: i as u32,
                        });
                    }
                    pieces.push(t.to_vec());
                }
                other => {
                    return Err(TokenizerError::Unsupported(format!(
                        "token {i} {:?} is of type {other} (only normal, control and unknown are read)",
                        String::from_utf8_lossy(t)
                    )));
                }
            }
        }
        // Longest first; among equal lengths, lower id first.
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));

        Ok(Self {
            pre,
            pre_name: pre_name.to_owned(),
            byte_token,
            byte_fallback,
            merges,
            specials,
            pieces,
        })
    }

    /// The token ids of `text`, as llama-server's `POST /tokenize` gives them for
    /// `{"content": text, "add_special": false, "parse_special": parse_special}`: no BOS is
    /// added; with `parse_special`, a special token's literal text (`<|im_start|>`) is that one
    /// token, and without it, such text is tokenized like any other.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        let mut scratch = Scratch::default();
        if parse_special && !self.specials.is_empty() {
            for frag in self.partition(text) {
                match frag {
                    Fragment::Text(r) => self.tokenize_text(&text[r], &mut scratch, &mut out),
                    Fragment::Special(id) => out.push(id),
                }
            }
        } else {
            self.tokenize_text(text, &mut scratch, &mut out);
        }
        out
    }

    /// The text of `ids`, as llama-server's `POST /detokenize` gives it: special tokens as their
    /// literal text; bytes that do not form UTF-8 become U+FFFD. Ids outside the vocabulary are
    /// skipped.
    pub fn detokenize(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(p) = self.pieces.get(id as usize) {
                bytes.extend_from_slice(p);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// How many tokens the vocabulary has (ids are below this).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The file's `tokenizer.ggml.pre` value: for logs saying which tokenizer is in use.
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre_name
    }

    /// Cuts `text` at every occurrence of a special token's text, longest special first (so a
    /// special that contains another wins), each occurrence found left to right.
    fn partition(&self, text: &str) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0..text.len())];
        for sp in &self.specials {
            if !text.contains(sp.text.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(r) = f else {
                    next.push(f);
                    continue;
                };
                let mut at = r.start;
                while let Some(p) = text[at..r.end].find(sp.text.as_str()) {
                    let s = at + p;
                    if s > at {
                        next.push(Fragment::Text(at..s));
                    }
                    next.push(Fragment::Special(sp.id));
                    at = s + sp.text.len();
                }
                if at < r.end {
                    next.push(Fragment::Text(at..r.end));
                }
            }
            frags = next;
        }
        frags
    }

    /// Pre-tokenizes plain `text` and runs BPE in each piece.
    fn tokenize_text(&self, text: &str, s: &mut Scratch, out: &mut Vec<u32>) {
        s.ranges.clear();
        self.pre.split(text, &mut s.chars, &mut s.ranges);
        for r in &s.ranges {
            let word = &text.as_bytes()[r.clone()];
            s.syms.clear();
            s.syms
                .extend(word.iter().map(|&b| self.byte_token[b as usize]));
            if s.syms.len() > 1 {
                self.merges.apply(&mut s.syms, &mut s.bpe);
            }
            for &t in &s.syms {
                if t >= MISSING {
                    out.extend_from_slice(&self.byte_fallback[(t - MISSING) as usize]);
                } else {
                    out.push(t);
                }
            }
        }
    }
}

/// The bytes a normal token's character stands for: a byte-level character's byte, or (a
/// character outside the alphabet, which byte-level vocabularies do not have) its UTF-8.
fn bytelevel_or_utf8(c: char) -> Vec<u8> {
    match bytelevel::char_byte(c) {
        Some(b) => vec![b],
        None => c.to_string().into_bytes(),
    }
}

enum Fragment {
    Text(Range<usize>),
    Special(u32),
}

/// Buffers reused across the pieces of one call.
#[derive(Default)]
struct Scratch {
    chars: Vec<(u32, char, Class)>,
    ranges: Vec<Range<usize>>,
    syms: Vec<u32>,
    bpe: bpe::Scratch,
}

#[cfg(test)]
mod tests;
