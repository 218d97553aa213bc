//! Arbitrary bytes as a `POST /completion` body through the proxy's request parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| discedge_fuzz::parse_request(data));
