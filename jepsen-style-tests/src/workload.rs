//! The workload: concurrent clients incrementing and reading a few
//! counters through the client library, every operation recorded.
//!
//! Client `c` talks to node `c mod n` only (not token-aware), as Jepsen
//! binds a client to a node, so a partition puts clients on both sides.
//! Increments add a random positive delta (which keeps the checker's
//! bounds exact); reads are QUORUM totals. Outcomes map to the history as
//! the library reports them: `Ok` -> ok, `Failed` -> fail, `Indeterminate`
//! -> info; a read that returns no value is a fail (reads change nothing).
//!
//! With `producer` each client adds its increments through an aggregating
//! `Producer` with a spool of its own: an increment's invoke is recorded
//! when it is added, its completion once the producer has drained after
//! the faults healed (ok if the producer settled every event it was given
//! as acknowledged, else info), and the checker then requires the final
//! totals to be exact.
//!
//! With `op_ids` every increment carries a fresh op id and is sent twice,
//! the second time after the first's outcome is known, as a producer
//! that lost an answer retries: the operation is one increment of its
//! delta whatever the sends did, so a node that counts the retry again
//! reads above what is possible. Its outcome is ok when either send was
//! acknowledged, fail when both failed (nothing applied), else info.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::ingest::SpoolConfig;
use tally_client::{new_op_id, Client, Increment, Outcome, Producer, ProducerConfig};

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
    /// Increments carry op ids and are each sent twice.
    pub op_ids: bool,
    /// Increments go through a spooling producer per client, whose spool
    /// directories are under this one.
    pub producer: Option<std::path::PathBuf>,
}

/// A client's producer and the increments it was given, to complete
/// once it has drained.
#[derive(Debug)]
pub struct ProducerRun {
    /// The client.
    pub process: u32,
    /// Its producer, still resending.
    pub producer: Producer,
    /// The increments added: (history op id, key, delta).
    pub added: Vec<(u64, String, i64)>,
}

impl ProducerRun {
    /// Waits up to `timeout` for the producer to settle everything, then
    /// completes every increment it was given: ok if it acknowledged
    /// every event, else info.
    pub async fn complete(self, history: &History, timeout: Duration) {
        let drained = self.producer.drain(timeout).await;
        let report = self.producer.report();
        let all = drained && report.delivered.events_acknowledged == report.events_added;
        let (ty, error) = if all {
            (OpType::Ok, None)
        } else {
            (OpType::Info, Some(format!("producer: {report:?}")))
        };
        for (id, key, delta) in self.added {
            history.complete(
                self.process,
                id,
                ty,
                OpKind::Incr,
                &key,
                Some(delta),
                error.clone(),
            );
        }
    }
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

/// Runs one client until `until`; in producer mode, returns its producer
/// (flushed, maybe still resending) and what it was given.
pub async fn client_loop(
    process: u32,
    client: Client,
    history: Arc<History>,
    config: WorkloadConfig,
    until: Instant,
    seed: u64,
) -> Result<Option<ProducerRun>, String> {
    let mut run = match &config.producer {
        Some(dir) => {
            let producer_config = ProducerConfig {
                max_delay: Duration::from_millis(5),
                max_cells: 200,
                max_in_flight: 2,
                retries: 3,
                producer_id: Some(process),
                ..ProducerConfig::default()
            };
            let spool = dir.join(format!("spool-{process}"));
            let producer = Producer::with_spool(
                client.clone(),
                producer_config,
                &spool,
                SpoolConfig::default(),
            )
            .map_err(|e| e.to_string())?;
            Some(ProducerRun {
                process,
                producer,
                added: Vec::new(),
            })
        }
        None => None,
    };
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
            if let Some(run) = &mut run {
                run.producer
                    .add("events", key.as_bytes(), now_ms(), delta)
                    .await
                    .map_err(|e| e.to_string())?;
                run.added.push((id, key.clone(), delta));
                continue;
            }
            let item = Increment {
                namespace: "events".into(),
                key: key.as_bytes().to_vec(),
                timestamp_ms: now_ms(),
                delta,
                events: 1,
                op_id: config.op_ids.then(new_op_id),
            };
            let sends = if config.op_ids { 2 } else { 1 };
            let mut outcome = (OpType::Fail, None);
            for _ in 0..sends {
                let sent = client.increment(vec![item.clone()]).await.pop();
                outcome = combined(outcome, sent);
            }
            let (ty, error) = outcome;
            history.complete(process, id, ty, OpKind::Incr, key, Some(delta), error);
        }
    }
    if let Some(run) = &run {
        run.producer.flush().await;
    }
    Ok(run)
}

/// The outcome of an operation sent once more, given its outcome so far
/// (`Fail` before the first send): acknowledged once is acknowledged;
/// failed is only what failed every time.
fn combined(
    so_far: (OpType, Option<String>),
    sent: Option<Outcome<()>>,
) -> (OpType, Option<String>) {
    let this = match sent {
        Some(Outcome::Ok(())) => (OpType::Ok, None),
        Some(Outcome::Failed(e)) => (OpType::Fail, Some(e.to_string())),
        Some(Outcome::Indeterminate(e)) => (OpType::Info, Some(e.to_string())),
        None => (OpType::Info, Some("no outcome".into())),
    };
    match (so_far.0, this.0) {
        (OpType::Ok, _) => so_far,
        (_, OpType::Ok) | (OpType::Fail, _) => this,
        _ => so_far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_client::{ClientError, ErrorCode};

    fn failed() -> Option<Outcome<()>> {
        Some(Outcome::Failed(ClientError::Node {
            code: ErrorCode::Unavailable,
            message: "down".into(),
        }))
    }

    fn unknown() -> Option<Outcome<()>> {
        Some(Outcome::Indeterminate(ClientError::Timeout(
            std::time::Duration::from_secs(1),
        )))
    }

    #[test]
    fn an_operation_is_ok_if_any_send_was_and_failed_only_if_every_send_failed() {
        let start = || (OpType::Fail, None);
        let after = |sends: Vec<Option<Outcome<()>>>| sends.into_iter().fold(start(), combined).0;
        assert_eq!(after(vec![Some(Outcome::Ok(()))]), OpType::Ok);
        assert_eq!(after(vec![failed()]), OpType::Fail);
        assert_eq!(after(vec![unknown()]), OpType::Info);
        assert_eq!(after(vec![failed(), failed()]), OpType::Fail);
        assert_eq!(after(vec![failed(), unknown()]), OpType::Info);
        assert_eq!(after(vec![unknown(), failed()]), OpType::Info);
        assert_eq!(after(vec![unknown(), Some(Outcome::Ok(()))]), OpType::Ok);
        assert_eq!(after(vec![Some(Outcome::Ok(())), failed()]), OpType::Ok);
        assert_eq!(after(vec![Some(Outcome::Ok(())), None]), OpType::Ok);
    }
}
