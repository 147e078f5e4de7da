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
//!         events: 1,
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
//! The client fetches the cluster's [`RoutingTable`] from a seed when it
//! connects, and again every `routing_refresh`. A request goes to a
//! replica of its key (token-aware): a batch is split by the node that
//! should lead each key, the parts are sent in parallel and the results
//! put back in order. Without a table (an old node, a seed that does not
//! answer it) requests go to the known nodes in turn; any node can
//! coordinate any key, so routing only saves a hop. Nodes whose circuit
//! breaker is open are skipped.
//!
//! Reads are retried with exponential backoff and full jitter. A write is
//! retried only when the node certainly did not apply it; otherwise it is
//! reported `Indeterminate`, never silently retried (which could count it
//! twice) nor silently dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::auth::Credentials;
use crate::breaker::Breaker;
use crate::config::ClientConfig;
use crate::connection::{Connection, Delivery};
use crate::error::{ClientError, ErrorCode};
use crate::message::MAX_BATCH_ITEMS;
use crate::message::{
    Add, Count, DistinctPoint, Increment, ItemResult, NamespaceInfo, NodeStatus, Point,
    RepairReport, ReplicaView, Request, Resolution, Response, TopKey,
};
use crate::routing::RoutingTable;
use crate::token::token;

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

/// The nodes the client knows: the seeds and the routing table's members.
#[derive(Debug, Default)]
struct Nodes {
    list: Vec<Arc<Node>>,
    by_address: HashMap<String, usize>,
}

impl Nodes {
    fn add(&mut self, addr: &str, config: &ClientConfig) {
        if self.by_address.contains_key(addr) {
            return;
        }
        self.by_address.insert(addr.to_owned(), self.list.len());
        self.list.push(Arc::new(Node {
            addr: addr.to_owned(),
            conn: tokio::sync::Mutex::new(None),
            breaker: Mutex::new(Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
            )),
        }));
    }

    fn get(&self, addr: &str) -> Option<&Arc<Node>> {
        self.by_address.get(addr).map(|&i| &self.list[i])
    }
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    nodes: RwLock<Nodes>,
    routing: RwLock<Option<Arc<RoutingTable>>>,
    next_node: AtomicUsize,
    in_flight: Semaphore,
    rng: Mutex<rand::rngs::StdRng>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How one attempt failed.
struct AttemptError {
    error: ClientError,
    delivery: Delivery,
}

impl Client {
    /// Creates a client, checks that at least one seed answers, and
    /// fetches the routing table (refreshed in the background every
    /// `routing_refresh` while the client lives).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate().map_err(ClientError::InvalidRequest)?;
        let mut nodes = Nodes::default();
        for addr in &config.seeds {
            nodes.add(addr, &config);
        }
        let seed =
            config.seeds.iter().map(|s| s.len() as u64).sum::<u64>() ^ std::process::id() as u64;
        let client = Client {
            inner: Arc::new(Inner {
                in_flight: Semaphore::new(config.max_in_flight),
                config,
                nodes: RwLock::new(nodes),
                routing: RwLock::new(None),
                next_node: AtomicUsize::new(0),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            }),
        };
        let seeds: Vec<Arc<Node>> = read(&client.inner.nodes).list.clone();
        let mut last = None;
        let mut reachable = false;
        for node in &seeds {
            match client.inner.connection(node).await {
                Ok(_) => {
                    reachable = true;
                    break;
                }
                Err(e) => last = Some(e.error),
            }
        }
        if !reachable {
            return Err(last.unwrap_or_else(|| ClientError::Unreachable("no seeds".into())));
        }
        if client.inner.config.token_aware {
            client.inner.refresh_routing().await;
            let weak = Arc::downgrade(&client.inner);
            tokio::spawn(refresh_forever(weak));
        }
        Ok(client)
    }

    /// The routing table the client routes with, if it has one.
    pub fn routing_table(&self) -> Option<Arc<RoutingTable>> {
        read(&self.inner.routing).clone()
    }

    /// Fetches the routing table now.
    pub async fn refresh_routing(&self) -> Result<Arc<RoutingTable>, ClientError> {
        match self.read(&Request::Routing).await? {
            Response::Routing(table) => Ok(self.inner.install_routing(table)),
            other => Err(unexpected(other)),
        }
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
        let routing = read(&self.inner.routing).clone();
        let Some(table) = routing.filter(|t| !t.ranges.is_empty()) else {
            return self.increment_on(items, &[]).await;
        };
        // Split by the node that should lead each key.
        let mut parts: HashMap<String, (Vec<usize>, Vec<String>)> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let preferred = self
                .inner
                .replica_addresses(&table, &item.namespace, &item.key);
            let leader = preferred.first().cloned().unwrap_or_default();
            parts
                .entry(leader)
                .or_insert_with(|| (Vec::new(), preferred))
                .0
                .push(i);
        }
        if parts.len() == 1 {
            let preferred = parts.into_values().next().map(|p| p.1).unwrap_or_default();
            return self.increment_on(items, &preferred).await;
        }
        let mut slots: Vec<Option<Increment>> = items.into_iter().map(Some).collect();
        let sends = parts.into_values().map(|(indices, preferred)| {
            let part: Vec<Increment> = indices.iter().filter_map(|&i| slots[i].take()).collect();
            async move { (indices, self.increment_on(part, &preferred).await) }
        });
        let mut outcomes: Vec<Option<Outcome<()>>> = vec![None; n];
        for (indices, part) in futures_util::future::join_all(sends).await {
            for (i, o) in indices.into_iter().zip(part) {
                outcomes[i] = Some(o);
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Failed(ClientError::Protocol("lost an item while routing".into()))
                })
            })
            .collect()
    }

    /// Sends one batch, to the `preferred` nodes first. Items with op ids
    /// whose outcome is unknown, or refused for a passing reason (their op
    /// leader down, load), are sent again with backoff, up to
    /// `max_retries` times: the nodes count each op id once.
    async fn increment_on(&self, items: Vec<Increment>, preferred: &[String]) -> Vec<Outcome<()>> {
        if items.iter().all(|i| i.op_id.is_none()) {
            return self.send_increments(items, preferred).await;
        }
        self.with_resends(
            items,
            |i| i.op_id.is_some(),
            |part| self.send_increments(part, preferred),
        )
        .await
    }

    /// Sends `items` with `send`, then sends again, with backoff and up to
    /// `max_retries` times, those that `resendable` allows whose outcome
    /// is unknown or refused for a passing reason.
    async fn with_resends<T, F, Fut>(
        &self,
        items: Vec<T>,
        resendable: impl Fn(&T) -> bool,
        send: F,
    ) -> Vec<Outcome<()>>
    where
        T: Clone,
        F: Fn(Vec<T>) -> Fut,
        Fut: std::future::Future<Output = Vec<Outcome<()>>>,
    {
        let mut outcomes = send(items.clone()).await;
        for attempt in 0..self.inner.config.max_retries {
            let again: Vec<usize> = (0..items.len())
                .filter(|&i| resendable(&items[i]) && worth_resending(&outcomes[i]))
                .collect();
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(self.inner.backoff(attempt)).await;
            let part = again.iter().map(|&i| items[i].clone()).collect();
            let resent = send(part).await;
            for (i, outcome) in again.into_iter().zip(resent) {
                outcomes[i] = later_attempt(&outcomes[i], outcome);
            }
        }
        outcomes
    }

    /// Sends one batch once (the connection-level retries of `execute`
    /// aside).
    async fn send_increments(
        &self,
        items: Vec<Increment>,
        preferred: &[String],
    ) -> Vec<Outcome<()>> {
        let n = items.len();
        let request = Request::Increment {
            consistency: self.inner.config.consistency,
            timeout_ms: self.inner.timeout_ms(),
            items,
        };
        self.send_write(&request, n, preferred).await
    }

    /// Sends a write of `n` items once; one outcome per item.
    async fn send_write(
        &self,
        request: &Request,
        n: usize,
        preferred: &[String],
    ) -> Vec<Outcome<()>> {
        match self.inner.execute(request, preferred).await {
            Ok(Response::Increment(results)) if results.len() == n => results
                .into_iter()
                .map(|r| match r {
                    ItemResult::Ok => Outcome::Ok(()),
                    ItemResult::Failed(code) if code.nothing_applied() => {
                        Outcome::Failed(node_error(code, "write not applied"))
                    }
                    // A code that does not say "nothing applied" wins over
                    // the tag: the safe reading is "maybe".
                    ItemResult::Failed(code) | ItemResult::Indeterminate(code) => {
                        Outcome::Indeterminate(node_error(code, "write may have been applied"))
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
                let e = ClientError::Protocol(format!("unexpected answer to a write: {other:?}"));
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

    /// Adds members to distinct counters (keys of `distinct`
    /// namespaces). Returns one outcome per item, in order; the batch must
    /// hold at most 10,000 items. Adding a member again changes nothing,
    /// so items whose outcome is unknown, or refused for a passing reason,
    /// are sent again with backoff, up to `max_retries` times.
    pub async fn add(&self, items: Vec<Add>) -> Vec<Outcome<()>> {
        let n = items.len();
        if n == 0 {
            return Vec::new();
        }
        if n > MAX_BATCH_ITEMS {
            let e =
                ClientError::InvalidRequest(format!("batch of {n} exceeds {MAX_BATCH_ITEMS} adds"));
            return vec![Outcome::Failed(e); n];
        }
        // To a replica of the first key: the other keys' replicas are
        // written by that node in parallel, with no extra hop for these.
        let preferred = match (read(&self.inner.routing).clone(), items.first()) {
            (Some(table), Some(first)) if !table.ranges.is_empty() => {
                self.inner
                    .replica_addresses(&table, &first.namespace, &first.key)
            }
            _ => Vec::new(),
        };
        self.with_resends(items, |_| true, |part| self.send_adds(part, &preferred))
            .await
    }

    async fn send_adds(&self, items: Vec<Add>, preferred: &[String]) -> Vec<Outcome<()>> {
        let n = items.len();
        let request = Request::Add {
            consistency: self.inner.config.consistency,
            timeout_ms: self.inner.timeout_ms(),
            items,
        };
        self.send_write(&request, n, preferred).await
    }

    /// The `k` keys of a counter namespace with the largest sums over the
    /// buckets at `resolution` starting in `[start_ms, end_ms)`, largest
    /// first, with exact sums and counts; the sum above which every key
    /// was certain to be considered; and how many nodes' summaries were
    /// missing.
    pub async fn top(
        &self,
        namespace: &str,
        resolution: Resolution,
        (start_ms, end_ms): (i64, i64),
        k: u32,
    ) -> Result<(Vec<TopKey>, u64, u32), ClientError> {
        let request = Request::Top {
            consistency: self.inner.config.consistency,
            namespace: namespace.to_owned(),
            resolution,
            start_ms,
            end_ms,
            k,
        };
        match self.read(&request).await? {
            Response::Top {
                keys,
                certain_above,
                nodes_missing,
            } => Ok((keys, certain_above, nodes_missing)),
            other => Err(unexpected(other)),
        }
    }

    /// Distinct members of a key per bucket over `[start_ms, end_ms)`,
    /// and over the whole range (one merged sketch: a member seen in
    /// several buckets counts once).
    pub async fn distinct(
        &self,
        namespace: &str,
        key: &[u8],
        resolution: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(Vec<DistinctPoint>, u64), ClientError> {
        let request = Request::Distinct {
            consistency: self.inner.config.consistency,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            resolution,
            start_ms,
            end_ms,
        };
        match self.read(&request).await? {
            Response::Distinct { points, union } => Ok((points, union)),
            other => Err(unexpected(other)),
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

    /// The status of the first seed that answers.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.read(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends an operator request to the first seed that answers (any node
    /// forwards a metadata change to the leader). Topology changes take as
    /// long as their streaming: give the client a long request timeout and
    /// no retries.
    pub async fn admin(
        &self,
        request: &crate::admin::AdminRequest,
    ) -> Result<crate::admin::AdminReply, ClientError> {
        let request = Request::Admin {
            payload: request.to_bytes(),
        };
        match self.read(&request).await? {
            Response::Admin(body) => {
                crate::admin::AdminReply::from_bytes(&body).map_err(ClientError::Protocol)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Runs anti-entropy repair on the first seed that answers (it compares
    /// and converges every range it replicates); waits up to the client's
    /// request timeout, so give it a long one.
    pub async fn repair(&self) -> Result<RepairReport, ClientError> {
        match self.read(&Request::Repair).await? {
            Response::RepairReport(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Test hook: shifts the wall clock of the first seed that answers by
    /// `offset_ms` (nodes started with `--test-hooks` only).
    #[doc(hidden)]
    pub async fn adjust_clock(&self, offset_ms: i64) -> Result<(), ClientError> {
        match self.read(&Request::AdjustClock { offset_ms }).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Every replica's raw copy of a key's total cell (a debug read, to see
    /// replicas diverge and converge).
    pub async fn inspect_replicas(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<Vec<ReplicaView>, ClientError> {
        let request = Request::InspectReplicas {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        };
        match self.read(&request).await? {
            Response::Replicas(views) => Ok(views),
            other => Err(unexpected(other)),
        }
    }

    async fn read(&self, request: &Request) -> Result<Response, ClientError> {
        let preferred = match request {
            Request::Total { namespace, key, .. }
            | Request::Range { namespace, key, .. }
            | Request::Distinct { namespace, key, .. }
            | Request::Stats { namespace, key, .. }
            | Request::InspectReplicas { namespace, key } => {
                match read(&self.inner.routing).clone() {
                    Some(table) => self.inner.replica_addresses(&table, namespace, key),
                    None => Vec::new(),
                }
            }
            // Node-level requests go to the nodes the caller named.
            _ => self.inner.config.seeds.clone(),
        };
        match self.inner.execute(request, &preferred).await {
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

/// Refreshes the routing table until the client is dropped.
async fn refresh_forever(inner: Weak<Inner>) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => inner.config.routing_refresh,
            None => return,
        };
        tokio::time::sleep(every).await;
        match inner.upgrade() {
            Some(inner) => inner.refresh_routing().await,
            None => return,
        }
    }
}

impl Inner {
    /// Fetches and installs the routing table; keeps the old one when no
    /// node answers it.
    async fn refresh_routing(&self) {
        if let Ok(Response::Routing(table)) = self.execute(&Request::Routing, &[]).await {
            self.install_routing(table);
        }
    }

    fn install_routing(&self, table: RoutingTable) -> Arc<RoutingTable> {
        {
            let mut nodes = write(&self.nodes);
            for n in &table.nodes {
                nodes.add(&n.address, &self.config);
            }
        }
        let table = Arc::new(table);
        *write(&self.routing) = Some(table.clone());
        table
    }

    /// The addresses of a key's replicas, the one to lead first: the
    /// primary unless its breaker is open.
    fn replica_addresses(&self, table: &RoutingTable, namespace: &str, key: &[u8]) -> Vec<String> {
        let mut addrs: Vec<String> = table
            .replicas(token(namespace, key))
            .iter()
            .filter_map(|&h| table.address(h).map(str::to_owned))
            .collect();
        let nodes = read(&self.nodes);
        let now = Instant::now();
        if let Some(first_open) = addrs.iter().position(|a| {
            nodes.get(a).is_some_and(|node| {
                node.breaker
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .allows(now)
            })
        }) {
            addrs.rotate_left(first_open);
        }
        addrs
    }

    /// Runs a request with retries where they are safe, on the `preferred`
    /// nodes first (rotating through them on retries), then on any.
    async fn execute(
        &self,
        request: &Request,
        preferred: &[String],
    ) -> Result<Response, AttemptError> {
        let _permit = self.in_flight.acquire().await.map_err(|_| AttemptError {
            error: ClientError::Unreachable("client closed".into()),
            delivery: Delivery::NotSent,
        })?;
        let mut attempt = 0;
        // Whether an earlier attempt may have reached a node: then a later
        // "nothing applied" speaks only for itself, and the request's
        // outcome is unknown.
        let mut maybe_sent = false;
        loop {
            let result = self.attempt(request, preferred, attempt as usize).await;
            let retry = match &result {
                Ok(Response::Error { code, .. }) => {
                    code.is_transient() && (request.is_idempotent() || code.nothing_applied())
                }
                Ok(_) => false,
                // Credentials refused stay refused: no retry.
                Err(e) if e.error.is_access_refused() => false,
                Err(e) => request.is_idempotent() || e.delivery == Delivery::NotSent,
            };
            if !retry || attempt >= self.config.max_retries {
                return if maybe_sent && !request.is_read() {
                    after_maybe_sent(result)
                } else {
                    result
                };
            }
            maybe_sent |= matches!(&result, Err(e) if e.delivery == Delivery::MaybeSent);
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The request timeout as a write's `timeout_ms`.
    fn timeout_ms(&self) -> u32 {
        self.config
            .request_timeout
            .as_millis()
            .min(u32::MAX as u128) as u32
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

    /// The node for attempt `attempt`: the preferred ones in turn, then
    /// the others round robin, skipping open breakers.
    fn pick(&self, preferred: &[String], attempt: usize) -> Option<Arc<Node>> {
        let nodes = read(&self.nodes);
        let now = Instant::now();
        let allows = |node: &Node| {
            node.breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allows(now)
        };
        let k = preferred.len();
        let from_preferred = (0..k)
            .filter_map(|i| nodes.get(&preferred[(attempt + i) % k]))
            .find(|node| allows(node));
        if let Some(node) = from_preferred {
            return Some(node.clone());
        }
        let n = nodes.list.len();
        let start = self.next_node.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &nodes.list[(start + i) % n])
            .find(|node| allows(node))
            .cloned()
    }

    /// One attempt on the chosen node.
    async fn attempt(
        &self,
        request: &Request,
        preferred: &[String],
        attempt: usize,
    ) -> Result<Response, AttemptError> {
        let Some(node) = self.pick(preferred, attempt) else {
            return Err(AttemptError {
                error: ClientError::Unreachable("every node's circuit breaker is open".into()),
                delivery: Delivery::NotSent,
            });
        };
        let node = node.as_ref();
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

    /// What connections present.
    fn credentials(&self) -> Credentials {
        match &self.config.token {
            Some(token) => Credentials::Token(token.0.clone()),
            None => Credentials::None,
        }
    }

    /// The node's open connection, reconnecting if it broke.
    async fn connection(&self, node: &Node) -> Result<Arc<Connection>, AttemptError> {
        let mut slot = node.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(
            Connection::open_with(
                &node.addr,
                self.config.connect_timeout,
                &self.credentials(),
                self.config.tls.as_ref(),
            )
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

/// Whether an op-id increment with this outcome is worth sending again.
fn worth_resending(outcome: &Outcome<()>) -> bool {
    match outcome {
        Outcome::Ok(()) => false,
        Outcome::Indeterminate(_) => true,
        Outcome::Failed(ClientError::Node { code, .. }) => code.is_transient(),
        Outcome::Failed(_) => false,
    }
}

/// The outcome of an op-id increment after another attempt: a refusal now
/// does not undo an earlier attempt that may have been applied.
fn later_attempt(earlier: &Outcome<()>, now: Outcome<()>) -> Outcome<()> {
    match (earlier, now) {
        (Outcome::Indeterminate(e), Outcome::Failed(_)) => Outcome::Indeterminate(e.clone()),
        (_, now) => now,
    }
}

/// The last attempt's result of a write an earlier attempt may have
/// applied: whatever it refuses as "nothing applied" may have been
/// applied by that earlier attempt, so it is unknown instead.
fn after_maybe_sent(result: Result<Response, AttemptError>) -> Result<Response, AttemptError> {
    match result {
        Ok(Response::Increment(results)) => Ok(Response::Increment(
            results
                .into_iter()
                .map(|r| match r {
                    ItemResult::Failed(code) => ItemResult::Indeterminate(code),
                    other => other,
                })
                .collect(),
        )),
        Ok(Response::Error { code, message }) => Err(AttemptError {
            error: ClientError::Node { code, message },
            delivery: Delivery::MaybeSent,
        }),
        Ok(other) => Ok(other),
        Err(e) => Err(AttemptError {
            error: e.error,
            delivery: Delivery::MaybeSent,
        }),
    }
}
