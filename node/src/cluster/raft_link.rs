//! [`RaftLink`]: the metadata group's transport over the node's own framed
//! protocol (`Raft` requests), and the way to send operator requests to
//! another node by address.
//!
//! Raft knows members by id and address (its membership config carries the
//! address), and a node being added is not in the data path's map yet, so
//! connections here are kept by address, one per peer, reopened when they
//! break. A failure is returned as an error string: openraft retries with
//! backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::auth::Credentials;
use tally_client::tls::TlsClient;
use tally_client::{Connection, Request, Response};
use tally_consensus::{NodeId, RaftTransport, TransportFuture};

/// Deadline of one Raft RPC (a snapshot chunk included).
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to other nodes by address.
#[derive(Debug)]
pub struct RaftLink {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// What connections present (the cluster secret, if any).
    credentials: Credentials,
    /// TLS to peers, if on.
    tls: Option<TlsClient>,
}

impl RaftLink {
    /// A link with no connections yet, whose connections present
    /// `credentials` (over `tls`, if given).
    pub fn new(credentials: Credentials, tls: Option<TlsClient>) -> Arc<RaftLink> {
        Arc::new(RaftLink {
            connections: Mutex::default(),
            credentials,
            tls,
        })
    }

    async fn connection(&self, address: &str) -> Result<Arc<Connection>, String> {
        if let Some(c) = self.connections.lock().get(address) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(
            Connection::open_with(
                address,
                CONNECT_TIMEOUT,
                &self.credentials,
                self.tls.as_ref(),
            )
            .await
            .map_err(|e| e.to_string())?,
        );
        self.connections
            .lock()
            .insert(address.to_owned(), c.clone());
        Ok(c)
    }

    /// Sends `request` to the node at `address`.
    pub async fn call(
        &self,
        address: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        let c = self.connection(address).await?;
        c.call(request, timeout)
            .await
            .map_err(|(e, _)| e.to_string())
    }

    /// Sends an operator request to the node at `address`.
    pub async fn admin(
        &self,
        address: &str,
        request: &AdminRequest,
        timeout: Duration,
    ) -> AdminReply {
        let request = Request::Admin {
            payload: request.to_bytes(),
        };
        match self.call(address, &request, timeout).await {
            Ok(Response::Admin(body)) => {
                AdminReply::from_bytes(&body).unwrap_or_else(|reason| AdminReply::Failed { reason })
            }
            Ok(Response::Error { code, message }) => AdminReply::Failed {
                reason: format!("{address}: {code:?}: {message}"),
            },
            Ok(other) => AdminReply::Failed {
                reason: format!("{address}: unexpected answer {other:?}"),
            },
            Err(e) => AdminReply::Failed {
                reason: format!("{address}: {e}"),
            },
        }
    }
}

impl RaftTransport for RaftLink {
    fn call<'a>(
        &'a self,
        _target: NodeId,
        address: &'a str,
        payload: Vec<u8>,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            match RaftLink::call(self, address, &Request::Raft { payload }, RPC_TIMEOUT).await? {
                Response::Raft(reply) => Ok(reply),
                Response::Error { code, message } => Err(format!("{code:?}: {message}")),
                other => Err(format!("unexpected answer {other:?}")),
            }
        })
    }
}
