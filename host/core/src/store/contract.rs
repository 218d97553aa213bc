//! One set of checks every [`ContextStore`] must pass: the embedded and memory stores' unit
//! tests and the FReD store's run them. Compiled for tests only (and, for other crates' tests,
//! with the `contract` feature), never into a server.
use super::*;

/// A head for `turn` with `records` records, owned by alice.
pub fn head(turn: u32, records: u32) -> SessionHead {
    SessionHead {
        user_id: "alice".into(),
        mode: "raw".into(),
        turn,
        records,
        last_prompt_sha256: format!("sha{turn}"),
        last_reply: format!("{{\"content\":\"reply {turn}\"}}"),
        created_ms: 1,
        updated_ms: turn as u64,
    }
}

/// Committed turns load back, records in order.
pub async fn appends_and_loads(store: &dyn ContextStore) {
    assert!(store.load("s1").await.unwrap().is_none());
    store
        .commit_turn("s1", &head(1, 1), Some(b"one"))
        .await
        .unwrap();
    store.commit_turn("s1", &head(2, 1), None).await.unwrap();
    store
        .commit_turn("s1", &head(3, 2), Some(b"three"))
        .await
        .unwrap();
    let s = store.load("s1").await.unwrap().unwrap();
    assert_eq!(s.head, head(3, 2));
    assert_eq!(s.records, vec![b"one".to_vec(), b"three".to_vec()]);
    assert!(
        store.load("s2").await.unwrap().is_none(),
        "sessions are separate"
    );
}

/// A deleted session is gone and can begin again.
pub async fn deletes(store: &dyn ContextStore) {
    store
        .commit_turn("s1", &head(1, 1), Some(b"one"))
        .await
        .unwrap();
    store
        .commit_turn("s2", &head(1, 1), Some(b"other"))
        .await
        .unwrap();
    assert!(store.delete("s1").await.unwrap());
    assert!(store.load("s1").await.unwrap().is_none());
    assert!(
        !store.delete("s1").await.unwrap(),
        "a second delete finds nothing"
    );
    store
        .commit_turn("s1", &head(1, 1), Some(b"anew"))
        .await
        .unwrap();
    assert_eq!(
        store.load("s1").await.unwrap().unwrap().records,
        vec![b"anew".to_vec()],
        "a new session starts clean"
    );
    assert_eq!(
        store.load("s2").await.unwrap().unwrap().records,
        vec![b"other".to_vec()]
    );
}

/// A turn that is not the next one is a conflict, and writes nothing.
pub async fn refuses_out_of_order_turns(store: &dyn ContextStore) {
    let err = store
        .commit_turn("s1", &head(2, 1), Some(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { stored_turn: 0 }),
        "{err}"
    );
    store
        .commit_turn("s1", &head(1, 1), Some(b"one"))
        .await
        .unwrap();
    let err = store
        .commit_turn("s1", &head(1, 2), Some(b"again"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { stored_turn: 1 }),
        "{err}"
    );
    let s = store.load("s1").await.unwrap().unwrap();
    assert_eq!(
        s.records,
        vec![b"one".to_vec()],
        "a refused commit appends nothing"
    );
}

fn head_of(user: &str, turn: u32, updated_ms: u64) -> SessionHead {
    SessionHead {
        user_id: user.into(),
        updated_ms,
        ..head(turn, turn)
    }
}

fn ids(sessions: &[(String, SessionHead)]) -> Vec<&str> {
    sessions.iter().map(|(id, _)| id.as_str()).collect()
}

/// A user's sessions come back newest first, nobody else's.
pub async fn lists_a_users_sessions(store: &dyn ContextStore) {
    assert!(store.sessions_of("alice").await.unwrap().is_empty());
    let a1 = head_of("alice", 1, 10);
    store.commit_turn("a1", &a1, Some(b"one")).await.unwrap();
    store
        .commit_turn("b1", &head_of("bob", 1, 20), Some(b"bob's"))
        .await
        .unwrap();
    store
        .commit_turn("a2", &head_of("alice", 1, 5), Some(b"two"))
        .await
        .unwrap();
    let alice = store.sessions_of("alice").await.unwrap();
    assert_eq!(ids(&alice), ["a1", "a2"], "most recently updated first");
    assert_eq!(alice[0].1, a1, "with their heads");

    // A later turn moves a session to the front.
    let a2 = head_of("alice", 2, 30);
    store
        .commit_turn("a2", &a2, Some(b"two, again"))
        .await
        .unwrap();
    let alice = store.sessions_of("alice").await.unwrap();
    assert_eq!(ids(&alice), ["a2", "a1"]);
    assert_eq!(alice[0].1, a2, "the head of the latest turn");

    let bob = store.sessions_of("bob").await.unwrap();
    assert_eq!(ids(&bob), ["b1"], "another user's sessions are not listed");
    assert!(store.sessions_of("carol").await.unwrap().is_empty());
    assert!(
        store.sessions_of("ali").await.unwrap().is_empty(),
        "no prefix matches"
    );

    assert!(store.delete("a2").await.unwrap());
    assert_eq!(ids(&store.sessions_of("alice").await.unwrap()), ["a1"]);
    assert!(store.delete("b1").await.unwrap());
    assert!(store.sessions_of("bob").await.unwrap().is_empty());
    assert_eq!(
        ids(&store.sessions_of("alice").await.unwrap()),
        ["a1"],
        "deleting bob's session leaves alice's"
    );

    // A deleted id taken again by another user belongs to that user only.
    store
        .commit_turn("a2", &head_of("bob", 1, 40), Some(b"bob's again"))
        .await
        .unwrap();
    assert_eq!(ids(&store.sessions_of("alice").await.unwrap()), ["a1"]);
    assert_eq!(ids(&store.sessions_of("bob").await.unwrap()), ["a2"]);
}
