//! [`ClientConfig`]: how the client connects, waits and retries.

use std::time::Duration;

use crate::message::Consistency;
use crate::tls::TlsClient;

/// Client settings; plain data with defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes to connect to (`host:port`); any one is enough.
    pub seeds: Vec<String>,
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of a request.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for requests that are safe to retry.
    pub max_retries: u32,
    /// Backoff before retry `n` is uniform in `[0, min(backoff_max, backoff_base * 2^n))`.
    pub backoff_base: Duration,
    /// Cap of the backoff.
    pub backoff_max: Duration,
    /// Requests in flight at once; further calls wait (back-pressure).
    pub max_in_flight: usize,
    /// Consecutive failures that open a node's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps requests away from the node.
    pub breaker_cooldown: Duration,
    /// Consistency used when a call does not name one.
    pub consistency: Consistency,
    /// Route each key to one of its replicas using the cluster's routing
    /// table (off: send to the seeds in turn and let them forward).
    pub token_aware: bool,
    /// How often the routing table is fetched again.
    pub routing_refresh: Duration,
    /// The API token every connection presents (`None`: nodes that ask
    /// for none). Kept out of `Debug`.
    pub token: Option<Secret>,
    /// Speak TLS to the nodes, trusting their CA (`None`: plaintext).
    pub tls: Option<TlsClient>,
}

/// A credential that never shows in logs: its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            seeds: vec!["127.0.0.1:7400".to_owned()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_in_flight: 256,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
            consistency: Consistency::Quorum,
            token_aware: true,
            routing_refresh: Duration::from_secs(10),
            token: None,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// A config with the given seeds and defaults otherwise.
    pub fn with_seeds(seeds: impl IntoIterator<Item = impl Into<String>>) -> ClientConfig {
        ClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    /// Checks that the settings make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.seeds.is_empty() {
            return Err("at least one seed address is needed".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.routing_refresh.is_zero()
        {
            return Err("timeouts must be positive".into());
        }
        Ok(())
    }
}
