//! One real `tally-node` process over TCP: rollups across minute, hour and
//! day boundaries agree; kill -9 keeps every acknowledged increment in
//! `sync` mode; a clean restart keeps the data and the shard identity.

#![allow(clippy::unwrap_used)]

mod common;

use common::{free_port, now_ms, NodeProcess};
use tally_client::{Increment, Outcome, Resolution};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn inc(key: &str, timestamp_ms: i64, delta: i64) -> Increment {
    Increment {
        namespace: "events".into(),
        key: key.as_bytes().to_vec(),
        timestamp_ms,
        delta,
        events: 1,
        op_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_agree_across_minute_hour_and_day_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &format!("127.0.0.1:{}", free_port()), "sync");
    let client = node.client().await;
    // Midnight two days ago, and times straddling it and other boundaries.
    let midnight = (now_ms() - 2 * DAY).div_euclid(DAY) * DAY;
    let times = [
        midnight - HOUR - 1,
        midnight - MIN - 1,
        midnight - 1,
        midnight,
        midnight + 1,
        midnight + MIN - 1,
        midnight + MIN,
        midnight + HOUR,
        midnight + DAY - 1,
        midnight + DAY,
    ];
    let items: Vec<Increment> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| inc("video:1/view", t, i as i64 + 1))
        .collect();
    let expected_sum: i64 = (1..=times.len() as i64).sum();
    for outcome in client.increment(items).await {
        assert_eq!(outcome, Outcome::Ok(()));
    }
    let (start, end) = (midnight - DAY, midnight + 2 * DAY);
    let mut sums = Vec::new();
    for res in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
        let points = client
            .range("events", b"video:1/view", res, start, end)
            .await
            .unwrap();
        assert!(points
            .windows(2)
            .all(|w| w[0].bucket_start_ms < w[1].bucket_start_ms));
        assert!(points
            .iter()
            .all(|p| p.bucket_start_ms == res.bucket_start(p.bucket_start_ms)));
        sums.push((
            points.iter().map(|p| p.sum).sum::<i64>(),
            points.iter().map(|p| p.count).sum::<u64>(),
        ));
    }
    let total = client.total("events", b"video:1/view").await.unwrap();
    assert_eq!(
        sums,
        vec![(expected_sum, times.len() as u64); 3],
        "minute, hour and day rollups"
    );
    assert_eq!((total.sum, total.count), (expected_sum, times.len() as u64));
    // The day cell of the midnight bucket holds exactly what fell in that day.
    let day = client
        .range(
            "events",
            b"video:1/view",
            Resolution::Day,
            midnight,
            midnight + DAY,
        )
        .await
        .unwrap();
    assert_eq!(day.len(), 1);
    assert_eq!(day[0].sum, (4..=9).sum::<i64>());
    // Stats over the whole span reads few cells and agrees.
    let (stats, cells) = client
        .stats("events", b"video:1/view", start, end)
        .await
        .unwrap();
    assert_eq!((stats.sum, stats.count), (expected_sum, times.len() as u64));
    assert!(cells <= 10, "{cells} cells read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_increment_in_sync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeProcess::start(dir.path(), &addr, "sync");
    let client = node.client().await;
    let now = now_ms();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked_so_far = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut producers = Vec::new();
    for p in 0..8 {
        let (client, stop, acked_so_far) = (client.clone(), stop.clone(), acked_so_far.clone());
        producers.push(tokio::spawn(async move {
            let (mut acked, mut attempted) = (0i64, 0i64);
            let key = format!("video:{p}/view");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let items = (0..10).map(|_| inc(&key, now, 1)).collect();
                attempted += 10;
                let outcomes = client.increment(items).await;
                let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
                acked += ok;
                acked_so_far.fetch_add(ok, std::sync::atomic::Ordering::SeqCst);
                if outcomes.iter().any(|o| !o.is_ok()) {
                    break; // the node is gone
                }
            }
            (key, acked, attempted)
        }));
    }
    // Kill 1.5 s into the load, once something has been acknowledged (a
    // loaded machine may start slowly).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked_so_far.load(std::sync::atomic::Ordering::SeqCst) == 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    node.kill9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut results = Vec::new();
    for p in producers {
        results.push(p.await.unwrap());
    }
    let node = NodeProcess::start(dir.path(), &addr, "sync");
    let client = node.client().await;
    let mut total_acked = 0;
    for (key, acked, attempted) in results {
        let total = client.total("events", key.as_bytes()).await.unwrap();
        assert!(
            total.sum >= acked,
            "{key}: {acked} acknowledged, {} survived",
            total.sum
        );
        assert!(total.sum <= attempted, "{key}: more than was sent");
        assert_eq!(total.sum % 10, 0, "{key}: a batch was applied in part");
        total_acked += acked;
    }
    assert!(total_acked > 0, "nothing was acknowledged before the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_keeps_data_and_shard_identity() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeProcess::start(dir.path(), &addr, "periodic");
    let client = node.client().await;
    assert!(client.increment(vec![inc("k", now_ms(), 5)]).await[0].is_ok());
    node.terminate();
    let identity = std::fs::read_to_string(dir.path().join("IDENTITY")).unwrap();
    assert!(dir.path().join("CLEAN_SHUTDOWN").exists());
    let mut node = NodeProcess::start(dir.path(), &addr, "periodic");
    let client = node.client().await;
    assert_eq!(client.total("events", b"k").await.unwrap().sum, 5);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("IDENTITY")).unwrap(),
        identity,
        "clean restart: same incarnation"
    );
    node.kill9();
    let node = NodeProcess::start(dir.path(), &addr, "periodic");
    let client = node.client().await;
    assert_eq!(client.total("events", b"k").await.unwrap().sum, 5);
    assert_ne!(
        std::fs::read_to_string(dir.path().join("IDENTITY")).unwrap(),
        identity,
        "unclean restart: new incarnation"
    );
    // Writes under the new incarnation add up with the old shard.
    assert!(client.increment(vec![inc("k", now_ms(), 2)]).await[0].is_ok());
    assert_eq!(client.total("events", b"k").await.unwrap().sum, 7);
}

/// After a clean stop the WAL holds no torn write: a damaged record is
/// corruption, and the node refuses to start naming the file, instead of
/// serving less than it acknowledged under the same shard. An operator who
/// accepts the loss starts it once with `--salvage-wal`: the records
/// before the damage are kept and the node writes a new shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_wal_after_a_clean_stop_refuses_to_start_until_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeProcess::start(dir.path(), &addr, "sync");
    let client = node.client().await;
    for _ in 0..3 {
        let r = client.increment(vec![inc("k", now_ms(), 1)]).await.pop();
        assert!(matches!(r, Some(Outcome::Ok(()))), "{r:?}");
    }
    drop(client);
    node.terminate();
    assert!(dir.path().join("CLEAN_SHUTDOWN").exists());
    let incarnation = || {
        let text = std::fs::read_to_string(dir.path().join("IDENTITY")).unwrap();
        text.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let before = incarnation();

    // One byte of the last increment's record flipped.
    let storage = dir.path().join("storage");
    let wal = std::fs::read_dir(&storage)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x10;
    std::fs::write(&wal, &bytes).unwrap();

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tally-node"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &addr])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started over a damaged WAL");
    let name = wal.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&name), "the error names the file: {stderr}");
    assert!(
        bytes == std::fs::read(&wal).unwrap(),
        "a refused start changes nothing"
    );

    let node = NodeProcess::start_with(
        dir.path(),
        &addr,
        &["--durability".into(), "sync".into(), "--salvage-wal".into()],
    );
    let client = node.client().await;
    assert_eq!(client.total("events", b"k").await.unwrap().sum, 2);
    assert_eq!(
        incarnation(),
        before + 1,
        "a salvaged node writes a new shard"
    );
}
