//! A bounded load test on loopback: many concurrent sessions of several turns, half of them
//! roaming between two proxies on two FReD-compatible TEST nodes, with the FAKE llama-server
//! failing every 7th answer and a policy swapped midway. Afterwards every session must hold
//! exactly its successful turns: none lost, none duplicated. Prints the figures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fred::FredBed;
use common::{complete, eventually, plugins_copy, turn_body};
use discedge_lab::bench::new_build;
use discedge_lab::fake_llm::FakeLlm;

const SESSIONS: usize = 24;
const TURNS: u32 = 6;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_roaming_sessions_lose_and_duplicate_nothing() {
    let llama = FakeLlm::start().await.unwrap();
    llama.fail_one_in(7);
    llama.set_delay(Duration::from_millis(2));
    let plugins = plugins_copy(&["raw"]);
    let bed = FredBed::start().await;
    let plugins_dir = plugins.path().to_str().unwrap().to_owned();
    let (a, b) = bed
        .proxies(&["--llama-url", &llama.url, "--plugins-dir", &plugins_dir])
        .await;
    let urls = [a.url.clone(), b.url.clone()];
    let requests = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let clients: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let (urls, requests) = (urls.clone(), requests.clone());
            tokio::spawn(async move {
                let mut session: Option<String> = None;
                let mut errors: BTreeMap<u16, usize> = BTreeMap::new();
                for turn in 1..=TURNS {
                    // Even sessions roam: A, A, B, B, A, A; odd ones stay on A.
                    let node = if s % 2 == 0 {
                        ((turn - 1) / 2 % 2) as usize
                    } else {
                        0
                    };
                    let message = format!("session {s} turn {turn} says hi");
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = turn_body("raw", session.as_deref(), turn, &message);
                        let (status, reply) = complete(&urls[node], &body).await;
                        if status == 200 {
                            session = Some(reply["session_id"].as_str().unwrap().to_owned());
                            break;
                        }
                        *errors.entry(status).or_default() += 1;
                        assert!(
                            status == 502 && tries < 10,
                            "session {s} turn {turn}: {status} {reply}"
                        );
                    }
                }
                (session.unwrap(), errors)
            })
        })
        .collect();

    // Midway, a new build of the policy lands under load.
    let registry = a.node.proxy.policies.clone();
    eventually("half the requests", || {
        requests.load(Ordering::SeqCst) >= SESSIONS * TURNS as usize / 2
    })
    .await;
    let old = registry.get("raw").unwrap().label();
    let rebuilt = new_build(&std::fs::read(plugins.path().join("raw.wasm")).unwrap(), 1);
    common::deploy_bytes(plugins.path(), "raw", &rebuilt);
    eventually("the new build to serve", || {
        registry.get("raw").unwrap().label() != old
    })
    .await;

    let mut errors: BTreeMap<u16, usize> = BTreeMap::new();
    let mut lost = 0;
    let mut duplicated = 0;
    for (s, client) in clients.into_iter().enumerate() {
        let (session, client_errors) = client.await.unwrap();
        for (status, n) in client_errors {
            *errors.entry(status).or_default() += n;
        }
        // Both nodes must hold exactly the successful turns, in order, once each.
        for proxy in [&a, &b] {
            let stored = proxy.stored(&session).await.expect("stored");
            assert_eq!(stored.head.turn, TURNS, "session {s}");
            let history = String::from_utf8_lossy(&stored.records.concat()).into_owned();
            for turn in 1..=TURNS {
                match history
                    .matches(&format!("session {s} turn {turn} says hi"))
                    .count()
                {
                    0 => lost += 1,
                    1 => {}
                    _ => duplicated += 1,
                }
            }
            assert_eq!(
                stored.records.len(),
                TURNS as usize,
                "session {s}: one record per turn"
            );
        }
    }
    let total = requests.load(Ordering::SeqCst);
    println!(
        "load: {SESSIONS} sessions x {TURNS} turns ({} roaming), {total} requests in {:.2?}, errors by status {errors:?}, \
         lost turns {lost}, duplicated turns {duplicated}, policy swapped under load",
        SESSIONS / 2,
        started.elapsed()
    );
    assert!(
        errors.get(&502).copied().unwrap_or(0) > 0,
        "the injected faults happened"
    );
    assert_eq!((lost, duplicated), (0, 0));
}
