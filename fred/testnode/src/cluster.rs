//! The in-process cluster: the shared naming service (what etcd is to FReD: nodes, keygroups,
//! replicas, roles), each node's item store and trigger registrations, catch-up, and node
//! start/stop/restart. Writes travel between nodes in `relay.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use fred_proto::UserRole;
use fred_proto::client_server::ClientServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{debug, info, warn};

use crate::clock::{Entry, Version};
use crate::service::NodeService;
use crate::trigger::Dialer;

/// Items of one keygroup on one node, in key order (Scan and Keys walk it).
pub(crate) type Items = BTreeMap<String, Entry>;

/// Counters for benchmarks, kept across stop/restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Bytes of `val`/`data` that clients wrote to this node (successful Update and Append).
    pub bytes_written: u64,
    /// Bytes of values this node took in from peers by replication, catch-up or AddReplica.
    pub bytes_replicated_in: u64,
    /// Calls per RPC name as in the proto (`"Update"`, `"Read"`, ...), failed ones included.
    pub calls: BTreeMap<String, u64>,
}

impl NodeStats {
    /// Calls of one RPC, 0 if never called.
    pub fn call_count(&self, rpc: &str) -> u64 {
        self.calls.get(rpc).copied().unwrap_or(0)
    }
}

/// A node's TLS files: its certificate and key (PEM), and the CA that client certificates and
/// trigger nodes' server certificates must chain to. The node presents its certificate to
/// trigger nodes too (FReD: --trigger-cert/--trigger-key/--trigger-ca).
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// The node's certificate (PEM); clients check it against DNS name `localhost`.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate (PEM) client and trigger-node certificates must chain to.
    pub ca: PathBuf,
}

impl NodeTls {
    fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }
}

/// A set of test nodes sharing one naming service and replication fabric, in-process.
/// Cheap to clone: all clones are the same cluster.
#[derive(Clone, Default)]
pub struct Cluster {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
pub(crate) struct State {
    /// How long a write takes to reach the other replicas.
    pub delay: Duration,
    /// Whether the write call answers before that (lag) instead of after (FReD's default).
    pub lag: bool,
    /// Nodes whose relayed writes are dropped for good (see [`Cluster::lose_relays_to`]).
    pub losing: std::collections::BTreeSet<String>,
    pub nodes: BTreeMap<String, Node>,
    pub keygroups: BTreeMap<String, Keygroup>,
}

pub(crate) struct Node {
    pub host: SocketAddr,
    /// False while stopped: the node serves nothing and misses replicated writes.
    pub running: bool,
    /// Keygroup -> items, for the keygroups this node is a replica of.
    pub data: HashMap<String, Items>,
    /// Keygroup -> trigger id -> host: registered on this node only, as in FReD.
    pub triggers: HashMap<String, BTreeMap<String, String>>,
    /// How this node calls its trigger nodes (with its own certificate).
    pub dialer: Dialer,
    pub stats: NodeStats,
}

/// A keygroup as the naming service knows it.
pub(crate) struct Keygroup {
    pub mutable: bool,
    /// Replica node id -> expiry in seconds (stored, not enforced).
    pub replicas: BTreeMap<String, i64>,
    pub roles: HashMap<String, BTreeSet<UserRole>>,
}

impl Cluster {
    /// An empty cluster with zero replication delay.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Time a write takes to reach the other replicas. The write call waits for it, as FReD's
    /// synchronous relay does: when Update, Delete or Append returns, the peers have the write.
    /// Zero (default): delivered at once. Undoes [`Cluster::set_replication_lag`].
    pub fn set_replication_delay(&self, d: Duration) {
        let mut st = self.state();
        (st.delay, st.lag) = (d, false);
    }

    /// Simulated replication lag: the write call answers at once and the peers get the write
    /// `d` later (as with FReD's experimental `--peer-async-replication`, or a slow peer), so a
    /// read on another node can miss it. Undone by [`Cluster::set_replication_delay`].
    pub fn set_replication_lag(&self, d: Duration) {
        let mut st = self.state();
        (st.delay, st.lag) = (d, true);
    }

    /// Drops every write relayed to `node_id` from now on (`lose`) and never catches it up, as
    /// FReD v0.2.19 does with relays that fail around a peer's restart (they are only noted
    /// as missed, and read back only at the peer's next start). Writes still succeed.
    pub fn lose_relays_to(&self, node_id: &str, lose: bool) {
        let mut st = self.state();
        if lose {
            st.losing.insert(node_id.to_string());
        } else {
            st.losing.remove(node_id);
        }
    }

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

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("test node cluster state poisoned")
    }
}

/// Stores a version from a peer on `node` and counts its bytes if it was new.
pub(crate) fn take_version(node: &mut Node, kg: &str, id: &str, v: Version) {
    let bytes = v.val.as_ref().map_or(0, |s| s.len() as u64);
    let items = node.data.entry(kg.to_string()).or_default();
    if items.entry(id.to_string()).or_default().apply_remote(v) {
        node.stats.bytes_replicated_in += bytes;
    }
}

/// Copies every version of every item of `kg` from node `from` to node `to` (AddReplica and
/// catch-up).
pub(crate) fn copy_items(st: &mut State, kg: &str, from: &str, to: &str) {
    let versions: Vec<(String, Version)> = st.nodes[from]
        .data
        .get(kg)
        .into_iter()
        .flatten()
        .flat_map(|(id, e)| e.siblings().iter().map(move |v| (id.clone(), v.clone())))
        .collect();
    let node = st.nodes.get_mut(to).expect("known node");
    node.data.entry(kg.to_string()).or_default();
    for (id, v) in versions {
        take_version(node, kg, &id, v);
    }
}

/// A restarting node takes in everything its live fellow replicas hold, which covers the
/// writes it missed while stopped.
fn catch_up(st: &mut State, node_id: &str) {
    let sources: Vec<(String, String)> = st
        .keygroups
        .iter()
        .filter(|(_, k)| k.replicas.contains_key(node_id))
        .flat_map(|(name, k)| k.replicas.keys().map(move |n| (name.clone(), n.clone())))
        .filter(|(_, n)| n != node_id)
        .collect();
    for (kg, peer) in sources {
        if st.nodes[&peer].running {
            copy_items(st, &kg, &peer, node_id);
        }
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
