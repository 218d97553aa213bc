//! DisCEdge's core: one conversation turn start to finish (`session`), the sandboxed policies
//! that shape the context (`policy`, wasmtime), where sessions are kept (`store`: the trait,
//! the embedded and in-memory stores), the model (`llm`: llama-server; `gguf_tokenizer`: its tokenizer read from its GGUF), the roaming warm-up
//! (`warm`), API keys (`auth`) and the operator metrics. No HTTP: failures are [`error::Error`]
//! values with a [`error::Kind`], which the server maps to statuses.
pub mod auth;
pub mod blocking;
pub mod causes;
pub mod error;
pub mod gguf_tokenizer;
pub mod llm;
pub mod metrics;
pub mod policy;
pub mod session;
pub mod store;
pub mod warm;
