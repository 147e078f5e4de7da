//! Merkle anti-entropy with real processes: a replica that missed writes
//! (hinted handoff off, so nothing else brings them) is converged by
//! `repair` without any read, and a second repair finds nothing to do.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{inc, Cluster};
use tally_client::{Client, ClientConfig, Consistency, Increment, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_converges_a_replica_that_missed_writes() {
    let mut cluster = Cluster::start(3, 3, &["--no-hinted-handoff"]).await;
    let writer = cluster.client_of(0, Consistency::Quorum).await;
    let keys: Vec<String> = (0..60).map(|i| format!("ae/{i}")).collect();
    let batch: Vec<Increment> = keys.iter().map(|k| inc(k, 1)).collect();
    assert!(writer.increment(batch).await.iter().all(Outcome::is_ok));
    cluster.stop(2);
    let batch: Vec<Increment> = keys.iter().map(|k| inc(k, 10)).collect();
    assert!(writer.increment(batch).await.iter().all(Outcome::is_ok));
    cluster.restart(2);
    cluster.wait_all_up().await;

    let stale =
        |views: &[tally_client::ReplicaView]| views.windows(2).any(|w| w[0].shards != w[1].shards);
    for key in &keys {
        let views = writer
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        assert!(
            stale(&views),
            "{key}: host 3 missed the second write: {views:?}"
        );
    }

    let mut config = ClientConfig::with_seeds([cluster.addrs[0].clone()]);
    config.request_timeout = Duration::from_secs(120);
    config.token_aware = false;
    let admin = Client::connect(config).await.unwrap();
    let report = admin.repair().await.unwrap();
    assert_eq!(report.ranges_skipped, 0, "{report:?}");
    assert_eq!(
        report.ranges, 48,
        "node 1 replicates every range of 3 nodes, rf 3"
    );
    assert!(
        report.leaves_differing > 0 && report.cells_repaired >= keys.len() as u64,
        "{report:?}"
    );

    for key in &keys {
        let views = writer
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        assert!(!stale(&views), "{key}: converged by repair: {views:?}");
        assert_eq!(views[0].shards.iter().map(|s| s.sum).sum::<i64>(), 11);
    }
    let again = admin.repair().await.unwrap();
    assert_eq!(
        (again.leaves_differing, again.cells_repaired),
        (0, 0),
        "{again:?}"
    );
    println!("repair: {report:?}; second run: {again:?}");
}
