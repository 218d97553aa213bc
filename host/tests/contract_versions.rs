//! Components built for the older contract keep serving: the shipped policies as built for
//! `discedge:policy@0.1.0` (kept in testdata/contract-0.1.0/) load next to 0.2.0 ones, hold a
//! conversation against the real model, and a session begun on a 0.1.0 build goes on after
//! the operator swaps in the 0.2.0 build, its prompt cache intact.

mod common;

use common::{complete, deploy_bytes, get_as, reload_policies, start_proxy, turn_body};
use serde_json::Value;

fn old_build(mode: &str) -> Vec<u8> {
    let file = common::repo_dir().join(format!("testdata/contract-0.1.0/{mode}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The contract each loaded policy was built for, from `GET /policies`.
async fn contracts(url: &str) -> Vec<(String, String)> {
    let (status, list) = get_as(&format!("{url}/policies"), None).await;
    assert_eq!(status, 200, "{list}");
    let list = list
        .get("policies")
        .unwrap_or(&list)
        .as_array()
        .unwrap()
        .clone();
    list.iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["contract"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_0_1_0_builds_load_and_serve() {
    let plugins = common::plugins_copy(&["summarize"]);
    for mode in ["raw", "tokenized", "truncate", "client-side"] {
        deploy_bytes(plugins.path(), mode, &old_build(mode));
    }
    let proxy = start_proxy(&["--plugins-dir", plugins.path().to_str().unwrap()]).await;
    let mut loaded = contracts(&proxy.url).await;
    loaded.sort();
    let expected: Vec<(String, String)> = [
        ("client-side", "0.1.0"),
        ("raw", "0.1.0"),
        ("summarize", "0.2.0"),
        ("tokenized", "0.1.0"),
        ("truncate", "0.1.0"),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), c.to_string()))
    .collect();
    assert_eq!(loaded, expected);
    for mode in ["raw", "tokenized", "truncate"] {
        let mut session: Option<String> = None;
        let mut last = Value::Null;
        for (turn, prompt) in [
            (1, "My cat is called Pixel."),
            (2, "What is my cat called?"),
        ] {
            let (status, reply) = complete(
                &proxy.url,
                &turn_body(mode, session.as_deref(), turn, prompt),
            )
            .await;
            assert_eq!(status, 200, "{mode} turn {turn}: {reply}");
            session = Some(reply["session_id"].as_str().unwrap().to_owned());
            last = reply;
        }
        let prompt = last["prompt"].as_str().unwrap();
        assert!(
            prompt.contains("My cat is called Pixel.") && prompt.contains("What is my cat called?"),
            "{mode}: turn 2's prompt lacks the conversation: {prompt}"
        );
    }
    let (status, reply) = complete(&proxy.url, &turn_body("client-side", None, 1, "Hi")).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_begun_on_a_0_1_0_build_goes_on_after_the_0_2_0_build_is_swapped_in() {
    let plugins = common::plugins_copy(&[]);
    deploy_bytes(plugins.path(), "tokenized", &old_build("tokenized"));
    let proxy = start_proxy(&[
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
        "--no-watch",
    ])
    .await;
    assert_eq!(contracts(&proxy.url).await[0].1, "0.1.0");
    let body = turn_body("tokenized", None, 1, "Name three rivers in Germany.");
    let (status, turn1) = complete(&proxy.url, &body).await;
    assert_eq!(status, 200, "{turn1}");
    let session = turn1["session_id"].as_str().unwrap().to_owned();

    let current = std::fs::read(common::shipped_plugins().join("tokenized.wasm")).unwrap();
    deploy_bytes(plugins.path(), "tokenized", &current);
    let report = reload_policies(&proxy.url).await;
    assert_eq!(report["report"]["loaded"][0], "tokenized", "{report}");
    assert_eq!(contracts(&proxy.url).await[0].1, "0.2.0");

    let body = turn_body("tokenized", Some(&session), 2, "Which is the longest?");
    let (status, turn2) = complete(&proxy.url, &body).await;
    assert_eq!(status, 200, "{turn2}");
    // The new build reads the old build's record and sends the very ids it stored.
    common::assert_turn1_cached(&turn1, &turn2);
}
