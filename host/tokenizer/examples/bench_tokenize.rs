//! Micro benchmark: local tokenize of a typical turn's new text (50–300 bytes) against the
//! `POST /tokenize` round trip to llama-server (keep-alive connection, as the proxy's pooled
//! client has), both on the same texts.
//!
//! Usage: DISCEDGE_TEST_MODEL=MODEL.gguf [DISCEDGE_TEST_LLAMA_URL=http://127.0.0.1:PORT] \
//!        cargo run --release -p discedge-tokenizer --example bench_tokenize
//! Without the URL only the local side is timed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use discedge_tokenizer::Tokenizer;

/// Typical new text of one turn: a user's question, an assistant's answer, code, and the chat
/// markup a prompt carries.
const TURNS: &[&str] = &[
    "Hi! Can you help me plan a three-day trip to Lisbon in May? I like food and museums.",
    "What's the difference between a process and a thread? Please keep it short, I'm studying for an exam tomorrow.",
    "Sure. A process has its own address space; threads share the address space of their process, so they communicate cheaply but need synchronization (locks, channels) to avoid data races.",
    "fn main() {\n    let v: Vec<i32> = (1..=10).filter(|x| x % 2 == 0).collect();\n    println!(\"{:?}\", v);\n}",
    "<|im_start|>user\nTranslate to German: The weather is nice today, let's go for a walk.<|im_end|>\n<|im_start|>assistant\n",
    "The meeting moved to 14:30 on 2024-05-17 (room 3B). Bring the Q1 numbers: revenue €1.2M, up 17% YoY.",
    "ok, thanks. One more thing: how do I undo the last git commit but keep my changes?",
    "Here is the log I get when the service starts:\n\n    2024-05-17T09:12:44Z WARN  retrying connection to 10.0.0.7:5432 (attempt 3/5)\n    2024-05-17T09:12:49Z ERROR giving up: connection refused\n\nWhy does it say refused and not timed out? The database is running, I checked with `systemctl status postgresql`.",
    "Explique-moi la photosynthèse simplement, s'il te plaît. Merci beaucoup ! 🙂",
];

fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let model = std::env::var("DISCEDGE_TEST_MODEL").expect("DISCEDGE_TEST_MODEL: the GGUF file");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&model).unwrap_or_else(|e| panic!("{model}: {e}"));
    println!(
        "load: {:.1?} (pre-tokenizer {}, {} tokens)",
        t0.elapsed(),
        tok.pre_tokenizer(),
        tok.vocab_size()
    );

    let bytes: usize = TURNS.iter().map(|t| t.len()).sum();
    let tokens: usize = TURNS.iter().map(|t| tok.tokenize(t, true).len()).sum();
    println!(
        "{} turns, {}–{} bytes (mean {} bytes, {} tokens)",
        TURNS.len(),
        TURNS.iter().map(|t| t.len()).min().unwrap(),
        TURNS.iter().map(|t| t.len()).max().unwrap(),
        bytes / TURNS.len(),
        tokens / TURNS.len()
    );

    // Local: per-call time, each sample the mean of a batch over all turns.
    for _ in 0..2000 {
        for t in TURNS {
            black_box(tok.tokenize(black_box(t), true));
        }
    }
    let mut local = Vec::new();
    for _ in 0..2000 {
        let s = Instant::now();
        for t in TURNS {
            black_box(tok.tokenize(black_box(t), true));
        }
        local.push(s.elapsed() / TURNS.len() as u32);
    }
    let p50 = percentile(&mut local, 0.5);
    let p99 = percentile(&mut local, 0.99);
    println!(
        "local tokenize:   p50 {:>7.2} µs  p99 {:>7.2} µs  per call ({:.0} MB/s)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        (bytes / TURNS.len()) as f64 / p50.as_secs_f64() / 1e6
    );

    let Ok(url) = std::env::var("DISCEDGE_TEST_LLAMA_URL") else {
        println!("(DISCEDGE_TEST_LLAMA_URL not set: no HTTP figures)");
        return;
    };
    let mut llama = support::Llama::new(&url);
    for t in TURNS {
        assert_eq!(
            llama.tokenize(t, true),
            tok.tokenize(t, true),
            "not exact on {t:?}"
        );
    }
    let mut http = Vec::new();
    for i in 0..1600 {
        let t = TURNS[i % TURNS.len()];
        let s = Instant::now();
        black_box(llama.tokenize(t, true));
        http.push(s.elapsed());
    }
    let h50 = percentile(&mut http, 0.5);
    let h99 = percentile(&mut http, 0.99);
    println!(
        "HTTP /tokenize:   p50 {:>7.2} µs  p99 {:>7.2} µs  per call (keep-alive, {url})",
        h50.as_secs_f64() * 1e6,
        h99.as_secs_f64() * 1e6
    );
    println!(
        "local is {:.0}× faster at p50",
        h50.as_secs_f64() / p50.as_secs_f64()
    );
}
