//! One harness run: start the cluster, run the workload while the nemesis
//! injects faults, heal, wait for hints to drain, read the final state
//! back, and check the history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;

use crate::checker::{check, FinalState, Verdict};
use crate::cluster::{Cluster, ClusterConfig};
use crate::history::{History, Op};
use crate::nemesis::{self, FaultKind, FaultWindow};
use crate::workload::{self, WorkloadConfig};

/// Everything a run needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunConfig {
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The clients.
    pub workload: WorkloadConfig,
    /// The faults to draw from (empty: none).
    pub nemeses: Vec<FaultKind>,
    /// How long the workload runs.
    pub time_limit: Duration,
    /// Seeds the nemesis schedule and the clients.
    pub seed: u64,
    /// Run anti-entropy repair on every node after healing, before the
    /// final state is read (needed to converge replicas that lost unsynced
    /// writes; without it, convergence is hints' and read repair's alone).
    pub repair: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// The checker's verdict.
    pub verdict: Verdict,
    /// The history.
    pub ops: Vec<Op>,
    /// The faults injected.
    pub faults: Vec<FaultWindow>,
    /// The cluster after healing, if it could be read.
    pub final_state: Option<FinalState>,
    /// What went wrong around the checks (why the final state is missing).
    pub notes: Vec<String>,
}

/// Calls `progress` with the seconds elapsed while the workload runs.
pub async fn run(config: &RunConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<RunResult, String> {
    let mut cluster = Cluster::start(config.cluster.clone()).await?;
    let history = Arc::new(History::new());
    let started = Instant::now();
    let until = started + config.time_limit;
    let mut clients = Vec::new();
    for c in 0..config.workload.concurrency {
        let client = cluster
            .client(c % cluster.len(), config.workload.timeout)
            .await?;
        clients.push(tokio::spawn(workload::client_loop(
            c as u32,
            client,
            history.clone(),
            config.workload.clone(),
            until,
            config.seed,
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut faults = Vec::new();
    let sleep_until = |deadline: Instant| tokio::time::sleep_until(deadline.min(until).into());
    loop {
        sleep_until(Instant::now() + nemesis::quiet(&mut rng)).await;
        progress(started.elapsed().as_secs());
        if Instant::now() + Duration::from_millis(500) >= until {
            break;
        }
        let start_ns = history.now_ns();
        let Some((kind, what, active)) =
            nemesis::inject(&mut cluster, &config.nemeses, &mut rng).await
        else {
            sleep_until(until).await;
            break;
        };
        sleep_until(Instant::now() + nemesis::hold(&mut rng)).await;
        nemesis::heal(&mut cluster, active).await?;
        faults.push(FaultWindow {
            kind,
            what,
            start_ns,
            end_ns: history.now_ns(),
        });
        progress(started.elapsed().as_secs());
    }
    let mut producers = Vec::new();
    let mut notes = Vec::new();
    for client in clients {
        match client.await {
            Ok(Ok(Some(run))) => producers.push(run),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => notes.push(format!("a client stopped: {e}")),
            Err(e) => notes.push(format!("a client task failed: {e}")),
        }
    }
    progress(config.time_limit.as_secs());

    cluster.heal()?;
    let ready = cluster.wait_ready(Duration::from_secs(30)).await;
    // The producers resend what they spooled once the cluster is whole.
    let drains: Vec<_> = producers
        .into_iter()
        .map(|run| {
            let history = history.clone();
            tokio::spawn(async move { run.complete(&history, Duration::from_secs(60)).await })
        })
        .collect();
    for drain in drains {
        if let Err(e) = drain.await {
            notes.push(format!("a producer's drain failed: {e}"));
        }
    }
    let final_state = if !ready {
        notes.push("after healing, the nodes did not all see each other within 30 s".into());
        None
    } else if !cluster.wait_hints_drained(Duration::from_secs(60)).await {
        notes.push("hints did not drain within 60 s of healing".into());
        None
    } else if let Err(e) = repair_all(&cluster, config.repair, &mut notes).await {
        notes.push(e);
        None
    } else {
        match read_final(&cluster, config.workload.keys).await {
            Ok(state) => Some(state),
            Err(e) => {
                notes.push(format!("reading the final state failed: {e}"));
                None
            }
        }
    };
    cluster.stop();
    let ops = history.ops();
    let verdict = check(
        &ops,
        final_state.as_ref(),
        config.workload.producer.is_some(),
    );
    Ok(RunResult {
        verdict,
        ops,
        faults,
        final_state,
        notes,
    })
}

/// Runs repair on every node in turn (when asked), noting what it did.
async fn repair_all(
    cluster: &Cluster,
    repair: bool,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    if !repair {
        return Ok(());
    }
    for i in 0..cluster.len() {
        let client = cluster.client(i, Duration::from_secs(600)).await?;
        let r = client
            .repair()
            .await
            .map_err(|e| format!("repair on node {}: {e}", i + 1))?;
        notes.push(format!(
            "repair on node {}: {} of {} leaves differed, {} cells sent",
            i + 1,
            r.leaves_differing,
            r.leaves,
            r.cells_repaired
        ));
    }
    Ok(())
}

/// Every replica's copy of every key, then a QUORUM read of each: the
/// copies first, so that the reads' repairs cannot hide a divergence.
async fn read_final(cluster: &Cluster, keys: usize) -> Result<FinalState, String> {
    let client = cluster.client(0, Duration::from_secs(5)).await?;
    let mut state = FinalState::default();
    for key in workload::key_names(keys) {
        let views = client
            .inspect_replicas("events", key.as_bytes())
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        state.replicas.insert(key, views);
    }
    for key in workload::key_names(keys) {
        let value = client
            .total("events", key.as_bytes())
            .await
            .ok()
            .map(|c| c.sum);
        state.reads.insert(key, value);
    }
    Ok(state)
}
