//! Replication between two nodes: immediate, delayed, concurrent siblings, tombstones,
//! stop/restart with catch-up.

use std::time::Duration;

use fred_proto::*;

use crate::{Env, connect, eventually, read_req, unknown, update_req, values, version};

#[tokio::test]
async fn zero_delay_write_is_on_the_peer_when_the_call_returns() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, mut b) = env.shared_keygroup("kg", true).await;
    a.update(update_req("kg", "x", "hello")).await.unwrap();
    let read = b.read(read_req("kg", "x")).await.unwrap().into_inner().data;
    assert_eq!(read[0].val, "hello");
    assert_eq!(read[0].version, Some(version(&[("nodeA", 1)])));

    // Writes on B go to A too: no leader.
    b.update(update_req("kg", "x", "back")).await.unwrap();
    let read = a.read(read_req("kg", "x")).await.unwrap().into_inner().data;
    assert_eq!(read[0].val, "back");
    assert_eq!(
        read[0].version,
        Some(version(&[("nodeA", 1), ("nodeB", 1)]))
    );

    b.delete(DeleteRequest {
        keygroup: "kg".into(),
        id: "x".into(),
        versions: vec![],
    })
    .await
    .unwrap();
    assert!(
        unknown(a.read(read_req("kg", "x")).await).contains("not found"),
        "tombstone replicated"
    );
}

#[tokio::test]
async fn a_delayed_write_answers_after_the_delay_with_the_peer_updated() {
    let env = Env::new(Duration::from_millis(300)).await;
    let (mut a, mut b) = env.shared_keygroup("kg", true).await;
    let started = std::time::Instant::now();
    a.update(update_req("kg", "x", "v")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(values(&mut b, "kg", "x").await.unwrap(), ["v"]);
}

#[tokio::test]
async fn a_lagging_write_reaches_the_peer_after_the_lag() {
    let env = Env::new(Duration::ZERO).await;
    env.cluster.set_replication_lag(Duration::from_millis(600));
    let (mut a, mut b) = env.shared_keygroup("kg", true).await;
    a.update(update_req("kg", "x", "late")).await.unwrap();
    assert!(
        unknown(b.read(read_req("kg", "x")).await).contains("not found"),
        "not there at once"
    );
    eventually("the delayed write on nodeB", || {
        let mut b = b.clone();
        async move { values(&mut b, "kg", "x").await.is_ok_and(|v| v == ["late"]) }
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_become_siblings_then_one_update_resolves_them() {
    let env = Env::new(Duration::ZERO).await;
    env.cluster.set_replication_lag(Duration::from_millis(500));
    let (mut a, mut b) = env.shared_keygroup("kg", true).await;
    a.update(update_req("kg", "x", "fromA")).await.unwrap();
    b.update(update_req("kg", "x", "fromB")).await.unwrap();

    for (name, client) in [("nodeA", &a), ("nodeB", &b)] {
        eventually(&format!("two siblings on {name}"), || {
            let mut c = client.clone();
            async move {
                values(&mut c, "kg", "x")
                    .await
                    .is_ok_and(|v| v == ["fromA", "fromB"])
            }
        })
        .await;
    }
    let siblings = a.read(read_req("kg", "x")).await.unwrap().into_inner().data;
    let versions: Vec<Version> = siblings.into_iter().filter_map(|i| i.version).collect();
    assert_eq!(versions.len(), 2);

    // Naming only one sibling is stale; naming both resolves.
    let partial = UpdateRequest {
        versions: versions[..1].to_vec(),
        ..update_req("kg", "x", "merged")
    };
    assert_eq!(unknown(a.update(partial).await), "error updating item");
    let merge = UpdateRequest {
        versions,
        ..update_req("kg", "x", "merged")
    };
    let v = a.update(merge).await.unwrap().into_inner().version;
    assert_eq!(v, Some(version(&[("nodeA", 2), ("nodeB", 1)])));
    assert_eq!(values(&mut a, "kg", "x").await.unwrap(), ["merged"]);
    eventually("the resolved item on nodeB", || {
        let mut b = b.clone();
        async move {
            values(&mut b, "kg", "x")
                .await
                .is_ok_and(|v| v == ["merged"])
        }
    })
    .await;
}

#[tokio::test]
async fn a_stopped_node_refuses_connections_and_catches_up_on_restart() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, _) = env.shared_keygroup("kg", true).await;
    a.update(update_req("kg", "x", "before")).await.unwrap();

    env.b.stop().await;
    assert!(!env.b.is_running());
    assert!(
        connect(&env.pki.dir, "alice", &env.b).await.is_err(),
        "connection refused while stopped"
    );
    a.update(update_req("kg", "x", "during")).await.unwrap();
    a.update(update_req("kg", "y", "new")).await.unwrap();
    let info = a
        .get_keygroup_info(GetKeygroupInfoRequest {
            keygroup: "kg".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        info.into_inner().replica.len(),
        2,
        "a stopped node stays a replica"
    );

    env.b.restart().await.unwrap();
    let mut b = env.client("alice", &env.b).await;
    assert_eq!(values(&mut b, "kg", "x").await.unwrap(), ["during"]);
    assert_eq!(values(&mut b, "kg", "y").await.unwrap(), ["new"]);
    b.update(update_req("kg", "y", "again")).await.unwrap();
    assert_eq!(values(&mut a, "kg", "y").await.unwrap(), ["again"]);
    assert_eq!(env.b.addr(), b_addr_after_restart(&env).await);
}

/// nodeB's host as the naming service reports it.
async fn b_addr_after_restart(env: &Env) -> std::net::SocketAddr {
    let mut a = env.client("alice", &env.a).await;
    let r = a
        .get_replica(GetReplicaRequest {
            node_id: "nodeB".into(),
        })
        .await
        .unwrap();
    r.into_inner().host.parse().unwrap()
}

#[tokio::test]
async fn delayed_writes_to_a_stopped_node_are_caught_up() {
    let env = Env::new(Duration::from_millis(200)).await;
    let (mut a, _) = env.shared_keygroup("kg", true).await;
    env.b.stop().await;
    a.update(update_req("kg", "x", "v1")).await.unwrap();
    // Well past the delay: the push found nodeB stopped and was dropped.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(env.b.stats().bytes_replicated_in, 0);
    env.b.restart().await.unwrap();
    let mut b = env.client("alice", &env.b).await;
    assert_eq!(values(&mut b, "kg", "x").await.unwrap(), ["v1"]);
    assert_eq!(env.b.stats().bytes_replicated_in, 2, "taken in by catch-up");
}
