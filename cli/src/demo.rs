//! `tally demo`: tally's main job in one command. Starts a local 3-node
//! cluster (replication factor 3, QUORUM) with embedded defaults in a
//! temporary directory, streams synthetic video events (Zipf over videos;
//! views, likes, shares and watch time) for a few seconds, kills one node
//! with SIGKILL partway through and restarts it, waits for the hints to
//! drain, then prints the top videos and a per-minute series and checks
//! every counter against what the cluster acknowledged and that all three
//! replicas hold identical copies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::{Client, ClientConfig, Increment, Outcome, Resolution};
use tally_testkit::NodeProcess;

use crate::bench::Zipf;
use crate::timespec;

/// Demo settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds of event streaming.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Number of videos.
    #[arg(long, default_value_t = 1_000)]
    pub videos: usize,
    /// Do not kill and restart a node during the run.
    #[arg(long)]
    pub no_failure: bool,
    /// Keep the data directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

const EVENTS: [&str; 4] = ["view", "like", "share", "watch_ms"];
const NODES: usize = 3;

fn node_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("tally-node");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build the whole workspace first (cargo build --release --workspace)",
            path.display()
        ))
    }
}

/// One local node of the demo cluster: its place, and its process while
/// it runs (started, killed and stopped through the workspace's one
/// launcher of local nodes, `tally-testkit`).
struct DemoNode {
    host_id: usize,
    addr: String,
    dir: PathBuf,
    process: Option<NodeProcess>,
}

impl DemoNode {
    /// Starts the node and waits until it serves.
    async fn start(&mut self, members: &str) -> Result<(), String> {
        let (bin, dir, addr) = (node_binary()?, self.dir.clone(), self.addr.clone());
        let args = vec![
            "--host-id".to_owned(),
            self.host_id.to_string(),
            "--members".to_owned(),
            members.to_owned(),
        ];
        let process =
            tokio::task::spawn_blocking(move || NodeProcess::spawn(&bin, &dir, &addr, &args))
                .await
                .map_err(|e| e.to_string())??;
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL.
    fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill9();
        }
    }

    /// SIGTERM: a clean shutdown (flush, close), waited for.
    async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let stopped = tokio::task::spawn_blocking(move || process.stop()).await;
            if let Ok(Err(e)) = stopped {
                eprintln!("tally demo: {e}");
            }
        }
    }
}

async fn wait_for(addr: &str) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(ClientConfig::with_seeds([addr])).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("node {addr} did not come up: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until every node sees the other nodes up.
async fn wait_all_up(nodes: &[DemoNode]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        let client = wait_for(&node.addr).await?;
        loop {
            let status = client.status().await.map_err(|e| e.to_string())?;
            if status.peers.iter().all(|p| p.up) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("node {} does not see its peers", node.host_id));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn cluster(dir: &Path) -> Result<(Vec<DemoNode>, String), String> {
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        nodes.push(DemoNode {
            host_id: i,
            addr: format!(
                "127.0.0.1:{}",
                tally_testkit::unused_local_port().map_err(|e| e.to_string())?
            ),
            dir: dir.join(format!("node{i}")),
            process: None,
        });
    }
    let members = nodes
        .iter()
        .map(|n| format!("{}={}", n.host_id, n.addr))
        .collect::<Vec<_>>()
        .join(",");
    Ok((nodes, members))
}

/// Runs the demo.
pub async fn run(args: &DemoArgs, json: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("tally-demo-{}", std::process::id()));
    let (mut nodes, members) = cluster(&dir)?;
    let mut result = Ok(());
    for node in &mut nodes {
        if let Err(e) = node.start(&members).await {
            result = Err(e);
        }
    }
    if result.is_ok() {
        result = demo(args, json, &mut nodes, &members).await;
    }
    for node in &mut nodes {
        node.stop().await;
    }
    if args.keep {
        eprintln!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Acknowledged and maybe-applied sums per counter.
#[derive(Debug, Default, Clone, Copy)]
struct Expected {
    acked_sum: i64,
    acked_count: u64,
    maybe_sum: i64,
    maybe_count: u64,
}

async fn demo(
    args: &DemoArgs,
    json: bool,
    nodes: &mut [DemoNode],
    members: &str,
) -> Result<(), String> {
    for node in nodes.iter() {
        wait_for(&node.addr).await?;
    }
    wait_all_up(nodes).await?;
    let seeds: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let client = Client::connect(ClientConfig::with_seeds(seeds.clone()))
        .await
        .map_err(|e| e.to_string())?;
    if !json {
        println!(
            "tally demo: {NODES} nodes at {}, replication factor 3, QUORUM; streaming video events for {} s ...",
            seeds.join(", "),
            args.seconds
        );
    }
    let zipf = Arc::new(Zipf::new(args.videos, 1.1));
    let expected: Arc<Mutex<HashMap<String, Expected>>> = Arc::default();
    let now = timespec::now_ms();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut producers = Vec::new();
    for p in 0..8u64 {
        let (client, zipf, expected) = (client.clone(), zipf.clone(), expected.clone());
        producers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(p);
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let items: Vec<Increment> = (0..500)
                    .map(|_| {
                        let video = zipf.sample(&mut rng);
                        let event = EVENTS[rng.random_range(0..EVENTS.len())];
                        let delta = if event == "watch_ms" {
                            rng.random_range(1_000..60_000)
                        } else {
                            1
                        };
                        Increment {
                            namespace: "events".into(),
                            key: format!("video:{video:05}/{event}").into_bytes(),
                            // Spread over the last half hour, for the series.
                            timestamp_ms: now - rng.random_range(0..30 * 60_000),
                            delta,
                            events: 1,
                            op_id: None,
                        }
                    })
                    .collect();
                let outcomes = client.increment(items.clone()).await;
                let mut expected = expected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (item, outcome) in items.iter().zip(outcomes) {
                    let e = expected
                        .entry(String::from_utf8_lossy(&item.key).into_owned())
                        .or_default();
                    match outcome {
                        Outcome::Ok(()) => {
                            e.acked_sum += item.delta;
                            e.acked_count += 1;
                        }
                        Outcome::Indeterminate(_) => {
                            e.maybe_sum += item.delta;
                            e.maybe_count += 1;
                        }
                        Outcome::Failed(_) => {}
                    }
                }
                sent += 500;
            }
            sent
        }));
    }
    if !args.no_failure {
        let third = Duration::from_secs(args.seconds) / 3;
        tokio::time::sleep(third).await;
        nodes[NODES - 1].kill9();
        if !json {
            println!(
                "  {:>5.1} s: killed node {NODES} with SIGKILL; writes go on at QUORUM, hints pile up",
                started.elapsed().as_secs_f64(),
            );
        }
        tokio::time::sleep(third).await;
        nodes[NODES - 1].start(members).await?;
        wait_all_up(nodes).await?;
        if !json {
            println!(
                "  {:>5.1} s: restarted node {NODES}; hints are replayed to it",
                started.elapsed().as_secs_f64(),
            );
        }
    }
    let mut sent = 0;
    for p in producers {
        sent += p.await.map_err(|e| e.to_string())?;
    }
    let expected = expected
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let acked_events: u64 = expected.values().map(|e| e.acked_count).sum();
    let maybe_events: u64 = expected.values().map(|e| e.maybe_count).sum();

    // Wait for every node's hints to drain.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let hints_written = loop {
        let mut pending = 0;
        let mut written = 0;
        for addr in &seeds {
            let node = wait_for(addr).await?;
            let status = node.status().await.map_err(|e| e.to_string())?;
            pending += status.hints_pending;
            written += status.hints_written;
        }
        if pending == 0 {
            break written;
        }
        if Instant::now() > drain_deadline {
            return Err(format!("{pending} hints still pending after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Every replica holds the same copy (checked before any read could
    // repair them: this is hinted handoff's work).
    let mut mismatches = Vec::new();
    let mut diverged = Vec::new();
    for key in expected.keys() {
        let views = client
            .inspect_replicas("events", key.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let agree = views.len() == NODES
            && views.iter().all(|v| v.error.is_none())
            && views.windows(2).all(|w| w[0].shards == w[1].shards);
        if !agree {
            diverged.push(key.clone());
        }
    }
    let diverged_count = diverged.len();
    if !diverged.is_empty() {
        diverged.truncate(5);
        mismatches.push(format!(
            "{diverged_count} counters differ between replicas after the hints drained, e.g. {}",
            diverged.join(", ")
        ));
    }

    // Check every counter: at least what was acknowledged, at most that
    // plus the increments whose outcome is unknown (cut off by the kill).
    for (key, e) in &expected {
        let got = client
            .total("events", key.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let sum_ok = got.sum >= e.acked_sum && got.sum <= e.acked_sum + e.maybe_sum;
        let count_ok = got.count >= e.acked_count && got.count <= e.acked_count + e.maybe_count;
        if !(sum_ok && count_ok) {
            mismatches.push(format!(
                "{key}: stored {}/{}, acknowledged {}/{} (+ up to {}/{} unknown)",
                got.sum, got.count, e.acked_sum, e.acked_count, e.maybe_sum, e.maybe_count
            ));
        }
    }
    let acked: HashMap<String, (i64, u64)> = expected
        .iter()
        .map(|(k, e)| (k.clone(), (e.acked_sum, e.acked_count)))
        .collect();
    let mut top: Vec<(&String, &(i64, u64))> =
        acked.iter().filter(|(k, _)| k.ends_with("/view")).collect();
    top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    top.truncate(10);
    let series_key = top.first().map(|(k, _)| k.to_string()).unwrap_or_default();
    let series = client
        .range(
            "events",
            series_key.as_bytes(),
            Resolution::Minute,
            now - 30 * 60_000,
            now + 60_000,
        )
        .await
        .map_err(|e| e.to_string())?;
    let series_sum: i64 = series.iter().map(|p| p.sum).sum();
    let series_total = client
        .total("events", series_key.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if !top.is_empty() && series_total.sum != series_sum {
        mismatches.push(format!(
            "{series_key}: per-minute series sums to {series_sum}, its total is {}",
            series_total.sum
        ));
    }

    if json {
        println!(
            "{}",
            serde_json::json!({
                "events_sent": sent, "events_acknowledged": acked_events, "counters": acked.len(),
                "indeterminate": maybe_events, "hints_written": hints_written,
                "top": top.iter().map(|(k, (s, _))| serde_json::json!({"key": k, "views": s})).collect::<Vec<_>>(),
                "series": series, "mismatches": mismatches,
            })
        );
    } else {
        println!(
            "sent {sent} events in {} s ({:.0}/s); {acked_events} acknowledged across {} counters, \
             {maybe_events} indeterminate (in flight at the kill); {hints_written} cells hinted and replayed\n",
            args.seconds,
            sent as f64 / args.seconds.max(1) as f64,
            acked.len()
        );
        println!("top videos by views:");
        println!("  {:<22} {:>10}", "key", "views");
        for (key, (sum, _)) in &top {
            println!("  {key:<22} {sum:>10}");
        }
        println!("\nviews per minute of {series_key} (last 30 min, UTC):");
        for p in &series {
            let bar = "#".repeat(
                ((p.sum as f64 / series.iter().map(|p| p.sum).max().unwrap_or(1).max(1) as f64)
                    * 40.0) as usize,
            );
            println!(
                "  {}  {:>6}  {bar}",
                timespec::format(p.bucket_start_ms),
                p.sum
            );
        }
        println!();
        if mismatches.is_empty() {
            println!(
                "check: all {} counters hold what the cluster acknowledged, and all {NODES} replicas agree",
                acked.len()
            );
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} counters disagree: {}",
            mismatches.len(),
            mismatches.join("; ")
        ))
    }
}
