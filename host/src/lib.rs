//! DisCEdge: a context proxy for LLMs at the edge. This crate is the `discedge` command on
//! top of the crates by job: `discedge-core` (turns, policies, stores, the model),
//! `discedge-fred` (the FReD store), `discedge-server` (the HTTP API) and `discedge-lab`
//! (scenarios, reports, benchmarks). Its tests are the end-to-end tests.
pub mod cli;
