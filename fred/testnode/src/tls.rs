//! A node's TLS identity: its files and the server config made from them. Its own module so
//! that the certificates (`pki`), the trigger dialer and the node handle can all use it
//! without importing the cluster.

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

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
    pub(crate) fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }
}
