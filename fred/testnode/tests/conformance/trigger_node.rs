//! A trigger node for the suite: FReD's `TriggerNode` service over TLS that demands a client
//! certificate, so a FReD node must present its own to reach it. It records every call with the
//! caller's CN and the moment it arrived, and can answer slowly or with an error.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred_proto::trigger::trigger_node_server::{TriggerNode as Serve, TriggerNodeServer};
use fred_proto::trigger::{DeleteItemTriggerRequest, Empty, PutItemTriggerRequest};
use fred_testnode::{TestPki, common_name};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// One call a trigger node received.
#[derive(Clone, Debug)]
pub struct Called {
    /// The calling node: the CN of its client certificate.
    pub by: String,
    /// `"Put"` (PutItemTrigger) or `"Delete"` (DeleteItemTrigger).
    pub method: &'static str,
    pub keygroup: String,
    pub id: String,
    /// The value of a PutItemTrigger; "" for DeleteItemTrigger.
    pub val: String,
    pub at: Instant,
}

impl Called {
    /// (caller, method, id, val): what the cases compare.
    pub fn what(&self) -> (&str, &str, &str, &str) {
        (&self.by, self.method, &self.id, &self.val)
    }
}

/// A running trigger node; clones share its record. Serves until the runtime ends.
#[derive(Clone)]
pub struct TriggerNode {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Called>>>,
}

struct Recorder {
    calls: Arc<Mutex<Vec<Called>>>,
    delay: Duration,
    fail: bool,
}

impl TriggerNode {
    /// Serves on a free loopback port as `pki`'s certificate `trigger`, demanding client
    /// certificates of `clients`' CA; each call waits `delay`, then answers Empty, or an error
    /// if `fail`.
    pub async fn start(
        pki: &TestPki,
        clients: &TestPki,
        delay: Duration,
        fail: bool,
    ) -> anyhow::Result<Self> {
        let read = |p: std::path::PathBuf| std::fs::read(p);
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read(pki.cert("trigger"))?,
                read(pki.key("trigger"))?,
            ))
            .client_ca_root(Certificate::from_pem(read(clients.ca())?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            calls: calls.clone(),
            delay,
            fail,
        };
        let router = Server::builder()
            .tls_config(tls)?
            .add_service(TriggerNodeServer::new(recorder));
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        Ok(TriggerNode { addr, calls })
    }

    /// HOST:PORT, as AddTrigger takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Removes and returns the calls about keygroup `kg`, in order of arrival.
    pub fn take(&self, kg: &str) -> Vec<Called> {
        let mut calls = self.calls.lock().unwrap();
        let (mine, rest) = calls.drain(..).partition(|c| c.keygroup == kg);
        *calls = rest;
        mine
    }
}

impl Recorder {
    async fn record<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        kg: &str,
        id: &str,
        val: &str,
    ) -> Result<Response<Empty>, Status> {
        let by = req
            .peer_certs()
            .and_then(|c| c.first().and_then(|c| common_name(c)))
            .unwrap_or_default();
        let call = Called {
            by,
            method,
            keygroup: kg.to_string(),
            id: id.to_string(),
            val: val.to_string(),
            at: Instant::now(),
        };
        self.calls.lock().unwrap().push(call);
        tokio::time::sleep(self.delay).await;
        if self.fail {
            return Err(Status::internal("this trigger node fails on purpose"));
        }
        Ok(Response::new(Empty {}))
    }
}

#[tonic::async_trait]
impl Serve for Recorder {
    async fn put_item_trigger(
        &self,
        req: Request<PutItemTriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.get_ref();
        self.record(&req, "Put", &r.keygroup, &r.id, &r.val).await
    }

    async fn delete_item_trigger(
        &self,
        req: Request<DeleteItemTriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.get_ref();
        self.record(&req, "Delete", &r.keygroup, &r.id, "").await
    }
}

/// How long the slow trigger node takes to answer.
pub const SLOW: Duration = Duration::from_millis(400);

/// The suite's trigger nodes (certificate `trigger` of the bed's CA unless said otherwise).
pub struct Triggers {
    /// Answers at once.
    pub ok: TriggerNode,
    /// Answers after [`SLOW`].
    pub slow: TriggerNode,
    /// Answers every call with an error.
    pub failing: TriggerNode,
    /// Presents a certificate of another CA (still demands one of the bed's CA).
    pub foreign: TriggerNode,
    /// HOST:PORT where nothing listens.
    pub dead: String,
}

impl Triggers {
    pub async fn start(pki: &TestPki, foreign: &TestPki) -> anyhow::Result<Triggers> {
        let zero = Duration::ZERO;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Triggers {
            ok: TriggerNode::start(pki, pki, zero, false).await?,
            slow: TriggerNode::start(pki, pki, SLOW, false).await?,
            failing: TriggerNode::start(pki, pki, zero, true).await?,
            foreign: TriggerNode::start(foreign, pki, zero, false).await?,
            dead: dead.to_string(),
        })
    }
}
