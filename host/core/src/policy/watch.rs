//! Reloads policies when files in the plugins folder change.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::PolicyRegistry;

/// Quiet time after the last file event before reloading: a copy or rename fires several events.
const SETTLE: Duration = Duration::from_millis(150);

/// Watches the registry's folder until the returned watcher is dropped; deploy a new version by
/// writing `NAME.wasm.tmp` and renaming it to `NAME.wasm`, so a half-written file is never loaded.
pub fn watch(registry: Arc<PolicyRegistry>) -> notify::Result<notify::RecommendedWatcher> {
    let (events, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.send(());
        }
    })?;
    watcher.watch(registry.dir(), RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            while changes.recv().is_ok() {
                while changes.recv_timeout(SETTLE).is_ok() {}
                let report = registry.reload();
                if !report.loaded.is_empty()
                    || !report.removed.is_empty()
                    || !report.failed.is_empty()
                {
                    tracing::info!(?report, "plugins folder changed");
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}
