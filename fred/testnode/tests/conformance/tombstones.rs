//! Deleted items and the range reads: Read hides tombstones, Delete and Scan/Keys treat them as
//! existing, Scan/Keys walk stored versions (badger keys `keygroup|id|clock`), not ids.

use fred_proto::KeysRequest;

use crate::{Bed, Clock, Fred, clock, delete, read, scan, siblings, unknown, update};

async fn keys(
    c: &mut Fred,
    kg: &str,
    id: &str,
    count: u64,
) -> Result<Vec<(String, Clock)>, tonic::Status> {
    let r = KeysRequest {
        keygroup: kg.into(),
        id: id.into(),
        count,
    };
    let keys = c.keys(r).await?.into_inner().keys;
    Ok(keys
        .into_iter()
        .map(|k| (k.id, crate::of(k.version)))
        .collect())
}

/// A deleted id reads like one never written, on both nodes.
pub async fn read_hides_tombstones(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    delete(&mut a, &kg, "x", &[]).await.unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(
            unknown(read(c, &kg, "x").await),
            format!("item x not found in keygroup {kg}")
        );
        assert_eq!(
            unknown(read(c, &kg, "never").await),
            format!("item never not found in keygroup {kg}")
        );
    }
}

/// Delete needs a stored id, and a tombstone is one: deleting twice succeeds and ticks again.
pub async fn delete_needs_an_item_but_a_tombstone_will_do(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let missing = delete(&mut a, &kg, "never", &[]).await;
    assert_eq!(
        unknown(missing),
        "item does not exist so it cannot be deleted"
    );
    update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    assert_eq!(
        delete(&mut a, &kg, "x", &[]).await.unwrap(),
        clock(&[("nodeA", 2)])
    );
    assert_eq!(
        delete(&mut b, &kg, "x", &[]).await.unwrap(),
        clock(&[("nodeA", 2), ("nodeB", 1)])
    );
    assert!(unknown(read(&mut a, &kg, "x").await).contains("not found"));
}

/// Scan and Keys must start at a stored id; a tombstone counts and comes back with an empty
/// value. A missing start or a zero count fails with FReD's own messages.
pub async fn scan_and_keys_start_at_an_existing_id_tombstones_included(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    for id in ["a", "b", "c"] {
        update(&mut a, &kg, id, &format!("v{id}"), &[])
            .await
            .unwrap();
    }
    let gone = delete(&mut a, &kg, "b", &[]).await.unwrap();
    let want = vec![
        ("b".to_string(), String::new(), gone.clone()),
        ("c".to_string(), "vc".to_string(), clock(&[("nodeA", 1)])),
    ];
    for c in [&mut a, &mut b] {
        assert_eq!(scan(c, &kg, "b", 10).await.unwrap(), want);
        let ids = keys(c, &kg, "b", 10).await.unwrap();
        assert_eq!(
            ids,
            [
                ("b".into(), gone.clone()),
                ("c".into(), clock(&[("nodeA", 1)]))
            ]
        );
    }
    let m = unknown(scan(&mut a, &kg, "bb", 10).await);
    assert_eq!(
        m,
        format!("error scanning 10 items starting at bb from keygroup {kg}")
    );
    let m = unknown(keys(&mut a, &kg, "bb", 10).await);
    assert_eq!(
        m,
        format!("error scanning keys for 10 items starting at bb from keygroup {kg}")
    );
    assert_eq!(
        unknown(scan(&mut a, &kg, "a", 0).await),
        "count must be at least 1, got 0"
    );
    assert_eq!(
        unknown(keys(&mut a, &kg, "a", 0).await),
        "count must be at least 1, got 0"
    );
}

/// Every sibling is its own Item (and Key), and `count` counts those versions, not ids.
pub async fn scan_counts_versions_and_returns_each_sibling(bed: Bed) {
    let (kg, mut a, b) = bed.keygroup().await;
    let id = siblings(&a, &b, &kg, "fromA", "fromB").await;
    update(&mut a, &kg, "zzz", "last", &[]).await.unwrap();
    let one = scan(&mut a, &kg, &id, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, id);
    let mut two = scan(&mut a, &kg, &id, 2).await.unwrap();
    two.sort(); // siblings of one id come in the order of their encoded clocks
    let want = vec![
        (id.clone(), "fromA".to_string(), clock(&[("nodeA", 1)])),
        (id.clone(), "fromB".to_string(), clock(&[("nodeB", 1)])),
    ];
    assert_eq!(two, want);
    let three = scan(&mut a, &kg, &id, 3).await.unwrap();
    assert_eq!(
        three.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        [id.as_str(), &id, "zzz"]
    );
    let ks = keys(&mut a, &kg, &id, 2).await.unwrap();
    assert_eq!(ks.iter().filter(|k| k.0 == id).count(), 2);
}

/// Surprising: ids are ordered as `id|` bytes (badger's key is `keygroup|id|clock`), and `|`
/// sorts after letters and digits, so an id comes after every longer id it is a prefix of.
pub async fn scan_order_puts_longer_ids_first(bed: Bed) {
    let (kg, mut a, _) = bed.keygroup().await;
    for id in ["b", "a", "ab", "a0"] {
        update(&mut a, &kg, id, id, &[]).await.unwrap();
    }
    let ids =
        |items: Vec<(String, String, Clock)>| items.into_iter().map(|i| i.0).collect::<Vec<_>>();
    assert_eq!(
        ids(scan(&mut a, &kg, "a0", 10).await.unwrap()),
        ["a0", "ab", "a", "b"]
    );
    assert_eq!(ids(scan(&mut a, &kg, "a", 10).await.unwrap()), ["a", "b"]);
    let k: Vec<String> = keys(&mut a, &kg, "ab", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(k, ["ab", "a", "b"]);
}
