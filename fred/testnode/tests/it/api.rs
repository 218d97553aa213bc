//! Single-node behaviour: naming RPCs, items, keygroup kinds, names, roles, versions, stats.

use std::time::Duration;

use fred_proto::*;

use crate::{Env, read_req, unknown, update_req, values, version};

#[tokio::test]
async fn naming_rpcs_manage_keygroups_and_replicas() {
    let env = Env::new(Duration::ZERO).await;
    let mut a = env.client("alice", &env.a).await;
    let mut b = env.client("alice", &env.b).await;
    let any = "127.0.0.1:0".parse().unwrap();
    let taken = env
        .cluster
        .start_node("nodeB", any, env.pki.node_tls("nodeB"))
        .await;
    assert!(taken.is_err(), "node ids are unique");

    let all = a
        .get_all_replica(Empty {})
        .await
        .unwrap()
        .into_inner()
        .replicas;
    let hosts: Vec<(String, String)> = all.into_iter().map(|r| (r.node_id, r.host)).collect();
    assert_eq!(
        hosts,
        [
            ("nodeA".into(), env.a.addr().to_string()),
            ("nodeB".into(), env.b.addr().to_string())
        ]
    );
    let rb = a
        .get_replica(GetReplicaRequest {
            node_id: "nodeB".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        rb.into_inner().host,
        format!("127.0.0.1:{}", env.b.addr().port())
    );
    unknown(
        a.get_replica(GetReplicaRequest {
            node_id: "nodeC".into(),
        })
        .await,
    );

    let info = GetKeygroupInfoRequest {
        keygroup: "kg".into(),
    };
    assert!(
        unknown(a.get_keygroup_info(info.clone()).await)
            .contains("cannot get replica for keygroup kg")
    );
    a.create_keygroup(CreateKeygroupRequest {
        keygroup: "kg".into(),
        mutable: true,
        expiry: 0,
    })
    .await
    .unwrap();
    let again = a
        .create_keygroup(CreateKeygroupRequest {
            keygroup: "kg".into(),
            mutable: false,
            expiry: 0,
        })
        .await;
    assert!(unknown(again).contains("already exists"));
    a.update(update_req("kg", "x", "1")).await.unwrap();
    assert!(
        unknown(b.read(read_req("kg", "x")).await).contains("cannot get replica for keygroup kg")
    );

    let add = AddReplicaRequest {
        keygroup: "kg".into(),
        node_id: "nodeB".into(),
        expiry: 60,
    };
    a.add_replica(add.clone()).await.unwrap();
    assert_eq!(
        values(&mut b, "kg", "x").await.unwrap(),
        ["1"],
        "AddReplica copies the items"
    );
    assert!(unknown(a.add_replica(add).await).contains("already a replica"));
    let unknown_node = AddReplicaRequest {
        keygroup: "kg".into(),
        node_id: "nodeC".into(),
        expiry: 0,
    };
    unknown(a.add_replica(unknown_node).await);

    let got = b
        .get_keygroup_info(info.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(got.mutable);
    let replicas: Vec<(String, i64, String)> = got
        .replica
        .into_iter()
        .map(|r| (r.node_id, r.expiry, r.host))
        .collect();
    assert_eq!(
        replicas,
        [
            ("nodeA".into(), 0, env.a.addr().to_string()),
            ("nodeB".into(), 60, env.b.addr().to_string())
        ]
    );

    b.remove_replica(RemoveReplicaRequest {
        keygroup: "kg".into(),
        node_id: "nodeB".into(),
    })
    .await
    .unwrap();
    assert!(
        unknown(b.read(read_req("kg", "x")).await).contains("cannot get replica for keygroup kg")
    );
    let last = a
        .remove_replica(RemoveReplicaRequest {
            keygroup: "kg".into(),
            node_id: "nodeA".into(),
        })
        .await;
    assert!(unknown(last).contains("last replica"));

    a.delete_keygroup(DeleteKeygroupRequest {
        keygroup: "kg".into(),
    })
    .await
    .unwrap();
    assert!(
        unknown(a.read(read_req("kg", "x")).await).contains("cannot get replica for keygroup kg")
    );
    unknown(
        a.delete_keygroup(DeleteKeygroupRequest {
            keygroup: "kg".into(),
        })
        .await,
    );
}

/// Registration only (the conformance suite pins the rest): the ConfigureTrigger role is
/// needed, and deleting the keygroup drops its triggers.
#[tokio::test]
async fn triggers_need_their_role_and_go_with_the_keygroup() {
    let env = Env::new(Duration::ZERO).await;
    let (mut alice, _) = env.shared_keygroup("kg", true).await;
    let mut bob = env.client("bob", &env.a).await;
    let add = AddTriggerRequest {
        keygroup: "kg".into(),
        trigger_id: "t".into(),
        trigger_host: "h:1".into(),
    };
    assert!(unknown(bob.add_trigger(add.clone()).await).contains("permission denied"));
    alice.add_trigger(add).await.unwrap();
    let get = GetKeygroupTriggerRequest {
        keygroup: "kg".into(),
    };
    let got = alice.get_keygroup_triggers(get.clone()).await.unwrap();
    assert_eq!(got.into_inner().triggers.len(), 1);
    let kg = DeleteKeygroupRequest {
        keygroup: "kg".into(),
    };
    alice.delete_keygroup(kg).await.unwrap();
    env.shared_keygroup("kg", true).await;
    let got = alice.get_keygroup_triggers(get).await.unwrap();
    assert!(got.into_inner().triggers.is_empty());
}

#[tokio::test]
async fn mutable_items_update_read_scan_keys_delete() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, _) = env.shared_keygroup("kg", true).await;

    for (id, val) in [("b", "2"), ("a", "1"), ("d", "4"), ("c", "3")] {
        let v = a
            .update(update_req("kg", id, val))
            .await
            .unwrap()
            .into_inner()
            .version;
        assert_eq!(v, Some(version(&[("nodeA", 1)])));
    }
    let v = a
        .update(update_req("kg", "a", "one"))
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(
        v,
        Some(version(&[("nodeA", 2)])),
        "an overwrite ticks the writer's entry"
    );
    let read = a.read(read_req("kg", "a")).await.unwrap().into_inner().data;
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].id.as_str(), read[0].val.as_str()), ("a", "one"));
    assert_eq!(read[0].version, Some(version(&[("nodeA", 2)])));
    assert_eq!(
        unknown(a.read(read_req("kg", "zz")).await),
        "item zz not found in keygroup kg"
    );

    let scan = |id: &str, count| ScanRequest {
        keygroup: "kg".into(),
        id: id.into(),
        count,
    };
    let got = a.scan(scan("b", 2)).await.unwrap().into_inner().data;
    let got: Vec<(String, String)> = got.into_iter().map(|i| (i.id, i.val)).collect();
    assert_eq!(got, [("b".into(), "2".into()), ("c".into(), "3".into())]);
    let keys = a
        .keys(KeysRequest {
            keygroup: "kg".into(),
            id: "a".into(),
            count: 10,
        })
        .await
        .unwrap();
    let ids: Vec<String> = keys.into_inner().keys.into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);

    let del = a
        .delete(DeleteRequest {
            keygroup: "kg".into(),
            id: "c".into(),
            versions: vec![],
        })
        .await;
    assert_eq!(
        del.unwrap().into_inner().version,
        Some(version(&[("nodeA", 2)]))
    );
    assert!(unknown(a.read(read_req("kg", "c")).await).contains("not found"));
    // As in FReD: Scan shows the tombstone (empty value) and may start at it.
    let got = a.scan(scan("a", 10)).await.unwrap().into_inner().data;
    let got: Vec<(String, String)> = got.into_iter().map(|i| (i.id, i.val)).collect();
    let want = [("a", "one"), ("b", "2"), ("c", ""), ("d", "4")];
    assert_eq!(got, want.map(|(i, v)| (i.to_string(), v.to_string())));
    assert_eq!(
        a.scan(scan("c", 1)).await.unwrap().into_inner().data[0].val,
        ""
    );
    assert!(unknown(a.scan(scan("zz", 10)).await).starts_with("error scanning 10 items"));
    let keys_missing = a
        .keys(KeysRequest {
            keygroup: "kg".into(),
            id: "zz".into(),
            count: 1,
        })
        .await;
    assert!(unknown(keys_missing).starts_with("error scanning keys"));
    let del_missing = a
        .delete(DeleteRequest {
            keygroup: "kg".into(),
            id: "zz".into(),
            versions: vec![],
        })
        .await;
    assert_eq!(
        unknown(del_missing),
        "item does not exist so it cannot be deleted"
    );
}

#[tokio::test]
async fn immutable_keygroups_only_append_new_ids() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, mut b) = env.shared_keygroup("log", false).await;
    env.shared_keygroup("kv", true).await;

    let append = |kg: &str, id, data: &str| AppendRequest {
        keygroup: kg.into(),
        id,
        data: data.into(),
    };
    let r = a
        .append(append("log", 5, "five"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.id, "5");
    assert_eq!(
        values(&mut b, "log", "5").await.unwrap(),
        ["five"],
        "appends replicate"
    );
    assert!(unknown(b.append(append("log", 5, "again")).await).contains("already exists"));
    assert!(unknown(a.append(append("log", 6, "")).await).contains("empty value"));
    assert!(unknown(a.update(update_req("log", "5", "x")).await).contains("immutable"));
    let del = a
        .delete(DeleteRequest {
            keygroup: "log".into(),
            id: "5".into(),
            versions: vec![],
        })
        .await;
    assert!(unknown(del).contains("immutable"));
    assert!(unknown(a.append(append("kv", 1, "x")).await).contains("mutable"));
    let info = a
        .get_keygroup_info(GetKeygroupInfoRequest {
            keygroup: "log".into(),
        })
        .await
        .unwrap();
    assert!(!info.into_inner().mutable);
}

#[tokio::test]
async fn invalid_names_and_empty_values_are_rejected() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, _) = env.shared_keygroup("kg", true).await;
    for bad in ["", "with-dash", "sp ace", "ümlaut"] {
        let create = CreateKeygroupRequest {
            keygroup: bad.into(),
            mutable: true,
            expiry: 0,
        };
        assert!(unknown(a.create_keygroup(create).await).contains("invalid keygroup name"));
        assert!(unknown(a.update(update_req("kg", bad, "v")).await).contains("invalid item id"));
        assert!(unknown(a.read(read_req("kg", bad)).await).contains("invalid item id"));
    }
    assert!(unknown(a.update(update_req("kg", "ok", "")).await).contains("empty value"));
    // The rejected names were not registered.
    let info = a
        .get_keygroup_info(GetKeygroupInfoRequest {
            keygroup: "withdash".into(),
        })
        .await;
    assert!(unknown(info).contains("cannot get replica"));
}

#[tokio::test]
async fn a_second_user_needs_roles_from_add_user() {
    let env = Env::new(Duration::ZERO).await;
    let (mut alice, _) = env.shared_keygroup("kg", true).await;
    let mut bob = env.client("bob", &env.a).await;
    alice.update(update_req("kg", "x", "1")).await.unwrap();
    let denied = |msg: String| {
        assert!(
            msg.contains("permission denied") && msg.contains("bob"),
            "{msg}"
        )
    };
    let role = |user: &str, role: UserRole| AddUserRequest {
        user: user.into(),
        keygroup: "kg".into(),
        role: role.into(),
    };

    denied(unknown(bob.read(read_req("kg", "x")).await));
    alice
        .add_user(role("bob", UserRole::ReadKeygroup))
        .await
        .unwrap();
    assert_eq!(values(&mut bob, "kg", "x").await.unwrap(), ["1"]);
    bob.scan(ScanRequest {
        keygroup: "kg".into(),
        id: "x".into(),
        count: 1,
    })
    .await
    .unwrap();
    bob.keys(KeysRequest {
        keygroup: "kg".into(),
        id: "x".into(),
        count: 1,
    })
    .await
    .unwrap();

    denied(unknown(bob.update(update_req("kg", "x", "2")).await));
    alice
        .add_user(role("bob", UserRole::WriteKeygroup))
        .await
        .unwrap();
    bob.update(update_req("kg", "x", "2")).await.unwrap();

    let info = GetKeygroupInfoRequest {
        keygroup: "kg".into(),
    };
    denied(unknown(bob.get_keygroup_info(info.clone()).await));
    denied(unknown(
        bob.add_user(role("bob", UserRole::ConfigureReplica)).await,
    ));
    alice
        .add_user(role("bob", UserRole::ConfigureReplica))
        .await
        .unwrap();
    bob.get_keygroup_info(info).await.unwrap();
    denied(unknown(
        bob.delete_keygroup(DeleteKeygroupRequest {
            keygroup: "kg".into(),
        })
        .await,
    ));

    let remove = RemoveUserRequest {
        user: "bob".into(),
        keygroup: "kg".into(),
        role: UserRole::ReadKeygroup.into(),
    };
    alice.remove_user(remove).await.unwrap();
    denied(unknown(bob.read(read_req("kg", "x")).await));
    assert!(
        unknown(
            alice
                .add_user(AddUserRequest {
                    role: 42,
                    ..role("bob", UserRole::ReadKeygroup)
                })
                .await
        )
        .contains("role")
    );
}

#[tokio::test]
async fn updates_naming_stale_versions_are_refused() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, _) = env.shared_keygroup("kg", true).await;
    let v1 = a
        .update(update_req("kg", "x", "one"))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    let v2 = a
        .update(update_req("kg", "x", "two"))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();

    let stale = UpdateRequest {
        versions: vec![v1.clone()],
        ..update_req("kg", "x", "three")
    };
    assert_eq!(unknown(a.update(stale).await), "error updating item");
    let stale_del = DeleteRequest {
        keygroup: "kg".into(),
        id: "x".into(),
        versions: vec![v1.clone()],
    };
    assert_eq!(unknown(a.delete(stale_del).await), "error updating item");

    let fresh = UpdateRequest {
        versions: vec![v2.clone()],
        ..update_req("kg", "x", "three")
    };
    let v3 = a.update(fresh).await.unwrap().into_inner().version.unwrap();
    assert_eq!(v3, version(&[("nodeA", 3)]));

    // Reads naming versions return the stored versions they are >= to (FReD prunes v1).
    let old = ReadRequest {
        versions: vec![v1, v3],
        ..read_req("kg", "x")
    };
    let mut got: Vec<String> = a
        .read(old)
        .await
        .unwrap()
        .into_inner()
        .data
        .into_iter()
        .map(|i| i.val)
        .collect();
    got.sort();
    assert_eq!(got, ["three"]);
    let never = ReadRequest {
        versions: vec![version(&[("nodeB", 9)])],
        ..read_req("kg", "x")
    };
    assert!(unknown(a.read(never).await).contains("not found"));
}

#[tokio::test]
async fn stats_count_written_bytes_and_calls() {
    let env = Env::new(Duration::ZERO).await;
    let (mut a, mut b) = env.shared_keygroup("kg", true).await;
    a.update(update_req("kg", "x", "12345")).await.unwrap();
    a.update(update_req("kg", "x", "123")).await.unwrap();
    unknown(a.update(update_req("kg", "x", "")).await);
    b.read(read_req("kg", "x")).await.unwrap();

    let sa = env.a.stats();
    assert_eq!(sa.bytes_written, 8);
    assert_eq!(sa.call_count("Update"), 3);
    assert_eq!(sa.call_count("CreateKeygroup"), 1);
    assert_eq!(sa.call_count("Read"), 0);
    let sb = env.b.stats();
    assert_eq!((sb.bytes_written, sb.bytes_replicated_in), (0, 8));
    assert_eq!(sb.call_count("Read"), 1);
}
