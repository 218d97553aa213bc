//! The in-process cluster: the shared naming service (what etcd is to FReD: nodes, keygroups,
//! replicas, roles), each node's item store and trigger registrations, and catch-up (node
//! start/stop/restart: `handle.rs`). Writes travel between nodes in `relay.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred_proto::UserRole;

use crate::clock::{Entry, Version};
use crate::dialer::Dialer;

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
pub(crate) fn catch_up(st: &mut State, node_id: &str) {
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
