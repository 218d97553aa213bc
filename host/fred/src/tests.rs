//! The store contract against one node of `fred-testnode` (a FReD-compatible TEST node in
//! this repository, not FReD), in this process.
use std::time::Duration;

use fred_proto::Version;
use fred_testnode::{Cluster, NodeHandle, TestPki};

use super::*;
use discedge_core::store::contract;

struct Bed {
    store: FredStore,
    /// Node B's store, in the two-node beds.
    other: Option<FredStore>,
    cluster: Cluster,
    _nodes: Vec<NodeHandle>,
    pki: Option<TestPki>,
    _dir: tempfile::TempDir,
}

fn config(pki: &TestPki, node: &NodeHandle, user: &str) -> FredConfig {
    FredConfig {
        addr: node.addr().to_string(),
        tls_name: None,
        cert: pki.cert(user),
        key: pki.key(user),
        ca: pki.ca(),
        keygroup: "sessions".into(),
        node_id: node.node_id().into(),
        expiry: 0,
        replicas: None,
        grant: Vec::new(),
        timeout: Duration::from_secs(2),
        confirm: Confirm::Replicas,
        feed: None,
    }
}

/// `nodes` test nodes, all replicas of the keygroup, with a store on the first two.
async fn bed_of(nodes: &[&str]) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let mut names = nodes.to_vec();
    names.push("proxy0");
    let pki = TestPki::generate(dir.path(), &names).unwrap();
    let cluster = Cluster::new();
    let mut handles = Vec::new();
    for node in nodes {
        let tls = pki.node_tls(node);
        handles.push(
            cluster
                .start_node(node, "127.0.0.1:0".parse().unwrap(), tls)
                .await
                .unwrap(),
        );
    }
    let store = FredStore::connect(&config(&pki, &handles[0], "proxy0"))
        .await
        .unwrap();
    let other = match handles.get(1) {
        Some(node) => Some(
            FredStore::connect(&config(&pki, node, "proxy0"))
                .await
                .unwrap(),
        ),
        None => None,
    };
    Bed {
        store,
        other,
        cluster,
        _nodes: handles,
        pki: Some(pki),
        _dir: dir,
    }
}

async fn bed() -> Bed {
    bed_of(&["nodeA"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_and_loads() {
    contract::appends_and_loads(&bed().await.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_out_of_order_turns() {
    contract::refuses_out_of_order_turns(&bed().await.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes() {
    contract::deletes(&bed().await.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_a_users_sessions() {
    contract::lists_a_users_sessions(&bed().await.store).await;
}

/// More sessions than one index Scan returns, and index entries whose session is gone.
#[tokio::test(flavor = "multi_thread")]
async fn lists_many_sessions_in_batches_and_skips_stale_entries() {
    let bed = bed().await;
    let store = &bed.store;
    let head = |user: &str, updated_ms| SessionHead {
        user_id: user.into(),
        updated_ms,
        ..contract::head(1, 1)
    };
    let n = INDEX_BATCH + 10;
    for i in 0..n {
        store
            .commit_turn(&format!("s{i:04}"), &head("alice", i), Some(b"x"))
            .await
            .unwrap();
    }
    store
        .commit_turn("zzz", &head("bob", 0), Some(b"x"))
        .await
        .unwrap();
    // An entry whose session was never committed (its turn failed after indexing).
    store.index_session("gone", "alice").await.unwrap();
    let listed = store.sessions_of("alice").await.unwrap();
    assert_eq!(listed.len() as u64, n);
    assert_eq!(listed[0].0, format!("s{:04}", n - 1), "newest first");
    assert_eq!(listed[n as usize - 1].0, "s0000");
    assert!(listed.iter().all(|(_, h)| h.user_id == "alice"));
}

fn turn(n: u32, reply: &str) -> SessionHead {
    SessionHead {
        last_reply: reply.into(),
        ..contract::head(n, n)
    }
}

/// The fork of the FReD-path issue: the same turn committed on two nodes at once (both
/// written before either relay arrives). One wins on both nodes, the other is told so,
/// and every later turn works on either node.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_turn_on_two_nodes_at_once_has_one_winner_everywhere() {
    forks_have_one_winner(&bed_of(&["nodeA", "nodeB"]).await).await;
}

/// The same with the trigger feed, where the writer's own node is confirmed by its feed
/// instead of a Keys call.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_feed_the_same_turn_on_two_nodes_has_one_winner_everywhere() {
    forks_have_one_winner(&fed_bed().await.0).await;
}

async fn forks_have_one_winner(bed: &Bed) {
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    for round in 0..5 {
        let id = format!("fork{round}");
        a.commit_turn(&id, &turn(1, "one"), Some(b"one"))
            .await
            .unwrap();
        assert_eq!(b.load(&id).await.unwrap().unwrap().head.turn, 1);
        bed.cluster.set_replication_delay(Duration::from_millis(30));
        let (head_a, head_b) = (turn(2, "a"), turn(2, "b"));
        let (on_a, on_b) = tokio::join!(
            a.commit_turn(&id, &head_a, Some(b"a's two")),
            b.commit_turn(&id, &head_b, Some(b"b's two")),
        );
        bed.cluster.set_replication_delay(Duration::ZERO);
        let wins = [on_a.is_ok(), on_b.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {on_a:?} {on_b:?}"
        );
        let loser = if on_a.is_ok() { on_b } else { on_a };
        assert!(
            matches!(loser, Err(StoreError::Conflict { stored_turn: 2 })),
            "round {round}: the loser is told turn 2 is taken: {loser:?}"
        );
        let winner_records = if wins[0] { b"a's two" } else { b"b's two" };
        for store in [a, b] {
            let s = store.load(&id).await.unwrap().unwrap();
            assert_eq!(s.head.turn, 2);
            assert_eq!(
                &s.records[1][..],
                winner_records,
                "round {round}: the same winner on every node"
            );
        }
        // Turn 3 on the losing node, then turn 4 on the winning one.
        let (loser_store, winner_store) = if wins[0] { (b, a) } else { (a, b) };
        loser_store
            .commit_turn(&id, &turn(3, "3"), Some(b"three"))
            .await
            .unwrap();
        winner_store.load(&id).await.unwrap();
        winner_store
            .commit_turn(&id, &turn(4, "4"), None)
            .await
            .unwrap();
        let s = loser_store.load(&id).await.unwrap().unwrap();
        assert_eq!((s.head.turn, s.records.len()), (4, 3));
    }
}

/// The window a read-back on one node leaves open: nodeA's turn 2 is written and relayed
/// while nodeB's concurrent version (which wins the tie-break) is still on its way to
/// nodeA. Confirming on every replica sees nodeB's version where it was written, so nodeA
/// answers a conflict; confirming locally, nodeA may answer success for a turn that is then
/// dropped. Either way both nodes end on the same chain, and a node whose cache held the
/// losing branch repairs itself on its next read instead of getting stuck.
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_turn_is_seen_where_it_was_written() {
    let on_a = losing_race(Confirm::Replicas).await;
    assert!(
        matches!(on_a, Err(StoreError::Conflict { stored_turn: 2 })),
        "{on_a:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_on_a_losing_branch_repairs_itself() {
    let on_a = losing_race(Confirm::Local).await;
    eprintln!("confirmed locally, nodeA's own commit answered {on_a:?}");
}

/// nodeA commits turn 2 while nodeB writes its own a moment later, before nodeA's relay
/// reaches it; checks that both nodes converge on nodeB's; returns what nodeA answered.
async fn losing_race(confirm: Confirm) -> Result<u64, StoreError> {
    let mut bed = bed_of(&["nodeA", "nodeB"]).await;
    if confirm == Confirm::Local {
        bed.store.peers.clear();
    }
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    a.commit_turn("s", &turn(1, "one"), Some(b"one"))
        .await
        .unwrap();
    let b_log = b.read_log("s").await.unwrap();
    let item = TurnItem {
        writer: "nodeB".into(),
        prev: b_log.chain,
        updated_ms: 2,
        prompt_sha256: String::new(),
        reply: "b".into(),
        record: Some(b"b's two".to_vec()),
        origin: None,
    };
    bed.cluster.set_replication_delay(Duration::from_millis(40));
    let on_b = async {
        tokio::time::sleep(Duration::from_millis(15)).await;
        b.client
            .update(&turn_key("s", 2), item.encode(), vec![Version::default()])
            .await
    };
    let head_a = turn(2, "a");
    let (on_a, on_b) = tokio::join!(a.commit_turn("s", &head_a, Some(b"a's two")), on_b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    bed.cluster.set_replication_delay(Duration::ZERO);
    on_b.expect("nodeB's create was not refused: nodeA's version had not arrived yet");
    let answered = on_a;
    let on_a = a.load("s").await.unwrap().unwrap();
    let on_b = b.load("s").await.unwrap().unwrap();
    assert_eq!(on_a.records, on_b.records, "both nodes agree");
    assert_eq!(&on_a.records[1][..], b"b's two", "nodeB's version won");
    a.commit_turn("s", &turn(3, "3"), None).await.unwrap();
    assert_eq!(
        b.load("s").await.unwrap().unwrap().head.turn,
        3,
        "and go on"
    );
    answered
}

/// A session deleted on one node and begun anew under the same id on another is never
/// mixed with what a third node cached of the old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_begun_anew_elsewhere_is_not_mixed_with_the_old_one() {
    let bed = bed_of(&["nodeA", "nodeB"]).await;
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    a.commit_turn("s", &turn(1, "1"), Some(b"old one"))
        .await
        .unwrap();
    a.commit_turn("s", &turn(2, "2"), Some(b"old two"))
        .await
        .unwrap();
    assert_eq!(b.load("s").await.unwrap().unwrap().head.turn, 2);
    assert!(a.delete("s").await.unwrap());
    a.commit_turn("s", &turn(1, "1"), Some(b"new one"))
        .await
        .unwrap();
    let s = b.load("s").await.unwrap().unwrap();
    assert_eq!(s.records, vec![b"new one".to_vec()]);
    b.commit_turn("s", &turn(2, "2"), Some(b"new two"))
        .await
        .unwrap();
    assert_eq!(a.load("s").await.unwrap().unwrap().records.len(), 2);
}

/// A turn read on another node costs one Scan; a commit one Update and one Keys (the
/// versions-only read-back that tells a lost race), never a second Update, and no value is
/// read back when the turn's version is the only one.
#[tokio::test(flavor = "multi_thread")]
async fn a_turn_is_one_update() {
    let bed = bed_of(&["nodeA", "nodeB"]).await;
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    a.commit_turn("s", &turn(1, "1"), Some(b"one"))
        .await
        .unwrap();
    b.load("s").await.unwrap();
    let node = &bed._nodes[0];
    let before = node.stats();
    a.load("s").await.unwrap();
    a.commit_turn("s", &turn(2, "2"), Some(b"two"))
        .await
        .unwrap();
    let after = node.stats();
    let calls = |rpc| after.call_count(rpc) - before.call_count(rpc);
    assert_eq!(calls("Update"), 1);
    assert_eq!(calls("Keys"), 1, "the versions read back");
    assert_eq!(calls("Scan") + calls("Read"), 1, "a Scan to load");
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A two-node bed whose stores serve the trigger feed.
async fn fed_bed() -> (Bed, TestPki, Vec<NodeHandle>) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "proxy0"]).unwrap();
    let cluster = Cluster::new();
    let mut nodes = Vec::new();
    for node in ["nodeA", "nodeB"] {
        let tls = pki.node_tls(node);
        nodes.push(
            cluster
                .start_node(node, "127.0.0.1:0".parse().unwrap(), tls)
                .await
                .unwrap(),
        );
    }
    let fed = |node: &NodeHandle| {
        let listen = free_port();
        FredConfig {
            feed: Some(FeedConfig {
                listen,
                advertise: listen.to_string(),
            }),
            ..config(&pki, node, "proxy0")
        }
    };
    let store = FredStore::connect(&fed(&nodes[0])).await.unwrap();
    let other = Some(FredStore::connect(&fed(&nodes[1])).await.unwrap());
    let bed = Bed {
        store,
        other,
        cluster,
        _nodes: Vec::new(),
        pki: None,
        _dir: dir,
    };
    (bed, pki, nodes)
}

fn reads(node: &NodeHandle) -> u64 {
    let s = node.stats();
    s.call_count("Read") + s.call_count("Scan")
}

/// FReD v0.2.19 crashes on two first trigger calls to one host at once, so each proxy makes
/// its feed's first call itself, with one write of its own, before it serves any turn.
#[tokio::test(flavor = "multi_thread")]
async fn a_registered_feed_is_primed_with_one_write_before_any_turn() {
    let (_bed, _pki, nodes) = fed_bed().await;
    for node in &nodes {
        assert_eq!(
            node.stats().call_count("Update"),
            1,
            "one priming write per proxy"
        );
    }
}

/// With the feed, a node hears every turn as it is stored, so a client roaming to it gets
/// its turn served with no read; a deletion elsewhere reaches it the same way.
#[tokio::test(flavor = "multi_thread")]
async fn the_trigger_feed_keeps_a_roamed_session_in_memory() {
    let (bed, _pki, nodes) = fed_bed().await;
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    for n in 1..=3 {
        a.commit_turn("s", &turn(n, "x"), Some(format!("record {n}").as_bytes()))
            .await
            .unwrap();
    }
    // The writer's own node is confirmed by its feed; the other replica by a Keys call.
    let keys = |node: &NodeHandle| node.stats().call_count("Keys");
    let before = (keys(&nodes[0]), keys(&nodes[1]));
    a.commit_turn("s", &turn(4, "x"), Some(b"record 4"))
        .await
        .unwrap();
    assert_eq!((keys(&nodes[0]), keys(&nodes[1])), (before.0, before.1 + 1));

    let before = reads(&nodes[1]);
    let s = b.load_for_turn("s", 5).await.unwrap().unwrap();
    assert_eq!(reads(&nodes[1]), before, "served from memory");
    assert_eq!(s.head.turn, 4);
    assert_eq!(&s.records[3][..], b"record 4");
    b.commit_turn("s", &turn(5, "y"), None).await.unwrap();
    let before = reads(&nodes[0]);
    assert_eq!(a.load_for_turn("s", 6).await.unwrap().unwrap().head.turn, 5);
    assert_eq!(reads(&nodes[0]), before, "and back");
    // A turn number it does not expect is read, not trusted.
    assert_eq!(a.load_for_turn("s", 9).await.unwrap().unwrap().head.turn, 5);
    assert!(reads(&nodes[0]) > before);

    assert!(a.delete("s").await.unwrap());
    assert!(
        b.load_for_turn("s", 6).await.unwrap().is_none(),
        "deleted everywhere"
    );
}

/// A proxy that stops unregisters its feed; one that dies leaves it registered, and writes
/// relayed to its node still succeed (FReD records the failed trigger as a missed relay).
/// A new proxy on that node registers again and is fed.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_gone_does_not_stop_writes_and_its_successor_is_fed() {
    let (mut bed, pki, nodes) = fed_bed().await;
    bed.store
        .commit_turn("s", &turn(1, "1"), Some(b"one"))
        .await
        .unwrap();
    // nodeB's proxy dies without unregistering.
    let gone = bed.other.take().unwrap();
    let listen = gone.feed.as_ref().map(|f| f.id.clone());
    drop(gone);
    assert!(listen.is_some());
    bed.store
        .commit_turn("s", &turn(2, "2"), Some(b"two"))
        .await
        .unwrap();
    // Its successor (same id, new address) takes over the registration.
    let port = free_port();
    let config = FredConfig {
        feed: Some(FeedConfig {
            listen: port,
            advertise: port.to_string(),
        }),
        ..config(&pki, &nodes[1], "proxy0")
    };
    let b = FredStore::connect(&config).await.unwrap();
    assert_eq!(b.load_for_turn("s", 3).await.unwrap().unwrap().head.turn, 2);
    bed.store
        .commit_turn("s", &turn(3, "3"), None)
        .await
        .unwrap();
    let before = reads(&nodes[1]);
    assert_eq!(b.load_for_turn("s", 4).await.unwrap().unwrap().head.turn, 3);
    assert_eq!(reads(&nodes[1]), before, "fed again");
    b.close().await;
    assert!(
        b.client.triggers().await.unwrap().is_empty(),
        "unregistered on close"
    );
}

/// Three nodes commit the same turn at once: one wins on all three, both others are told so,
/// and the session goes on from any of them.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_turn_on_three_nodes_at_once_has_one_winner_everywhere() {
    let bed = bed_of(&["nodeA", "nodeB", "nodeC"]).await;
    let c = FredStore::connect(&FredConfig {
        node_id: "nodeC".into(),
        ..config(bed.pki.as_ref().unwrap(), &bed._nodes[2], "proxy0")
    })
    .await
    .unwrap();
    let stores = [&bed.store, bed.other.as_ref().unwrap(), &c];
    for round in 0..3 {
        let id = format!("three{round}");
        stores[0]
            .commit_turn(&id, &turn(1, "one"), Some(b"one"))
            .await
            .unwrap();
        for store in &stores[1..] {
            store.load(&id).await.unwrap().unwrap();
        }
        bed.cluster.set_replication_delay(Duration::from_millis(30));
        let heads = [turn(2, "a"), turn(2, "b"), turn(2, "c")];
        let records: [&[u8]; 3] = [b"a's two", b"b's two", b"c's two"];
        let (ra, rb, rc) = tokio::join!(
            stores[0].commit_turn(&id, &heads[0], Some(records[0])),
            stores[1].commit_turn(&id, &heads[1], Some(records[1])),
            stores[2].commit_turn(&id, &heads[2], Some(records[2])),
        );
        bed.cluster.set_replication_delay(Duration::ZERO);
        let results = [ra, rb, rc];
        let winners: Vec<usize> = (0..3).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (i, r) in results.iter().enumerate() {
            if !winners.contains(&i) {
                assert!(
                    matches!(r, Err(StoreError::Conflict { stored_turn: 2 })),
                    "{r:?}"
                );
            }
        }
        for store in stores {
            let s = store.load(&id).await.unwrap().unwrap();
            assert_eq!(
                s.records[1], records[winners[0]],
                "round {round}: one history"
            );
        }
        for (i, store) in stores.iter().enumerate() {
            let n = 3 + i as u32;
            store.load(&id).await.unwrap();
            store
                .commit_turn(&id, &turn(n, "next"), None)
                .await
                .unwrap();
        }
    }
}

/// FReD loses relays to a node around its restart and never delivers them. That node, asked
/// for a later turn, copies the turns it lacks from another replica instead of answering 409
/// for good; the session goes on from both nodes.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_relays_were_lost_repairs_itself_from_another_replica() {
    let bed = bed_of(&["nodeA", "nodeB"]).await;
    let (a, b) = (&bed.store, bed.other.as_ref().unwrap());
    a.commit_turn("s", &turn(1, "1"), Some(b"one"))
        .await
        .unwrap();
    assert_eq!(b.load_for_turn("s", 2).await.unwrap().unwrap().head.turn, 1);
    bed.cluster.lose_relays_to("nodeB", true);
    for n in 2..=4 {
        a.commit_turn("s", &turn(n, "x"), Some(format!("r{n}").as_bytes()))
            .await
            .unwrap();
    }
    bed.cluster.lose_relays_to("nodeB", false);
    let s = b.load_for_turn("s", 5).await.unwrap().unwrap();
    assert_eq!(s.head.turn, 4, "copied from nodeA");
    assert_eq!(s.records, a.load("s").await.unwrap().unwrap().records);
    b.commit_turn("s", &turn(5, "5"), Some(b"r5"))
        .await
        .unwrap();
    // nodeB now holds the turns itself: a cold read there finds all five.
    let fresh = FredStore::connect(&config(bed.pki.as_ref().unwrap(), &bed._nodes[1], "proxy0"))
        .await
        .unwrap();
    assert_eq!(fresh.read_log("s").await.unwrap().turn(), 5);
    assert_eq!(a.load_for_turn("s", 6).await.unwrap().unwrap().head.turn, 5);
}
