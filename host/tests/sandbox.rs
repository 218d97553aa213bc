//! Policies are untrusted code: a policy that traps, loops, hoards memory, or returns output
//! the model must not get fails only its own request, with a 500 that names it; a component
//! that does not fit the host is refused at load while the previous version keeps serving;
//! a policy sees no clock and draws the same random numbers on every run; the policy deadline
//! bounds host calls; and turns beyond the instance pool are told to retry. Uses `FakeLlm`, a
//! FAKE llama-server.

mod common;

use common::{complete, error_code, start_proxy, turn_body};
use discedge_lab::fake_llm::FakeLlm;

/// A proxy serving `raw` and the `faulty` test fixture.
async fn with_faulty(llama: &FakeLlm, extra: &[&str]) -> (common::TestProxy, tempfile::TempDir) {
    let plugins = common::plugins_copy(&["raw"]);
    std::fs::copy(common::faulty_plugin(), plugins.path().join("faulty.wasm")).unwrap();
    let mut args = vec![
        "--llama-url",
        &llama.url,
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
    ];
    args.extend(extra);
    (start_proxy(&args).await, plugins)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_policy_gets_a_500_and_the_host_keeps_serving() {
    let llama = FakeLlm::start().await.unwrap();
    let (proxy, _plugins) = with_faulty(
        &llama,
        &["--policy-timeout-ms", "300", "--policy-memory-mib", "32"],
    )
    .await;
    for (trigger, expected) in [
        ("PANIC", "faulty policy asked to panic"),
        ("LOOP", "timed out"),
        ("OOM", ""),
    ] {
        let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, trigger)).await;
        assert_eq!(
            (status, error_code(&reply)),
            (500, "policy_trapped"),
            "{trigger}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("faulty") && message.contains(expected),
            "{trigger}: {message}"
        );
        assert!(
            reply["error"]["policy"]
                .as_str()
                .unwrap()
                .starts_with("faulty@"),
            "{reply}"
        );
    }
    let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, "behave")).await;
    assert_eq!(
        status, 200,
        "the same policy serves the next request: {reply}"
    );
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, "hello")).await;
    assert_eq!(status, 200, "other policies are untouched: {reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_the_model_must_not_get_is_stopped_and_blamed_on_the_policy() {
    let llama = FakeLlm::start().await.unwrap();
    let (proxy, _plugins) = with_faulty(&llama, &[]).await;
    for (trigger, expected) in [("BIGPROMPT", "window"), ("BADTOKEN", "vocabulary")] {
        let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, trigger)).await;
        assert_eq!(
            (status, error_code(&reply)),
            (500, "policy_bad_output"),
            "{trigger}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("faulty") && message.contains(expected),
            "{trigger}: {message}"
        );
    }
    assert_eq!(
        llama.calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the model"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_reaches_no_file_environment_or_network() {
    let llama = FakeLlm::start().await.unwrap();
    let (proxy, _plugins) = with_faulty(&llama, &[]).await;
    let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, "ESCAPE")).await;
    assert_eq!(status, 200, "{reply}");
    let seen = reply["prompt"].as_str().unwrap();
    assert!(
        seen.starts_with("file: Err(")
            && seen.contains("env vars: 0")
            && seen.contains("net: Err("),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_sees_no_clock() {
    let llama = FakeLlm::start().await.unwrap();
    let (proxy, _plugins) = with_faulty(&llama, &[]).await;
    let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, "CLOCK")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["prompt"], "clock: 0",
        "the wall clock is frozen at zero"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_draws_the_same_randomness_on_every_run() {
    let llama = FakeLlm::start().await.unwrap();
    let (proxy, _plugins) = with_faulty(&llama, &[]).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (status, reply) = complete(&proxy.url, &turn_body("faulty", None, 1, "RANDOM")).await;
        assert_eq!(status, 200, "{reply}");
        let session = reply["session_id"].as_str().unwrap();
        let stored = proxy.stored(session).await.unwrap();
        runs.push((reply["prompt"].clone(), stored.records));
    }
    assert!(
        runs[0].0.as_str().unwrap().starts_with("random: order"),
        "{:?}",
        runs[0].0
    );
    assert_eq!(
        runs[0], runs[1],
        "two runs (two nodes) must compute the same prompt and record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn components_that_do_not_fit_are_refused_and_the_old_version_serves() {
    let llama = FakeLlm::start().await.unwrap();
    let plugins = common::plugins_copy(&["raw"]);
    let proxy = start_proxy(&[
        "--llama-url",
        &llama.url,
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
        "--no-watch",
    ])
    .await;
    let serving = proxy.node.proxy.policies.get("raw").unwrap().label();
    let future = common::repo_dir().join("testdata/policies/future-version.wasm");
    std::fs::copy(&future, plugins.path().join("raw.wasm")).unwrap();
    // A core module (not a component) and a text file.
    std::fs::write(plugins.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(plugins.path().join("text.wasm"), b"(component)").unwrap();
    let reply = common::reload_policies(&proxy.url).await;
    let failed = reply["report"]["failed"].as_object().unwrap();
    let why = |file: &str| {
        failed
            .iter()
            .find(|(path, _)| path.ends_with(file))
            .map(|(_, why)| why.as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{file} not refused: {reply}"))
    };
    assert!(
        why("raw.wasm").contains("policy@0.3.0")
            && why("raw.wasm").contains("speaks discedge:policy@0.2.0 and @0.1.0"),
        "names the contract it has and those the host speaks: {}",
        why("raw.wasm")
    );
    assert!(
        why("core.wasm").contains("does not compile"),
        "{}",
        why("core.wasm")
    );
    assert!(
        why("text.wasm").contains("not a WebAssembly component"),
        "{}",
        why("text.wasm")
    );
    assert_eq!(
        proxy.node.proxy.policies.get("raw").unwrap().label(),
        serving,
        "the old version serves"
    );
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, "still here?")).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_beyond_the_instance_pool_get_a_503_with_retry_after() {
    let llama = FakeLlm::start().await.unwrap();
    // Each turn holds its instance from `prepare` until `commit`, across the model's answer.
    llama.set_delay(std::time::Duration::from_millis(1500));
    let (proxy, _plugins) = with_faulty(&llama, &["--policy-instances", "2"]).await;
    let send = |i: u32| {
        let url = format!("{}/completion", proxy.url);
        async move {
            let body = turn_body("raw", None, 1, &format!("slow turn {i}"));
            let reply = common::client().post(url).json(&body).send().await.unwrap();
            let status = reply.status().as_u16();
            let retry_after = reply
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = reply.json().await.unwrap();
            (status, retry_after, body)
        }
    };
    let replies = futures_util::future::join_all((0..3).map(send)).await;
    let mut statuses: Vec<u16> = replies.iter().map(|(s, _, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503], "{replies:?}");
    let (_, retry_after, body) = replies.iter().find(|(s, _, _)| *s == 503).unwrap();
    assert_eq!(error_code(body), "policy_busy", "{body}");
    let seconds: u64 = retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(seconds >= 1, "{seconds}");
    // The instances are back once the turns are done.
    llama.set_delay(std::time::Duration::ZERO);
    let (status, reply) = complete(&proxy.url, &turn_body("raw", None, 1, "after")).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_tokenizer_is_bounded_by_the_policy_deadline() {
    let llama = FakeLlm::start().await.unwrap();
    let plugins = common::plugins_copy(&["tokenized"]);
    let proxy = start_proxy(&[
        "--llama-url",
        &llama.url,
        "--plugins-dir",
        plugins.path().to_str().unwrap(),
        "--policy-timeout-ms",
        "300",
    ])
    .await;
    llama.hang_tokenize(true);
    let started = std::time::Instant::now();
    let body = turn_body("tokenized", None, 1, "hello");
    let (status, reply) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        complete(&proxy.url, &body),
    )
    .await
    .expect("the turn ends near the policy's 300 ms deadline, not the LLM timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // llama-server, not the policy, ran out the clock: the host call failed.
    assert_eq!(status, 502, "{reply}");
    assert_eq!(error_code(&reply), "policy_host_call_failed", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within the policy's time (300 ms)"),
        "{reply}"
    );
}
