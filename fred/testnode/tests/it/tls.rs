//! mTLS: only clients with a certificate from the node's CA get through.

use std::time::Duration;

use fred_proto::Empty;
use fred_testnode::TestPki;
use tonic::transport::{self, Certificate, ClientTlsConfig, Identity};

use crate::{Env, Fred, connect, connect_with};

/// Connects and makes one call; any failure (handshake or call) is an Err.
async fn try_call(
    connecting: impl Future<Output = Result<Fred, transport::Error>>,
) -> Result<(), String> {
    let mut client = connecting.await.map_err(|e| format!("connect: {e}"))?;
    client
        .get_all_replica(Empty {})
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn clients_without_a_cert_from_the_ca_are_rejected() {
    let env = Env::new(Duration::ZERO).await;
    let other = tempfile::tempdir().unwrap();
    let foreign = TestPki::generate(other.path(), &["alice"]).unwrap();

    // Same user name, but signed by another CA (it trusts our CA for the server side).
    let ca = std::fs::read(env.pki.ca()).unwrap();
    let id = Identity::from_pem(
        std::fs::read(foreign.cert("alice")).unwrap(),
        std::fs::read(foreign.key("alice")).unwrap(),
    );
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(id)
        .domain_name("localhost");
    assert!(try_call(connect_with(tls, &env.a)).await.is_err());

    // No client certificate at all.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .domain_name("localhost");
    assert!(try_call(connect_with(tls, &env.a)).await.is_err());
    assert_eq!(
        env.a.stats().call_count("GetAllReplica"),
        0,
        "rejected before the service"
    );

    // The node still serves good clients.
    try_call(connect(&env.pki.dir, "alice", &env.a))
        .await
        .unwrap();
    assert_eq!(env.a.stats().call_count("GetAllReplica"), 1);
}
