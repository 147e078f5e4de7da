//! The metadata group's network: openraft's RPCs as JSON over whatever
//! [`RaftTransport`] the caller provides.
//!
//! The consensus crate opens no sockets (it depends on storage only): the
//! node implements [`RaftTransport`] over its own framed protocol, and the
//! tests over an in-memory registry. A transport failure (no connection,
//! no answer in time) is reported to openraft as `Unreachable`, the one
//! error after which it backs off ([`NetworkClient`]'s backoff, doubling
//! up to [`MAX_BACKOFF`]) instead of retrying at once: a voter that is down
//! for good, the ordinary state of a dead node awaiting removal, must not
//! spin the leader. An error the remote Raft returned is passed back as a
//! remote error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::raft_types::{NodeId, TypeConfig};

/// A Raft RPC on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// AppendEntries (also the heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// RequestVote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// A Raft RPC's reply on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// The first wait before retrying an unreachable node.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before retrying an unreachable node.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The waits before each retry of an unreachable node: doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
pub fn backoff_waits() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_BACKOFF), |w| Some((*w * 2).min(MAX_BACKOFF)))
}

/// A boxed future of a transport call.
pub type TransportFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Carries encoded Raft RPCs between metadata nodes.
pub trait RaftTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `payload` (an encoded [`RaftRpc`]) to node `target` at
    /// `address` and returns the encoded [`RaftReply`].
    fn call<'a>(
        &'a self,
        target: NodeId,
        address: &'a str,
        payload: Vec<u8>,
    ) -> TransportFuture<'a>;
}

/// Makes a client per target node.
#[derive(Debug, Clone)]
pub struct Network {
    transport: Arc<dyn RaftTransport>,
}

impl Network {
    /// A network over `transport`.
    pub fn new(transport: Arc<dyn RaftTransport>) -> Network {
        Network { transport }
    }
}

/// The client of one target node.
#[derive(Debug)]
pub struct NetworkClient {
    target: NodeId,
    address: String,
    transport: Arc<dyn RaftTransport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        NetworkClient {
            target,
            address: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

impl NetworkClient {
    async fn send<E: std::error::Error>(
        &self,
        rpc: &RaftRpc,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<NodeId, BasicNode, E>> {
        let net = |e: String| RPCError::Network(NetworkError::new(&TransportError(e)));
        let unreachable = |e: String| RPCError::Unreachable(Unreachable::new(&TransportError(e)));
        let payload = serde_json::to_vec(rpc).map_err(|e| net(e.to_string()))?;
        let call = self.transport.call(self.target, &self.address, payload);
        let bytes = tokio::time::timeout(option.hard_ttl(), call)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer from node {} within {:?}",
                    self.target,
                    option.hard_ttl()
                ))
            })?
            .map_err(unreachable)?;
        serde_json::from_slice(&bytes).map_err(|e| net(format!("bad reply: {e}")))
    }
}

fn unexpected<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&TransportError(format!(
        "node {target} answered another RPC"
    ))))
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(backoff_waits())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(&RaftRpc::Append(rpc), &option).await? {
            RaftReply::Append(Ok(r)) => Ok(r),
            RaftReply::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected(self.target)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.send(&RaftRpc::Snapshot(rpc), &option).await? {
            RaftReply::Snapshot(Ok(r)) => Ok(r),
            RaftReply::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected(self.target)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(&RaftRpc::Vote(rpc), &option).await? {
            RaftReply::Vote(Ok(r)) => Ok(r),
            RaftReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected(self.target)),
        }
    }
}
