//! Integration tests: the real `fred_proto` client over mTLS against started test nodes.

mod api;
mod binary;
mod replication;
mod tls;

use std::path::Path;
use std::time::Duration;

use fred_proto::client_client::ClientClient;
use fred_proto::*;
use fred_testnode::{Cluster, NodeHandle, TestPki};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

pub type Fred = ClientClient<Channel>;

/// Two nodes (nodeA, nodeB) and certificates for users alice and bob.
pub struct Env {
    pub _dir: TempDir,
    pub pki: TestPki,
    pub cluster: Cluster,
    pub a: NodeHandle,
    pub b: NodeHandle,
}

impl Env {
    pub async fn new(delay: Duration) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "alice", "bob"]).unwrap();
        let cluster = Cluster::new();
        cluster.set_replication_delay(delay);
        let any = "127.0.0.1:0".parse().unwrap();
        let a = cluster
            .start_node("nodeA", any, pki.node_tls("nodeA"))
            .await
            .unwrap();
        let b = cluster
            .start_node("nodeB", any, pki.node_tls("nodeB"))
            .await
            .unwrap();
        Env {
            _dir: dir,
            pki,
            cluster,
            a,
            b,
        }
    }

    /// A connected client for `user` on `node`.
    pub async fn client(&self, user: &str, node: &NodeHandle) -> Fred {
        connect(&self.pki.dir, user, node).await.unwrap()
    }

    /// alice on nodeA creates keygroup `kg` and makes nodeB a replica.
    pub async fn shared_keygroup(&self, kg: &str, mutable: bool) -> (Fred, Fred) {
        let mut a = self.client("alice", &self.a).await;
        let b = self.client("alice", &self.b).await;
        a.create_keygroup(CreateKeygroupRequest {
            keygroup: kg.into(),
            mutable,
            expiry: 0,
        })
        .await
        .unwrap();
        a.add_replica(AddReplicaRequest {
            keygroup: kg.into(),
            node_id: "nodeB".into(),
            expiry: 0,
        })
        .await
        .unwrap();
        (a, b)
    }
}

/// Connects as `user` with `DIR/user.crt` and `DIR/user.key`, trusting `DIR/ca.crt`.
pub async fn connect(
    dir: &Path,
    user: &str,
    node: &NodeHandle,
) -> Result<Fred, tonic::transport::Error> {
    let read = |name: String| std::fs::read(dir.join(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt".into())))
        .identity(Identity::from_pem(
            read(format!("{user}.crt")),
            read(format!("{user}.key")),
        ))
        .domain_name("localhost");
    connect_with(tls, node).await
}

pub async fn connect_with(
    tls: ClientTlsConfig,
    node: &NodeHandle,
) -> Result<Fred, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://{}", node.addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ClientClient::new(channel))
}

/// The message of an expected status-Unknown error.
pub fn unknown<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> String {
    let status = r.expect_err("call should fail");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    status.message().to_string()
}

pub fn version(entries: &[(&str, u64)]) -> Version {
    Version {
        version: entries.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
    }
}

pub fn read_req(kg: &str, id: &str) -> ReadRequest {
    ReadRequest {
        keygroup: kg.into(),
        id: id.into(),
        versions: vec![],
    }
}

pub fn update_req(kg: &str, id: &str, data: &str) -> UpdateRequest {
    UpdateRequest {
        keygroup: kg.into(),
        id: id.into(),
        data: data.into(),
        versions: vec![],
    }
}

/// Sorted values of a Read (siblings come in no particular order).
pub async fn values(c: &mut Fred, kg: &str, id: &str) -> Result<Vec<String>, Status> {
    let data = c.read(read_req(kg, id)).await?.into_inner().data;
    let mut vals: Vec<String> = data.into_iter().map(|i| i.val).collect();
    vals.sort();
    Ok(vals)
}

pub use fred_testnode::eventually;
