//! Distinct namespaces with real processes: members added while a replica
//! is killed -9 and restarted are counted once each, the replicas'
//! sketches end byte for byte equal to the sketch of the exact member set
//! (through hints, then anti-entropy for what hints cannot bring), adding
//! members again changes no byte, a read's union over buckets is the
//! sketch of the union, not a sum, and a joining node streams the exact
//! sketches of the ranges it takes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{now_ms, Cluster};
use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::{Add, Client, ClientConfig, Consistency, ErrorCode, Outcome, Resolution};
use tally_node::counter::hll::Sketch;

const NS: &str = "namespaces.viewers=distinct, hour:2d, day:30d, total";
const HOUR: i64 = 3_600_000;

fn add(key: &str, member: &str, at: i64) -> Add {
    Add {
        namespace: "viewers".into(),
        key: key.as_bytes().to_vec(),
        timestamp_ms: at,
        member: member.as_bytes().to_vec(),
    }
}

fn sketch_of<'a>(members: impl IntoIterator<Item = &'a String>) -> Sketch {
    let mut s = Sketch::new(14);
    for m in members {
        s.add(m.as_bytes());
    }
    s
}

/// Adds `members` of `key` at `at` in batches of 500; every add must be
/// acknowledged.
async fn add_all(client: &Client, key: &str, members: &[String], at: i64) {
    for chunk in members.chunks(500) {
        let batch = chunk.iter().map(|m| add(key, m, at)).collect();
        let outcomes = client.add(batch).await;
        assert!(
            outcomes.iter().all(Outcome::is_ok),
            "{key}: {:?}",
            outcomes.iter().find(|o| !o.is_ok())
        );
    }
}

/// Each replica's bytes of `key`'s total cell, by host id.
async fn copies(client: &Client, key: &str) -> Vec<Vec<u8>> {
    let mut views = client
        .inspect_replicas("viewers", key.as_bytes())
        .await
        .unwrap();
    assert!(views.iter().all(|v| v.error.is_none()), "{views:?}");
    views.sort_by_key(|v| v.host_id);
    views.into_iter().map(|v| v.value).collect()
}

/// The keys written, and the members each was given: a cold key (3
/// members: sparse, a few bytes), a warm one, and a hot one whose total
/// cell turns dense, over two hours. Node 3 is killed -9 after the first
/// half and restarted at the end: it misses the rest, which the others
/// take at QUORUM. Half of the second half repeats the first half.
async fn written_through_a_kill(
    cluster: &mut Cluster,
    client: &Client,
    now: i64,
) -> Vec<(String, BTreeSet<String>)> {
    let sizes = [
        ("video/cold", 3usize),
        ("video/warm", 400),
        ("video/hot", 6_000),
    ];
    let mut written: Vec<(String, BTreeSet<String>)> = Vec::new();
    for (key, n) in sizes {
        let members: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
        add_all(client, key, &members[..n / 2], now - HOUR).await;
        written.push((key.to_owned(), members[..n / 2].iter().cloned().collect()));
    }
    cluster.kill9(2);
    for ((key, n), (_, set)) in sizes.iter().zip(&mut written) {
        let members: Vec<String> = (n / 4..*n).map(|i| format!("user{i}")).collect();
        add_all(client, key, &members, now).await;
        set.extend(members);
    }
    cluster.restart(2);
    cluster.wait_all_up().await;
    written
}

/// Whether every replica of every key holds the sketch of exactly the
/// members written.
async fn exact_everywhere(client: &Client, written: &[(String, BTreeSet<String>)]) -> bool {
    for (key, members) in written {
        let exact = sketch_of(members).encode();
        if copies(client, key).await.iter().any(|c| *c != exact) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_bring_a_killed_replica_the_members_it_missed() {
    let mut cluster = Cluster::start(3, 3, &["--set", NS]).await;
    let client = cluster.client(Consistency::Quorum).await;
    let written = written_through_a_kill(&mut cluster, &client, now_ms()).await;
    cluster
        .wait_until(30, "hinted sketches to converge node 3", || {
            exact_everywhere(&client, &written)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_added_through_a_kill_converge_to_the_exact_sketch_on_every_replica() {
    // Hints off: nothing but anti-entropy brings node 3 what it missed.
    let mut cluster = Cluster::start(3, 3, &["--set", NS, "--no-hinted-handoff"]).await;
    let client = cluster.client(Consistency::Quorum).await;
    let now = now_ms();
    let written = written_through_a_kill(&mut cluster, &client, now).await;
    for (key, _) in &written {
        let copies = copies(&client, key).await;
        assert!(
            copies[0] == copies[1] && copies[2] != copies[0],
            "{key}: node 3 missed adds"
        );
    }
    let mut config = ClientConfig::with_seeds([cluster.addrs[2].clone()]);
    config.request_timeout = Duration::from_secs(120);
    config.token_aware = false;
    let admin = Client::connect(config).await.unwrap();
    let report = admin.repair().await.unwrap();
    assert!(report.cells_repaired > 0, "{report:?}");

    for (key, members) in &written {
        let exact = sketch_of(members);
        let copies = copies(&client, key).await;
        assert_eq!(copies.len(), 3);
        for (i, copy) in copies.iter().enumerate() {
            assert!(
                *copy == exact.encode(),
                "{key}: host {}'s sketch is not the sketch of the {} members written ({} bytes, estimate {:?})",
                i + 1,
                members.len(),
                copy.len(),
                Sketch::decode(copy).map(|s| s.estimate())
            );
        }
        // The read's union over both hours is the sketch of all members;
        // a member of both hours counts once.
        let (points, union) = client
            .distinct(
                "viewers",
                key.as_bytes(),
                Resolution::Hour,
                now - 2 * HOUR,
                now + 1,
            )
            .await
            .unwrap();
        assert_eq!(points.len(), 2, "{key}: {points:?}");
        assert_eq!(union, exact.estimate().round() as u64, "{key}");
        let sum: u64 = points.iter().map(|p| p.estimate).sum();
        assert!(
            sum > union,
            "{key}: the hours overlap, so their sum {sum} exceeds the union {union}"
        );
    }
    let cold = &written[0];
    assert_eq!(cold.1.len(), 3);
    let cold_bytes = copies(&client, &cold.0).await[0].len();
    assert!(
        cold_bytes < 32,
        "a cold key's total costs {cold_bytes} bytes"
    );
    let hot = copies(&client, "video/hot").await;
    assert_eq!(hot[0].len(), 3 + (1 << 14), "the hot key's total is dense");
    let hot_estimate = Sketch::decode(&hot[0]).unwrap().estimate();
    assert!(
        (hot_estimate - 6_000.0).abs() < 6_000.0 * 0.03,
        "{hot_estimate}"
    );

    // Adding members again changes no byte of any replica.
    for (key, members) in &written {
        let before = copies(&client, key).await;
        let again: Vec<String> = members.iter().take(300).cloned().collect();
        add_all(&client, key, &again, now).await;
        add_all(&client, key, &again, now - HOUR).await;
        let cluster_all = cluster.client(Consistency::All).await;
        let (_, union) = cluster_all
            .distinct("viewers", key.as_bytes(), Resolution::Total, 0, now + 1)
            .await
            .unwrap();
        assert_eq!(union, sketch_of(members).estimate().round() as u64);
        assert_eq!(copies(&client, key).await, before, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinds_refuse_each_other_and_bad_members() {
    let cluster = Cluster::start(1, 1, &["--set", NS]).await;
    let client = cluster.client(Consistency::One).await;
    let now = now_ms();
    let refused = |outcome: &Outcome<()>, code: ErrorCode| matches!(outcome, Outcome::Failed(tally_client::ClientError::Node { code: c, .. }) if *c == code);
    let mut to_events = add("k", "m", now);
    to_events.namespace = "events".into();
    let outcomes = client
        .add(vec![
            to_events,
            add("k", "", now),
            add("k", &"x".repeat(1025), now),
            add("k", "fine", now),
        ])
        .await;
    assert!(refused(&outcomes[0], ErrorCode::WrongKind), "{outcomes:?}");
    assert!(
        refused(&outcomes[1], ErrorCode::InvalidMember),
        "{outcomes:?}"
    );
    assert!(
        refused(&outcomes[2], ErrorCode::InvalidMember),
        "{outcomes:?}"
    );
    assert!(outcomes[3].is_ok(), "{outcomes:?}");
    let increment = tally_client::Increment {
        namespace: "viewers".into(),
        key: b"k".to_vec(),
        timestamp_ms: now,
        delta: 1,
        events: 1,
        op_id: None,
    };
    let outcomes = client.increment(vec![increment]).await;
    assert!(refused(&outcomes[0], ErrorCode::WrongKind), "{outcomes:?}");
    let read = client.total("viewers", b"k").await.unwrap_err();
    assert!(read.to_string().contains("WrongKind"), "{read}");
    let read = client
        .distinct("events", b"k", Resolution::Day, 0, now)
        .await
        .unwrap_err();
    assert!(read.to_string().contains("WrongKind"), "{read}");
    let (_, union) = client
        .distinct("viewers", b"k", Resolution::Day, now - HOUR, now + 1)
        .await
        .unwrap();
    assert_eq!(union, 1, "only the valid member counted");
}

/// Waits until the node at `addr` sees host `host` normal.
async fn wait_normal(admin: &Client, host: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(AdminReply::Cluster(v)) = admin.admin(&AdminRequest::Cluster).await {
            if v.members
                .iter()
                .any(|m| m.host_id == host && m.state == "normal")
            {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "host {host} never became normal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_streams_the_sketches_of_its_new_ranges() {
    let root = tempfile::tempdir().unwrap();
    let a1 = format!("127.0.0.1:{}", common::free_port());
    let flags = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let _n1 = common::NodeProcess::start_with(
        &root.path().join("n1"),
        &a1,
        &flags(&["--init", "--replication-factor", "2"]),
    );
    let mut config = ClientConfig::with_seeds([a1.clone()]);
    config.request_timeout = Duration::from_secs(60);
    config.token_aware = false;
    let admin = Client::connect(config).await.unwrap();
    wait_normal(&admin, 1).await;
    // A namespace created through the metadata, as operators do.
    let reply = admin
        .admin(&AdminRequest::CreateNamespace {
            name: "viewers".into(),
            spec: "distinct:12, day:30d, total".into(),
        })
        .await
        .unwrap();
    assert!(matches!(reply, AdminReply::Done { .. }), "{reply:?}");
    // RF 2 on one node: ONE is what it can take until the join.
    let mut config = ClientConfig::with_seeds([a1.clone()]);
    config.consistency = Consistency::One;
    let writer = Client::connect(config).await.unwrap();
    let now = now_ms();
    let mut written: Vec<(String, BTreeSet<String>)> = Vec::new();
    for k in 0..20 {
        let key = format!("video/{k}");
        let members: Vec<String> = (0..(k * 37 + 1)).map(|i| format!("u{i}")).collect();
        add_all(&writer, &key, &members, now).await;
        written.push((key, members.into_iter().collect()));
    }

    let a2 = format!("127.0.0.1:{}", common::free_port());
    let _n2 =
        common::NodeProcess::start_with(&root.path().join("n2"), &a2, &flags(&["--seed", &a1]));
    wait_normal(&admin, 2).await;
    for (key, members) in &written {
        let mut exact = Sketch::new(12);
        members.iter().for_each(|m| exact.add(m.as_bytes()));
        let copies = copies(&admin, key).await;
        assert_eq!(copies.len(), 2, "{key}: RF 2 on two nodes");
        assert!(
            copies.iter().all(|c| *c == exact.encode()),
            "{key}: the joined node streamed the exact sketch"
        );
    }
}
