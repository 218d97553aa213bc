//! How a node reaches its trigger nodes: one mTLS channel per host, kept. Its own module
//! because the cluster's node state holds one and the triggers use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::tls::NodeTls;

/// One node's way to its trigger nodes: its TLS client config and one lazily connected
/// channel per host, kept across calls as FReD keeps its connections.
#[derive(Clone)]
pub(crate) struct Dialer {
    tls: ClientTlsConfig,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Dialer {
    /// Client certificate = the node's own; server certificates must chain to its CA.
    pub(crate) fn new(tls: &NodeTls) -> anyhow::Result<Dialer> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let tls = ClientTlsConfig::new()
            .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
            .ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        Ok(Dialer {
            tls,
            channels: Arc::default(),
        })
    }

    /// The channel to `host` (HOST:PORT, as registered by AddTrigger); the certificate is
    /// checked against HOST, as gRPC-Go does.
    pub(crate) fn channel(&self, host: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().expect("trigger channels poisoned");
        if let Some(c) = channels.get(host) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("https://{host}"))
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map_err(|e| format!("trigger host {host:?}: {e}"))?
            .connect_timeout(Duration::from_secs(20))
            .connect_lazy();
        channels.insert(host.to_string(), channel.clone());
        Ok(channel)
    }
}
