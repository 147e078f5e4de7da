//! The workload: concurrent clients incrementing and reading a few
//! counters through the client library, every operation recorded.
//!
//! Client `c` talks to node `c mod n` only (not token-aware), as Jepsen
//! binds a client to a node, so a partition puts clients on both sides.
//! Increments add a random positive delta (which keeps the checker's
//! bounds exact); reads are QUORUM totals. Outcomes map to the history as
//! the library reports them: `Ok` -> ok, `Failed` -> fail, `Indeterminate`
//! -> info; a read that returns no value is a fail (reads change nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::{Client, Increment, Outcome};

use crate::history::{History, OpKind, OpType};

/// The workload's shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Operations per second over all clients.
    pub rate: f64,
    /// Counters (`k0`, `k1`, ...).
    pub keys: usize,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Time a client waits for an answer.
    pub timeout: Duration,
}

/// The counters' names.
pub fn key_names(keys: usize) -> Vec<String> {
    (0..keys).map(|k| format!("k{k}")).collect()
}

fn now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // timestamps of the events the clients report
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs one client until `until`.
pub async fn client_loop(
    process: u32,
    client: Client,
    history: Arc<History>,
    config: WorkloadConfig,
    until: Instant,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (u64::from(process) << 32));
    let keys = key_names(config.keys.max(1));
    let interval = Duration::from_secs_f64(config.concurrency as f64 / config.rate.max(0.1));
    let mut next = Instant::now() + interval.mul_f64(rng.random::<f64>());
    while Instant::now() < until {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let key = &keys[rng.random_range(0..keys.len())];
        if rng.random::<f64>() < config.read_fraction {
            let id = history.invoke(process, OpKind::Read, key, None);
            let (ty, value, error) = match client.total("events", key.as_bytes()).await {
                Ok(count) => (OpType::Ok, Some(count.sum), None),
                Err(e) => (OpType::Fail, None, Some(e.to_string())),
            };
            history.complete(process, id, ty, OpKind::Read, key, value, error);
        } else {
            let delta = rng.random_range(1..=5);
            let id = history.invoke(process, OpKind::Incr, key, Some(delta));
            let item = Increment {
                namespace: "events".into(),
                key: key.as_bytes().to_vec(),
                timestamp_ms: now_ms(),
                delta,
                events: 1,
                op_id: None,
            };
            let outcome = client.increment(vec![item]).await.pop();
            let (ty, error) = match outcome {
                Some(Outcome::Ok(())) => (OpType::Ok, None),
                Some(Outcome::Failed(e)) => (OpType::Fail, Some(e.to_string())),
                Some(Outcome::Indeterminate(e)) => (OpType::Info, Some(e.to_string())),
                None => (OpType::Info, Some("no outcome".into())),
            };
            history.complete(process, id, ty, OpKind::Incr, key, Some(delta), error);
        }
    }
}
