//! Unit tests of the whole tokenizer on tiny hand-built GGUF vocabularies.

use super::*;
use crate::gguf::tests::Builder;

/// A tiny byte-level vocabulary: the 256 byte characters (ids 0..256), then `extra` merged
/// tokens with their merges (in rank order), then `<|s|>` and `<|s|>x` as control tokens.
fn tiny(merges: &[(&str, &str)], pre: &str, model: &str) -> Vec<u8> {
    let chars = bytelevel::byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let mut m = Vec::new();
    for (l, r) in merges {
        let j = format!("{l}{r}");
        if !tokens.contains(&j) {
            tokens.push(j);
        }
        m.push(format!("{l} {r}"));
    }
    tokens.push("<|s|>".into());
    tokens.push("<|s|>x".into());
    let n = tokens.len();
    let mut types = vec![1; n];
    types[n - 2] = 3;
    types[n - 1] = 3;
    let tok_refs: Vec<&str> = tokens.iter().map(|s| s.as_str()).collect();
    let m_refs: Vec<&str> = m.iter().map(|s| s.as_str()).collect();
    let mut b = Builder::default();
    b.string("general.architecture", "llama")
        .string("tokenizer.ggml.model", model)
        .string("tokenizer.ggml.pre", pre)
        .strings("tokenizer.ggml.tokens", &tok_refs)
        .i32s("tokenizer.ggml.token_type", &types)
        .strings("tokenizer.ggml.merges", &m_refs)
        .u32("tokenizer.ggml.bos_token_id", 1);
    b.finish(3)
}

fn tok(merges: &[(&str, &str)]) -> Tokenizer {
    Tokenizer::from_gguf_reader(&tiny(merges, "smollm", "gpt2")[..]).unwrap()
}

/// The texts of `ids`, for readable assertions.
fn texts(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.detokenize(&[i])).collect()
}

#[test]
fn lowest_rank_merges_first() {
    let t = tok(&[("b", "c"), ("a", "b"), ("a", "bc")]);
    assert_eq!(texts(&t, &t.tokenize("abc", false)), ["abc"]);
    let t = tok(&[("a", "b"), ("b", "c")]);
    assert_eq!(texts(&t, &t.tokenize("abc", false)), ["ab", "c"]);
}

#[test]
fn equal_ranks_merge_leftmost_first() {
    let t = tok(&[("a", "a")]);
    assert_eq!(texts(&t, &t.tokenize("aaa", false)), ["aa", "a"]);
    assert_eq!(texts(&t, &t.tokenize("aaaaa", false)), ["aa", "aa", "a"]);
    let t = tok(&[("a", "a"), ("aa", "aa")]);
    assert_eq!(
        texts(&t, &t.tokenize("aaaaaaa", false)),
        ["aaaa", "aa", "a"]
    );
}

#[test]
fn merges_never_cross_pieces_and_bytes_use_the_byte_alphabet() {
    let t = tok(&[("Ġ", "a"), ("Ġa", "b"), ("b", "Ġ")]);
    // " ab" is one piece; "b " cannot merge across the cut before the trailing space.
    assert_eq!(texts(&t, &t.tokenize("x ab ", false)), ["x", " ab", " "]);
    // A three-byte character with no merges is three byte tokens.
    let ids = t.tokenize("中", false);
    assert_eq!(ids.len(), 3);
    assert_eq!(t.detokenize(&ids), "中");
}

#[test]
fn heap_and_scan_paths_agree() {
    let t = tok(&[
        ("a", "b"),
        ("b", "a"),
        ("a", "a"),
        ("ab", "a"),
        ("ba", "b"),
        ("aa", "b"),
        ("ab", "ab"),
        ("b", "b"),
    ]);
    let mut x = 12345u64;
    for len in [2usize, 3, 7, 24, 25, 40, 100, 333] {
        for _ in 0..50 {
            let word: Vec<u32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    t.byte_token[if x & 1 == 0 { b'a' } else { b'b' } as usize]
                })
                .collect();
            let mut a = word.clone();
            t.merges.apply_scan(&mut a);
            let mut b = word.clone();
            t.merges.apply_heap(&mut b, &mut Default::default());
            assert_eq!(a, b, "word of {len}");
        }
    }
}

#[test]
fn special_tokens_only_with_parse_special() {
    let t = tok(&[("<", "|"), ("<|", "s")]);
    let n = t.vocab_size() as u32;
    let (s, sx) = (n - 2, n - 1);
    assert_eq!(
        t.tokenize("a<|s|>b", true),
        [t.byte_token[b'a' as usize], s, t.byte_token[b'b' as usize]]
    );
    // The longest special wins where both match.
    assert_eq!(t.tokenize("<|s|>x<|s|>", true), [sx, s]);
    let plain = t.tokenize("a<|s|>b", false);
    assert!(!plain.contains(&s));
    assert_eq!(t.detokenize(&plain), "a<|s|>b");
    assert_eq!(t.detokenize(&[s, 9999999]), "<|s|>");
}

#[test]
fn no_bos_and_empty_text() {
    let t = tok(&[]);
    assert!(t.tokenize("", true).is_empty());
    assert_eq!(t.tokenize("a", true), [t.byte_token[b'a' as usize]]);
}

#[test]
fn what_is_not_read_is_unsupported() {
    let err = |bytes: Vec<u8>| Tokenizer::from_gguf_reader(&bytes[..]).unwrap_err();
    assert!(
        matches!(err(tiny(&[], "smollm", "llama")), TokenizerError::Unsupported(m) if m.contains("\"llama\""))
    );
    assert!(
        matches!(err(tiny(&[], "llama-bpe", "gpt2")), TokenizerError::Unsupported(m) if m.contains("llama-bpe"))
    );
    // A merge whose result is no token.
    let mut b = Builder::default();
    let chars = bytelevel::byte_chars();
    let toks: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
    b.string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "smollm")
        .strings("tokenizer.ggml.tokens", &refs)
        .strings("tokenizer.ggml.merges", &["a b"]);
    assert!(matches!(err(b.finish(3)), TokenizerError::Unsupported(m) if m.contains("merge #0")));
    // A user-defined token (type 4).
    let mut types = vec![1; 256];
    types[5] = 4;
    let mut b = Builder::default();
    b.string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "smollm")
        .strings("tokenizer.ggml.tokens", &refs)
        .i32s("tokenizer.ggml.token_type", &types)
        .strings("tokenizer.ggml.merges", &[]);
    assert!(matches!(err(b.finish(3)), TokenizerError::Unsupported(m) if m.contains("type 4")));
    // Not a GGUF at all.
    assert!(matches!(
        err(b"GGML....".to_vec()),
        TokenizerError::Malformed(_)
    ));
}

#[test]
fn a_byte_without_a_token_is_dropped_as_llama_cpp_does() {
    let chars = bytelevel::byte_chars();
    // No token for byte 0x00 ('Ā'): ids shift down by one.
    let toks: Vec<String> = chars[1..].iter().map(|c| c.to_string()).collect();
    let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
    let mut b = Builder::default();
    b.string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "smollm")
        .strings("tokenizer.ggml.tokens", &refs)
        .strings("tokenizer.ggml.merges", &[]);
    let t = Tokenizer::from_gguf_reader(&b.finish(3)[..]).unwrap();
    let a = b'a' as u32 - 1;
    assert_eq!(t.tokenize("a\0a", false), [a, a]);
    assert_eq!(t.tokenize("\0", false), []);
    assert_eq!(t.tokenize("\0\0 \0", true), [b' ' as u32 - 1]);
}

#[test]
fn missing_file_is_io() {
    assert!(matches!(
        Tokenizer::from_gguf("/nonexistent/model.gguf"),
        Err(TokenizerError::Io(_))
    ));
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Tokenizer>();
    shareable::<TokenizerError>();
}
