//! The trigger feed: this proxy serves FReD's `TriggerNode` API (mutual TLS) and registers it
//! on its own FReD node, which then calls it after every write it stores, its own and those
//! relayed from other nodes (before acknowledging the relay). The session cache follows, so a
//! client that roams here finds its session in memory and its turn needs no read.
//!
//! FReD waits for every trigger call and fails the write when one fails, so the handlers never
//! block and never fail: they update the cache under a short lock and answer at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred_proto::trigger::trigger_node_server::{TriggerNode, TriggerNodeServer};
use fred_proto::trigger::{DeleteItemTriggerRequest, Empty, PutItemTriggerRequest};
use tokio_stream::StreamExt as _;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::FredClient;
use super::cache::SessionCache;
use super::codec::parse_turn_key;
use discedge_core::store::RemoteTurn;

/// Where the feed listens and what FReD is told to dial.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub listen: SocketAddr,
    /// `HOST:PORT` the FReD node dials (its certificate check uses HOST).
    pub advertise: String,
}

/// How often the node is asked whether the feed is still registered. A failed check (the node
/// down or restarting: it stores relayed writes it missed without calling triggers) or a lost
/// registration (a node on the memory store forgets it on restart) ends the trust in every
/// cached session; they are read again on their next turn.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many announced remote turns wait for a slow listener before the oldest are dropped.
const REMOTE_TURNS_BUFFER: usize = 1024;

/// Answers FReD's trigger calls by updating the cache.
struct Handler {
    keygroup: String,
    node_id: String,
    cache: Arc<SessionCache>,
    /// Turns other nodes committed (a relayed write), for the roaming warm-up.
    remote: tokio::sync::broadcast::Sender<RemoteTurn>,
}

#[tonic::async_trait]
impl TriggerNode for Handler {
    async fn put_item_trigger(
        &self,
        request: Request<PutItemTriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        if r.keygroup == self.keygroup
            && let Some((session_id, turn)) = parse_turn_key(&r.id)
        {
            // A replica reports a relayed delete as a put of "" (FReD v0.2.19).
            let writer = self.cache.stored(session_id, turn, &r.val);
            if writer.is_some_and(|w| w != self.node_id) {
                // No listener (warm-up off) is fine; a send never waits.
                let _ = self.remote.send(RemoteTurn {
                    session_id: session_id.to_owned(),
                    turn,
                });
            }
        }
        Ok(Response::new(Empty {}))
    }

    async fn delete_item_trigger(
        &self,
        request: Request<DeleteItemTriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        if r.keygroup == self.keygroup
            && let Some((session_id, _)) = parse_turn_key(&r.id)
        {
            self.cache.deleted(session_id);
        }
        Ok(Response::new(Empty {}))
    }
}

/// The running feed: the server task and the registration watcher.
pub(super) struct Feed {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: FredClient,
    pub(super) id: String,
    remote: tokio::sync::broadcast::Sender<RemoteTurn>,
}

/// The item [`prime`] writes for the feed `id`: not a turn key, so every feed ignores it.
fn primer_key(id: &str) -> String {
    format!("{id}primer")
}

/// FReD v0.2.19 dials a trigger host on its first call and keeps the connection in a map it
/// writes without a lock: two first calls at once crash the node ("fatal error: concurrent map
/// writes", seen on this project's real-FReD bed when turns began right after registration).
/// One write of our own, right after registering and before any turn is served, makes that
/// first call alone. A failure only loses the head start, so it is logged, not fatal.
async fn prime(client: &FredClient, id: &str) {
    if let Err(e) = client.update(&primer_key(id), "1".into(), Vec::new()).await {
        tracing::warn!(id, "trigger feed not primed: {e}");
    }
}

impl Feed {
    /// Serves the feed with the proxy's certificate (FReD nodes must present one from the same
    /// CA), then registers it on the node and keeps it registered.
    pub async fn start(
        config: &FeedConfig,
        tls: (&[u8], &[u8], &[u8]),
        client: FredClient,
        node_id: &str,
        cache: Arc<SessionCache>,
    ) -> anyhow::Result<Self> {
        let (cert, key, ca) = tls;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("--fred-trigger-listen {}: cannot listen", config.listen))?;
        // FReD waits for every trigger call: no delayed-ACK stalls (Nagle) on small messages.
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
            if let Ok(stream) = &stream {
                let _ = stream.set_nodelay(true);
            }
            stream
        });
        let (remote, _) = tokio::sync::broadcast::channel(REMOTE_TURNS_BUFFER);
        let handler = Handler {
            keygroup: client.keygroup().to_owned(),
            node_id: node_id.to_owned(),
            cache: cache.clone(),
            remote: remote.clone(),
        };
        let server = Server::builder()
            .tls_config(tls)
            .context("trigger feed TLS settings rejected")?
            .add_service(TriggerNodeServer::new(handler))
            .serve_with_incoming(incoming);
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("trigger feed stopped: {e}");
            }
        })];
        // Trigger ids follow FReD's name rule; one per node's proxy.
        let id = format!("discedge{node_id}");
        client.remove_trigger(&id).await.ok();
        client
            .add_trigger(&id, &config.advertise)
            .await
            .with_context(|| {
                format!(
                    "cannot register the trigger feed {} on the FReD node",
                    config.advertise
                )
            })?;
        prime(&client, &id).await;
        cache.set_live(true);
        tracing::info!(id, host = config.advertise, "trigger feed registered");
        let (watch_client, watch_id, advertise) =
            (client.clone(), id.clone(), config.advertise.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let registered = watch_client.triggers().await.map(|t| {
                    t.iter()
                        .any(|(id, host)| *id == watch_id && *host == advertise)
                });
                if matches!(registered, Ok(true)) {
                    if !cache.is_live() {
                        cache.set_live(true);
                    }
                    continue;
                }
                cache.set_live(false);
                tracing::warn!(
                    id = watch_id,
                    "trigger feed not registered ({registered:?}); registering again"
                );
                if watch_client
                    .add_trigger(&watch_id, &advertise)
                    .await
                    .is_ok()
                {
                    prime(&watch_client, &watch_id).await;
                    cache.set_live(true);
                }
            }
        }));
        Ok(Self {
            tasks,
            client,
            id,
            remote,
        })
    }

    /// Turns other nodes commit from now on, as their relayed writes arrive.
    pub fn remote_turns(&self) -> tokio::sync::broadcast::Receiver<RemoteTurn> {
        self.remote.subscribe()
    }

    /// Unregisters (so the node's writes stop calling a proxy that is gone) and stops.
    pub async fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        match self.client.remove_trigger(&self.id).await {
            Ok(()) => tracing::info!(id = self.id, "trigger feed unregistered"),
            Err(e) => tracing::warn!(id = self.id, "cannot unregister the trigger feed: {e}"),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
