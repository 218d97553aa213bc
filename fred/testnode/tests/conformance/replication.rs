//! Replication between the two nodes: an Update answers only after its synchronous relay, and
//! writes that overlap in time leave the same siblings on both nodes.

use crate::{Bed, Clock, clock, delete, eventually, read, siblings, unknown, update};

/// The node called relays to every other replica and waits for them before it answers, so the
/// other node reads the write (and a delete) at once.
pub async fn update_answers_after_the_peer_has_it(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    for n in 0..5 {
        let id = format!("x{n}");
        let v = update(&mut a, &kg, &id, "fromA", &[]).await.unwrap();
        assert_eq!(
            read(&mut b, &kg, &id).await.unwrap(),
            [("fromA".into(), v)],
            "{id} on nodeB"
        );
        let v = update(&mut b, &kg, &id, "fromB", &[]).await.unwrap();
        assert_eq!(
            read(&mut a, &kg, &id).await.unwrap(),
            [("fromB".into(), v)],
            "{id} on nodeA"
        );
        delete(&mut a, &kg, &id, &[]).await.unwrap();
        assert!(
            unknown(read(&mut b, &kg, &id).await).contains("not found"),
            "{id} deleted on nodeB"
        );
    }
}

/// Each node writes before the other's relay arrives: both keep both versions as siblings with
/// concurrent clocks, and both nodes end up with the same set.
pub async fn concurrent_updates_leave_the_same_siblings_on_both_nodes(bed: Bed) {
    let (kg, a, b) = bed.keygroup().await;
    let id = siblings(&a, &b, &kg, "fromA", "fromB").await;
    let want = vec![
        ("fromA".to_string(), clock(&[("nodeA", 1)])),
        ("fromB".to_string(), clock(&[("nodeB", 1)])),
    ];
    for (name, c) in [("nodeA", &a), ("nodeB", &b)] {
        eventually(&format!("both siblings on {name}"), || {
            let (mut c, kg, id, want) = (c.clone(), kg.clone(), id.clone(), want.clone());
            async move { read(&mut c, &kg, &id).await.is_ok_and(|got| got == want) }
        })
        .await;
    }
}

/// Surprising: Delete with versions does not need to cover every sibling, only to name none
/// that is older than a known version. Naming one sibling tombstones it and keeps the
/// concurrent one, on both nodes; naming a replaced version is refused.
pub async fn delete_naming_one_sibling_keeps_the_other(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let id = siblings(&a, &b, &kg, "fromA", "fromB").await;
    let tomb = delete(&mut a, &kg, &id, &[clock(&[("nodeA", 1)])])
        .await
        .unwrap();
    assert_eq!(tomb, clock(&[("nodeA", 2)]));
    let left = vec![("fromB".to_string(), clock(&[("nodeB", 1)]))];
    assert_eq!(read(&mut a, &kg, &id).await.unwrap(), left);
    assert_eq!(read(&mut b, &kg, &id).await.unwrap(), left);
    let stale = delete(&mut b, &kg, &id, &[clock(&[("nodeA", 1)])]).await;
    assert_eq!(unknown(stale), "error updating item");
    let empty = delete(&mut b, &kg, &id, &[Clock::new()]).await;
    assert_eq!(unknown(empty), "error updating item");
}

/// Values are kept and relayed byte for byte, whatever UTF-8 they hold: the proxy's turn items
/// keep text as text and put binary in control and DEL characters (NUL included).
pub async fn any_utf8_value_comes_back_byte_for_byte(bed: Bed) {
    let (kg, mut a, mut b) = bed.keygroup().await;
    let ascii: String = (0u8..0x80).map(char::from).collect();
    let value = format!("{ascii}\u{7f}\u{0}é世界🙂\r\n{ascii}");
    let v = update(&mut a, &kg, "bytes", &value, &[]).await.unwrap();
    for (name, c) in [("nodeA", &mut a), ("nodeB", &mut b)] {
        let got = read(c, &kg, "bytes").await.unwrap();
        assert_eq!(got, [(value.clone(), v.clone())], "on {name}");
    }
}
