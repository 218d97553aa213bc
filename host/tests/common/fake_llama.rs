//! `FakeLlama`: a FAKE llama-server (a few lines of axum) for fast, deterministic tests of
//! failure paths and replication. It answers `/completion` with a fixed reply that echoes the
//! prompt, a 500, or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const OK: u32 = 0;
pub const FAIL: u32 = 1;
pub const HANG: u32 = 2;

/// A FAKE llama-server: answers `/completion` with a fixed reply, a 500, or not at all.
pub struct FakeLlama {
    pub url: String,
    behaviour: Arc<AtomicU32>,
    pub calls: Arc<AtomicUsize>,
}

impl FakeLlama {
    pub async fn start() -> Self {
        let behaviour = Arc::new(AtomicU32::new(OK));
        let calls = Arc::new(AtomicUsize::new(0));
        let (b, c) = (behaviour.clone(), calls.clone());
        let app = axum::Router::new()
            .route("/props", get(|| async { Json(json!({"default_generation_settings": {"n_ctx": 2048}})) }))
            .route(
                "/completion",
                post(move |Json(body): Json<Value>| {
                    let (b, c) = (b.clone(), c.clone());
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        match b.load(Ordering::SeqCst) {
                            FAIL => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"message": "fake failure"}}))),
                            HANG => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                (axum::http::StatusCode::OK, Json(json!({})))
                            }
                            _ => (
                                axum::http::StatusCode::OK,
                                Json(json!({"content": "fake reply", "prompt": body["prompt"], "stop_type": "eos",
                                            "timings": {"prompt_n": 1, "cache_n": 0}})),
                            ),
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            behaviour,
            calls,
        }
    }

    pub fn set(&self, behaviour: u32) {
        self.behaviour.store(behaviour, Ordering::SeqCst);
    }
}
