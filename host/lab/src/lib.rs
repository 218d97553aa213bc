//! DisCEdge's lab: what measures and exercises the proxy, never linked into the server.
//! `scenario` drives scripted conversations through proxies and logs CSV, `report` turns the
//! CSVs into tables and plots, `bench` times the proxy alone, and `fake_llm` (with its
//! `byte_tokenizer`) is the FAKE llama-server they and the fast tests use.
pub mod args;
pub mod bench;
pub mod byte_tokenizer;
pub mod fake_llm;
pub mod report;
pub mod scenario;
