//! What this machine allows a durable turn at best, measured next to the figures so they can
//! be read against it: the proxy answers a stored turn only after an fsync.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::percentiles;

/// Writes of the fsync floor (a few hundred keep it to well under a second).
const WRITES: usize = 300;

/// Median and p99 of one 4 KB write plus `fdatasync` in `dir` (the store's folder, so the
/// same disk): the least any durable store can pay per commit there.
pub fn fsync_floor(dir: &Path) -> io::Result<(Duration, Duration)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-floor.tmp");
    let file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let page = [0x5au8; 4096];
    // Allocated once, so the timed writes change data only, as a store's page rewrites do.
    file.write_all_at(&page, 0)?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(WRITES);
    for _ in 0..WRITES {
        let started = Instant::now();
        file.write_all_at(&page, 0)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(percentiles(&mut times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let (median, p99) = fsync_floor(dir.path()).unwrap();
        assert!(median > Duration::ZERO && p99 >= median);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
