//! The aggregating producer against a real `tally-node` process over TCP:
//! summed sends give exactly the totals, counts and minute buckets of the
//! events one by one; its timer sends without a flush; a refused sum is
//! counted as failed, not resent forever; with a spool, sums the node
//! did not answer survive the producer's end and count once when a new
//! producer resends them.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, now_ms, NodeProcess};
use rand::{Rng, SeedableRng};
use tally_client::{Producer, ProducerConfig, Resolution};

const MIN: i64 = 60_000;

fn config() -> ProducerConfig {
    ProducerConfig {
        max_delay: Duration::from_millis(5),
        max_cells: 40,
        max_in_flight: 2,
        retries: 3,
        producer_id: None,
        ..ProducerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summed_sends_count_exactly_what_single_events_would() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &format!("127.0.0.1:{}", free_port()), "sync");
    let producer = Arc::new(Producer::new(node.client().await, config()));
    let base = now_ms() - 3 * 60 * MIN;
    // (key, minute) -> (sum, count), the model.
    let mut model: BTreeMap<(usize, i64), (i64, u64)> = BTreeMap::new();
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(t);
        let events: Vec<(usize, i64, i64)> = (0..500)
            .map(|_| {
                let key = rng.random_range(0..30usize);
                let at = base + rng.random_range(0..3 * 60 * MIN);
                (key, at, rng.random_range(-2..=5i64))
            })
            .collect();
        for &(key, at, delta) in &events {
            let e = model.entry((key, at.div_euclid(MIN) * MIN)).or_default();
            e.0 += delta;
            e.1 += 1;
        }
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            for (key, at, delta) in events {
                let key = format!("video:{key}/view");
                producer
                    .add("events", key.as_bytes(), at, delta)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = producer.flush().await;
    assert_eq!(report.events_added, 10_000);
    assert_eq!(report.delivered.events_acknowledged, 10_000, "{report:?}");
    assert_eq!(
        report.delivered.events_failed + report.delivered.events_indeterminate,
        0
    );
    assert!(
        report.delivered.sums_sent < 10_000 && report.delivered.sums_sent >= model.len() as u64,
        "{report:?} for {} cells",
        model.len()
    );

    let client = node.client().await;
    for key in 0..30usize {
        let name = format!("video:{key}/view");
        let want: Vec<(i64, i64, u64)> = model
            .range((key, i64::MIN)..(key + 1, i64::MIN))
            .map(|(&(_, minute), &(sum, count))| (minute, sum, count))
            .collect();
        let total = client.total("events", name.as_bytes()).await.unwrap();
        assert_eq!(
            (total.sum, total.count),
            (
                want.iter().map(|w| w.1).sum::<i64>(),
                want.iter().map(|w| w.2).sum::<u64>()
            ),
            "total of {name}"
        );
        let points = client
            .range(
                "events",
                name.as_bytes(),
                Resolution::Minute,
                base - MIN,
                base + 4 * 60 * MIN,
            )
            .await
            .unwrap();
        let got: Vec<(i64, i64, u64)> = points
            .iter()
            .map(|p| (p.bucket_start_ms, p.sum, p.count))
            .collect();
        assert_eq!(got, want, "minute buckets of {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_sends_without_a_flush_and_refusals_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &format!("127.0.0.1:{}", free_port()), "sync");
    let producer = Producer::new(node.client().await, config());
    producer
        .add("events", b"lonely", now_ms(), 7)
        .await
        .unwrap();
    let client = node.client().await;
    let mut seen = 0;
    for _ in 0..100 {
        seen = client.total("events", b"lonely").await.unwrap().sum;
        if seen == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 7, "the timer never sent the buffered event");

    producer
        .add("no_such_namespace", b"k", now_ms(), 1)
        .await
        .unwrap();
    producer
        .add("no_such_namespace", b"k", now_ms(), 1)
        .await
        .unwrap();
    assert!(producer.add("events", b"", now_ms(), 1).await.is_err());
    let report = producer.flush().await;
    assert_eq!(
        report.events_added, 3,
        "the empty key is refused before it counts"
    );
    assert_eq!(report.delivered.events_acknowledged, 1);
    assert_eq!(report.delivered.events_failed, 2, "{report:?}");
}

/// The node stops answering (SIGSTOP): the producer's sums time out,
/// their outcome unknown, and go to the spool with their op ids. The
/// producer is dropped unflushed, as a crash would; a new one on the same
/// spool resends them when the node is back, and every event counts
/// once, including those whose first attempt the node applied late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_sums_outlive_the_producer_and_count_once() {
    use tally_client::ingest::SpoolConfig;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let node = NodeProcess::start(
        &dir.path().join("node"),
        &format!("127.0.0.1:{}", free_port()),
        "sync",
    );
    let mut client_config = tally_client::ClientConfig::with_seeds([node.addr.clone()]);
    client_config.request_timeout = Duration::from_millis(500);
    let client = tally_client::Client::connect(client_config).await.unwrap();
    let producer =
        Producer::with_spool(client.clone(), config(), &spool, SpoolConfig::default()).unwrap();
    let at = now_ms();
    for i in 0..200 {
        producer.add("events", b"a", at, 1).await.unwrap();
        producer
            .add("events", format!("k{}", i % 20).as_bytes(), at, 2)
            .await
            .unwrap();
    }
    producer.flush().await;
    node.pause();
    for i in 0..300 {
        producer.add("events", b"a", at, 1).await.unwrap();
        producer
            .add("events", format!("k{}", i % 20).as_bytes(), at, 2)
            .await
            .unwrap();
    }
    let report = producer.flush().await;
    assert!(report.delivered.events_spooled > 0, "{report:?}");
    assert_eq!(
        report.delivered.events_acknowledged + report.delivered.events_spooled,
        1_000,
        "{report:?}"
    );
    drop(producer);
    node.resume();
    let producer = Producer::with_spool(client, config(), &spool, SpoolConfig::default()).unwrap();
    assert!(
        producer.drain(Duration::from_secs(30)).await,
        "the spool never drained"
    );
    let report = producer.report();
    assert_eq!(
        report.delivered.events_failed
            + report.delivered.events_indeterminate
            + report.delivered.events_expired,
        0
    );
    let reader = node.client().await;
    assert_eq!(reader.total("events", b"a").await.unwrap().sum, 500);
    for k in 0..20 {
        let total = reader
            .total("events", format!("k{k}").as_bytes())
            .await
            .unwrap();
        assert_eq!((total.sum, total.count), (50, 25), "k{k}");
    }
}

/// The node is down (kill -9) for longer than its op-id window (6 s
/// here): the producer's sums, refused at every attempt, wait in its
/// spool, and get new op ids before theirs expire (after 2 s here), so
/// when the node returns they count once, none reported expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_never_applied_outlive_the_op_id_window_under_new_ids() {
    use tally_client::ingest::SpoolConfig;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let node_dir = dir.path().join("node");
    let flags = ["--durability", "sync", "--set", "limits.op_window.span_s=6"].map(String::from);
    let mut node = NodeProcess::start_with(&node_dir, &addr, &flags);
    let mut client_config = tally_client::ClientConfig::with_seeds([addr.clone()]);
    client_config.request_timeout = Duration::from_millis(500);
    let client = tally_client::Client::connect(client_config).await.unwrap();
    let producer_config = ProducerConfig {
        op_id_reissue_after: Duration::from_secs(2),
        ..config()
    };
    let spool = dir.path().join("spool");
    let producer =
        Producer::with_spool(client, producer_config, &spool, SpoolConfig::default()).unwrap();
    node.kill9();
    let at = now_ms();
    for i in 0..300 {
        producer
            .add("events", format!("k{}", i % 10).as_bytes(), at, 1)
            .await
            .unwrap();
    }
    let report = producer.flush().await;
    assert_eq!(report.delivered.events_spooled, 300, "{report:?}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let node = NodeProcess::start_with(&node_dir, &addr, &flags);
    assert!(
        producer.drain(Duration::from_secs(30)).await,
        "the spool never drained"
    );
    let report = producer.report();
    assert_eq!(report.delivered.events_acknowledged, 300, "{report:?}");
    assert_eq!(report.delivered.events_expired, 0, "{report:?}");
    let reader = node.client().await;
    for k in 0..10 {
        assert_eq!(
            reader
                .total("events", format!("k{k}").as_bytes())
                .await
                .unwrap()
                .sum,
            30,
            "k{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_through_the_producer_count_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--durability",
        "sync",
        "--set",
        "namespaces.viewers=distinct, minute:1d, day:30d, total",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = NodeProcess::start_with(dir.path(), &format!("127.0.0.1:{}", free_port()), &args);
    let client = node.client().await;
    let producer = Producer::new(client.clone(), config());
    let now = now_ms();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut exact: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); 3];
    for _ in 0..6_000 {
        // Members repeat often, within a minute and across minutes.
        let (k, member) = (rng.random_range(0..3), rng.random_range(0..2_500u32));
        let at = now - rng.random_range(0..3) * MIN;
        producer
            .add_member(
                "viewers",
                format!("video/{k}").as_bytes(),
                at,
                &member.to_le_bytes(),
            )
            .await
            .unwrap();
        exact[k].insert(member);
    }
    // One to a counter namespace: refused for good, not resent forever.
    producer
        .add_member("events", b"video/0", now, b"someone")
        .await
        .unwrap();
    let report = producer.flush().await;
    assert_eq!(report.members.members_added, 6_001);
    assert_eq!(report.members.members_acknowledged, 6_000, "{report:?}");
    assert_eq!(report.members.members_refused, 1, "{report:?}");
    assert_eq!(report.members.members_unsettled, 0, "{report:?}");
    for (k, members) in exact.iter().enumerate() {
        let mut sketch = tally_node::counter::hll::Sketch::new(14);
        members.iter().for_each(|m| sketch.add(&m.to_le_bytes()));
        let views = client
            .inspect_replicas("viewers", format!("video/{k}").as_bytes())
            .await
            .unwrap();
        assert!(views[0].value == sketch.encode(), "video/{k}");
        let (_, union) = client
            .distinct(
                "viewers",
                format!("video/{k}").as_bytes(),
                Resolution::Minute,
                now - 3 * MIN,
                now + 1,
            )
            .await
            .unwrap();
        assert_eq!(union, sketch.estimate().round() as u64);
    }
}
