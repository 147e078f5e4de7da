//! `tally ingest` against a real 3-node cluster: killed with SIGKILL
//! again and again while nodes die and pause, or while the whole cluster
//! is down, it still counts every event of the file exactly once.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::Consistency;
use tally_testkit::{now_ms, Cluster};

/// Per key: (sum of deltas, events).
type Expected = HashMap<String, (i64, u64)>;

/// Writes `events` JSON lines with Zipf-like keys (about s = 1 over
/// `keys` keys), timestamps over the last 20 minutes and small deltas;
/// returns what each key must total.
fn write_events(path: &Path, events: usize, keys: u32, seed: u64) -> Expected {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut expected = Expected::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let now = now_ms();
    for _ in 0..events {
        // Log-uniform ranks: P(rank) falls as 1/rank.
        let rank = (f64::from(keys).powf(rng.random::<f64>()) as u32).clamp(1, keys);
        let key = format!("video-{rank}");
        let ts = now - rng.random_range(0..20 * 60_000);
        let delta: i64 = if rng.random_bool(0.9) {
            1
        } else {
            rng.random_range(-3..50)
        };
        writeln!(
            out,
            r#"{{"key":"{key}","ts":{ts},"delta":{delta},"viewer":"u{}"}}"#,
            rng.random::<u16>()
        )
        .unwrap();
        let e = expected.entry(key).or_default();
        e.0 += delta;
        e.1 += 1;
    }
    out.flush().unwrap();
    expected
}

fn ingest(cluster: &Cluster, file: &Path, state: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg(format!("--addr={}", cluster.addrs.join(",")))
        .arg("ingest")
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .args(["--chunk-events", "20000", "--json"])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs ingest to its end; its summary (JSON).
fn ingest_to_end(cluster: &Cluster, file: &Path, state: &Path) -> serde_json::Value {
    let out = ingest(cluster, file, state, &[])
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "ingest failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn assert_exact(cluster: &Cluster, expected: &Expected) {
    let client = cluster.client(Consistency::Quorum).await;
    let mut wrong = Vec::new();
    for (key, &(sum, events)) in expected {
        let count = client.total("events", key.as_bytes()).await.unwrap();
        if (count.sum, count.count) != (sum, events) {
            wrong.push(format!(
                "{key}: read {}/{} events, wrote {sum}/{events}",
                count.sum, count.count
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ingest_runs_count_every_event_once_while_nodes_die_and_pause() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("views.jsonl");
    let state = dir.path().join("state");
    let expected = write_events(&file, 500_000, 5_000, 7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let started = Instant::now();
    let mut kills = 0;
    let mut finished_early = false;
    for round in 0..12 {
        match round {
            3 => cluster.kill9(1),
            5 => {
                cluster.restart(1);
                cluster.signal(2, "STOP");
            }
            7 => cluster.signal(2, "CONT"),
            _ => {}
        }
        let mut child = ingest(&cluster, &file, &state, &[]);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1_500)));
        if child.try_wait().unwrap().is_some() {
            finished_early = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    cluster.signal(2, "CONT");
    assert!(kills >= 10, "only {kills} kills before the file was done");
    assert!(!finished_early || kills >= 10);
    cluster.wait_all_up().await;
    let summary = ingest_to_end(&cluster, &file, &state);
    assert_exact(&cluster, &expected).await;
    assert_eq!(summary["drained"], true, "{summary}");
    assert_eq!(summary["report"]["sums_pending"], 0, "{summary}");
    eprintln!(
        "{kills} kills, {:.1} s; last run: {summary}",
        started.elapsed().as_secs_f64()
    );
    // Once more: everything is checkpointed, nothing is read or counted.
    let again = ingest_to_end(&cluster, &file, &state);
    assert_eq!(again["events_read"], 0, "{again}");
    assert_exact(&cluster, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_grows_while_the_cluster_is_down_and_drains_when_it_returns() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("views.jsonl");
    let state = dir.path().join("state");
    let expected = write_events(&file, 200_000, 20_000, 3);
    let child = ingest(&cluster, &file, &state, &["--drain-timeout", "120"]);
    // Connected and reading; then the whole cluster stops answering, and
    // the reader goes on: the spool holds the sums.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..3 {
        cluster.signal(i, "STOP");
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let spool_bytes: u64 = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spool_bytes > 1 << 20, "spool of {spool_bytes} bytes");
    for i in 0..3 {
        cluster.signal(i, "CONT");
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events_read"], 200_000, "{summary}");
    assert_eq!(summary["drained"], true, "{summary}");
    assert_exact(&cluster, &expected).await;
}

#[test]
fn a_damaged_checkpoint_stops_ingest_with_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("checkpoint"), b"TCKPT01\n00000000\n{}").unwrap();
    let file = dir.path().join("e.jsonl");
    std::fs::write(&file, b"{\"key\":\"a\",\"ts\":1}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["--addr=127.0.0.1:1", "ingest"])
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("checkpoint")
            && stderr.contains("is corrupt at byte 17: checksum mismatch"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_blocks_or_fails_as_configured_and_loses_nothing_accepted() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("views.jsonl");
    let expected = write_events(&file, 120_000, 5_000, 5);
    let stop_all = |cluster: &Cluster, signal: &str| {
        for i in 0..3 {
            cluster.signal(i, signal);
        }
    };
    // Fail: with nothing answering, a later range does not fit in a 2 MiB
    // spool; the run stops with the typed error.
    let fail_state = dir.path().join("fail");
    let child = ingest(
        &cluster,
        &file,
        &fail_state,
        &["--spool-mib", "2", "--spool-full", "fail"],
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_all(&cluster, "STOP");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("spool is full"), "{stderr}");
    stop_all(&cluster, "CONT");
    // What it accepted is in its spool and checkpoint: a second run on the
    // same state finishes the file, and every event counts once.
    let summary = ingest_to_end(&cluster, &file, &fail_state);
    assert!(
        summary["report"]["sums_recovered"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_exact(&cluster, &expected).await;

    // Block: the same over a second file, but the reader waits for room
    // and goes on once the cluster answers again.
    let file2 = dir.path().join("more.jsonl");
    let more = write_events(&file2, 120_000, 5_000, 6);
    let child = ingest(
        &cluster,
        &file2,
        &dir.path().join("block"),
        &["--spool-mib", "2"],
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_all(&cluster, "STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_all(&cluster, "CONT");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut both = expected;
    for (key, (sum, events)) in more {
        let e = both.entry(key).or_default();
        e.0 += sum;
        e.1 += events;
    }
    assert_exact(&cluster, &both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_counts_lines_as_the_file_grows() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.csv");
    std::fs::write(&file, "ts,key,delta\n").unwrap();
    let mut child = ingest(&cluster, &file, &dir.path().join("state"), &["--follow"]);
    let client = cluster.client(Consistency::Quorum).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    let now = now_ms();
    for i in 0..50 {
        writeln!(f, "{},live-{},{}", now + i, i % 5, i).unwrap();
        if i == 20 {
            // Half a line, then the rest: read whole, once.
            write!(f, "{},live-0,", now).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            writeln!(f, "1000").unwrap();
        }
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // live-k holds i = k, k+5, ... and live-0 the split line's 1000 too.
    let want = |k: i64| (0..10).map(|j| k + 5 * j).sum::<i64>() + if k == 0 { 1000 } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got = Vec::new();
        for k in 0..5 {
            got.push(
                client
                    .total("events", format!("live-{k}").as_bytes())
                    .await
                    .unwrap()
                    .sum,
            );
        }
        if got == (0..5).map(want).collect::<Vec<_>>() {
            break;
        }
        assert!(Instant::now() < deadline, "totals {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_replayed_from_its_start_counts_once() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("views.jsonl");
    let expected = write_events(&file, 30_000, 500, 9);
    let state = dir.path().join("state");
    for run in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg(format!("--addr={}", cluster.addrs.join(",")))
            .args([
                "--json",
                "ingest",
                "-",
                "--source-name",
                "views",
                "--state-dir",
            ])
            .arg(&state)
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let read = if run == 0 { 30_000 } else { 0 };
        assert_eq!(summary["events_read"], read, "run {run}: {summary}");
    }
    assert_exact(&cluster, &expected).await;
}
