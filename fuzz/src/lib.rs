//! The checks behind the fuzz targets, shared with the plain replay test (tests/replay.rs).
//!
//! Each entry point takes the fuzzer's raw bytes and panics (libFuzzer reports a crash) when
//! the code under test panics, traps, or breaks one of the invariants checked here.

mod parse;
mod policies;

pub use parse::parse_request;
pub use policies::{
    MODES, Outcome, PolicyCase, RecordInput, Size, TemplateInput, policy_boundary, run_case,
};
