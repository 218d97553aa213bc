//! Policies come and go while the proxy runs: a new `.wasm` in the plugins folder is a new mode;
//! a replaced file serves the next request while requests in flight finish on the old version.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{complete, eventually, plugins_copy, shipped_plugins, start_proxy, turn_body};
use serde_json::{Value, json};

/// Deploys the policy file `source` as `dir/name.wasm` (see [`common::deploy_bytes`]).
fn deploy(source: &Path, dir: &Path, name: &str) {
    common::deploy_bytes(dir, name, &std::fs::read(source).unwrap());
}

async fn post(url: &str, body: &Value) -> (u16, String, Value) {
    let (status, headers, reply) = common::complete_with_headers(url, body).await;
    let policy = headers
        .get("x-discedge-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, policy, reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_in_component_is_a_new_mode() {
    let plugins = plugins_copy(&["raw"]);
    let proxy = start_proxy(&["--plugins-dir", plugins.path().to_str().unwrap()]).await;
    let (status, _) = complete(&proxy.url, &turn_body("fresh", None, 1, "hi")).await;
    assert_eq!(status, 400, "not there yet");

    deploy(
        &shipped_plugins().join("tokenized.wasm"),
        plugins.path(),
        "fresh",
    );
    let registry = proxy.node.proxy.policies.clone();
    eventually("the new policy to load", || registry.get("fresh").is_some()).await;
    let (status, reply) = complete(&proxy.url, &turn_body("fresh", None, 1, "Hello there")).await;
    assert_eq!(status, 200, "{reply}");

    std::fs::remove_file(plugins.path().join("fresh.wasm")).unwrap();
    eventually("the removed policy to go", || {
        registry.get("fresh").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_reloads_without_a_watcher() {
    let plugins = plugins_copy(&["raw"]);
    let proxy = start_proxy(&[
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
        "--no-watch",
    ])
    .await;
    deploy(&shipped_plugins().join("raw.wasm"), plugins.path(), "other");
    assert!(proxy.node.proxy.policies.get("other").is_none());
    let reply = common::reload_policies(&proxy.url).await;
    assert_eq!(reply["report"]["loaded"], json!(["other"]), "{reply}");
    let (status, _) = complete(&proxy.url, &turn_body("other", None, 1, "hi")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_component_serves_new_requests_while_old_ones_finish() {
    let plugins = plugins_copy(&[]);
    deploy(&shipped_plugins().join("raw.wasm"), plugins.path(), "swap");
    let proxy = start_proxy(&["--plugins-dir", plugins.path().to_str().unwrap()]).await;
    let registry = proxy.node.proxy.policies.clone();
    let old = registry.get("swap").unwrap().label();

    // A long request in flight on the old version...
    let mut slow = turn_body("swap", None, 1, "Write a long story about a lighthouse.");
    slow["n_predict"] = 96.into();
    slow["ignore_eos"] = true.into();
    let url = proxy.url.clone();
    let in_flight = tokio::spawn(async move { post(&url, &slow).await });
    // ...and steady traffic from other clients throughout both swaps.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..3)
        .map(|i| {
            let (url, stop) = (proxy.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut served = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut body = turn_body("swap", None, 1, &format!("client {i} says hi"));
                    body["n_predict"] = 4.into();
                    let (status, policy, reply) = post(&url, &body).await;
                    assert_eq!(status, 200, "a request during a swap failed: {reply}");
                    served.push(policy);
                }
                served
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    deploy(
        &shipped_plugins().join("tokenized.wasm"),
        plugins.path(),
        "swap",
    );
    eventually("the new version to load", || {
        registry.get("swap").unwrap().label() != old
    })
    .await;
    let new = registry.get("swap").unwrap().label();
    let (status, policy, reply) = post(&proxy.url, &turn_body("swap", None, 1, "Hello")).await;
    assert_eq!((status, policy.as_str()), (200, new.as_str()), "{reply}");

    // A corrupt file is refused; the version serving keeps serving.
    common::deploy_bytes(plugins.path(), "swap", b"not wasm at all");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        registry.get("swap").unwrap().label(),
        new,
        "a bad file does not replace a good version"
    );

    deploy(&shipped_plugins().join("raw.wasm"), plugins.path(), "swap");
    eventually("the original version to return", || {
        registry.get("swap").unwrap().label() == old
    })
    .await;

    let (status, policy, reply) = in_flight.await.unwrap();
    assert_eq!(
        (status, policy.as_str()),
        (200, old.as_str()),
        "the request in flight finished on the old version: {reply}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut served = Vec::new();
    for client in traffic {
        served.extend(client.await.unwrap());
    }
    assert!(served.len() >= 3, "traffic kept flowing: {served:?}");
}
