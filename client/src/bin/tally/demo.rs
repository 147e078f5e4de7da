//! `tally demo`: tally's main job in one command. Starts a node with
//! embedded defaults in a temporary directory, streams synthetic video
//! events (Zipf over videos; views, likes, shares and watch time) for a few
//! seconds, prints the top videos and a per-minute series, and checks every
//! counter against what the node acknowledged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::{Client, ClientConfig, Increment, Outcome, Resolution};
use tokio::process::{Child, Command};

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
    /// Keep the data directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

const EVENTS: [&str; 4] = ["view", "like", "share", "watch_ms"];

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

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

async fn start_node(dir: &std::path::Path, addr: &str) -> Result<Child, String> {
    Command::new(node_binary()?)
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting tally-node: {e}"))
}

async fn wait_for(addr: &str) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(ClientConfig::with_seeds([addr])).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("node did not come up: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs, json: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("tally-demo-{}", std::process::id()));
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut node = start_node(&dir, &addr).await?;
    let result = demo(args, json, &addr).await;
    if let Some(pid) = node.id() {
        // SIGTERM: a clean shutdown (flush, close).
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
    if args.keep {
        eprintln!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn demo(args: &DemoArgs, json: bool, addr: &str) -> Result<(), String> {
    let client = wait_for(addr).await?;
    if !json {
        println!(
            "tally demo: 1 node at {addr}; streaming video events for {} s ...",
            args.seconds
        );
    }
    let zipf = Arc::new(Zipf::new(args.videos, 1.1));
    let acknowledged: Arc<Mutex<HashMap<String, (i64, u64)>>> = Arc::default();
    let unknown = Arc::new(Mutex::new(0u64));
    let now = timespec::now_ms();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut producers = Vec::new();
    for p in 0..8u64 {
        let (client, zipf, acknowledged, unknown) = (
            client.clone(),
            zipf.clone(),
            acknowledged.clone(),
            unknown.clone(),
        );
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
                            op_id: None,
                        }
                    })
                    .collect();
                let outcomes = client.increment(items.clone()).await;
                let mut acked = acknowledged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (item, outcome) in items.iter().zip(outcomes) {
                    match outcome {
                        Outcome::Ok(()) => {
                            let e = acked
                                .entry(String::from_utf8_lossy(&item.key).into_owned())
                                .or_default();
                            e.0 += item.delta;
                            e.1 += 1;
                        }
                        Outcome::Indeterminate(_) => {
                            *unknown
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1
                        }
                        Outcome::Failed(_) => {}
                    }
                }
                sent += 500;
            }
            sent
        }));
    }
    let mut sent = 0;
    for p in producers {
        sent += p.await.map_err(|e| e.to_string())?;
    }
    let acked = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let acked_events: u64 = acked.values().map(|(_, c)| c).sum();

    // Check every counter against what was acknowledged.
    let mut mismatches = Vec::new();
    for (key, (sum, count)) in &acked {
        let got = client
            .total("events", key.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        if (got.sum, got.count) != (*sum, *count) {
            mismatches.push(format!(
                "{key}: stored {}/{}, acknowledged {sum}/{count}",
                got.sum, got.count
            ));
        }
    }
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
    if top.first().is_some_and(|(_, (sum, _))| *sum != series_sum) {
        mismatches.push(format!(
            "{series_key}: per-minute series sums to {series_sum}"
        ));
    }

    if json {
        println!(
            "{}",
            serde_json::json!({
                "events_sent": sent, "events_acknowledged": acked_events, "counters": acked.len(),
                "indeterminate": *unknown.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                "top": top.iter().map(|(k, (s, _))| serde_json::json!({"key": k, "views": s})).collect::<Vec<_>>(),
                "series": series, "mismatches": mismatches,
            })
        );
    } else {
        println!(
            "sent {sent} events in {} s ({:.0}/s); {acked_events} acknowledged across {} counters\n",
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
                "check: all {} counters equal what the node acknowledged",
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
