//! DisCEdge: a context proxy for LLMs at the edge.
pub mod api;
pub mod auth;
pub mod bench;
pub mod config;
pub mod error;
pub mod fake_llm;
pub mod llm;
pub mod metrics;
pub mod openai;
pub mod policy;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod session;
pub mod store;
pub mod stream;
pub mod warm;
