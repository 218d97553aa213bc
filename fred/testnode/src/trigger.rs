//! Calling trigger nodes as FReD v0.2.19 does after each write a node stores (its clients' and
//! relayed ones): every trigger registered for the keygroup on that node, in parallel, waiting
//! for all, over TLS with the node's own certificate as client certificate (so a trigger node
//! may demand mTLS). FReD sets no timeout; a hung trigger hangs the write, here too.

use std::collections::BTreeSet;

use fred_proto::trigger::trigger_node_client::TriggerNodeClient;
use fred_proto::trigger::{DeleteItemTriggerRequest, PutItemTriggerRequest};
use tokio::task::JoinSet;

use crate::cluster::Node;
use crate::dialer::Dialer;

/// What one write tells trigger nodes.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    /// PutItemTrigger: Update and Append, and every write a replica takes in by relay. FReD's
    /// replicas report a relayed Delete this way too, with value "".
    Put(String),
    /// DeleteItemTrigger: a Delete on the node the client called.
    Delete,
}

/// The trigger calls one node owes for one write it stored.
pub(crate) struct Fire {
    pub node: String,
    dialer: Dialer,
    kg: String,
    id: String,
    call: Call,
    hosts: Vec<String>,
}

impl Fire {
    /// Taken under the cluster lock from `node`'s registrations; `None` without any. As in
    /// FReD, PutItemTrigger goes once per registration, DeleteItemTrigger once per host.
    pub(crate) fn new(node_id: &str, node: &Node, kg: &str, id: &str, call: Call) -> Option<Fire> {
        let registered = node.triggers.get(kg).filter(|t| !t.is_empty())?;
        let hosts = match call {
            Call::Put(_) => registered.values().cloned().collect(),
            Call::Delete => registered
                .values()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .cloned()
                .collect(),
        };
        Some(Fire {
            node: node_id.to_string(),
            dialer: node.dialer.clone(),
            kg: kg.to_string(),
            id: id.to_string(),
            call,
            hosts,
        })
    }

    /// Calls every host in parallel and waits for all; the error names each failure.
    pub(crate) async fn run(self) -> Result<(), String> {
        let mut calls = JoinSet::new();
        for host in self.hosts {
            let (dialer, kg, id, call) = (
                self.dialer.clone(),
                self.kg.clone(),
                self.id.clone(),
                self.call.clone(),
            );
            calls.spawn(async move {
                let mut client = TriggerNodeClient::new(dialer.channel(&host)?);
                let answer = match call {
                    Call::Put(val) => {
                        client
                            .put_item_trigger(PutItemTriggerRequest {
                                keygroup: kg,
                                id,
                                val,
                            })
                            .await
                    }
                    Call::Delete => {
                        client
                            .delete_item_trigger(DeleteItemTriggerRequest { keygroup: kg, id })
                            .await
                    }
                };
                answer.map(drop).map_err(|s| format!("trigger {host}: {s}"))
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Err(e) = done.unwrap_or_else(|e| Err(e.to_string())) {
                failed.push(e);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}
