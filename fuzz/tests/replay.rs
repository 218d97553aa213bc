//! Replays the committed seeds and regressions (fuzz/seeds/TARGET, fuzz/regressions/TARGET)
//! through the fuzz targets' checks, as a plain test on any toolchain:
//! `cargo test --manifest-path fuzz/Cargo.toml`. (scripts/fuzz.sh also hands both folders to
//! libFuzzer, which runs every file in them before it starts mutating.)
//!
//! `FUZZ_CORPUS=~/.cache/discedge/fuzz-corpus/policy_boundary cargo test --manifest-path
//! fuzz/Cargo.toml -- --ignored` tells how deep a corpus gets into each policy.

use std::collections::BTreeMap;
use std::path::Path;

use discedge_fuzz::Outcome;

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep"))
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    files.sort();
    files
}

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = files_in(&root.join("seeds").join(target));
    files.extend(files_in(&root.join("regressions").join(target)));
    files
}

/// Runs the policy cases, counting how far each policy got.
fn outcomes(files: &[(String, Vec<u8>)]) -> BTreeMap<(&'static str, Outcome), usize> {
    let mut counts = BTreeMap::new();
    for (name, bytes) in files {
        let outcome = discedge_fuzz::policy_boundary(bytes);
        eprintln!("{name}: {outcome:?}");
        *counts.entry(outcome).or_default() += 1;
    }
    counts
}

#[test]
fn parse_request_inputs() {
    let files = inputs("parse_request");
    assert!(!files.is_empty(), "no seeds for parse_request");
    for (name, bytes) in files {
        eprintln!("{name}");
        discedge_fuzz::parse_request(&bytes);
    }
}

#[test]
fn policy_boundary_inputs() {
    let files = inputs("policy_boundary");
    assert!(!files.is_empty(), "no seeds for policy_boundary");
    let counts = outcomes(&files);
    eprintln!("{counts:?}");
    // The seeds start the fuzzer deep in every storing policy: two turns served.
    for mode in ["raw", "tokenized", "truncate", "summarize"] {
        assert!(
            counts.contains_key(&(mode, Outcome::TwoTurns)),
            "no seed serves two turns of {mode}: {counts:?}"
        );
    }
}

#[test]
#[ignore = "needs FUZZ_CORPUS=DIR"]
fn corpus_outcomes() {
    let dir = std::env::var("FUZZ_CORPUS").expect("FUZZ_CORPUS=DIR");
    let counts = outcomes(&files_in(Path::new(&dir)));
    for ((mode, outcome), n) in counts {
        println!("{mode:<12} {outcome:?}: {n}");
    }
}
