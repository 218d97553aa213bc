//! The gRPC face of one test node: counts the call, names the user by the client
//! certificate's CN, runs the operation, and turns its error into status Unknown like FReD.

use fred_proto::client_server::Client;
use fred_proto::*;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::cluster::Cluster;
use crate::pki::common_name;
use crate::relay::Relay;

pub(crate) struct NodeService {
    cluster: Cluster,
    node_id: String,
}

type Op<Q, R> = fn(&Cluster, &str, &str, Q) -> Result<R, String>;
/// A write: its answer and the relay to finish before answering.
type WriteOp<Q, R> = Op<Q, (R, Relay)>;

#[allow(
    clippy::result_large_err,
    reason = "tonic handlers return Status by value"
)]
impl NodeService {
    pub(crate) fn new(cluster: Cluster, node_id: String) -> NodeService {
        NodeService { cluster, node_id }
    }

    /// A call answered as soon as `op` has run.
    fn run<Q, R>(&self, rpc: &str, req: Request<Q>, op: Op<Q, R>) -> Result<Response<R>, Status> {
        self.call(rpc, req, op).map(Response::new)
    }

    /// A write answers only after its relay to the other replicas and its own trigger calls,
    /// as in FReD; a failing own trigger fails the call although the write stays stored.
    async fn write<Q, R>(&self, rpc: &str, req: Request<Q>, op: WriteOp<Q, R>) -> Reply<R> {
        let (reply, relay) = self.call(rpc, req, op)?;
        relay.finish().await.map_err(Status::unknown)?;
        Ok(Response::new(reply))
    }

    /// Counts the call, then refuses if stopped (a connection that outlived stop), else runs `op`
    /// for the certificate's user.
    fn call<Q, R>(&self, rpc: &str, req: Request<Q>, op: Op<Q, R>) -> Result<R, Status> {
        self.count(rpc)?;
        let user = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| common_name(c)))
            .ok_or_else(|| {
                Status::unknown("no client certificate with a CN: cannot name the user")
            })?;
        op(&self.cluster, &self.node_id, &user, req.into_inner()).map_err(|msg| {
            debug!(
                "test node {} (not FReD): {rpc} by {user} failed: {msg}",
                self.node_id
            );
            Status::unknown(msg)
        })
    }

    fn count(&self, rpc: &str) -> Result<(), Status> {
        let mut st = self.cluster.state();
        let node = st.nodes.get_mut(&self.node_id).expect("known node");
        *node.stats.calls.entry(rpc.to_string()).or_default() += 1;
        if !node.running {
            return Err(Status::unavailable(format!(
                "test node {} is stopped",
                self.node_id
            )));
        }
        Ok(())
    }
}

type Reply<R> = Result<Response<R>, Status>;

#[tonic::async_trait]
impl Client for NodeService {
    async fn create_keygroup(&self, req: Request<CreateKeygroupRequest>) -> Reply<Empty> {
        self.run("CreateKeygroup", req, Cluster::create_keygroup)
    }

    async fn delete_keygroup(&self, req: Request<DeleteKeygroupRequest>) -> Reply<Empty> {
        self.run("DeleteKeygroup", req, Cluster::delete_keygroup)
    }

    async fn read(&self, req: Request<ReadRequest>) -> Reply<ReadResponse> {
        self.run("Read", req, Cluster::read)
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Reply<ScanResponse> {
        self.run("Scan", req, Cluster::scan)
    }

    async fn keys(&self, req: Request<KeysRequest>) -> Reply<KeysResponse> {
        self.run("Keys", req, Cluster::keys)
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Reply<UpdateResponse> {
        self.write("Update", req, Cluster::update).await
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.write("Delete", req, Cluster::delete).await
    }

    async fn append(&self, req: Request<AppendRequest>) -> Reply<AppendResponse> {
        self.write("Append", req, Cluster::append).await
    }

    async fn add_replica(&self, req: Request<AddReplicaRequest>) -> Reply<Empty> {
        self.run("AddReplica", req, Cluster::add_replica)
    }

    async fn get_keygroup_info(
        &self,
        req: Request<GetKeygroupInfoRequest>,
    ) -> Reply<GetKeygroupInfoResponse> {
        self.run("GetKeygroupInfo", req, Cluster::get_keygroup_info)
    }

    async fn remove_replica(&self, req: Request<RemoveReplicaRequest>) -> Reply<Empty> {
        self.run("RemoveReplica", req, Cluster::remove_replica)
    }

    async fn get_replica(&self, req: Request<GetReplicaRequest>) -> Reply<GetReplicaResponse> {
        self.run("GetReplica", req, Cluster::get_replica)
    }

    async fn get_all_replica(&self, req: Request<Empty>) -> Reply<GetAllReplicaResponse> {
        self.run("GetAllReplica", req, Cluster::get_all_replica)
    }

    async fn get_keygroup_triggers(
        &self,
        req: Request<GetKeygroupTriggerRequest>,
    ) -> Reply<GetKeygroupTriggerResponse> {
        self.run("GetKeygroupTriggers", req, Cluster::get_keygroup_triggers)
    }

    async fn add_trigger(&self, req: Request<AddTriggerRequest>) -> Reply<Empty> {
        self.run("AddTrigger", req, Cluster::add_trigger)
    }

    async fn remove_trigger(&self, req: Request<RemoveTriggerRequest>) -> Reply<Empty> {
        self.run("RemoveTrigger", req, Cluster::remove_trigger)
    }

    async fn add_user(&self, req: Request<AddUserRequest>) -> Reply<Empty> {
        self.run("AddUser", req, Cluster::add_user)
    }

    async fn remove_user(&self, req: Request<RemoveUserRequest>) -> Reply<Empty> {
        self.run("RemoveUser", req, Cluster::remove_user)
    }
}
