//! A session on the embedded store survives a restart of the proxy process, a clean one or a
//! crash.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{complete, llama_url, shipped_plugins, turn_body};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the real `discedge serve` binary and waits for /health.
async fn spawn_proxy(data_dir: &std::path::Path, port: u16) -> Proxy {
    let child = Command::new(env!("CARGO_BIN_EXE_discedge"))
        .arg("serve")
        .env("DISCEDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DISCEDGE_LLAMA_URL", llama_url())
        .env("DISCEDGE_STORE", "embedded")
        .env("DISCEDGE_DATA_DIR", data_dir)
        .env("DISCEDGE_PLUGINS_DIR", shipped_plugins())
        .stdout(Stdio::null())
        .spawn()
        .expect("discedge binary runs");
    let proxy = Proxy(child);
    let url = format!("http://127.0.0.1:{port}/health");
    for _ in 0..600 {
        if let Ok(reply) = reqwest::get(&url).await
            && reply.status() == 200
        {
            return proxy;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy on port {port} never became healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_continues_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let first = spawn_proxy(data.path(), port).await;
    let (status, one) = complete(
        &url,
        &turn_body("tokenized", None, 1, "Remember the word pineapple."),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let session = one["session_id"].as_str().unwrap().to_owned();
    let (status, two) = complete(
        &url,
        &turn_body("tokenized", Some(&session), 2, "And the word lantern."),
    )
    .await;
    assert_eq!(status, 200, "{two}");
    drop(first);

    let _second = spawn_proxy(data.path(), port).await;
    let (status, three) = complete(
        &url,
        &turn_body("tokenized", Some(&session), 3, "Which words did I say?"),
    )
    .await;
    assert_eq!(status, 200, "{three}");
    let prompt = three["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("pineapple") && prompt.contains("lantern"),
        "context lost across restart:\n{prompt}"
    );
    // The turn counter survived too: turn 3 again (a new prompt) is a conflict, turn 4 is next.
    let (status, conflict) = complete(
        &url,
        &turn_body("tokenized", Some(&session), 3, "something else"),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["expected_turn"], 4);
}

/// SIGTERM stops taking new connections but lets a turn in flight finish and be stored.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_turn_in_flight() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let proxy = spawn_proxy(data.path(), port).await;
    let mut body = turn_body("tokenized", None, 1, "Write a long poem about the sea.");
    body["n_predict"] = 64.into();
    body["ignore_eos"] = true.into();
    let in_flight = {
        let url = url.clone();
        tokio::spawn(async move { complete(&url, &body).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = proxy.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (status, reply) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the turn in flight finished: {reply}");
    let session = reply["session_id"].as_str().unwrap().to_owned();
    let mut proxy = proxy;
    let exit = proxy.0.wait().unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");

    let _again = spawn_proxy(data.path(), port).await;
    let (status, two) = complete(
        &url,
        &turn_body("tokenized", Some(&session), 2, "Shorter, please."),
    )
    .await;
    assert_eq!(status, 200, "turn 1 was stored before the exit: {two}");
}

/// A crash (SIGKILL) while turns of several sessions are being written loses no turn that
/// was answered: after the restart each session holds at least its last answered turn, and
/// at most one more (a turn stored but not yet answered when the process died).
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_under_load_loses_no_answered_turn() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let proxy = spawn_proxy(data.path(), port).await;
    let sessions = 6;
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for i in 0..sessions {
        let url = url.clone();
        let stop = stop.subscribe();
        clients.push(tokio::spawn(async move {
            // (session id, last turn answered 200)
            let mut answered: Option<(String, u32)> = None;
            for turn in 1.. {
                if *stop.borrow() {
                    break;
                }
                let session = answered.as_ref().map(|(id, _)| id.as_str());
                let mut body = turn_body("raw", session, turn, &format!("Say {i}-{turn}."));
                body["n_predict"] = 4.into();
                let Ok(reply) = reqwest::Client::new()
                    .post(format!("{url}/completion"))
                    .json(&body)
                    .send()
                    .await
                else {
                    break;
                };
                if reply.status() != 200 {
                    break;
                }
                let Ok(reply) = reply.json::<serde_json::Value>().await else {
                    break;
                };
                let id = reply["session_id"].as_str().unwrap().to_owned();
                answered = Some((id, turn));
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut proxy = proxy;
    proxy.0.kill().unwrap();
    proxy.0.wait().unwrap();
    stop.send_replace(true);
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    assert!(
        answered.iter().map(|(_, turn)| turn).sum::<u32>() >= sessions,
        "turns were answered before the crash: {answered:?}"
    );

    let _again = spawn_proxy(data.path(), port).await;
    let listed: serde_json::Value = reqwest::get(format!("{url}/sessions?user_id=tester"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (id, turn) in &answered {
        let stored = listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == id.as_str())
            .unwrap_or_else(|| panic!("session {id} (answered turn {turn}) lost: {listed}"));
        let turns = stored["turns"].as_u64().unwrap() as u32;
        assert!(
            turns == *turn || turns == turn + 1,
            "session {id}: answered turn {turn}, stored {turns}"
        );
    }
}
