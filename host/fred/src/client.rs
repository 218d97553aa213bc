//! The FReD client: one mTLS gRPC channel to the node, FReD's errors sorted into kinds, and the
//! start-up work (keygroup, roles, replicas).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use fred_proto::client_client::ClientClient;
use fred_proto::{
    AddReplicaRequest, AddTriggerRequest, AddUserRequest, CreateKeygroupRequest, DeleteRequest,
    Empty, GetKeygroupInfoRequest, GetKeygroupTriggerRequest, Item, Key, KeysRequest, ReadRequest,
    RemoveTriggerRequest, ScanRequest, UpdateRequest, UserRole, Version,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::codec::is_fred_name;
use discedge_core::causes::error_chain;

/// Where and how to reach this node's FReD, and how the keygroup is set up.
#[derive(Debug, Clone)]
pub struct FredConfig {
    /// `HOST:PORT` of the FReD node's client API.
    pub addr: String,
    /// Name the node's certificate is checked against (defaults to the host of `addr`).
    pub tls_name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub keygroup: String,
    /// The FReD node id this proxy writes through (ties between concurrent turns go by it).
    pub node_id: String,
    /// Keygroup expiry in seconds on nodes we create it on or add (0: never).
    pub expiry: i64,
    /// Nodes to make replicas: `None` for every node FReD knows.
    pub replicas: Option<Vec<String>>,
    /// Other proxies' FReD users (certificate CNs) to grant read, write and replica roles.
    pub grant: Vec<String>,
    pub timeout: Duration,
    /// Where a committed turn is read back before it is acknowledged.
    pub confirm: Confirm,
    /// The trigger feed to serve and register, if any.
    pub feed: Option<super::FeedConfig>,
}

/// Where a committed turn is read back before the client is told it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Confirm {
    /// On every replica: closes the window in which two nodes both acknowledge the same turn.
    Replicas,
    /// On this node only: one round trip less, the window stays open.
    Local,
}

/// FReD's failures, by kind. FReD reports nearly everything as gRPC `Unknown` with a text
/// message, so the kind is read from the message.
#[derive(Debug, thiserror::Error)]
pub enum FredError {
    #[error("not found: {0}")]
    NotFound(String),
    /// This node serves no replica of the keygroup (or the keygroup does not exist).
    #[error("no replica here: {0}")]
    NoReplica(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The node cannot be reached or did not answer in time.
    #[error("FReD unavailable: {0}")]
    Unavailable(String),
    /// Anything else FReD refused (e.g. an update whose versions are out of date).
    #[error("FReD refused: {0}")]
    Refused(String),
}

impl From<tonic::Status> for FredError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                return FredError::Unavailable(if message.is_empty() {
                    status.code().to_string()
                } else {
                    message
                });
            }
            Code::NotFound => return FredError::NotFound(message),
            Code::PermissionDenied | Code::Unauthenticated => {
                return FredError::PermissionDenied(message);
            }
            Code::InvalidArgument => return FredError::InvalidName(message),
            _ => {}
        }
        let lower = message.to_lowercase();
        if lower.contains("cannot get replica") {
            FredError::NoReplica(message)
        } else if lower.contains("not found") || lower.contains("does not exist") {
            FredError::NotFound(message)
        } else if ["permission", "not allowed", "unauthori", "does not have"]
            .iter()
            .any(|w| lower.contains(w))
        {
            FredError::PermissionDenied(message)
        } else if ["invalid", "must match", "not valid", "empty"]
            .iter()
            .any(|w| lower.contains(w))
        {
            FredError::InvalidName(message)
        } else if ["transport", "connect", "broken pipe", "connection"]
            .iter()
            .any(|w| lower.contains(w))
        {
            FredError::Unavailable(message)
        } else {
            FredError::Refused(message)
        }
    }
}

/// A connection to one FReD node, scoped to one keygroup. Cheap to clone.
#[derive(Clone)]
pub struct FredClient {
    grpc: ClientClient<Channel>,
    keygroup: String,
}

pub(super) fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the FReD {what} {}", path.display()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        bail!("the FReD {what} {} is not PEM", path.display());
    }
    Ok(bytes)
}

impl FredClient {
    /// Connects with mutual TLS; fails with a message naming the file or the refusal.
    pub async fn connect(config: &FredConfig) -> anyhow::Result<Self> {
        Self::connect_to(config, &config.addr, config.tls_name.clone(), false).await
    }

    /// Connects to the node at `addr` (another replica, say) with this proxy's certificates;
    /// its certificate is checked for `tls_name`, by default the host of `addr`. `lazy`: dial
    /// on first use (and again after a failure) instead of now, for nodes that may be down.
    pub async fn connect_to(
        config: &FredConfig,
        addr: &str,
        tls_name: Option<String>,
        lazy: bool,
    ) -> anyhow::Result<Self> {
        if !is_fred_name(&config.keygroup) {
            bail!(
                "keygroup {:?}: FReD names must be ASCII letters and digits",
                config.keygroup
            );
        }
        let cert = read_pem(&config.cert, "certificate")?;
        let key = read_pem(&config.key, "key")?;
        let ca = read_pem(&config.ca, "CA certificate")?;
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(tls_name.unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned()));
        let endpoint = Channel::from_shared(format!("https://{addr}"))
            .with_context(|| format!("bad FReD address {addr:?}"))?
            .tls_config(tls)
            .context("FReD TLS settings rejected")?
            .connect_timeout(Duration::from_secs(3))
            .timeout(config.timeout);
        let channel = if lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.map_err(|e| {
                anyhow::anyhow!("cannot connect to FReD at {addr}: {}", error_chain(&e))
            })?
        };
        Ok(Self {
            grpc: ClientClient::new(channel),
            keygroup: config.keygroup.clone(),
        })
    }

    /// All current versions (siblings) of an item.
    pub async fn read(&self, id: &str) -> Result<Vec<Item>, FredError> {
        let request = ReadRequest {
            keygroup: self.keygroup.clone(),
            id: id.to_owned(),
            versions: Vec::new(),
        };
        let items = self.grpc.clone().read(request).await?.into_inner().data;
        if items.is_empty() {
            Err(FredError::NotFound(format!("item {id} has no versions")))
        } else {
            Ok(items)
        }
    }

    /// Up to `count` items in id order, starting at the existing item `id`.
    pub async fn scan(&self, id: &str, count: u64) -> Result<Vec<Item>, FredError> {
        let request = ScanRequest {
            keygroup: self.keygroup.clone(),
            id: id.to_owned(),
            count,
        };
        match self.grpc.clone().scan(request).await {
            Ok(reply) => Ok(reply.into_inner().data),
            // FReD v0.2.19 answers every failed Scan "error scanning N items starting at ID
            // from keygroup KG", a missing start item included; the keygroup and the caller's
            // rights were checked at start-up, so a missing start is what it means.
            Err(status) => match FredError::from(status) {
                FredError::Refused(m) if m.contains("error scanning") => {
                    Err(FredError::NotFound(m))
                }
                e => Err(e),
            },
        }
    }

    /// Like [`FredClient::scan`] without the values: the ids and versions only, so a check of
    /// which versions exist does not fetch (or carry across the WAN) what it already knows.
    pub async fn keys(&self, id: &str, count: u64) -> Result<Vec<Key>, FredError> {
        let request = KeysRequest {
            keygroup: self.keygroup.clone(),
            id: id.to_owned(),
            count,
        };
        Ok(self.grpc.clone().keys(request).await?.into_inner().keys)
    }

    /// Writes `data`; with `versions`, only if they cover every version the node knows
    /// (FReD's compare-and-set). Returns the new version.
    pub async fn update(
        &self,
        id: &str,
        data: String,
        versions: Vec<Version>,
    ) -> Result<Version, FredError> {
        let request = UpdateRequest {
            keygroup: self.keygroup.clone(),
            id: id.to_owned(),
            data,
            versions,
        };
        Ok(self
            .grpc
            .clone()
            .update(request)
            .await?
            .into_inner()
            .version
            .unwrap_or_default())
    }

    /// Deletes an item (a tombstone that replicates); returns the tombstone's version, which
    /// a later create of the same id must name.
    pub async fn delete(&self, id: &str) -> Result<Version, FredError> {
        let request = DeleteRequest {
            keygroup: self.keygroup.clone(),
            id: id.to_owned(),
            versions: Vec::new(),
        };
        Ok(self
            .grpc
            .clone()
            .delete(request)
            .await?
            .into_inner()
            .version
            .unwrap_or_default())
    }

    /// The keygroup this client is scoped to.
    pub fn keygroup(&self) -> &str {
        &self.keygroup
    }

    /// Registers a trigger node for the keygroup on this FReD node (ConfigureTrigger role).
    pub async fn add_trigger(&self, id: &str, host: &str) -> Result<(), FredError> {
        let request = AddTriggerRequest {
            keygroup: self.keygroup.clone(),
            trigger_id: id.to_owned(),
            trigger_host: host.to_owned(),
        };
        self.grpc.clone().add_trigger(request).await?;
        Ok(())
    }

    pub async fn remove_trigger(&self, id: &str) -> Result<(), FredError> {
        let request = RemoveTriggerRequest {
            keygroup: self.keygroup.clone(),
            trigger_id: id.to_owned(),
        };
        self.grpc.clone().remove_trigger(request).await?;
        Ok(())
    }

    /// The trigger nodes registered for the keygroup on this FReD node: (id, host).
    pub async fn triggers(&self) -> Result<Vec<(String, String)>, FredError> {
        let request = GetKeygroupTriggerRequest {
            keygroup: self.keygroup.clone(),
        };
        let reply = self.grpc.clone().get_keygroup_triggers(request).await?;
        Ok(reply
            .into_inner()
            .triggers
            .into_iter()
            .map(|t| (t.id, t.host))
            .collect())
    }

    /// The other replicas of the keygroup: node id and client API address, as FReD tells.
    pub async fn other_replicas(&self, own_id: &str) -> Result<Vec<(String, String)>, FredError> {
        let info = self
            .grpc
            .clone()
            .get_keygroup_info(GetKeygroupInfoRequest {
                keygroup: self.keygroup.clone(),
            })
            .await?
            .into_inner();
        Ok(info
            .replica
            .into_iter()
            .filter(|r| r.node_id != own_id)
            .map(|r| (r.node_id, r.host))
            .collect())
    }

    /// Makes the keygroup usable: creates it (mutable) if this node has none, grants roles to
    /// the other proxies' users, and adds the configured nodes as replicas. Run at start-up.
    pub async fn set_up_keygroup(&self, config: &FredConfig) -> anyhow::Result<()> {
        let mut grpc = self.grpc.clone();
        let keygroup = self.keygroup.clone();
        let info = match grpc
            .get_keygroup_info(GetKeygroupInfoRequest {
                keygroup: keygroup.clone(),
            })
            .await
        {
            Ok(info) => info.into_inner(),
            Err(status) => match FredError::from(status) {
                FredError::NotFound(_) | FredError::NoReplica(_) => {
                    let create = CreateKeygroupRequest {
                        keygroup: keygroup.clone(),
                        mutable: true,
                        expiry: config.expiry,
                    };
                    grpc.create_keygroup(create).await.map_err(|s| {
                        anyhow::anyhow!(
                            "keygroup {keygroup} is not served by this FReD node and creating it failed: {}; \
                             if another node created it, add this node as a replica there",
                            FredError::from(s)
                        )
                    })?;
                    tracing::info!(keygroup, "created FReD keygroup");
                    grpc.get_keygroup_info(GetKeygroupInfoRequest {
                        keygroup: keygroup.clone(),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("keygroup {keygroup}: {}", FredError::from(s)))?
                    .into_inner()
                }
                other => bail!("cannot use FReD keygroup {keygroup}: {other}"),
            },
        };
        if !info.mutable {
            bail!("FReD keygroup {keygroup} is immutable; DisCEdge needs a mutable keygroup");
        }
        for user in &config.grant {
            for role in [
                UserRole::ReadKeygroup,
                UserRole::WriteKeygroup,
                UserRole::ConfigureReplica,
                UserRole::ConfigureTrigger,
            ] {
                let request = AddUserRequest {
                    user: user.clone(),
                    keygroup: keygroup.clone(),
                    role: role as i32,
                };
                if let Err(status) = grpc.add_user(request).await {
                    tracing::warn!(
                        user,
                        ?role,
                        "cannot grant FReD role: {}",
                        FredError::from(status)
                    );
                }
            }
        }
        let present: Vec<String> = info.replica.iter().map(|r| r.node_id.clone()).collect();
        let wanted = match &config.replicas {
            Some(list) => list.clone(),
            None => match grpc.get_all_replica(Empty {}).await {
                Ok(all) => all
                    .into_inner()
                    .replicas
                    .into_iter()
                    .map(|r| r.node_id)
                    .collect(),
                Err(status) => {
                    tracing::warn!("cannot list FReD nodes: {}", FredError::from(status));
                    Vec::new()
                }
            },
        };
        for node in wanted.iter().filter(|n| !present.contains(n)) {
            let request = AddReplicaRequest {
                keygroup: keygroup.clone(),
                node_id: node.clone(),
                expiry: config.expiry,
            };
            match grpc.add_replica(request).await {
                Ok(_) => tracing::info!(keygroup, node, "added FReD replica"),
                Err(status) => tracing::warn!(
                    keygroup,
                    node,
                    "cannot add FReD replica: {}",
                    FredError::from(status)
                ),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_messages_are_classified() {
        let kind = |m: &str| FredError::from(tonic::Status::unknown(m));
        assert!(matches!(
            kind("item abc not found in keygroup kg"),
            FredError::NotFound(_)
        ));
        assert!(matches!(
            kind("fred: cannot get replica for keygroup kg"),
            FredError::NoReplica(_)
        ));
        assert!(matches!(
            kind("user alice does not have permission WriteKeygroup"),
            FredError::PermissionDenied(_)
        ));
        assert!(matches!(
            kind("invalid keygroup name a-b"),
            FredError::InvalidName(_)
        ));
        assert!(matches!(
            kind("versions are outdated"),
            FredError::Refused(_)
        ));
        assert!(matches!(
            FredError::from(tonic::Status::unavailable("down")),
            FredError::Unavailable(_)
        ));
    }
}
