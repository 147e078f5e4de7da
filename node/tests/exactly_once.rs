//! Increments with op ids, against real `tally-node` processes over TCP:
//! however often and through whichever coordinators an increment is sent,
//! it is counted once, also after every node was killed with SIGKILL; an
//! increment whose op leader is down is not applied at all (so that its
//! retry, once the leader is back, is counted exactly once); an op id
//! that is not live is refused and changes nothing.

#![allow(clippy::unwrap_used)]

mod common;

use common::{inc, now_ms, Cluster};
use tally_client::{new_op_id, op_id_at, ClientError, Consistency, ErrorCode, Increment, Outcome};

/// An increment of `key` by `delta`, now, carrying `op_id`.
fn op(key: &str, delta: i64, op_id: u128) -> Increment {
    Increment {
        op_id: Some(op_id),
        ..inc(key, delta)
    }
}

/// Increment i of `ids` adds i + 1 to key `k{i % 5}`.
fn five_key_batch(ids: &[u128]) -> Vec<Increment> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| op(&format!("k{}", i % 5), i as i64 + 1, id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_id_is_counted_once_through_every_coordinator_and_after_kill_9() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let ids: Vec<u128> = (0..20).map(|_| new_op_id()).collect();
    // Every increment sent through each node (each coordinates it), and
    // twice in one batch through the first.
    for node in 0..3 {
        let client = cluster.client_of(node, Consistency::Quorum).await;
        let mut batch = five_key_batch(&ids);
        if node == 0 {
            batch.extend(batch.clone());
        }
        let outcomes = client.increment(batch).await;
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Ok(())),
            "through node {}: {outcomes:?}",
            node + 1
        );
    }
    assert_five_keys_counted_once(&cluster, "after every node coordinated each id").await;
    // The window is on disk: after SIGKILL of every node, retries still
    // meet their ids.
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_all_up().await;
    let client = cluster.client(Consistency::Quorum).await;
    assert!(client
        .increment(five_key_batch(&ids))
        .await
        .iter()
        .all(|o| *o == Outcome::Ok(())));
    assert_five_keys_counted_once(&cluster, "after kill -9 and a retry").await;
}

/// Keys `{prefix}0..{prefix}{n}` each hold 1, read at ALL.
async fn assert_each_counted_once(cluster: &Cluster, prefix: &str, n: usize) {
    let reader = cluster.client(Consistency::All).await;
    for i in 0..n {
        let total = reader
            .total("events", format!("{prefix}{i}").as_bytes())
            .await
            .unwrap();
        assert_eq!(total.sum, 1, "{prefix}{i} counted once");
    }
}

/// Each key of a `five_key_batch` of 20 ids holds its four increments
/// once, read at ALL.
async fn assert_five_keys_counted_once(cluster: &Cluster, when: &str) {
    let reader = cluster.client(Consistency::All).await;
    for k in 0..5 {
        let total = reader
            .total("events", format!("k{k}").as_bytes())
            .await
            .unwrap();
        let expected: i64 = (0..20).filter(|i| i % 5 == k).map(|i| i as i64 + 1).sum();
        assert_eq!(
            (total.sum, total.count),
            (expected, 4),
            "k{k} {when}: four increments, each counted once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_whose_op_leader_is_down_is_not_applied_and_its_retry_counts_once() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    cluster.kill9(2);
    let client = cluster.client_of(0, Consistency::Quorum).await;
    cluster
        .wait_until(20, "node 1 to see node 3 down", || async {
            let status = client.status().await.unwrap();
            status.peers.iter().any(|p| p.host_id == 3 && !p.up)
        })
        .await;
    let ids: Vec<u128> = (0..60).map(|_| new_op_id()).collect();
    let batch = |ids: &[u128]| -> Vec<Increment> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| op(&format!("d{i}"), 1, id))
            .collect()
    };
    let first = client.increment(batch(&ids)).await;
    let (mut ok, mut unavailable) = (0, 0);
    for outcome in &first {
        match outcome {
            Outcome::Ok(()) => ok += 1,
            Outcome::Failed(ClientError::Node {
                code: ErrorCode::Unavailable,
                ..
            }) => unavailable += 1,
            other => panic!("an op-id increment is Ok or not applied, never {other:?}"),
        }
    }
    // Op leaders spread over the three replicas: about a third each.
    assert!(
        ok > 0 && unavailable > 0,
        "ok {ok}, unavailable {unavailable}"
    );
    let reader = cluster.client_of(0, Consistency::Quorum).await;
    for (i, outcome) in first.iter().enumerate() {
        let total = reader
            .total("events", format!("d{i}").as_bytes())
            .await
            .unwrap();
        let applied = i64::from(*outcome == Outcome::Ok(()));
        assert_eq!(total.sum, applied, "d{i}: {outcome:?}");
    }
    cluster.restart(2);
    cluster.wait_all_up().await;
    let client = cluster.client(Consistency::Quorum).await;
    cluster
        .wait_for(20, "every retry to be acknowledged", || async {
            let outcomes = client.increment(batch(&ids)).await;
            match outcomes.iter().find(|o| **o != Outcome::Ok(())) {
                None => Ok(()),
                Some(o) => Err(format!("{o:?}")),
            }
        })
        .await;
    assert_each_counted_once(&cluster, "d", ids.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_id_that_is_not_live_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(1, 1, &[]).await;
    let client = cluster.client(Consistency::Quorum).await;
    let stale = op_id_at(now_ms() - 11 * 60 * 1000);
    let ahead = op_id_at(now_ms() + 3_600_000);
    let outcomes = client
        .increment(vec![
            op("x", 1, stale),
            op("x", 1, ahead),
            op("x", 1, u128::MAX),
            op("x", 5, new_op_id()),
        ])
        .await;
    for outcome in &outcomes[..3] {
        assert!(
            matches!(
                outcome,
                Outcome::Failed(ClientError::Node {
                    code: ErrorCode::OpIdExpired,
                    ..
                })
            ),
            "{outcome:?}"
        );
    }
    assert_eq!(outcomes[3], Outcome::Ok(()));
    assert_eq!(client.total("events", b"x").await.unwrap().sum, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resends_unknown_outcomes_of_op_id_increments_and_they_count_once() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let mut config = tally_client::ClientConfig::with_seeds([cluster.addrs[0].clone()]);
    config.consistency = Consistency::Quorum;
    config.token_aware = false;
    config.request_timeout = std::time::Duration::from_millis(400);
    config.max_retries = 12;
    config.backoff_base = std::time::Duration::from_millis(100);
    config.backoff_max = std::time::Duration::from_millis(400);
    let client = tally_client::Client::connect(config).await.unwrap();
    // Two replicas stopped: no write can reach a quorum, and those led by
    // them wait in their sockets, to be applied when they continue.
    cluster.signal(1, "STOP");
    cluster.signal(2, "STOP");
    let items: Vec<Increment> = (0..30)
        .map(|i| op(&format!("r{i}"), 1, new_op_id()))
        .collect();
    let sending = tokio::spawn({
        let items = items.clone();
        async move { client.increment(items).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    cluster.signal(1, "CONT");
    cluster.signal(2, "CONT");
    let outcomes = sending.await.unwrap();
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Ok(())),
        "every increment acknowledged in the end: {outcomes:?}"
    );
    assert_each_counted_once(&cluster, "r", items.len()).await;
}

/// A power loss at an op leader (kill -9 with `--lose-unsynced-writes`,
/// in `periodic` mode with no fsync before it) loses the window entries in
/// its WAL tail, while the other replicas hold the states those ops
/// raised. The restarted leader learns its ops back from them before it
/// leads an op id made before its restart, so the retries count once
/// (once they counted twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_once_after_a_power_loss_at_their_op_leader() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    // Nothing reaches the disk before the power loss.
    std::fs::write(&config, "[storage]\nsync_interval_ms = 600000\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut cluster = Cluster::start(3, 3, &["--lose-unsynced-writes", "--config", &config]).await;
    let ids: Vec<u128> = (0..30).map(|_| new_op_id()).collect();
    let batch = || -> Vec<Increment> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| op(&format!("p{i}"), 1, id))
            .collect()
    };
    let client = cluster.client_of(1, Consistency::Quorum).await;
    let outcomes = client.increment(batch()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Ok(())),
        "{outcomes:?}"
    );
    // Host 1 leads the ids whose low bits are 0 mod 3.
    let led_by_1 = ids
        .iter()
        .filter(|&&id| (id as u64).is_multiple_of(3))
        .count();
    assert!(led_by_1 > 0, "no id led by host 1");

    cluster.kill9(0);
    cluster.restart(0);
    cluster.wait_all_up().await;
    let client = cluster.client(Consistency::Quorum).await;
    let outcomes = client.increment(batch()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Ok(())),
        "{outcomes:?}"
    );
    assert_each_counted_once(&cluster, "p", ids.len()).await;
}
