//! Vector clocks on Update: ticking, create-if-absent with an empty clock, the coverage rule for
//! given versions (tombstones included), and Read with versions.

use std::slice::from_ref as one;

use fred_proto::ReadRequest;

use crate::{Bed, Clock, clock, delete, of, read, siblings, unknown, update, wire};

/// FReD's whole answer to a refused Update (the reason is only in the node's log).
const REFUSED: &str = "error updating item";

/// Update without versions merges what the node knows and ticks the writing node.
pub async fn update_without_versions_ticks_the_writer(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    assert_eq!(
        update(&mut a, &kg, "x", "1", &[]).await.unwrap(),
        clock(&[("nodeA", 1)])
    );
    assert_eq!(
        update(&mut a, &kg, "x", "2", &[]).await.unwrap(),
        clock(&[("nodeA", 2)])
    );
    let on_b = update(&mut b, &kg, "x", "3", &[]).await.unwrap();
    assert_eq!(on_b, clock(&[("nodeA", 2), ("nodeB", 1)]));
    assert_eq!(read(&mut a, &kg, "x").await.unwrap(), [("3".into(), on_b)]);
}

/// `versions: [{}]` is "create if absent": it works on an id the node never saw and is refused
/// once the id exists, on every replica.
pub async fn empty_clock_creates_only_if_absent(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let empty = Clock::new();
    let v = update(&mut a, &kg, "x", "first", one(&empty))
        .await
        .unwrap();
    assert_eq!(v, clock(&[("nodeA", 1)]));
    assert_eq!(
        unknown(update(&mut a, &kg, "x", "again", one(&empty)).await),
        REFUSED
    );
    // nodeB had the item relayed to it, so it refuses as well.
    assert_eq!(
        unknown(update(&mut b, &kg, "x", "onB", one(&empty)).await),
        REFUSED
    );
    assert_eq!(read(&mut b, &kg, "x").await.unwrap(), [("first".into(), v)]);
}

/// Given versions must include, for every version the node knows, one that is >= it; a newer
/// version is fine, and the result is their merge ticked by the writer.
pub async fn versions_must_cover_every_known_version(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let v1 = update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    let v2 = update(&mut a, &kg, "x", "2", &[]).await.unwrap();
    let stale = update(&mut a, &kg, "x", "stale", one(&v1)).await;
    assert_eq!(unknown(stale), REFUSED);
    let v3 = update(&mut b, &kg, "x", "3", one(&v2)).await.unwrap();
    assert_eq!(v3, clock(&[("nodeA", 2), ("nodeB", 1)]));
    // A clock beyond anything known also covers; FReD takes it as given (no check that it was
    // ever issued) and ticks it.
    let ahead = clock(&[("nodeA", 7), ("nodeB", 1)]);
    let v4 = update(&mut a, &kg, "x", "4", &[v1, ahead]).await.unwrap();
    assert_eq!(v4, clock(&[("nodeA", 8), ("nodeB", 1)]));
    assert_eq!(read(&mut b, &kg, "x").await.unwrap(), [("4".into(), v4)]);
}

/// A tombstone is a known version: `[{}]` is refused on a deleted id, naming the tombstone
/// works, and an Update without versions continues the tombstone's clock.
pub async fn tombstones_count_as_known_versions(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    let gone = delete(&mut a, &kg, "x", &[]).await.unwrap();
    assert_eq!(gone, clock(&[("nodeA", 2)]));
    let again = update(&mut b, &kg, "x", "new", &[Clock::new()]).await;
    assert_eq!(unknown(again), REFUSED);
    let v = update(&mut b, &kg, "x", "back", &[gone]).await.unwrap();
    assert_eq!(v, clock(&[("nodeA", 2), ("nodeB", 1)]));
    delete(&mut a, &kg, "x", &[]).await.unwrap();
    let v = update(&mut a, &kg, "x", "again", &[]).await.unwrap();
    assert_eq!(v, clock(&[("nodeA", 4), ("nodeB", 1)]));
}

/// Without versions an Update overwrites every sibling (no coverage check at all); naming only
/// one sibling is refused, naming both resolves them.
pub async fn update_without_versions_replaces_siblings(bed: Bed) {
    let (kg, a, b) = bed.keygroup().await;
    let (mut a, mut b) = (a, b);
    let id = siblings(&a, &b, &kg, "fromA", "fromB").await;
    let sibs: Vec<Clock> = read(&mut a, &kg, &id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let merged = clock(&[("nodeA", 1), ("nodeB", 1)]);
    assert_eq!(sibs.len(), 2);
    let one = update(&mut a, &kg, &id, "partial", &sibs[..1]).await;
    assert_eq!(unknown(one), REFUSED);
    let v = update(&mut b, &kg, &id, "over", &[]).await.unwrap();
    assert_eq!(
        v,
        clock(&[("nodeA", 1), ("nodeB", 2)]),
        "merge of {merged:?}, ticked by nodeB"
    );
    for c in [&mut a, &mut b] {
        assert_eq!(
            read(c, &kg, &id).await.unwrap(),
            [("over".into(), v.clone())]
        );
    }
    let id = siblings(&a, &b, &kg, "fromA", "fromB").await;
    let sibs: Vec<Clock> = read(&mut b, &kg, &id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let v = update(&mut a, &kg, &id, "both", &sibs).await.unwrap();
    assert_eq!(v, clock(&[("nodeA", 2), ("nodeB", 1)]));
    assert_eq!(read(&mut b, &kg, &id).await.unwrap(), [("both".into(), v)]);
}

/// Read with versions returns each stored version that some given version is >= (not the
/// version named: replaced versions are gone). Surprising: a stored version covered by two
/// given versions comes back twice.
pub async fn read_with_versions_returns_stored_versions_they_cover(bed: Bed) {
    let (kg, mut a, _) = bed.keygroup().await;
    let v1 = update(&mut a, &kg, "x", "1", &[]).await.unwrap();
    let v2 = update(&mut a, &kg, "x", "2", &[]).await.unwrap();
    let req = |versions: &[Clock]| ReadRequest {
        keygroup: kg.clone(),
        id: "x".into(),
        versions: versions.iter().map(wire).collect(),
    };
    let vals = |r: fred_proto::ReadResponse| -> Vec<(String, Clock)> {
        r.data.into_iter().map(|i| (i.val, of(i.version))).collect()
    };
    let old = a.read(req(one(&v1))).await;
    assert!(
        unknown(old).contains("not found"),
        "the replaced version is gone"
    );
    let got = vals(a.read(req(one(&v2))).await.unwrap().into_inner());
    assert_eq!(got, [("2".into(), v2.clone())]);
    let ahead = clock(&[("nodeA", 9)]);
    let got = vals(a.read(req(one(&ahead))).await.unwrap().into_inner());
    assert_eq!(
        got,
        [("2".into(), v2.clone())],
        "a newer clock finds the older stored version"
    );
    let got = vals(
        a.read(req(&[v1, v2.clone(), ahead]))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(
        got,
        [("2".into(), v2.clone()), ("2".into(), v2)],
        "once per covering version"
    );
}
