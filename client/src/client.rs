//! [`Client`]: the async client library.
//!
//! ```no_run
//! use tally_client::{Client, ClientConfig, Increment, Outcome};
//!
//! # async fn run() -> Result<(), tally_client::ClientError> {
//! let client = Client::connect(ClientConfig::with_seeds(["127.0.0.1:7400"])).await?;
//! let outcomes = client
//!     .increment(vec![Increment {
//!         namespace: "events".into(),
//!         key: b"video:42/view".to_vec(),
//!         timestamp_ms: 1_700_000_000_000,
//!         delta: 1,
//!         op_id: None,
//!     }])
//!     .await;
//! assert!(matches!(outcomes[0], Outcome::Ok(())));
//! let total = client.total("events", b"video:42/view").await?;
//! println!("{} views", total.sum);
//! # Ok(())
//! # }
//! ```
//!
//! Requests go to the seed nodes in turn, skipping nodes whose circuit
//! breaker is open. Reads are retried with exponential backoff and full
//! jitter. A write is retried only when the node certainly did not apply
//! it; otherwise it is reported `Indeterminate`, never silently retried
//! (which could count it twice) nor silently dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::breaker::Breaker;
use crate::config::ClientConfig;
use crate::connection::{Connection, Delivery};
use crate::error::{ClientError, ErrorCode};
use crate::message::MAX_BATCH_ITEMS;
use crate::message::{
    Count, Increment, ItemResult, NamespaceInfo, NodeStatus, Point, Request, Resolution, Response,
};

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Applied as durably as the consistency level promises.
    Ok(T),
    /// Certainly not applied; safe to retry.
    Failed(ClientError),
    /// May or may not have been applied (a timeout, a lost connection).
    Indeterminate(ClientError),
}

impl<T> Outcome<T> {
    /// Whether this is `Ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

#[derive(Debug)]
struct Node {
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    breaker: Mutex<Breaker>,
}

/// A connection pool to a tally cluster. Cheap to clone; share it.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    nodes: Vec<Node>,
    next_node: AtomicUsize,
    in_flight: Semaphore,
    rng: Mutex<rand::rngs::StdRng>,
}

/// How one attempt failed.
struct AttemptError {
    error: ClientError,
    delivery: Delivery,
}

impl Client {
    /// Creates a client and checks that at least one seed answers.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate().map_err(ClientError::InvalidRequest)?;
        let nodes = config
            .seeds
            .iter()
            .map(|addr| Node {
                addr: addr.clone(),
                conn: tokio::sync::Mutex::new(None),
                breaker: Mutex::new(Breaker::new(
                    config.breaker_failures,
                    config.breaker_cooldown,
                )),
            })
            .collect();
        let seed =
            config.seeds.iter().map(|s| s.len() as u64).sum::<u64>() ^ std::process::id() as u64;
        let client = Client {
            inner: Arc::new(Inner {
                in_flight: Semaphore::new(config.max_in_flight),
                config,
                nodes,
                next_node: AtomicUsize::new(0),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            }),
        };
        let mut last = None;
        for node in &client.inner.nodes {
            match client.inner.connection(node).await {
                Ok(_) => return Ok(client),
                Err(e) => last = Some(e.error),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable("no seeds".into())))
    }

    /// Applies a batch of increments. Returns one outcome per item, in
    /// order. The batch must hold at most 10,000 items.
    pub async fn increment(&self, items: Vec<Increment>) -> Vec<Outcome<()>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        if n > MAX_BATCH_ITEMS {
            let e = ClientError::InvalidRequest(format!(
                "batch of {n} exceeds {MAX_BATCH_ITEMS} increments"
            ));
            return vec![Outcome::Failed(e); n];
        }
        let request = Request::Increment {
            consistency: self.inner.config.consistency,
            timeout_ms: self
                .inner
                .config
                .request_timeout
                .as_millis()
                .min(u32::MAX as u128) as u32,
            items,
        };
        match self.inner.execute(&request).await {
            Ok(Response::Increment(results)) if results.len() == n => results
                .into_iter()
                .map(|r| match r {
                    ItemResult::Ok => Outcome::Ok(()),
                    ItemResult::Failed(code) => {
                        Outcome::Failed(node_error(code, "increment not applied"))
                    }
                    ItemResult::Indeterminate(code) => {
                        Outcome::Indeterminate(node_error(code, "increment may have been applied"))
                    }
                })
                .collect(),
            Ok(Response::Error { code, message }) => {
                let e = ClientError::Node { code, message };
                if code.nothing_applied() {
                    vec![Outcome::Failed(e); n]
                } else {
                    vec![Outcome::Indeterminate(e); n]
                }
            }
            Ok(other) => {
                let e =
                    ClientError::Protocol(format!("unexpected answer to an increment: {other:?}"));
                vec![Outcome::Indeterminate(e); n]
            }
            Err(AttemptError {
                error,
                delivery: Delivery::NotSent,
            }) => vec![Outcome::Failed(error); n],
            Err(AttemptError {
                error,
                delivery: Delivery::MaybeSent,
            }) => vec![Outcome::Indeterminate(error); n],
        }
    }

    /// The all-time total of a key.
    pub async fn total(&self, namespace: &str, key: &[u8]) -> Result<Count, ClientError> {
        let request = Request::Total {
            consistency: self.inner.config.consistency,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        };
        match self.read(&request).await? {
            Response::Total(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// The per-bucket series of a key over `[start_ms, end_ms)`.
    pub async fn range(
        &self,
        namespace: &str,
        key: &[u8],
        resolution: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, ClientError> {
        let request = Request::Range {
            consistency: self.inner.config.consistency,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            resolution,
            start_ms,
            end_ms,
        };
        match self.read(&request).await? {
            Response::Range(points) => Ok(points),
            other => Err(unexpected(other)),
        }
    }

    /// Sum and count over `[start_ms, end_ms)`, and how many cells the node
    /// read to answer.
    pub async fn stats(
        &self,
        namespace: &str,
        key: &[u8],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(Count, u32), ClientError> {
        let request = Request::Stats {
            consistency: self.inner.config.consistency,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            start_ms,
            end_ms,
        };
        match self.read(&request).await? {
            Response::Stats { total, cells_read } => Ok((total, cells_read)),
            other => Err(unexpected(other)),
        }
    }

    /// Every namespace.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, ClientError> {
        match self.read(&Request::ListNamespaces).await? {
            Response::Namespaces(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// One namespace.
    pub async fn describe_namespace(&self, name: &str) -> Result<NamespaceInfo, ClientError> {
        match self
            .read(&Request::DescribeNamespace {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Namespaces(mut list) if list.len() == 1 => Ok(list.remove(0)),
            other => Err(unexpected(other)),
        }
    }

    /// The status of the next node in turn.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.read(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    async fn read(&self, request: &Request) -> Result<Response, ClientError> {
        match self.inner.execute(request).await {
            Ok(Response::Error { code, message }) => Err(ClientError::Node { code, message }),
            Ok(response) => Ok(response),
            Err(e) => Err(e.error),
        }
    }
}

fn node_error(code: ErrorCode, what: &str) -> ClientError {
    ClientError::Node {
        code,
        message: what.to_owned(),
    }
}

fn unexpected(response: Response) -> ClientError {
    match response {
        Response::Error { code, message } => ClientError::Node { code, message },
        other => ClientError::Protocol(format!("unexpected answer: {other:?}")),
    }
}

impl Inner {
    /// Runs a request with retries where they are safe.
    async fn execute(&self, request: &Request) -> Result<Response, AttemptError> {
        let _permit = self.in_flight.acquire().await.map_err(|_| AttemptError {
            error: ClientError::Unreachable("client closed".into()),
            delivery: Delivery::NotSent,
        })?;
        let mut attempt = 0;
        loop {
            let result = self.attempt(request).await;
            let retry = match &result {
                Ok(Response::Error { code, .. }) => {
                    code.is_transient() && (request.is_read() || code.nothing_applied())
                }
                Ok(_) => false,
                Err(e) => request.is_read() || e.delivery == Delivery::NotSent,
            };
            if !retry || attempt >= self.config.max_retries {
                return result;
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Full-jitter exponential backoff before retry `attempt`.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.config.backoff_max.min(
            self.config
                .backoff_base
                .saturating_mul(1 << attempt.min(20)),
        );
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Duration::from_nanos(rng.random_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64))
    }

    /// One attempt on the next node whose breaker allows it.
    async fn attempt(&self, request: &Request) -> Result<Response, AttemptError> {
        let n = self.nodes.len();
        let start = self.next_node.fetch_add(1, Ordering::Relaxed);
        let node = (0..n).map(|i| &self.nodes[(start + i) % n]).find(|node| {
            node.breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allows(Instant::now())
        });
        let Some(node) = node else {
            return Err(AttemptError {
                error: ClientError::Unreachable("every node's circuit breaker is open".into()),
                delivery: Delivery::NotSent,
            });
        };
        let result = match self.connection(node).await {
            Ok(conn) => conn
                .call(request, self.config.request_timeout)
                .await
                .map_err(|(error, delivery)| AttemptError { error, delivery }),
            Err(e) => Err(e),
        };
        let mut breaker = node
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(Response::Error { code, .. }) if code.is_transient() => {
                breaker.record_failure(Instant::now())
            }
            Ok(_) => breaker.record_success(),
            Err(_) => breaker.record_failure(Instant::now()),
        }
        result
    }

    /// The node's open connection, reconnecting if it broke.
    async fn connection(&self, node: &Node) -> Result<Arc<Connection>, AttemptError> {
        let mut slot = node.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(
            Connection::open(&node.addr, self.config.connect_timeout)
                .await
                .map_err(|error| AttemptError {
                    error,
                    delivery: Delivery::NotSent,
                })?,
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }
}
