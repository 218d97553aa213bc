//! The `fred-testnode` binary: help text, generated certificates, serving, SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred_proto::Empty;
use fred_proto::client_client::ClientClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const BIN: &str = env!("CARGO_BIN_EXE_fred-testnode");

#[test]
fn help_says_it_is_a_test_node_not_fred() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        help.contains("FReD-compatible test node for tests; not FReD"),
        "{help}"
    );
    assert!(
        help.contains("--node") && help.contains("--delay-ms") && help.contains("--generate-certs")
    );
}

/// Kills the binary if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serves_two_nodes_with_generated_certs_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (pa, pb) = (free_port(), free_port());
    let mut child = KillOnDrop(
        Command::new(BIN)
            .arg("--certs")
            .arg(&certs)
            .args([
                "--node",
                &format!("nodeA=127.0.0.1:{pa}"),
                "--node",
                &format!("nodeB=127.0.0.1:{pb}"),
            ])
            .args(["--delay-ms", "0", "--generate-certs", "alice"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let replicas = hosts_when_up(&certs, pb).await;
    assert_eq!(
        replicas,
        [format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}")]
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Waits for the generated certificates and nodeB to answer, then lists the cluster's hosts.
async fn hosts_when_up(certs: &Path, port: u16) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(hosts) = try_hosts(certs, port).await {
            return hosts;
        }
        assert!(
            Instant::now() < deadline,
            "the binary's nodeB did not answer"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn try_hosts(certs: &Path, port: u16) -> Option<Vec<String>> {
    let read = |name: &str| std::fs::read(certs.join(name)).ok();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(read("alice.crt")?, read("alice.key")?))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}")).ok()?;
    let channel = endpoint.tls_config(tls).ok()?.connect().await.ok()?;
    let r = ClientClient::new(channel)
        .get_all_replica(Empty {})
        .await
        .ok()?;
    Some(
        r.into_inner()
            .replicas
            .into_iter()
            .map(|r| r.host)
            .collect(),
    )
}
