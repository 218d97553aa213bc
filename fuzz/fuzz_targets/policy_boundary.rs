//! Arbitrary stored records and requests through each shipped policy, driven through wasmtime
//! as the host drives it. (Typed input, so that `cargo fuzz` prints a crash's case readably;
//! `discedge_fuzz::policy_boundary` decodes bytes the same way for the replay test.)
#![no_main]

libfuzzer_sys::fuzz_target!(|case: discedge_fuzz::PolicyCase| {
    discedge_fuzz::run_case(&case);
});
