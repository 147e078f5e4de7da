//! Real `tally-node` processes forming a cluster over TCP: quorum writes
//! are visible to later quorum reads, a killed node does not stop QUORUM
//! writes and is caught up by hinted handoff, a stale replica is fixed by
//! read repair, too few replicas never yield `Ok`, and coordinators that are
//! not replicas forward to one that is.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{inc, Cluster};
use tally_client::{ClientError, Consistency, ErrorCode, Increment, Outcome, ReplicaView};

fn sum(view: &ReplicaView) -> i64 {
    view.shards.iter().map(|s| s.sum).sum()
}

/// Every replica answered and holds the same shards.
fn agree(views: &[ReplicaView]) -> bool {
    views.iter().all(|v| v.error.is_none()) && views.windows(2).all(|w| w[0].shards == w[1].shards)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_increments_are_visible_to_later_quorum_reads() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let mut writers = Vec::new();
    for w in 0..3 {
        // Each writer goes through one node and reads back through another.
        let writer = cluster.client_of(w, Consistency::Quorum).await;
        let reader = cluster.client_of((w + 1) % 3, Consistency::Quorum).await;
        writers.push(tokio::spawn(async move {
            let mut acked: HashMap<String, i64> = HashMap::new();
            for round in 0..120i64 {
                let key = format!("w{w}/k{}", round % 8);
                let outcome = writer.increment(vec![inc(&key, round + 1)]).await;
                assert_eq!(
                    outcome,
                    vec![Outcome::Ok(())],
                    "no faults: every write is acknowledged"
                );
                *acked.entry(key.clone()).or_default() += round + 1;
                let total = reader.total("events", key.as_bytes()).await.unwrap();
                assert_eq!(
                    total.sum, acked[&key],
                    "{key}: a QUORUM read after the acknowledgement sees it"
                );
            }
            acked
        }));
    }
    let mut expected: HashMap<String, i64> = HashMap::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    // Batches over many keys through the token-aware client, read back
    // through every node.
    let client = cluster.client(Consistency::Quorum).await;
    let batch: Vec<Increment> = (0..200).map(|i| inc(&format!("batch/{i}"), i)).collect();
    assert!(client.increment(batch).await.iter().all(Outcome::is_ok));
    for node in 0..3 {
        let reader = cluster.client_of(node, Consistency::Quorum).await;
        for i in (0..200).step_by(17) {
            let total = reader
                .total("events", format!("batch/{i}").as_bytes())
                .await
                .unwrap();
            assert_eq!(total.sum, i);
        }
        for (key, sum) in &expected {
            assert_eq!(
                reader.total("events", key.as_bytes()).await.unwrap().sum,
                *sum
            );
        }
    }
}

/// Acknowledged and maybe-applied deltas per key, and outcome counts by
/// phase (0: before the kill settles, 1: after).
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, i64>,
    maybe: HashMap<String, i64>,
    not_ok_after_kill: Vec<String>,
    ok_after_kill: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_does_not_stop_quorum_writes_and_hints_catch_it_up() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let client = cluster.client(Consistency::Quorum).await;
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let mut load = Vec::new();
    for p in 0..4 {
        let (client, ledger, stop, phase) =
            (client.clone(), ledger.clone(), stop.clone(), phase.clone());
        load.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let started_in = phase.load(Ordering::SeqCst);
                let items: Vec<Increment> = (0..20)
                    .map(|i| inc(&format!("k{}", (round * 20 + i + p * 7) % 300), 1))
                    .collect();
                let outcomes = client.increment(items.clone()).await;
                let mut l = ledger.lock().unwrap();
                for (item, outcome) in items.iter().zip(outcomes) {
                    let key = String::from_utf8(item.key.clone()).unwrap();
                    match &outcome {
                        Outcome::Ok(()) => *l.acked.entry(key).or_default() += 1,
                        Outcome::Indeterminate(_) => *l.maybe.entry(key).or_default() += 1,
                        Outcome::Failed(_) => {}
                    }
                    if started_in == 1 {
                        if outcome.is_ok() {
                            l.ok_after_kill += 1;
                        } else {
                            l.not_ok_after_kill.push(format!("{outcome:?}"));
                        }
                    }
                }
                round += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill9(2);
    // In-flight requests at the kill may be indeterminate; after that,
    // every write must be acknowledged by the two live replicas.
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pending = cluster.status(0).await.hints_pending + cluster.status(1).await.hints_pending;
    assert!(pending > 0, "hints accumulate for the dead node");
    cluster.restart(2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(
        ledger.ok_after_kill > 100,
        "the load ran: {} ok",
        ledger.ok_after_kill
    );
    assert!(
        ledger.not_ok_after_kill.is_empty(),
        "QUORUM writes kept succeeding with one node dead: {:?}",
        &ledger.not_ok_after_kill[..ledger.not_ok_after_kill.len().min(5)]
    );
    // The restarted node hints what it may have led without replicating.
    cluster
        .wait_until(30, "hints to drain", || async {
            let mut pending = 0;
            for node in 0..3 {
                pending += cluster.status(node).await.hints_pending;
            }
            pending == 0
        })
        .await;
    let status = cluster.status(0).await;
    assert!(status.hints_replayed > 0 || cluster.status(1).await.hints_replayed > 0);
    // Every replica holds an identical copy (no read has repaired them).
    let inspector = cluster.client_of(0, Consistency::Quorum).await;
    for key in ledger.acked.keys() {
        let views = inspector
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        assert_eq!(views.len(), 3);
        assert!(
            agree(&views),
            "{key}: replicas differ after the hints drained: {views:?}"
        );
    }
    for (key, acked) in &ledger.acked {
        let total = inspector.total("events", key.as_bytes()).await.unwrap().sum;
        let maybe = ledger.maybe.get(key).copied().unwrap_or(0);
        assert!(
            *acked <= total && total <= acked + maybe,
            "{key}: total {total}, acknowledged {acked}, indeterminate {maybe}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_repairs_a_stale_replica() {
    let mut cluster = Cluster::start(3, 3, &["--no-hint-replay"]).await;
    let writer = cluster.client_of(0, Consistency::Quorum).await;
    let keys: Vec<String> = (0..20).map(|i| format!("rr/{i}")).collect();
    for key in &keys {
        assert_eq!(
            writer.increment(vec![inc(key, 1)]).await,
            vec![Outcome::Ok(())]
        );
    }
    // QUORUM answered after two replicas: let the third one's copy land
    // before stopping it, so that it is stale by exactly the second round.
    cluster
        .wait_until(10, "host 3 to hold the first round", || async {
            for key in &keys {
                let views = writer
                    .inspect_replicas("events", key.as_bytes())
                    .await
                    .unwrap();
                if !agree(&views) {
                    return false;
                }
            }
            true
        })
        .await;
    cluster.stop(2);
    for key in &keys {
        assert_eq!(
            writer.increment(vec![inc(key, 10)]).await,
            vec![Outcome::Ok(())]
        );
    }
    cluster.restart(2);
    cluster.wait_all_up().await;
    // Host 3 missed the second round and no hint will bring it.
    for key in &keys {
        let views = writer
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        let by_host: HashMap<u64, i64> = views.iter().map(|v| (v.host_id, sum(v))).collect();
        assert_eq!(by_host[&3], 1, "{key}: host 3 is stale: {views:?}");
        assert_eq!((by_host[&1], by_host[&2]), (11, 11));
    }
    // A QUORUM read coordinated by host 3 reads itself and one other,
    // answers the merged value and repairs itself before answering.
    let reader = cluster.client_of(2, Consistency::Quorum).await;
    for key in &keys {
        assert_eq!(
            reader.total("events", key.as_bytes()).await.unwrap().sum,
            11
        );
        let views = writer
            .inspect_replicas("events", key.as_bytes())
            .await
            .unwrap();
        assert!(agree(&views), "{key}: repaired: {views:?}");
    }
    assert!(cluster.status(2).await.read_repairs >= keys.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_replicas_down_quorum_never_succeeds_and_one_does() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let quorum = cluster.client_of(0, Consistency::Quorum).await;
    let one = cluster.client_of(0, Consistency::One).await;
    assert!(quorum.increment(vec![inc("two-down", 1)]).await[0].is_ok());
    cluster.kill9(1);
    cluster.kill9(2);
    let mut one_acked = 1;
    let mut quorum_maybe = 0;
    for round in 0..20 {
        match quorum.increment(vec![inc("two-down", 100)]).await.remove(0) {
            Outcome::Ok(()) => panic!("round {round}: QUORUM acknowledged with one replica"),
            Outcome::Failed(_) => {}
            Outcome::Indeterminate(_) => quorum_maybe += 100,
        }
        assert_eq!(
            one.increment(vec![inc("two-down", 1)]).await,
            vec![Outcome::Ok(())]
        );
        one_acked += 1;
    }
    // Once the node has seen its peers go, QUORUM fails up front with
    // `Unavailable`: nothing applied.
    cluster
        .wait_until(10, "both peers marked down", || async {
            cluster.status(0).await.peers.iter().all(|p| !p.up)
        })
        .await;
    match quorum
        .increment(vec![inc("two-down", 1000)])
        .await
        .remove(0)
    {
        Outcome::Failed(ClientError::Node { code, .. }) => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("expected Failed(Unavailable), got {other:?}"),
    }
    match quorum.total("events", b"two-down").await {
        Err(ClientError::Node { code, .. }) => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("a QUORUM read with one replica: {other:?}"),
    }
    let total = one.total("events", b"two-down").await.unwrap().sum;
    assert!(
        one_acked <= total && total <= one_acked + quorum_maybe,
        "ONE read {total}: acknowledged {one_acked}, indeterminate {quorum_maybe}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_forward_to_a_replica_and_each_increment_is_led_once() {
    let cluster = Cluster::start(4, 2, &[]).await;
    // A client that only knows node 1: node 1 coordinates everything and
    // forwards the keys it does not hold.
    let via_one = cluster.client_of(0, Consistency::Quorum).await;
    let mut batch: Vec<Increment> = (0..200).map(|i| inc(&format!("fw/{i}"), i)).collect();
    batch.push(Increment {
        namespace: "no_such_namespace".into(),
        ..inc("fw/bad", 1)
    });
    let outcomes = via_one.increment(batch).await;
    assert!(
        outcomes[..200].iter().all(Outcome::is_ok),
        "{:?}",
        &outcomes[..5]
    );
    assert!(
        matches!(
            &outcomes[200],
            Outcome::Failed(ClientError::Node {
                code: ErrorCode::UnknownNamespace,
                ..
            })
        ),
        "one bad item fails alone: {:?}",
        outcomes[200]
    );
    let mut led = Vec::new();
    for node in 0..4 {
        led.push(cluster.status(node).await.increments);
        let reader = cluster.client_of(node, Consistency::Quorum).await;
        for i in (0..200).step_by(7) {
            let total = reader
                .total("events", format!("fw/{i}").as_bytes())
                .await
                .unwrap();
            assert_eq!(total.sum, i, "fw/{i} read through node {}", node + 1);
        }
    }
    assert_eq!(
        led.iter().sum::<u64>(),
        200,
        "each increment led exactly once: {led:?}"
    );
    assert!(
        led[0] < 200,
        "node 1 forwarded the keys it does not hold: {led:?}"
    );
    // The token-aware client learned the ring.
    let client = cluster.client(Consistency::Quorum).await;
    let table = client.routing_table().unwrap();
    assert_eq!((table.nodes.len(), table.replication_factor), (4, 2));
    assert_eq!(table.ranges.len(), 4 * 16);
    assert!(table.ranges.iter().all(|r| r.replicas.len() == 2));
}
