//! Hot swap under load: clients keep sending turns while new builds of a policy land in the
//! plugins folder; how long until the new build serves, and how many requests failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BenchProxy, turn_request};
use crate::args::BenchArgs;

const CLIENTS: usize = 8;
const SWAPS: u8 = 5;

/// The same component with a custom section appended: a new file hash, the same behaviour.
pub fn new_build(wasm: &[u8], tag: u8) -> Vec<u8> {
    let name = b"discedge-build";
    let mut bytes = wasm.to_vec();
    bytes.push(0); // a custom section: id 0, size, name, payload
    bytes.push((1 + name.len() + 1) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.push(tag);
    bytes
}

/// Prints the `swap` figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let plugins = std::env::temp_dir().join(format!(
        "discedge-bench-plugins-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&plugins)?;
    let original = std::fs::read(args.plugins_dir.join("raw.wasm"))?;
    std::fs::write(plugins.join("raw.wasm"), &original)?;
    let proxy = BenchProxy::start(&plugins, None).await?;
    let http = reqwest::Client::new();
    let (stop, served, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let label = Arc::new(std::sync::Mutex::new(String::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, stop, served, failed, label) = (
            http.clone(),
            proxy.url.clone(),
            stop.clone(),
            served.clone(),
            failed.clone(),
            label.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut session, mut turn) = (Value::Null, 0);
            while !stop.load(Ordering::SeqCst) {
                turn += 1;
                match turn_request(&http, &url, "raw", &session, turn, "hello there").await {
                    Ok((headers, reply)) => {
                        served.fetch_add(1, Ordering::SeqCst);
                        session = reply["session_id"].clone();
                        if let Some(policy) = headers
                            .get("x-discedge-policy")
                            .and_then(|v| v.to_str().ok())
                        {
                            *label.lock().unwrap() = policy.to_owned();
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        turn -= 1;
                    }
                }
                if turn >= 20 {
                    (session, turn) = (Value::Null, 0);
                }
            }
        }));
    }
    println!();
    println!(
        "hot swap under load: {CLIENTS} clients sending turns while {SWAPS} new builds of `raw` land"
    );
    let mut delays = Vec::new();
    for tag in 1..=SWAPS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = label.lock().unwrap().clone();
        let tmp = plugins.join(".raw.wasm.tmp");
        std::fs::write(&tmp, new_build(&original, tag))?;
        let landed = Instant::now();
        std::fs::rename(&tmp, plugins.join("raw.wasm"))?;
        loop {
            let now = label.lock().unwrap().clone();
            if now != before && !now.is_empty() {
                break;
            }
            anyhow::ensure!(
                landed.elapsed() < Duration::from_secs(10),
                "swap {tag} never served"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(landed.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await?;
    }
    let ms: Vec<String> = delays
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "new build serving after: {}; requests served {}, failed {}",
        ms.join(", "),
        served.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&plugins);
    Ok(())
}
