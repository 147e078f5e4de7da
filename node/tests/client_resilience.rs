//! The client library against real failures: a dead seed is skipped, a
//! killed node turns writes into `Failed` or `Indeterminate` (never `Ok`),
//! and the client reconnects once the node is back.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{free_port, now_ms, NodeProcess};
use tally_client::{Client, ClientConfig, ClientError, Increment, Outcome};

fn inc(key: &str) -> Increment {
    Increment {
        namespace: "events".into(),
        key: key.as_bytes().to_vec(),
        timestamp_ms: now_ms(),
        delta: 1,
        events: 1,
        op_id: None,
    }
}

fn config(seeds: Vec<String>) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        breaker_cooldown: Duration::from_millis(200),
        ..ClientConfig::with_seeds(seeds)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_seed_is_skipped_and_a_dead_cluster_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start(dir.path(), &format!("127.0.0.1:{}", free_port()), "sync");
    let client = Client::connect(config(vec![dead.clone(), node.addr.clone()]))
        .await
        .unwrap();
    for _ in 0..20 {
        // Requests that land on the dead seed are retried on the live one.
        assert_eq!(
            client.increment(vec![inc("k")]).await,
            vec![Outcome::Ok(())]
        );
    }
    assert_eq!(client.total("events", b"k").await.unwrap().sum, 20);
    let err = Client::connect(config(vec![dead])).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_never_yields_ok_and_the_client_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeProcess::start(dir.path(), &addr, "sync");
    let client = Client::connect(config(vec![addr.clone()])).await.unwrap();
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed, mut unknown) = (0u64, 0u64, 0u64);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
            while tokio::time::Instant::now() < deadline {
                match client.increment(vec![inc("c")]).await.remove(0) {
                    Outcome::Ok(()) => ok += 1,
                    Outcome::Failed(_) => failed += 1,
                    Outcome::Indeterminate(_) => unknown += 1,
                }
            }
            (ok, failed, unknown)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.kill9();
    let (ok, failed, unknown) = writer.await.unwrap();
    assert!(
        ok > 0 && failed + unknown > 0,
        "ok {ok}, failed {failed}, indeterminate {unknown}"
    );
    // Reads fail while the node is down...
    assert!(client.total("events", b"c").await.is_err());
    // ...and succeed once it is back, on the same client.
    let _node = NodeProcess::start(dir.path(), &addr, "sync");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = client.total("events", b"c").await.unwrap();
    assert!(
        total.sum as u64 >= ok && total.sum as u64 <= ok + unknown,
        "{} stored, {ok} ok, {unknown} unknown",
        total.sum
    );
}
