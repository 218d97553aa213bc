//! Waiting in tests for what replication or a restart brings about later.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true, failing the test after a generous deadline (10 s).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
