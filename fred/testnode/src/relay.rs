//! What a write does after the local store, in FReD's order: relay to every other replica
//! (each stores it, then calls its own triggers, then acknowledges), then call the writing
//! node's own triggers; only then does the client get its answer.

use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::clock::Version;
use crate::cluster::{Cluster, State, take_version};
use crate::trigger::{Call, Fire};

/// The rest of one write, which the write call finishes before it answers.
#[must_use = "finish the relay, or peers never get the write"]
pub(crate) struct Relay {
    cluster: Cluster,
    delay: Duration,
    lag: bool,
    /// (peer, keygroup, id, version) still to store, after the delay.
    deliveries: Vec<(String, String, String, Version)>,
    /// Trigger calls of peers that stored the write already (zero delay).
    peer_fires: Vec<Fire>,
    /// The writing node's own trigger calls.
    own: Option<Fire>,
    /// The client's error if an own trigger fails (FReD's message per RPC).
    fail: &'static str,
}

impl Cluster {
    /// Pushes a version written on `from` to every other replica of `kg`: stored at once when
    /// the delay is zero, else by the returned relay. Stopped peers miss it (they catch up on
    /// restart) and never fail the write. `own` is what `from`'s triggers are told.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replicate(
        &self,
        st: &mut State,
        from: &str,
        kg: &str,
        id: &str,
        v: &Version,
        own: Call,
        fail: &'static str,
    ) -> Relay {
        let peers: Vec<String> = st.keygroups[kg]
            .replicas
            .keys()
            .filter(|n| *n != from)
            .cloned()
            .collect();
        let own = Fire::new(from, &st.nodes[from], kg, id, own);
        let mut relay = Relay {
            cluster: self.clone(),
            delay: st.delay,
            lag: st.lag,
            deliveries: Vec::new(),
            peer_fires: Vec::new(),
            own,
            fail,
        };
        for peer in peers {
            if st.delay.is_zero() {
                relay
                    .peer_fires
                    .extend(deliver(st, &peer, kg, id, v.clone()));
            } else {
                let d = (peer, kg.to_string(), id.to_string(), v.clone());
                relay.deliveries.push(d);
            }
        }
        relay
    }
}

impl Relay {
    /// Delivers after the delay and waits for the peers' triggers (unless lag is simulated),
    /// then calls the own triggers. The relay runs in its own task, so a client that gives up
    /// does not stop it (FReD's relay runs on too). A peer's failing trigger is only logged
    /// (FReD records the peer as having missed the write); an own one fails the call.
    pub(crate) async fn finish(self) -> Result<(), String> {
        let Relay {
            cluster,
            delay,
            lag,
            deliveries,
            mut peer_fires,
            own,
            fail,
        } = self;
        if !deliveries.is_empty() || !peer_fires.is_empty() {
            let task = tokio::spawn(async move {
                if !deliveries.is_empty() {
                    tokio::time::sleep(delay).await;
                    let mut st = cluster.state();
                    for (peer, kg, id, v) in deliveries {
                        peer_fires.extend(deliver(&mut st, &peer, &kg, &id, v));
                    }
                }
                let mut peers = JoinSet::new();
                for fire in peer_fires {
                    peers.spawn(async move {
                        let peer = fire.node.clone();
                        if let Err(e) = fire.run().await {
                            warn!("test node {peer}: relayed write stored, trigger failed: {e}");
                        }
                    });
                }
                while peers.join_next().await.is_some() {}
            });
            if !lag {
                let _ = task.await;
            }
        }
        let Some(own) = own else { return Ok(()) };
        let node = own.node.clone();
        own.run().await.map_err(|e| {
            debug!("test node {node}: write stored and relayed, trigger failed: {e}");
            fail.to_string()
        })
    }
}

/// Stores a replicated version on `peer` if it is still a running replica of `kg`; returns
/// the trigger calls it then owes (relayed writes all tell PutItemTrigger, deletes with "").
fn deliver(st: &mut State, peer: &str, kg: &str, id: &str, v: Version) -> Option<Fire> {
    if !st
        .keygroups
        .get(kg)
        .is_some_and(|k| k.replicas.contains_key(peer))
    {
        return None;
    }
    if st.losing.contains(peer) {
        debug!("test node {peer}: relayed {kg}/{id} lost (lose_relays_to)");
        return None;
    }
    let node = st.nodes.get_mut(peer)?;
    if !node.running {
        debug!("test node {peer} is stopped: missed {kg}/{id}, catches up on restart");
        return None;
    }
    let call = Call::Put(v.val.clone().unwrap_or_default());
    take_version(node, kg, id, v);
    Fire::new(peer, node, kg, id, call)
}
