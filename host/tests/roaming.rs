//! Sessions replicate through FReD, so a client can roam between nodes: here two proxies on
//! two FReD-compatible TEST nodes (`fred-testnode`; real FReD cannot be installed in CI).

mod common;

use std::time::Duration;

use common::fred::FredBed;
use common::{complete, error_code, turn_body};
use discedge_lab::fake_llm::FakeLlm;

const WALK: [(usize, &str); 9] = [
    (0, "My name is Ada."),
    (0, "I live in Lisbon."),
    (1, "I like matrices."),
    (1, "What is a determinant?"),
    (0, "And an inverse?"),
    (0, "Give me an example."),
    (1, "What did I say my name was?"),
    (1, "Where do I live?"),
    (1, "Summarise our talk."),
];

/// Turns 1-2 on node A, 3-4 on B, 5-6 on A, 7-9 on B, against the real llama-server: every
/// turn's prompt holds every earlier message.
async fn roam(mode: &str) {
    let bed = FredBed::start().await;
    let (a, b) = bed.proxies(&[]).await;
    let mut session: Option<String> = None;
    for (i, (node, message)) in WALK.iter().enumerate() {
        let turn = i as u32 + 1;
        let url = if *node == 0 { &a.url } else { &b.url };
        let (status, reply) =
            complete(url, &turn_body(mode, session.as_deref(), turn, message)).await;
        assert_eq!(status, 200, "{mode} turn {turn} on node {node}: {reply}");
        session = Some(reply["session_id"].as_str().unwrap().to_owned());
        let prompt = reply["prompt"].as_str().unwrap();
        for (_, earlier) in &WALK[..=i] {
            assert!(
                prompt.contains(earlier),
                "{mode} turn {turn} on node {node} lacks {earlier:?}:\n{prompt}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_session_roams() {
    roam("raw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenized_session_roams() {
    roam("tokenized").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncate_session_roams() {
    roam("truncate").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_is_waited_for_or_repaired_and_a_turn_no_replica_has_is_a_409() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed
        .proxies(&["--llama-url", &llama.url, "--sync-wait-ms", "1500"])
        .await;
    let (status, one) = complete(&a.url, &turn_body("raw", None, 1, "first")).await;
    assert_eq!(status, 200, "{one}");
    let session = one["session_id"].as_str().unwrap().to_owned();

    // Within the deadline: turn 2 reaches B before turn 1's replication does; B waits.
    bed.set_lag(Duration::from_millis(400));
    let (status, two) = complete(&a.url, &turn_body("raw", Some(&session), 2, "second")).await;
    assert_eq!(status, 200, "{two}");
    let (status, three) = complete(&b.url, &turn_body("raw", Some(&session), 3, "third")).await;
    assert_eq!(status, 200, "B waited for turn 2: {three}");
    assert!(three["prompt"].as_str().unwrap().contains("second"));

    // Beyond it: the node that lacks the turn copies it from the replica that has it, at once.
    bed.set_lag(Duration::from_millis(4000));
    let (status, four) = complete(&b.url, &turn_body("raw", Some(&session), 4, "fourth")).await;
    assert_eq!(status, 200, "{four}");
    let started = std::time::Instant::now();
    let (status, five) = complete(&a.url, &turn_body("raw", Some(&session), 5, "fifth")).await;
    assert_eq!(status, 200, "{five}");
    assert!(five["prompt"].as_str().unwrap().contains("fourth"));
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "copied from nodeB, not waited for"
    );

    // A turn no replica has: 409 naming the next turn, once the deadline has passed.
    let started = std::time::Instant::now();
    let (status, seven) = complete(&a.url, &turn_body("raw", Some(&session), 7, "seventh")).await;
    assert_eq!(
        (status, error_code(&seven)),
        (409, "turn_mismatch"),
        "{seven}"
    );
    assert_eq!(seven["error"]["expected_turn"], 6);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "answered before the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_repeated_on_the_other_node_is_a_retry_not_lag() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed.proxies(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&a.url, &turn_body("raw", None, 1, "first")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();
    let (_, two) = complete(&a.url, &turn_body("raw", Some(&session), 2, "second")).await;
    let calls = llama.calls.load(std::sync::atomic::Ordering::SeqCst);

    let started = std::time::Instant::now();
    let (status, again) = complete(&b.url, &turn_body("raw", Some(&session), 2, "second")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["content"], two["content"]);
    assert_eq!(
        llama.calls.load(std::sync::atomic::Ordering::SeqCst),
        calls,
        "answered from the store"
    );
    let (status, stale) = complete(&b.url, &turn_body("raw", Some(&session), 1, "other")).await;
    assert_eq!(
        (status, error_code(&stale)),
        (409, "turn_mismatch"),
        "{stale}"
    );
    assert_eq!(stale["error"]["expected_turn"], 3);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a stale turn is not waited on as lag"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_turns_on_two_nodes_resolve_the_same_way_everywhere() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed.proxies(&["--llama-url", &llama.url]).await;
    let (_, one) = complete(&a.url, &turn_body("raw", None, 1, "first")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();

    // Both nodes take turn 2 before hearing of the other's: FReD keeps both as siblings. Each
    // write returns once relayed, so each node then sees both: nodeB's wins (higher node id),
    // and nodeA's client is told so instead of getting a 200 for a turn that is dropped.
    bed.set_delay(Duration::from_millis(300));
    let body_a = turn_body("raw", Some(&session), 2, "from A");
    let body_b = turn_body("raw", Some(&session), 2, "from B");
    let ((sa, ra), (sb, rb)) = tokio::join!(complete(&a.url, &body_a), complete(&b.url, &body_b));
    bed.set_delay(Duration::ZERO);
    assert_eq!((sa, sb), (409, 200), "{ra} {rb}");
    assert_eq!(error_code(&ra), "turn_mismatch");
    assert_eq!(ra["error"]["expected_turn"], 3, "{ra}");

    // The higher turn wins, ties go to the higher node id: nodeB. Both nodes agree.
    let (status, on_a) = complete(&a.url, &turn_body("raw", Some(&session), 3, "third on A")).await;
    assert_eq!(status, 200, "{on_a}");
    let prompt = on_a["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("from B") && !prompt.contains("from A"),
        "{prompt}"
    );
    let (status, on_b) =
        complete(&b.url, &turn_body("raw", Some(&session), 4, "fourth on B")).await;
    assert_eq!(status, 200, "{on_b}");
    let prompt = on_b["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("from B") && prompt.contains("third on A") && !prompt.contains("from A"),
        "{prompt}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fred_node_down_is_a_503_and_service_resumes_when_it_is_back() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed
        .proxies(&["--llama-url", &llama.url, "--fred-timeout-ms", "1000"])
        .await;
    let (_, one) = complete(&b.url, &turn_body("raw", None, 1, "first")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();

    bed.nodes[1].stop().await;
    let (status, reply) = complete(&b.url, &turn_body("raw", Some(&session), 2, "second")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (503, "store_unavailable"),
        "{reply}"
    );
    let (status, reply) =
        complete(&a.url, &turn_body("raw", Some(&session), 2, "second via A")).await;
    assert_eq!(status, 200, "the other node keeps serving: {reply}");

    bed.nodes[1].restart().await.unwrap();
    let (status, reply) = complete(&b.url, &turn_body("raw", Some(&session), 3, "third")).await;
    assert_eq!(status, 200, "B reconnected and caught up: {reply}");
    assert!(reply["prompt"].as_str().unwrap().contains("second via A"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_session_is_gone_on_every_node() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed
        .proxies(&["--llama-url", &llama.url, "--sync-wait-ms", "200"])
        .await;
    let (_, one) = complete(&a.url, &turn_body("raw", None, 1, "first")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();
    let (status, _) = complete(&b.url, &turn_body("raw", Some(&session), 2, "second")).await;
    assert_eq!(status, 200);
    let deleted = common::client()
        .delete(format!("{}/sessions/{session}?user_id=tester", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, reply) = complete(&b.url, &turn_body("raw", Some(&session), 3, "third")).await;
    assert_eq!(
        (status, error_code(&reply)),
        (404, "unknown_session"),
        "{reply}"
    );
}

/// The FReD node dies after the model has answered and before the turn is stored: the turn
/// fails with a 503 and the session is exactly as before, so the client can send it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_fred_node_dying_mid_turn_leaves_no_half_written_session() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, _b) = bed
        .proxies(&["--llama-url", &llama.url, "--fred-timeout-ms", "1000"])
        .await;
    let (_, one) = complete(&a.url, &turn_body("tokenized", None, 1, "first")).await;
    let session = one["session_id"].as_str().unwrap().to_owned();
    let before = a.stored(&session).await;

    llama.set_delay(Duration::from_millis(600));
    let url = a.url.clone();
    let body = turn_body("tokenized", Some(&session), 2, "second");
    let turn = tokio::spawn(async move { complete(&url, &body).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    bed.nodes[0].stop().await;
    let (status, reply) = turn.await.unwrap();
    assert_eq!(
        (status, error_code(&reply)),
        (503, "store_unavailable"),
        "{reply}"
    );

    bed.nodes[0].restart().await.unwrap();
    llama.set_delay(Duration::ZERO);
    assert_eq!(a.stored(&session).await, before, "nothing half-written");
    let (status, reply) =
        complete(&a.url, &turn_body("tokenized", Some(&session), 2, "second")).await;
    assert_eq!(status, 200, "the same turn goes through: {reply}");
}
