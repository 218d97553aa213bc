//! `POST /v1/chat/completions` as OpenAI's own Python client (PyPI `openai`, installed by
//! scripts/setup.sh) uses it: a three-turn session, one turn streamed, against the real
//! llama-server. The client's checks live in `clients/openai_session.py`.

mod common;

use std::process::Command;

use common::start_proxy;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_client_holds_a_three_turn_session() {
    let proxy = start_proxy(&[]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/openai_session.py"
    );
    for mode in ["tokenized", "raw", "truncate"] {
        let url = proxy.url.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args([script, &url, mode])
                .output()
                .expect("python3 runs (scripts/setup.sh installs the openai package)")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{mode}:\n{stdout}");
        assert!(
            output.status.success(),
            "openai client failed in mode {mode}:\n{stdout}\n{stderr}"
        );
        let turns: Vec<serde_json::Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(turns.len(), 4, "three turns and one refused turn");
        assert!(
            turns[1]["stream_chunks"].as_u64().unwrap() > 2,
            "turn 2 streamed in pieces"
        );
    }
}
