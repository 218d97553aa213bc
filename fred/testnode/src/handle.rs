//! Starting, stopping and restarting one test node: its gRPC server over mTLS. Apart from
//! the cluster's state (`cluster`), so that the state does not import the service that
//! serves it (the service reads the cluster).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fred_proto::client_server::ClientServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Server, ServerTlsConfig};
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, Node, NodeStats, catch_up};
use crate::dialer::Dialer;
use crate::service::NodeService;
use crate::tls::NodeTls;

impl Cluster {
    /// Starts node `node_id` serving the gRPC API with mTLS (server cert/key, client certs must
    /// chain to `ca`) on `addr` (use 127.0.0.1:0 for a free port).
    pub async fn start_node(
        &self,
        node_id: &str,
        addr: SocketAddr,
        tls: NodeTls,
    ) -> anyhow::Result<NodeHandle> {
        if node_id.is_empty() || self.state().nodes.contains_key(node_id) {
            bail!("test node id {node_id:?} is empty or already taken");
        }
        let dialer = Dialer::new(&tls)?;
        let tls = tls.server_config()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding test node {node_id} to {addr}"))?;
        let addr = listener.local_addr()?;
        let handle = NodeHandle {
            inner: Arc::new(HandleInner {
                cluster: self.clone(),
                node_id: node_id.to_string(),
                addr,
                tls,
                server: tokio::sync::Mutex::new(None),
            }),
        };
        let router = handle.router()?;
        {
            let mut st = self.state();
            if st.nodes.contains_key(node_id) {
                bail!("test node id {node_id:?} already taken");
            }
            let node = Node {
                host: addr,
                running: true,
                data: HashMap::new(),
                triggers: HashMap::new(),
                dialer,
                stats: NodeStats::default(),
            };
            st.nodes.insert(node_id.to_string(), node);
        }
        *handle.inner.server.lock().await = Some(handle.spawn(router, listener));
        info!("FReD-compatible test node {node_id} (not FReD) serving on {addr}");
        Ok(handle)
    }
}

/// Controls one started test node. Clones control the same node; dropping the handles does
/// not stop it (it serves until [`NodeHandle::stop`] or the end of the tokio runtime).
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    cluster: Cluster,
    node_id: String,
    addr: SocketAddr,
    tls: ServerTlsConfig,
    server: tokio::sync::Mutex<Option<Serving>>,
}

struct Serving {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl NodeHandle {
    /// The address the node serves on (also after a restart).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Whether the node is serving (not stopped).
    pub fn is_running(&self) -> bool {
        self.inner.cluster.state().nodes[&self.inner.node_id].running
    }

    /// Counters for benchmarks: bytes of `val`/`data` written by clients to this node, number
    /// of calls per RPC name.
    pub fn stats(&self) -> NodeStats {
        self.inner.cluster.state().nodes[&self.inner.node_id]
            .stats
            .clone()
    }

    /// Stops serving (connections refused); data kept; writes to it from peers are missed and
    /// it catches up (copies the keygroups' items from a live peer) when restarted — as FReD's
    /// marked peers do.
    pub async fn stop(&self) {
        let mut server = self.inner.server.lock().await;
        let Some(serving) = server.take() else {
            return;
        };
        if let Some(node) = self
            .inner
            .cluster
            .state()
            .nodes
            .get_mut(&self.inner.node_id)
        {
            node.running = false;
        }
        let _ = serving.shutdown.send(());
        let mut task = serving.task;
        // Graceful shutdown ends once open connections are idle; don't wait on a stuck one.
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        info!("test node {} (not FReD) stopped", self.inner.node_id);
    }

    /// Serves again on the same address after catching up from live peers.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut server = self.inner.server.lock().await;
        if server.is_some() {
            return Ok(());
        }
        let listener = bind_again(self.inner.addr).await?;
        let router = self.router()?;
        {
            let mut st = self.inner.cluster.state();
            catch_up(&mut st, &self.inner.node_id);
            st.nodes
                .get_mut(&self.inner.node_id)
                .expect("known node")
                .running = true;
        }
        *server = Some(self.spawn(router, listener));
        info!("test node {} (not FReD) restarted", self.inner.node_id);
        Ok(())
    }

    fn router(&self) -> anyhow::Result<Router> {
        let service = NodeService::new(self.inner.cluster.clone(), self.inner.node_id.clone());
        Ok(Server::builder()
            .tls_config(self.inner.tls.clone())
            .context("test node TLS config")?
            .add_service(ClientServer::new(service)))
    }

    fn spawn(&self, router: Router, listener: TcpListener) -> Serving {
        let (shutdown, signal) = oneshot::channel::<()>();
        let node_id = self.inner.node_id.clone();
        let task = tokio::spawn(async move {
            // Small gRPC messages must not wait for delayed ACKs (Nagle): FReD's Go server sets
            // TCP_NODELAY on every connection, and tonic does not on a listener it is handed.
            let incoming = TcpListenerStream::new(listener).map(|stream| {
                if let Ok(stream) = &stream {
                    let _ = stream.set_nodelay(true);
                }
                stream
            });
            let stop = async {
                let _ = signal.await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                warn!("test node {node_id} (not FReD) server ended: {e}");
            }
        });
        Serving { shutdown, task }
    }
}

/// Binds the node's old address, retrying briefly in case the old socket is still closing.
async fn bind_again(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if tries < 40 => {
                tries += 1;
                debug!("rebinding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("rebinding test node to {addr}")),
        }
    }
}
