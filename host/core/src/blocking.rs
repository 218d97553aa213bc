//! Blocking work (a policy call, a database read, an fsync) run from async code without a
//! thread hop where the runtime allows it.
//!
//! `spawn_blocking` costs a turn two thread wake-ups (to a blocking thread and back), each
//! 50–150 µs on a small VM, and a turn made several such calls: most of what the proxy added
//! at one client. On the multi-thread runtime (the server's) `block_in_place` runs the work
//! on the turn's own thread instead, after handing that worker's other tasks to another thread.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::runtime::{Handle, RuntimeFlavor};

/// Blocking work that panicked, or (on the `spawn_blocking` fallback) was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Aborted(String);

/// Runs `work`, which may block, from async code: in place on the multi-thread runtime,
/// on a blocking thread on a current-thread runtime (where `block_in_place` would panic; most
/// tests run there). A panic in `work` comes back as [`Aborted`] either way.
pub async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Aborted> {
    let in_place = Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
    if in_place {
        tokio::task::block_in_place(|| catch_unwind(AssertUnwindSafe(work)))
            .map_err(|panic| Aborted(panic_message(&panic)))
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Aborted(e.to_string()))
    }
}

thread_local! {
    /// Set while [`run_short`] runs work on an async worker, where nothing may wait for the
    /// runtime (`Handle::block_on` would panic).
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Whether this code runs inside [`run_short`]'s work on an async worker.
pub fn on_async_worker() -> bool {
    ON_WORKER.get()
}

/// Runs short work that never waits (a policy call, whose deadline bounds it, when every host
/// call answers in place) on the current async worker: no hand-off at all. `block_in_place`
/// still wakes a thread to take over the worker's queue, and at one client the two policy
/// calls of a turn took about 70 µs longer with it. Otherwise (`in_place` false, or a
/// current-thread runtime), as [`run_blocking`]. A panic in `work` comes back as [`Aborted`].
pub async fn run_short<T: Send + 'static>(
    in_place: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Aborted> {
    let multi_thread = Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
    // On a current-thread runtime work in place would stop everything else while it runs.
    if !in_place || !multi_thread {
        return run_blocking(work).await;
    }
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ON_WORKER.set(self.0);
        }
    }
    let _reset = Reset(ON_WORKER.replace(true));
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| Aborted(panic_message(&panic)))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_in_place_on_the_multi_thread_runtime() {
        let here = std::thread::current().id();
        let there = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_eq!(here, there);
    }

    #[tokio::test]
    async fn runs_on_a_blocking_thread_on_a_current_thread_runtime() {
        let here = std::thread::current().id();
        let there = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_ne!(here, there);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_comes_back_as_aborted_in_place() {
        let e = run_blocking(|| -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_work_runs_on_the_worker_and_says_so() {
        let here = std::thread::current().id();
        let (there, flagged) = run_short(true, || (std::thread::current().id(), on_async_worker()))
            .await
            .unwrap();
        assert_eq!((here, flagged), (there, true));
        assert!(!on_async_worker(), "the flag is reset after the work");
        let e = run_short(true, || -> u32 { panic!("short boom") })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("short boom"), "{e}");
        assert!(!on_async_worker(), "and after a panic");
        let flagged = run_short(false, on_async_worker).await.unwrap();
        assert!(!flagged, "work that may wait runs as run_blocking does");
    }

    #[tokio::test]
    async fn a_panic_comes_back_as_aborted_on_a_blocking_thread() {
        let e = run_blocking(|| -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
    }
}
