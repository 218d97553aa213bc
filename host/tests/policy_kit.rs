//! The researchers' kit end to end: `discedge policy new` writes a Rust and a Python project
//! outside the workspace, their documented commands build them (`make`) and check and play
//! them (`make test`: `policy check`, `policy test`), and the proxy loads the component and
//! holds a conversation with it against the real model. `policy check` also reports the
//! faulty fixture's misbehaviours and exits non-zero.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{POLICY_CACHE, complete, deploy_bytes, faulty_plugin, start_proxy, turn_body};

fn discedge() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_discedge"));
    // Compiled components are shared with the proxies the tests start.
    command.env("DISCEDGE_POLICY_CACHE_DIR", POLICY_CACHE);
    command
}

/// Runs `command`; panics with its output unless it succeeds.
fn succeed(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = both(&output);
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

fn both(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `make` in a project, with the workspace's target dir (wit-bindgen is built once for all).
fn make(dir: &Path, target: &str) -> String {
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .to_owned()
        });
    succeed(
        &format!("make {target} in {}", dir.display()),
        Command::new("make")
            .arg("-C")
            .arg(dir)
            .arg(target)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("DISCEDGE_POLICY_CACHE_DIR", POLICY_CACHE),
    )
}

/// Creates, builds, checks and plays a project; returns its component.
fn new_project(parent: &Path, name: &str, lang: &str) -> PathBuf {
    let dir = parent.join(name);
    let made = succeed(
        "policy new",
        discedge()
            .args(["policy", "new", name, "--lang", lang, "--dir"])
            .arg(&dir),
    );
    assert!(made.contains("make test"), "{made}");
    make(&dir, "build");
    let tested = make(&dir, "test");
    assert!(tested.contains("result: 0 violations"), "{tested}");
    assert!(tested.contains("3 turns played"), "{tested}");
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{tested}");
    wasm
}

/// Deploys `wasm` as mode `name` next to nothing else, and holds a three-turn conversation
/// through it with the real model; returns the session id.
async fn converse(wasm: &Path, name: &str) -> (common::TestProxy, String, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    deploy_bytes(plugins.path(), name, &std::fs::read(wasm).unwrap());
    let proxy = start_proxy(&["--plugins-dir", plugins.path().to_str().unwrap()]).await;
    let (status, one) = complete(
        &proxy.url,
        &turn_body(name, None, 1, "My name is Ada. Say hi."),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let session = one["session_id"].as_str().unwrap().to_owned();
    for (turn, prompt) in [
        (2, "What is the capital of France?"),
        (3, "What is my name?"),
    ] {
        let (status, reply) =
            complete(&proxy.url, &turn_body(name, Some(&session), turn, prompt)).await;
        assert_eq!(status, 200, "{reply}");
        // The policy put the earlier turns in the prompt: the model saw more than this message.
        assert!(
            reply["timings"]["prompt_n"].as_u64().unwrap()
                + reply["timings"]["cache_n"].as_u64().unwrap()
                > 40,
            "{reply}"
        );
    }
    (proxy, session, plugins)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_policy_from_nothing_to_a_conversation() {
    let parent = tempfile::tempdir().unwrap();
    let wasm = new_project(parent.path(), "kit-rust", "rust");
    let (proxy, session, _plugins) = converse(&wasm, "kit-rust").await;
    let stored = proxy.stored(&session).await.expect("the session is stored");
    assert_eq!(stored.records.len(), 3);
    // The template exports `history`: the proxy shows the stored conversation.
    let reply = common::client()
        .get(format!("{}/sessions/{session}?user_id=tester", proxy.url))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = reply.json().await.unwrap();
    let history = body["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let said = |role: &str, text: &str| {
        history
            .iter()
            .any(|m| m["role"] == role && m["content"] == text)
    };
    assert!(said("user", "My name is Ada. Say hi."), "{body}");
    assert!(said("user", "What is my name?"), "{body}");
    assert_eq!(
        history.iter().filter(|m| m["role"] == "assistant").count(),
        3,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_policy_from_nothing_to_a_conversation() {
    // setup.sh installs componentize-py; without it this test fails, it is never skipped.
    succeed(
        "componentize-py --version (run scripts/setup.sh)",
        Command::new("componentize-py").arg("--version"),
    );
    let parent = tempfile::tempdir().unwrap();
    let wasm = new_project(parent.path(), "kit-python", "python");
    let (proxy, session, _plugins) = converse(&wasm, "kit-python").await;
    let stored = proxy.stored(&session).await.expect("the session is stored");
    assert_eq!(stored.records.len(), 3);
    let first: serde_json::Value = serde_json::from_slice(&stored.records[0]).unwrap();
    assert_eq!(first["user"], "My name is Ada. Say hi.");
}

#[test]
fn check_reports_the_faulty_fixtures_misbehaviours_and_fails() {
    let output = discedge()
        .args(["policy", "check", "--policy-timeout-ms", "300"])
        .arg(faulty_plugin())
        .args(["--prompt", "PANIC", "--prompt", "LOOP", "--prompt", "OOM"])
        .args([
            "--prompt",
            "BIGPROMPT",
            "--prompt",
            "BADTOKEN",
            "--prompt",
            "DROP",
        ])
        .output()
        .unwrap();
    let text = both(&output);
    assert!(!output.status.success(), "{text}");
    for expected in [
        "panicked at",
        "timed out",
        "memory allocation of 1073741824 bytes failed",
        "produced a prompt of 100000 tokens; the model's window is 2048",
        "produced token id 4294967295, outside the model's vocabulary",
        "says it left out 1 records of 0",
        "breaks the contract (11 violations)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn check_passes_the_shipped_policies() {
    let old_truncate = common::repo_dir().join("testdata/contract-0.1.0/truncate.wasm");
    let files = ["raw", "tokenized", "truncate", "summarize", "client-side"]
        .map(|name| (name, common::shipped_plugins().join(format!("{name}.wasm"))));
    for (name, file) in files.into_iter().chain([("truncate@0.1.0", old_truncate)]) {
        let text = succeed(
            &format!("policy check {name}"),
            discedge().args(["policy", "check"]).arg(&file),
        );
        assert!(text.contains("result: 0 violations"), "{text}");
    }
}

#[test]
fn new_refuses_a_bad_name_clearly() {
    let output = discedge()
        .args(["policy", "new", "Bad Name", "--lang", "rust"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        both(&output).contains("bad policy name"),
        "{}",
        both(&output)
    );
}
