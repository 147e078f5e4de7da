//! [`Peers`]: this node's connections to the other nodes, and what they
//! say about who is up.
//!
//! One multiplexed [`Connection`] per peer, opened on first use and
//! reopened after it breaks. Two signals decide whether a peer is up:
//!
//! - **the transport**: a refused or broken connection marks the peer down
//!   at once (on loopback and LANs a killed process is seen in well under a
//!   millisecond), and any answer clears that. Timeouts do not count: a
//!   paused or overloaded process is gossip's to judge, so that a 2 s GC
//!   pause does not turn into a storm of hints;
//! - **gossip** (`membership.rs`): the phi-accrual detector's up and down
//!   events.
//!
//! A peer is up when neither says down. A probe loop pings peers the
//! transport holds down every `probe_interval`, and idle peers once their
//! last contact is older than a second, so that a returning node is seen
//! within a probe interval and hint replay can start.
//!
//! The coordinator does not send to peers it considers down: they get
//! hints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_client::auth::Credentials;
use tally_client::tls::TlsClient;
use tally_client::{ClientError, Connection, Delivery, PeerStatus, Request, Response};
use tally_consensus::HostId;

use crate::cluster::metadata::Metadata;

/// How peers are reached and judged.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time between probes of down peers.
    pub probe_interval: Duration,
    /// Time a probe waits for its answer.
    pub probe_timeout: Duration,
    /// What connections to peers present (the cluster secret, if any).
    pub credentials: Credentials,
    /// TLS to peers (the node's certificate, the cluster CA), if on.
    pub tls: Option<TlsClient>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            connect_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(500),
            credentials: Credentials::None,
            tls: None,
        }
    }
}

#[derive(Debug)]
struct PeerState {
    transport_down: bool,
    gossip_down: bool,
    /// When `up()` last changed.
    since: Instant,
    last_contact: Option<Instant>,
}

impl PeerState {
    fn up(&self) -> bool {
        !self.transport_down && !self.gossip_down
    }
}

#[derive(Debug)]
struct Peer {
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    state: Mutex<PeerState>,
}

/// Connections to the other nodes and their liveness.
#[derive(Debug)]
pub struct Peers {
    self_id: HostId,
    metadata: Arc<dyn Metadata>,
    config: PeerConfig,
    peers: Mutex<HashMap<HostId, Arc<Peer>>>,
}

impl Peers {
    /// Peers of `self_id` as `metadata` lists them.
    pub fn new(self_id: HostId, metadata: Arc<dyn Metadata>, config: PeerConfig) -> Peers {
        Peers {
            self_id,
            metadata,
            config,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn peer(&self, host: HostId) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(host)
            .or_insert_with(|| {
                Arc::new(Peer {
                    conn: tokio::sync::Mutex::new(None),
                    // Optimistic until the first call says otherwise: nodes
                    // of a new cluster start at about the same time.
                    state: Mutex::new(PeerState {
                        transport_down: false,
                        gossip_down: false,
                        since: Instant::now(),
                        last_contact: None,
                    }),
                })
            })
            .clone()
    }

    /// Whether `host` is considered up (this node always is).
    pub fn is_up(&self, host: HostId) -> bool {
        host == self.self_id || self.peer(host).state.lock().up()
    }

    /// Gossip's verdict on `host` (its failure detector's up/down events).
    pub fn set_gossip_up(&self, host: HostId, up: bool) {
        if host == self.self_id {
            return;
        }
        let peer = self.peer(host);
        let mut state = peer.state.lock();
        let was = state.up();
        state.gossip_down = !up;
        let why = if up {
            "gossip: heartbeats again"
        } else {
            "gossip: phi over the threshold"
        };
        note_change(host, &mut state, was, why);
    }

    /// How long `host` has been down (`None` while up).
    pub fn down_for(&self, host: HostId) -> Option<Duration> {
        let peer = self.peer(host);
        let state = peer.state.lock();
        (!state.up()).then(|| state.since.elapsed())
    }

    /// Sends `request` to `host` and waits up to `timeout` for the answer.
    /// The outcome updates the peer's liveness.
    pub async fn call(
        &self,
        host: HostId,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, (ClientError, Delivery)> {
        let mut body = bytes::BytesMut::new();
        request.encode_body(&mut body);
        self.call_encoded(host, request.kind(), body.freeze(), timeout)
            .await
    }

    /// [`Peers::call`] with a request already encoded.
    pub async fn call_encoded(
        &self,
        host: HostId,
        kind: u8,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Response, (ClientError, Delivery)> {
        let peer = self.peer(host);
        let result = match self.connection(host, &peer, timeout).await {
            Ok(conn) => conn.call_encoded(kind, body, timeout).await,
            Err(e) => Err((e, Delivery::NotSent)),
        };
        self.record(host, &peer, &result);
        result
    }

    async fn connection(
        &self,
        host: HostId,
        peer: &Peer,
        timeout: Duration,
    ) -> Result<Arc<Connection>, ClientError> {
        let mut slot = peer.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let map = self.metadata.map();
        let Some(member) = map.member(host) else {
            return Err(ClientError::Unreachable(format!(
                "host {} is not a member",
                host.0
            )));
        };
        let conn = Arc::new(
            Connection::open_with(
                &member.address,
                self.config.connect_timeout.min(timeout),
                &self.config.credentials,
                self.config.tls.as_ref(),
            )
            .await?,
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn record(
        &self,
        host: HostId,
        peer: &Peer,
        result: &Result<Response, (ClientError, Delivery)>,
    ) {
        let mut state = peer.state.lock();
        let was = state.up();
        match result {
            Ok(_) => {
                state.last_contact = Some(Instant::now());
                state.transport_down = false;
                note_change(host, &mut state, was, "answered");
            }
            // Slow is not dead: gossip judges pauses and partitions.
            Err((ClientError::Timeout(_), _)) => {}
            Err((e, _)) => {
                state.transport_down = true;
                note_change(host, &mut state, was, &e.to_string());
            }
        }
    }

    /// Probes down peers (and idle up ones) until the process ends.
    pub async fn probe_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let map = self.metadata.map();
            let due: Vec<HostId> = map
                .members()
                .map(|m| m.host_id)
                .filter(|&h| h != self.self_id)
                .filter(|&h| {
                    let peer = self.peer(h);
                    let state = peer.state.lock();
                    state.transport_down
                        || state
                            .last_contact
                            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                })
                .collect();
            let probes = due.into_iter().map(|h| {
                let peers = self.clone();
                async move {
                    let _ = peers
                        .call(h, &Request::Ping, peers.config.probe_timeout)
                        .await;
                }
            });
            futures_util::future::join_all(probes).await;
        }
    }

    /// Every other member as this node sees it (gossip's generation and
    /// heartbeat age are for the caller to fill in).
    pub fn statuses(&self) -> Vec<PeerStatus> {
        let map = self.metadata.map();
        map.members()
            .filter(|m| m.host_id != self.self_id)
            .map(|m| {
                let peer = self.peer(m.host_id);
                let state = peer.state.lock();
                PeerStatus {
                    host_id: m.host_id.0,
                    address: m.address.clone(),
                    up: state.up(),
                    last_contact_ms_ago: state.last_contact.map(|t| t.elapsed().as_millis() as u64),
                    generation: None,
                    heartbeat_ms_ago: None,
                }
            })
            .collect()
    }
}

/// Logs a change of a peer's combined state and restarts its clock.
fn note_change(host: HostId, state: &mut PeerState, was: bool, why: &str) {
    let now = state.up();
    if was == now {
        return;
    }
    if now {
        tracing::info!(
            host = host.0,
            down_for_ms = state.since.elapsed().as_millis() as u64,
            reason = why,
            "peer up"
        );
    } else {
        tracing::info!(host = host.0, reason = why, "peer down");
    }
    state.since = Instant::now();
}
