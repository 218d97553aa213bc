//! Trigger calls (FReD v0.2.19, `pkg/fred/trigger.go` and the handlers): after a write the node
//! stores, it calls every trigger registered for the keygroup ON THAT NODE, over mTLS with its
//! own certificate, and waits. A client's write: store, relay to every replica (each stores it,
//! calls its own triggers, then acknowledges), call the own triggers, answer.

use std::future::Future;
use std::time::Instant;

use fred_proto::*;

use crate::trigger_node::{Called, SLOW};
use crate::{Bed, Fred, clock, delete, read, unknown, update};

async fn add(c: &mut Fred, kg: &str, id: &str, host: &str) {
    let r = AddTriggerRequest {
        keygroup: kg.into(),
        trigger_id: id.into(),
        trigger_host: host.into(),
    };
    c.add_trigger(r).await.expect("AddTrigger");
}

/// The calls as "CALLER Put ID=VAL" / "CALLER Delete ID", in order of arrival.
fn lines(calls: &[Called]) -> Vec<String> {
    let line = |c: &Called| match c.method {
        "Put" => format!("{} Put {}={}", c.by, c.id, c.val),
        m => format!("{} {m} {}", c.by, c.id),
    };
    calls.iter().map(line).collect()
}

/// Runs `f`; its output and the moments before it started and after it answered.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Instant, Instant) {
    let start = Instant::now();
    let out = f.await;
    (out, start, Instant::now())
}

/// A write on A calls B's triggers (while B takes the relay) before A's own, and both before
/// A's client gets the answer. Surprising: a replica tells a relayed Delete as PutItemTrigger
/// with value ""; only the node the client called sends DeleteItemTrigger.
pub async fn writes_call_the_replicas_triggers_then_the_writers(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let t = &bed.triggers().ok;
    add(&mut a, &kg, "t", &t.host()).await;
    add(&mut b, &kg, "t", &t.host()).await;

    let (r, start, end) = timed(update(&mut a, &kg, "x", "v1", &[])).await;
    r.unwrap();
    let calls = t.take(&kg);
    assert_eq!(lines(&calls), ["nodeB Put x=v1", "nodeA Put x=v1"]);
    assert!(
        calls.iter().all(|c| start < c.at && c.at < end),
        "{calls:?}"
    );

    let (r, start, end) = timed(delete(&mut a, &kg, "x", &[])).await;
    r.unwrap();
    let calls = t.take(&kg);
    assert_eq!(lines(&calls), ["nodeB Put x=", "nodeA Delete x"]);
    assert!(
        calls.iter().all(|c| start < c.at && c.at < end),
        "{calls:?}"
    );

    update(&mut b, &kg, "x", "v2", &[]).await.unwrap();
    assert_eq!(lines(&t.take(&kg)), ["nodeA Put x=v2", "nodeB Put x=v2"]);
}

/// A trigger registered on B only hears of writes through B (its clients' or relayed to it),
/// and only for its keygroup.
pub async fn triggers_are_node_local(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let (other, _, _) = bed.keygroup().await;
    let t = &bed.triggers().ok;
    add(&mut b, &kg, "t", &t.host()).await;
    update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    assert_eq!(lines(&t.take(&kg)), ["nodeB Put x=1"]);
    update(&mut b, &kg, "y", "2", &[]).await.unwrap();
    assert_eq!(lines(&t.take(&kg)), ["nodeB Put y=2"]);
    update(&mut a, &other, "x", "3", &[]).await.unwrap();
    update(&mut b, &other, "x", "4", &[]).await.unwrap();
    assert_eq!(lines(&t.take(&other)), Vec::<String>::new());
}

/// Two registrations of one slow host: both calls run at once and the Update waits for both.
/// Surprising: DeleteItemTrigger goes once per host, PutItemTrigger once per registration.
pub async fn triggers_are_called_in_parallel_and_waited_for(bed: Bed) {
    let (kg, mut a, _) = bed.keygroup().await;
    let slow = &bed.triggers().slow;
    add(&mut a, &kg, "s1", &slow.host()).await;
    add(&mut a, &kg, "s2", &slow.host()).await;
    let (r, _, end) = timed(update(&mut a, &kg, "x", "v", &[])).await;
    r.unwrap();
    let calls = slow.take(&kg);
    assert_eq!(lines(&calls), ["nodeA Put x=v", "nodeA Put x=v"]);
    assert!(calls.iter().all(|c| c.at + SLOW <= end), "answered first");
    assert!(
        calls[1].at < calls[0].at + SLOW,
        "called one after the other"
    );

    let (r, _, end) = timed(delete(&mut a, &kg, "x", &[])).await;
    r.unwrap();
    let calls = slow.take(&kg);
    assert_eq!(lines(&calls), ["nodeA Delete x"]);
    assert!(calls[0].at + SLOW <= end, "answered first");
}

/// Append (immutable keygroups) tells triggers like Update, on the writer and the replica.
pub async fn appends_call_triggers_like_updates(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup_of(false).await;
    let t = &bed.triggers().ok;
    add(&mut a, &kg, "t", &t.host()).await;
    add(&mut b, &kg, "t", &t.host()).await;
    let append = AppendRequest {
        keygroup: kg.clone(),
        id: 7,
        data: "a".into(),
    };
    a.append(append).await.unwrap();
    assert_eq!(lines(&t.take(&kg)), ["nodeB Put 7=a", "nodeA Put 7=a"]);
}

/// A trigger nobody answers fails the writes made on its node ("error updating item", "error
/// deleting item") although they were stored and relayed; writes made on the other node, which
/// its node takes in by relay, succeed (the writer only records the failed relay) and are
/// stored there.
pub async fn a_failing_trigger_fails_only_its_own_nodes_write(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let tr = bed.triggers();
    add(&mut a, &kg, "dead", &tr.dead).await;
    add(&mut b, &kg, "t", &tr.ok.host()).await;

    let failed = update(&mut a, &kg, "x", "v1", &[]).await;
    assert_eq!(unknown(failed), "error updating item");
    let stored = vec![("v1".to_string(), clock(&[("nodeA", 1)]))];
    assert_eq!(read(&mut a, &kg, "x").await.unwrap(), stored);
    assert_eq!(read(&mut b, &kg, "x").await.unwrap(), stored);
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeB Put x=v1"]);

    let failed = delete(&mut a, &kg, "x", &[]).await;
    assert_eq!(unknown(failed), "error deleting item");
    for c in [&mut a, &mut b] {
        assert!(unknown(read(c, &kg, "x").await).contains("not found"));
    }
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeB Put x="]);

    let v = update(&mut b, &kg, "y", "w", &[]).await.unwrap();
    assert_eq!(read(&mut a, &kg, "y").await.unwrap(), [("w".into(), v)]);
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeB Put y=w"]);

    let remove = RemoveTriggerRequest {
        keygroup: kg.clone(),
        trigger_id: "dead".into(),
    };
    a.remove_trigger(remove).await.unwrap();
    update(&mut a, &kg, "x", "v2", &[]).await.unwrap();
}

/// A trigger that answers an error: B's relay handling called it and stored the write, A's
/// Update still succeeds; B's own writes fail.
pub async fn an_erring_trigger_on_a_replica_does_not_fail_the_write(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let tr = bed.triggers();
    add(&mut a, &kg, "t", &tr.ok.host()).await;
    add(&mut b, &kg, "f", &tr.failing.host()).await;

    let v = update(&mut a, &kg, "x", "v", &[]).await.unwrap();
    assert_eq!(read(&mut b, &kg, "x").await.unwrap(), [("v".into(), v)]);
    assert_eq!(lines(&tr.failing.take(&kg)), ["nodeB Put x=v"]);
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeA Put x=v"]);

    delete(&mut a, &kg, "x", &[]).await.unwrap();
    assert!(unknown(read(&mut b, &kg, "x").await).contains("not found"));
    assert_eq!(lines(&tr.failing.take(&kg)), ["nodeB Put x="]);
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeA Delete x"]);

    let failed = update(&mut b, &kg, "y", "w", &[]).await;
    assert_eq!(unknown(failed), "error updating item");
    assert_eq!(read(&mut a, &kg, "y").await.unwrap().len(), 1);
    assert_eq!(lines(&tr.ok.take(&kg)), ["nodeA Put y=w"]);
}

/// The node checks the trigger node's certificate against its CA (FReD: --trigger-ca): one
/// from another CA fails the write before any call arrives.
pub async fn nodes_check_the_trigger_nodes_certificate(bed: Bed) {
    let (kg, mut a, _) = bed.keygroup().await;
    let foreign = &bed.triggers().foreign;
    add(&mut a, &kg, "f", &foreign.host()).await;
    let failed = update(&mut a, &kg, "x", "v", &[]).await;
    assert_eq!(unknown(failed), "error updating item");
    assert_eq!(lines(&foreign.take(&kg)), Vec::<String>::new());
}
