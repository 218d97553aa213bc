//! The FAKE one-token-per-byte tokenizer, for the fake llama-server, the benchmarks, the
//! policy tests and the fuzz targets. Its own module so that the fake server and the
//! benchmarks (which start the fake server) do not import each other.

use discedge_core::policy::HostServices;

/// A FAKE tokenizer for tests and benchmarks: one token per byte, plus ids above 255 for
/// `<|...|>` control tokens when `parse_special` is set. Deterministic and exactly invertible.
pub struct ByteTokenizer;

const SPECIALS: [&str; 6] = [
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

impl HostServices for ByteTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len());
        let mut at = 0;
        'outer: while at < bytes.len() {
            if parse_special {
                for (i, special) in SPECIALS.iter().enumerate() {
                    if bytes[at..].starts_with(special.as_bytes()) {
                        ids.push(256 + i as u32);
                        at += special.len();
                        continue 'outer;
                    }
                }
            }
            ids.push(u32::from(bytes[at]));
            at += 1;
        }
        Ok(ids)
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        let mut bytes = Vec::with_capacity(tokens.len());
        for &id in tokens {
            match id {
                0..=255 => bytes.push(id as u8),
                _ => bytes.extend_from_slice(
                    SPECIALS
                        .get(id as usize - 256)
                        .ok_or(format!("unknown token {id}"))?
                        .as_bytes(),
                ),
            }
        }
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}
