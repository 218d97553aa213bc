//! A FReD test bed for the replication tests: nodes of `fred-testnode` (a FReD-compatible
//! TEST node, not FReD, which cannot be installed here) in this process, with mTLS
//! certificates, and one proxy per node.

use std::time::Duration;

use fred_testnode::{Cluster, NodeHandle, TestPki};

use super::{TestProxy, start_proxy};

pub struct FredBed {
    pub cluster: Cluster,
    pub pki: TestPki,
    pub nodes: Vec<NodeHandle>,
    _dir: tempfile::TempDir,
}

/// Node ids; proxy `i` talks to node `i` as FReD user `proxy{i}`.
pub const NODES: [&str; 2] = ["nodeA", "nodeB"];

impl FredBed {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "proxy0", "proxy1"]).unwrap();
        let cluster = Cluster::new();
        let mut nodes = Vec::new();
        for node in NODES {
            nodes.push(
                cluster
                    .start_node(node, "127.0.0.1:0".parse().unwrap(), pki.node_tls(node))
                    .await
                    .unwrap(),
            );
        }
        Self {
            cluster,
            pki,
            nodes,
            _dir: dir,
        }
    }

    /// `discedge serve` arguments for proxy `i` on node `i`.
    pub fn proxy_args(&self, i: usize) -> Vec<String> {
        let user = format!("proxy{i}");
        let other = format!("proxy{}", 1 - i);
        [
            "--store",
            "fred",
            "--fred-addr",
            &self.nodes[i].addr().to_string(),
            "--fred-cert",
            self.pki.cert(&user).to_str().unwrap(),
            "--fred-key",
            self.pki.key(&user).to_str().unwrap(),
            "--fred-ca",
            self.pki.ca().to_str().unwrap(),
            "--node-id",
            NODES[i],
            "--fred-grant",
            &other,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Two proxies, one per node, started in order (the first creates the keygroup).
    pub async fn proxies(&self, extra: &[&str]) -> (TestProxy, TestProxy) {
        let start = |i: usize| {
            let mut args = self.proxy_args(i);
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        };
        let a = start(0);
        let a = start_proxy(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let b = start(1);
        let b = start_proxy(&b.iter().map(String::as_str).collect::<Vec<_>>()).await;
        (a, b)
    }

    /// Replication that takes `delay`, which every write waits for (FReD's synchronous relay).
    pub fn set_delay(&self, delay: Duration) {
        self.cluster.set_replication_delay(delay);
    }

    /// Replication lag: writes answer at once and reach the other node `lag` later (a slow
    /// peer, or FReD's asynchronous replication).
    pub fn set_lag(&self, lag: Duration) {
        self.cluster.set_replication_lag(lag);
    }
}
