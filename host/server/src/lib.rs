//! DisCEdge's HTTP API over the core: the routes (`api`), the OpenAI chat format (`openai`),
//! streamed turns (`stream`), reading a turn request (`request`), API keys from headers
//! (`auth`), the `serve` configuration (`config`) and start-up (`serve`). The only place a
//! domain error becomes an HTTP status (`error`).
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod openai;
pub mod request;
pub mod serve;
pub mod stream;
