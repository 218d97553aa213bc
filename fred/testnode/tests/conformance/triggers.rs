//! Trigger registration on the client API: node-local, keyed by trigger id.

use fred_proto::*;

use crate::{Bed, Fred, unknown};

async fn triggers(c: &mut Fred, kg: &str) -> Vec<(String, String)> {
    let r = GetKeygroupTriggerRequest {
        keygroup: kg.into(),
    };
    let mut t: Vec<_> = c
        .get_keygroup_triggers(r)
        .await
        .unwrap()
        .into_inner()
        .triggers
        .into_iter()
        .map(|t| (t.id, t.host))
        .collect();
    t.sort(); // FReD answers in Go map order
    t
}

fn add(kg: &str, id: &str, host: &str) -> AddTriggerRequest {
    AddTriggerRequest {
        keygroup: kg.into(),
        trigger_id: id.into(),
        trigger_host: host.into(),
    }
}

/// AddTrigger registers (or re-registers) a host on the node called only; RemoveTrigger of an
/// unknown id succeeds. No item is written here (the hosts are not trigger nodes); the calls are
/// pinned in `trigger_calls.rs`.
pub async fn triggers_are_registered_per_node(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    assert_eq!(triggers(&mut a, &kg).await, []);
    a.add_trigger(add(&kg, "t1", "127.0.0.1:1")).await.unwrap();
    a.add_trigger(add(&kg, "t2", "127.0.0.1:2")).await.unwrap();
    a.add_trigger(add(&kg, "t1", "127.0.0.1:3")).await.unwrap();
    let both = vec![
        ("t1".to_string(), "127.0.0.1:3".to_string()),
        ("t2".to_string(), "127.0.0.1:2".to_string()),
    ];
    assert_eq!(triggers(&mut a, &kg).await, both);
    assert_eq!(triggers(&mut b, &kg).await, [], "triggers are per node");
    let remove = |id: &str| RemoveTriggerRequest {
        keygroup: kg.clone(),
        trigger_id: id.into(),
    };
    a.remove_trigger(remove("t1")).await.unwrap();
    a.remove_trigger(remove("nope")).await.unwrap();
    assert_eq!(
        triggers(&mut a, &kg).await,
        [("t2".to_string(), "127.0.0.1:2".to_string())]
    );
    a.remove_trigger(remove("t2")).await.unwrap();
    assert_eq!(triggers(&mut a, &kg).await, []);

    // Surprising message: a node that holds no replica of the keygroup says "error adding
    // replica" to AddTrigger.
    let only_a = format!("{kg}only");
    let create = CreateKeygroupRequest {
        keygroup: only_a.clone(),
        mutable: true,
        expiry: 0,
    };
    a.create_keygroup(create).await.unwrap();
    assert_eq!(
        unknown(b.add_trigger(add(&only_a, "t1", "127.0.0.1:1")).await),
        "error adding replica"
    );
}
