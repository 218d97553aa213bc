//! The calls the cases make, in comparable form (clocks as sorted maps, siblings sorted), and
//! the two waits: for overlapping writes to leave siblings, and for a condition to hold.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use fred_proto::*;
use tonic::{Code, Status};

use crate::Fred;

/// The message of a call that must fail with status Unknown (FReD's code for every error).
pub fn unknown<T: std::fmt::Debug>(r: Result<T, Status>) -> String {
    let status = r.expect_err("call should fail");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    status.message().to_string()
}

/// A clock in sorted form, for comparing.
pub type Clock = BTreeMap<String, u64>;

pub fn clock(entries: &[(&str, u64)]) -> Clock {
    entries.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

pub fn wire(c: &Clock) -> Version {
    Version {
        version: c.iter().map(|(k, n)| (k.clone(), *n)).collect(),
    }
}

pub fn of(v: Option<Version>) -> Clock {
    v.map(|v| v.version.into_iter().collect())
        .unwrap_or_default()
}

pub async fn update(
    c: &mut Fred,
    kg: &str,
    id: &str,
    data: &str,
    versions: &[Clock],
) -> Result<Clock, Status> {
    let versions = versions.iter().map(wire).collect();
    let r = UpdateRequest {
        keygroup: kg.into(),
        id: id.into(),
        data: data.into(),
        versions,
    };
    Ok(of(c.update(r).await?.into_inner().version))
}

pub async fn delete(c: &mut Fred, kg: &str, id: &str, versions: &[Clock]) -> Result<Clock, Status> {
    let versions = versions.iter().map(wire).collect();
    let r = DeleteRequest {
        keygroup: kg.into(),
        id: id.into(),
        versions,
    };
    Ok(of(c.delete(r).await?.into_inner().version))
}

/// (value, clock) of every item a Read returns, sorted (siblings come in no fixed order).
pub async fn read(c: &mut Fred, kg: &str, id: &str) -> Result<Vec<(String, Clock)>, Status> {
    let r = ReadRequest {
        keygroup: kg.into(),
        id: id.into(),
        versions: vec![],
    };
    let mut items: Vec<_> = c
        .read(r)
        .await?
        .into_inner()
        .data
        .into_iter()
        .map(|i| (i.val, of(i.version)))
        .collect();
    items.sort();
    Ok(items)
}

/// (id, value, clock) of a Scan, in the order the node gave.
pub async fn scan(
    c: &mut Fred,
    kg: &str,
    id: &str,
    count: u64,
) -> Result<Vec<(String, String, Clock)>, Status> {
    let r = ScanRequest {
        keygroup: kg.into(),
        id: id.into(),
        count,
    };
    Ok(c.scan(r)
        .await?
        .into_inner()
        .data
        .into_iter()
        .map(|i| (i.id, i.val, of(i.version)))
        .collect())
}

/// Writes `id` on both nodes at once until the writes overlap and leave two siblings (real
/// FReD: a race, usually won within a few tries; test node: the relay delay makes it the
/// first). Returns the id, whose siblings are nodeA's `va` and nodeB's `vb`.
pub async fn siblings(a: &Fred, b: &Fred, kg: &str, va: &str, vb: &str) -> String {
    static NEXT_ID: AtomicU32 = AtomicU32::new(0);
    for attempt in 1..=200 {
        // Fresh, fixed-width ids: never written before, and byte order = number order.
        let id = format!("sib{:05}", NEXT_ID.fetch_add(1, Ordering::SeqCst));
        let (mut ca, mut cb) = (a.clone(), b.clone());
        let (ra, rb) = tokio::join!(
            update(&mut ca, kg, &id, va, &[]),
            update(&mut cb, kg, &id, vb, &[])
        );
        ra.expect("Update on nodeA");
        rb.expect("Update on nodeB");
        let on_a = read(&mut ca, kg, &id).await.expect("Read on nodeA");
        if on_a.len() == 2 {
            if attempt > 1 {
                eprintln!("    (siblings after {attempt} simultaneous writes)");
            }
            return id;
        }
    }
    panic!("200 simultaneous writes on two nodes never left siblings");
}

pub use fred_testnode::eventually;
