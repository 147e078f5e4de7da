//! Merkle anti-entropy with real processes: a replica that missed writes
//! (hinted handoff off, so nothing else brings them) is converged by
//! `repair` without any read, and a second repair finds nothing to do.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{inc, Cluster};
use tally_client::{Client, ClientConfig, Consistency, Increment, Outcome};

/// 60 keys written once on all three nodes, then again while host 3 is
/// down (taken down by `down`, back up after): host 3 missed the second
/// write of each, and hints are off, so nothing brings it back but repair.
async fn writes_host_3_misses(
    cluster: &mut Cluster,
    writer: &Client,
    prefix: &str,
    down: fn(&mut Cluster, usize),
) -> Vec<String> {
    let keys: Vec<String> = (0..60).map(|i| format!("{prefix}/{i}")).collect();
    let batch: Vec<Increment> = keys.iter().map(|k| inc(k, 1)).collect();
    assert!(writer.increment(batch).await.iter().all(Outcome::is_ok));
    down(cluster, 2);
    let batch: Vec<Increment> = keys.iter().map(|k| inc(k, 10)).collect();
    assert!(writer.increment(batch).await.iter().all(Outcome::is_ok));
    cluster.restart(2);
    cluster.wait_all_up().await;
    keys
}

/// Whether the replicas' copies of a key differ.
fn stale(views: &[tally_client::ReplicaView]) -> bool {
    views.windows(2).any(|w| w[0].shards != w[1].shards)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_converges_a_replica_that_missed_writes() {
    let mut cluster = Cluster::start(3, 3, &["--no-hinted-handoff"]).await;
    let writer = cluster.client_of(0, Consistency::Quorum).await;
    let keys = writes_host_3_misses(&mut cluster, &writer, "ae", Cluster::stop).await;
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

/// Replicas made to differ (hints off, a node stopped while writes go on)
/// converge with no operator command, through the schedule alone, within
/// its interval; every range then shows a last repair on every replica,
/// and a restarted node still knows it (the schedule resumes, it does not
/// start over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_repair_converges_replicas_without_an_operator() {
    const INTERVAL_S: u64 = 8;
    let interval = format!("repair.interval_s={INTERVAL_S}");
    let mut cluster = Cluster::start(3, 3, &["--no-hinted-handoff", "--set", &interval]).await;
    let writer = cluster.client_of(0, Consistency::Quorum).await;
    let keys = writes_host_3_misses(&mut cluster, &writer, "sched", Cluster::kill9).await;
    let mut differing = 0;
    for key in &keys {
        let views = writer
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        differing += usize::from(stale(&views));
    }
    assert!(differing > 0, "host 3 missed the second write of some keys");

    let started = std::time::Instant::now();
    let limit = Duration::from_secs(3 * INTERVAL_S + 10);
    let mut left = keys.clone();
    while !left.is_empty() {
        assert!(
            started.elapsed() < limit,
            "{} keys still differ after {:?}: {:?}",
            left.len(),
            started.elapsed(),
            &left[..left.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for key in &left {
            let views = writer
                .inspect_replicas("events", key.as_bytes())
                .await
                .unwrap();
            if stale(&views) {
                still.push(key.clone());
            } else {
                assert_eq!(
                    views[0].shards.iter().map(|s| s.sum).sum::<i64>(),
                    11,
                    "{key}"
                );
            }
        }
        left = still;
    }
    println!(
        "{differing} of {} keys differed; the schedule converged them in {:?}",
        keys.len(),
        started.elapsed()
    );

    // Every range has been repaired, as every replica knows.
    let deadline = std::time::Instant::now() + Duration::from_secs(2 * INTERVAL_S + 10);
    loop {
        let mut never = 0;
        for i in 0..3 {
            never += schedule_of(&cluster, i)
                .await
                .ranges
                .iter()
                .filter(|r| r.last_repaired_ms.is_none())
                .count();
        }
        if never == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{never} range replicas know of no repair"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = schedule_of(&cluster, 0).await;
    assert_eq!(before.interval_ms, INTERVAL_S * 1000);
    assert_eq!(before.ranges.len(), 48, "node 1 replicates every range");
    let scheduled_here = before
        .ranges
        .iter()
        .filter(|r| r.scheduled_by == Some(1))
        .count();
    assert_eq!(scheduled_here, 16, "its primary ranges: {before:?}");
    assert!(before
        .ranges
        .iter()
        .all(|r| (r.scheduled_by == Some(1)) == r.next_due_ms.is_some()));

    // A restart keeps the history.
    cluster.stop(0);
    cluster.restart(0);
    cluster.wait_all_up().await;
    let after = schedule_of(&cluster, 0).await;
    for (b, a) in before.ranges.iter().zip(&after.ranges) {
        assert_eq!((b.start_token, b.end_token), (a.start_token, a.end_token));
        assert!(
            a.last_repaired_ms >= b.last_repaired_ms,
            "history lost across a restart: {b:?} then {a:?}"
        );
    }
}

async fn schedule_of(cluster: &Cluster, i: usize) -> tally_client::admin::RepairScheduleView {
    use tally_client::admin::{AdminReply, AdminRequest};
    let client = cluster.client_of(i, Consistency::One).await;
    match client.admin(&AdminRequest::RepairSchedule).await.unwrap() {
        AdminReply::RepairSchedule(view) => view,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// One repair of a range at a time, cluster-wide: while another holder
/// has a range's lease on its replicas, an operator's repair waits for it
/// (here, until the 3 s lease lapses) and the schedule shows who holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_leased_elsewhere_is_repaired_only_once_the_lease_is_gone() {
    use tally_client::admin::{AdminReply, AdminRequest};
    let cluster = Cluster::start(3, 3, &[]).await;
    let view = schedule_of(&cluster, 0).await;
    let range = view.ranges[0].clone();
    let lease = AdminRequest::RepairLease {
        start_token: range.start_token,
        end_token: range.end_token,
        holder: 99,
        ttl_ms: 3_000,
    };
    // A peer's request; this cluster runs without a cluster secret, so a
    // test client may send it as host 99 would.
    let taken_at = std::time::Instant::now();
    for i in 0..3 {
        let client = cluster.client_of(i, Consistency::One).await;
        match client.admin(&lease).await {
            Ok(AdminReply::Lease { granted, .. }) => assert!(granted),
            other => panic!("lease not taken on node {}: {other:?}", i + 1),
        }
    }
    let held = schedule_of(&cluster, 0).await;
    assert_eq!(held.ranges[0].repairing, Some(99));
    // Another holder is refused while it lasts.
    let rival = AdminRequest::RepairLease {
        start_token: range.start_token,
        end_token: range.end_token,
        holder: 98,
        ttl_ms: 3_000,
    };
    let client = cluster.client_of(1, Consistency::One).await;
    assert!(matches!(
        client.admin(&rival).await,
        Ok(AdminReply::Lease {
            granted: false,
            holder: 99,
            ..
        })
    ));

    let mut config = ClientConfig::with_seeds([cluster.addrs[0].clone()]);
    config.request_timeout = Duration::from_secs(120);
    config.token_aware = false;
    let admin = Client::connect(config).await.unwrap();
    let report = admin.repair().await.unwrap();
    assert_eq!(report.ranges_skipped, 0, "{report:?}");
    assert!(
        taken_at.elapsed() >= Duration::from_millis(2_900),
        "the repair went ahead of the lease: {:?}",
        taken_at.elapsed()
    );
    let after = schedule_of(&cluster, 0).await;
    assert_eq!(after.ranges[0].repairing, None);
    assert!(after.ranges.iter().all(|r| r.last_repaired_ms.is_some()));
}
