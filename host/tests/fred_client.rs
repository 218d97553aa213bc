//! Our FReD client against the FReD-compatible TEST node (`fred-testnode`, not FReD): every
//! RPC the proxy uses and every error class it tells apart, plus the cost of a turn.

mod common;

use std::time::Duration;

use common::fred::FredBed;
use common::{complete, turn_body};
use discedge_core::store::{ContextStore, SessionHead};
use discedge_fred::{FredClient, FredConfig, FredError, FredStore};
use discedge_lab::fake_llm::FakeLlm;
use fred_proto::Version;

fn config(bed: &FredBed, node: usize, user: &str) -> FredConfig {
    FredConfig {
        addr: bed.nodes[node].addr().to_string(),
        tls_name: None,
        cert: bed.pki.cert(user),
        key: bed.pki.key(user),
        ca: bed.pki.ca(),
        keygroup: "sessions".into(),
        node_id: common::fred::NODES[node].into(),
        expiry: 0,
        replicas: None,
        grant: Vec::new(),
        timeout: Duration::from_secs(2),
        confirm: discedge_fred::Confirm::Replicas,
        feed: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn set_up_creates_the_keygroup_grants_roles_and_adds_replicas() {
    let bed = FredBed::start().await;
    let mut first = config(&bed, 0, "proxy0");
    first.grant = vec!["proxy1".into()];
    let a = FredClient::connect(&first).await.unwrap();
    a.set_up_keygroup(&first).await.unwrap();
    a.update("item1", "hello".into(), Vec::new()).await.unwrap();

    // nodeB became a replica, and proxy1 may read and write there.
    let second = config(&bed, 1, "proxy1");
    let b = FredClient::connect(&second).await.unwrap();
    b.set_up_keygroup(&second).await.unwrap();
    let items = b.read("item1").await.unwrap();
    assert_eq!(items[0].val, "hello");
    b.update("item2", "from B".into(), Vec::new())
        .await
        .unwrap();
    let scanned = a.scan("item1", 10).await.unwrap();
    let ids: Vec<&str> = scanned.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["item1", "item2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fred_errors_are_sorted_into_kinds() {
    let bed = FredBed::start().await;
    let mut only_a = config(&bed, 0, "proxy0");
    only_a.replicas = Some(Vec::new());
    let a = FredClient::connect(&only_a).await.unwrap();
    a.set_up_keygroup(&only_a).await.unwrap();

    assert!(matches!(
        a.read("missing").await,
        Err(FredError::NotFound(_))
    ));
    assert!(matches!(
        a.update("bad-id", "x".into(), Vec::new()).await,
        Err(FredError::InvalidName(_))
    ));
    assert!(matches!(
        a.scan("missing", 3).await,
        Err(FredError::NotFound(_))
    ));

    // Compare-and-set: versions that do not cover what the node knows are refused.
    let first = a.update("item", "one".into(), Vec::new()).await.unwrap();
    a.update("item", "two".into(), vec![first.clone()])
        .await
        .unwrap();
    let stale = a.update("item", "three".into(), vec![first]).await;
    assert!(matches!(stale, Err(FredError::Refused(_))), "{stale:?}");

    // Another user without roles; and a node that holds no replica of the keygroup.
    let stranger = FredClient::connect(&config(&bed, 0, "proxy1"))
        .await
        .unwrap();
    assert!(matches!(
        stranger.read("item").await,
        Err(FredError::PermissionDenied(_))
    ));
    let on_b = FredClient::connect(&config(&bed, 1, "proxy0"))
        .await
        .unwrap();
    assert!(matches!(
        on_b.read("item").await,
        Err(FredError::NoReplica(_))
    ));

    bed.nodes[0].stop().await;
    assert!(matches!(
        a.read("item").await,
        Err(FredError::Unavailable(_))
    ));
    bed.nodes[0].restart().await.unwrap();
    assert_eq!(
        a.read("item").await.unwrap()[0].val,
        "two",
        "the channel reconnects"
    );
    let _: Version = a.update("item", "four".into(), Vec::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_certificates_fail_at_start_up_with_a_clear_message() {
    let bed = FredBed::start().await;
    let mut missing = config(&bed, 0, "proxy0");
    missing.cert = "/nonexistent/proxy.crt".into();
    let error = FredStore::connect(&missing)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("/nonexistent/proxy.crt"), "{error}");

    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = fred_testnode::TestPki::generate(foreign_dir.path(), &["proxy0"]).unwrap();
    let mut untrusted = config(&bed, 0, "proxy0");
    untrusted.cert = foreign.cert("proxy0");
    untrusted.key = foreign.key("proxy0");
    let error = match FredStore::connect(&untrusted).await {
        Ok(_) => panic!("a client certificate from another CA was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(!error.is_empty());

    let mut no_node = config(&bed, 0, "proxy0");
    no_node.node_id = "node-A".into();
    let error = FredStore::connect(&no_node)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("--node-id"), "{error}");
}

/// A long session costs the same per turn as a short one: one Update, whatever the length; a
/// node it roams to reads what it lacks with a single Scan.
#[tokio::test(flavor = "multi_thread")]
async fn turns_cost_a_fixed_number_of_round_trips() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed.proxies(&["--llama-url", &llama.url]).await;
    let mut session = None;
    for turn in 1..=20 {
        let before = bed.nodes[0].stats();
        let (status, reply) =
            complete(&a.url, &turn_body("raw", session.as_deref(), turn, "hello")).await;
        assert_eq!(status, 200, "{reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
        let after = bed.nodes[0].stats();
        let calls = |rpc: &str| after.call_count(rpc) - before.call_count(rpc);
        // Turn 1: a Scan finds no session; the turn item and the user index (entry and
        // anchor) are written in parallel; Keys (versions, no values) back tells whether this
        // node's turn won. Turn 2: a Scan from turn 1 checks and extends the cache; one
        // Update; the Keys back. Later: the same, plus a Read of turn 1 in parallel with the
        // Scan (a session deleted and begun anew elsewhere changes it).
        let expected = match turn {
            1 => (0, 1, 3, 1),
            2 => (0, 1, 1, 1),
            _ => (1, 1, 1, 1),
        };
        assert_eq!(
            (calls("Read"), calls("Scan"), calls("Update"), calls("Keys")),
            expected,
            "turn {turn}"
        );
    }
    let before = bed.nodes[1].stats();
    let (status, reply) =
        complete(&b.url, &turn_body("raw", session.as_deref(), 21, "roamed")).await;
    assert_eq!(status, 200, "{reply}");
    let after = bed.nodes[1].stats();
    let calls = |rpc: &str| after.call_count(rpc) - before.call_count(rpc);
    assert_eq!(
        (calls("Read"), calls("Scan"), calls("Update"), calls("Keys")),
        (0, 2, 1, 1),
        "20 turns in two Scans (16 versions, then up to 64), one Update, the Keys back"
    );
}

/// A user's sessions are listed on every node, whichever node created them, and a session
/// deleted on one node leaves the listing on the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_sessions_are_listed_on_every_node() {
    let bed = FredBed::start().await;
    let mut first = config(&bed, 0, "proxy0");
    first.grant = vec!["proxy1".into()];
    let a = FredStore::connect(&first).await.unwrap();
    let b = FredStore::connect(&config(&bed, 1, "proxy1"))
        .await
        .unwrap();
    let head = |user: &str, updated_ms| SessionHead {
        user_id: user.into(),
        mode: "raw".into(),
        turn: 1,
        records: 1,
        last_prompt_sha256: String::new(),
        last_reply: "{}".into(),
        created_ms: updated_ms,
        updated_ms,
    };
    a.commit_turn("onA", &head("alice", 1), Some(b"a"))
        .await
        .unwrap();
    b.commit_turn("onB", &head("alice", 2), Some(b"b"))
        .await
        .unwrap();
    b.commit_turn("bobs", &head("bob", 3), Some(b"c"))
        .await
        .unwrap();
    for store in [&a, &b] {
        let ids: Vec<String> = store
            .sessions_of("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["onB", "onA"]);
    }
    assert!(a.delete("onB").await.unwrap());
    let ids: Vec<String> = b
        .sessions_of("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["onA"]);
}
