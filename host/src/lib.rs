//! DisCEdge: a context proxy for LLMs at the edge.
pub mod llm;
pub mod policy;
pub mod store;
pub mod config;
pub mod error;
pub mod session;
pub mod api;
pub mod bench;
pub mod serve;
