//! Topology changes through the Raft-agreed metadata, on real processes
//! over TCP: bootstrap, joins under load, removenode of a killed node,
//! decommission, serialized joins, racks (one replica per rack; a rack
//! lost under load), and the refusals (wrong cluster, a removed host id,
//! too few nodes to leave).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, http, inc, NodeProcess};
use tally_client::admin::{AdminReply, AdminRequest, ClusterView};
use tally_client::{Client, ClientConfig, Consistency, Outcome};

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A client with a long timeout and no retries, for operator requests.
async fn admin_client(addr: &str) -> Client {
    let mut config = ClientConfig::with_seeds([addr.to_owned()]);
    config.request_timeout = Duration::from_secs(120);
    config.max_retries = 0;
    config.token_aware = false;
    Client::connect(config).await.unwrap()
}

async fn admin(addr: &str, request: AdminRequest) -> AdminReply {
    admin_client(addr).await.admin(&request).await.unwrap()
}

async fn view(addr: &str) -> ClusterView {
    match admin(addr, AdminRequest::Cluster).await {
        AdminReply::Cluster(v) => v,
        other => panic!("{other:?}"),
    }
}

fn state_of(v: &ClusterView, host: u64) -> Option<&str> {
    v.members
        .iter()
        .find(|m| m.host_id == host)
        .map(|m| m.state.as_str())
}

/// Waits until the node at `addr` sees host `host` in `state`.
async fn wait_state(addr: &str, host: u64, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = view(addr).await;
        if state_of(&v, host) == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "host {host} never became {state}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the first node of a new cluster (`--init`) in `root/n1` with
/// replication factor `rf`; waits until it is normal.
async fn bootstrap(root: &Path, rf: usize) -> (NodeProcess, String) {
    let a1 = addr();
    let n1 = NodeProcess::start_with(
        &root.join("n1"),
        &a1,
        &args(&["--init", "--replication-factor", &rf.to_string()]),
    );
    wait_state(&a1, 1, "normal").await;
    (n1, a1)
}

/// Starts a joining node; waits until it is normal in `seed`'s metadata.
async fn join(dir: &Path, seed: &str, expect_host: u64) -> NodeProcess {
    join_with(dir, seed, expect_host, &[]).await
}

/// [`join`] with more flags.
async fn join_with(dir: &Path, seed: &str, expect_host: u64, extra: &[&str]) -> NodeProcess {
    let a = addr();
    let mut flags = args(&["--seed", seed]);
    flags.extend(args(extra));
    let node = NodeProcess::start_with(dir, &a, &flags);
    wait_state(seed, expect_host, "normal").await;
    node
}

/// Acknowledged and indeterminate sums per key, from a steady load.
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, i64>,
    maybe: HashMap<String, i64>,
    failed: u64,
}

fn start_load(
    client: Client,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = Arc::new(client);
    (0..4)
        .map(|w| {
            let (client, stop, ledger) = (client.clone(), stop.clone(), ledger.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("k{}", (i * 7 + w * 13) % 200);
                    let delta = 1 + (i % 5) as i64;
                    let outcome = client.increment(vec![inc(&key, delta)]).await.pop();
                    {
                        let mut l = ledger.lock().unwrap();
                        match outcome {
                            Some(Outcome::Ok(())) => *l.acked.entry(key).or_default() += delta,
                            Some(Outcome::Indeterminate(_)) => {
                                *l.maybe.entry(key).or_default() += delta
                            }
                            _ => l.failed += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// Every key's QUORUM total through `addr` lies within [acked, acked +
/// indeterminate]: nothing acknowledged lost, nothing counted twice.
async fn check_totals(addr: &str, ledger: &Ledger) {
    let client = Client::connect(ClientConfig::with_seeds([addr.to_owned()]))
        .await
        .unwrap();
    assert!(!ledger.acked.is_empty(), "the load acknowledged nothing");
    for (key, acked) in &ledger.acked {
        let maybe = ledger.maybe.get(key).copied().unwrap_or(0);
        let total = client.total("events", key.as_bytes()).await.unwrap().sum;
        assert!(
            total >= *acked && total <= acked + maybe,
            "{key}: total {total}, acknowledged {acked}, indeterminate {maybe}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_grows_and_shrinks_under_load_without_losing_or_doubling_counts() {
    let root = tempfile::tempdir().unwrap();
    let (n1, a1) = bootstrap(root.path(), 3).await;
    let n2 = join(&root.path().join("n2"), &a1, 2).await;
    let mut n3 = Some(join(&root.path().join("n3"), &a1, 3).await);
    let v = view(&a1).await;
    assert_eq!(v.voters, vec![1, 2, 3], "three voters once there are three");

    // A steady load through node 1 and node 2.
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let client = Client::connect(ClientConfig::with_seeds([a1.clone(), n2.addr.clone()]))
        .await
        .unwrap();
    let load = start_load(client, stop.clone(), ledger.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3 -> 4 under load.
    let n4 = join(&root.path().join("n4"), &a1, 4).await;
    // Node 4 applies the metadata log after the seed does: wait until its
    // own view holds the join.
    wait_state(&n4.addr, 4, "normal").await;
    let v = view(&n4.addr).await;
    let owns4 = v.members.iter().find(|m| m.host_id == 4).unwrap().ownership;
    let moved = owns4 / 3.0;
    eprintln!("fraction of replica copies moved to the 4th node: {moved:.3}");
    assert!((0.15..0.40).contains(&moved), "{moved}");
    let total: f64 = v.members.iter().map(|m| m.ownership).sum();
    assert!((total - 3.0).abs() < 1e-6, "ownership sums to RF: {total}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Node 1 drops what node 4 took from it (under load); counts stay
    // whole (checked at the end).
    match admin(&a1, AdminRequest::Cleanup).await {
        AdminReply::Cleaned { cells } => assert!(cells > 0, "node 4 took some of node 1's ranges"),
        other => panic!("{other:?}"),
    }

    // Kill node 3, then removenode it under load (from node 1).
    n3.as_mut().unwrap().kill9();
    let dir3 = n3.take().unwrap().dir.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match admin(&a1, AdminRequest::RemoveNode { host_id: 3 }).await {
            AdminReply::Refused { reason } if reason.contains("is up") => {
                assert!(Instant::now() < deadline, "node 3 never seen down");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    assert!(matches!(reply, AdminReply::Done { .. }), "{reply:?}");
    assert_eq!(state_of(&view(&a1).await, 3), Some("left"));

    // Three normal nodes cannot keep RF 3 with one fewer: a clear refusal.
    match admin(&a1, AdminRequest::Decommission { host_id: 2 }).await {
        AdminReply::Refused { reason } => assert!(reason.contains("cannot keep"), "{reason}"),
        other => panic!("{other:?}"),
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "load: {} keys acknowledged, {} failed requests",
        ledger.acked.len(),
        ledger.failed
    );
    check_totals(&a1, &ledger).await;
    check_totals(&n4.addr, &ledger).await;

    // A removed host id never comes back.
    let back = std::process::Command::new(env!("CARGO_BIN_EXE_tally-node"))
        .arg("--data-dir")
        .arg(&dir3)
        .arg("--listen")
        .arg(addr())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!back.status.success());
    let stderr = String::from_utf8_lossy(&back.stderr);
    assert!(stderr.contains("never reused"), "{stderr}");

    // Voters follow the membership: 1, 2 and 4 now.
    let v = view(&a1).await;
    assert_eq!(v.voters, vec![1, 2, 4]);
    drop((n1, n2, n4));
}

/// Six nodes in three racks (host `h` in rack `r{(h-1) % 3}`), RF 3: every
/// range has one replica per rack, so with both nodes of one rack killed
/// (kill -9) under load, QUORUM writes and reads go on, and once the rack
/// is back every count is whole; a decommission keeps one replica per
/// rack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_lost_under_load_costs_no_quorum_and_no_count() {
    let root = tempfile::tempdir().unwrap();
    let rack = |h: u64| format!("r{}", (h - 1) % 3);
    let a1 = addr();
    let n1 = NodeProcess::start_with(
        &root.path().join("n1"),
        &a1,
        &args(&["--init", "--replication-factor", "3", "--rack", &rack(1)]),
    );
    wait_state(&a1, 1, "normal").await;
    let mut nodes = vec![Some(n1)];
    for h in 2..=6u64 {
        let dir = root.path().join(format!("n{h}"));
        nodes.push(Some(join_with(&dir, &a1, h, &["--rack", &rack(h)]).await));
    }
    let addrs: Vec<String> = nodes.iter().flatten().map(|n| n.addr.clone()).collect();
    wait_state(&addrs[5], 6, "normal").await;
    let client = Client::connect(ClientConfig::with_seeds(addrs.clone()))
        .await
        .unwrap();
    let table = client.refresh_routing().await.unwrap();
    assert_eq!(table.nodes.len(), 6);
    // Each rack holds one copy of everything, split between its two
    // nodes: the allocator chose the joiners' tokens on the rack-aware
    // ring (a rack-blind allocator left 0.29-0.71).
    let owns: Vec<f64> = view(&addrs[5])
        .await
        .members
        .iter()
        .map(|m| m.ownership)
        .collect();
    assert!(
        owns.iter().all(|o| (0.4..0.6).contains(o)),
        "ownership {owns:?}"
    );
    for range in &table.ranges {
        let mut racks: Vec<String> = range.replicas.iter().map(|&h| rack(h)).collect();
        racks.sort();
        assert_eq!(
            racks,
            ["r0", "r1", "r2"],
            "range ending {}: {:?}",
            range.end_token,
            range.replicas
        );
    }

    // Load through the nodes of racks r0 and r1; then rack r2 (hosts 3
    // and 6) dies.
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let survivors = [0, 1, 3, 4].map(|i| addrs[i].clone());
    let load_client = Client::connect(ClientConfig::with_seeds(survivors))
        .await
        .unwrap();
    let load = start_load(load_client, stop.clone(), ledger.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ledger.lock().unwrap().failed;
    for i in [2, 5] {
        nodes[i].as_mut().unwrap().kill9();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acked_while_down: i64 = {
        let l = ledger.lock().unwrap();
        l.acked.values().sum()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let l = ledger.lock().unwrap();
        assert!(
            l.acked.values().sum::<i64>() > acked_while_down,
            "QUORUM writes stopped with a rack down"
        );
        assert_eq!(l.failed, before, "writes failed with one rack down");
    }
    let reader = Client::connect(ClientConfig::with_seeds([addrs[0].clone()]))
        .await
        .unwrap();
    reader.total("events", b"k1").await.unwrap();

    // The rack comes back; hints catch it up.
    for i in [2, 5] {
        let dir = nodes[i].take().unwrap().dir.clone();
        nodes[i] = Some(NodeProcess::start_with(&dir, &addrs[i], &[]));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    for a in &addrs {
        check_totals(a, &ledger).await;
    }

    // A decommission keeps the rule: with host 6 gone, rack r2 is host 3
    // alone, and it holds a replica of every range.
    match admin(&a1, AdminRequest::Decommission { host_id: 6 }).await {
        AdminReply::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    let table = client.refresh_routing().await.unwrap();
    assert_eq!(table.nodes.len(), 5, "{:?}", table.nodes);
    for range in &table.ranges {
        let mut racks: Vec<String> = range.replicas.iter().map(|&h| rack(h)).collect();
        racks.sort();
        assert_eq!(racks, ["r0", "r1", "r2"], "{:?}", range.replicas);
        assert!(!range.replicas.contains(&6));
    }
    for a in addrs.iter().take(5) {
        check_totals(a, &ledger).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_serialized_a_wrong_cluster_is_refused_and_decommission_moves_data() {
    let root = tempfile::tempdir().unwrap();
    let a1 = addr();
    let _n1 = NodeProcess::start_with(
        &root.path().join("n1"),
        &a1,
        &args(&[
            "--init",
            "--replication-factor",
            "2",
            "--cluster-name",
            "blue",
        ]),
    );
    wait_state(&a1, 1, "normal").await;
    // RF 2 on one node: QUORUM is unavailable (as in Cassandra), ONE works;
    // the joins must stream these writes to their new replicas.
    let mut config = ClientConfig::with_seeds([a1.clone()]);
    config.consistency = Consistency::One;
    let client = Client::connect(config).await.unwrap();
    let mut quorum = ClientConfig::with_seeds([a1.clone()]);
    quorum.max_retries = 0;
    let quorum = Client::connect(quorum).await.unwrap();
    let r = quorum.increment(vec![inc("q", 1)]).await.pop();
    assert!(
        matches!(r, Some(Outcome::Failed(_))),
        "QUORUM of RF 2 on one node: {r:?}"
    );
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut one = |k: String, d: i64| {
        *acked.entry(k).or_default() += d;
    };
    for i in 0..100 {
        let key = format!("d{i}");
        let r = client.increment(vec![inc(&key, i + 1)]).await.pop();
        assert!(matches!(r, Some(Outcome::Ok(()))), "{r:?}");
        one(key, i + 1);
    }

    // Two nodes join at once: both end normal, one after the other.
    let (a2, a3) = (addr(), addr());
    let spawn = |dir: &Path, a: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally-node"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(a)
            .args(["--seed", &a1, "--cluster-name", "blue", "--no-http"])
            .env("RUST_LOG", "warn,openraft=off")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut c2 = spawn(&root.path().join("n2"), &a2);
    let mut c3 = spawn(&root.path().join("n3"), &a3);
    wait_state(&a1, 2, "normal").await;
    wait_state(&a1, 3, "normal").await;
    let v = view(&a1).await;
    assert_eq!(v.epoch, 5, "bootstrap, then join and finish twice: {v:?}");

    // A node of another cluster is refused, with the reason.
    let wrong = std::process::Command::new(env!("CARGO_BIN_EXE_tally-node"))
        .arg("--data-dir")
        .arg(root.path().join("wrong"))
        .arg("--listen")
        .arg(addr())
        .args(["--seed", &a1, "--cluster-name", "green"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("not \"green\""), "{stderr}");

    // Namespaces through the metadata reach every node.
    match admin(
        &a3,
        AdminRequest::CreateNamespace {
            name: "views".into(),
            spec: "hour:30d,total".into(),
        },
    )
    .await
    {
        AdminReply::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    match admin(
        &a2,
        AdminRequest::CreateNamespace {
            name: "bad".into(),
            spec: "fortnight:1d".into(),
        },
    )
    .await
    {
        AdminReply::Refused { .. } => {}
        other => panic!("a bad spec must be refused: {other:?}"),
    }
    let c = Client::connect(ClientConfig::with_seeds([a2.clone()]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut item = inc("v", 1);
        item.namespace = "views".into();
        match c.increment(vec![item]).await.pop() {
            Some(Outcome::Ok(())) => break,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Decommission node 1 (asked through node 3) under a steady load
    // through nodes 2 and 3: its data moves, counts stay whole, read at ALL
    // from the two that remain.
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load_client = Client::connect(ClientConfig::with_seeds([a2.clone(), a3.clone()]))
        .await
        .unwrap();
    let load = start_load(load_client, stop.clone(), ledger.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    match admin(&a3, AdminRequest::Decommission { host_id: 1 }).await {
        AdminReply::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(state_of(&view(&a2).await, 1), Some("left"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    check_totals(&a2, &ledger).await;
    let mut config = ClientConfig::with_seeds([a2.clone(), a3.clone()]);
    config.consistency = Consistency::All;
    let all = Client::connect(config).await.unwrap();
    for (key, sum) in &acked {
        let got = all.total("events", key.as_bytes()).await.unwrap().sum;
        assert_eq!(got, *sum, "{key}");
    }
    let _ = c2.kill();
    let _ = c3.kill();
    let _ = c2.wait();
    let _ = c3.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_metadata_leader_during_a_join_leaves_a_whole_ring() {
    let root = tempfile::tempdir().unwrap();
    let (mut n1, a1) = bootstrap(root.path(), 3).await;
    let n2 = join(&root.path().join("n2"), &a1, 2).await;
    let n3 = join(&root.path().join("n3"), &a1, 3).await;
    // Enough data that streaming takes a moment.
    let client = Client::connect(ClientConfig::with_seeds([n2.addr.clone(), n3.addr.clone()]))
        .await
        .unwrap();
    let mut acked: HashMap<String, i64> = HashMap::new();
    for chunk in 0..40 {
        let items: Vec<_> = (0..250)
            .map(|i| inc(&format!("m{}", chunk * 250 + i), 1 + i64::from(i % 3)))
            .collect();
        let sums: Vec<(String, i64)> = items
            .iter()
            .map(|i| (String::from_utf8(i.key.clone()).unwrap(), i.delta))
            .collect();
        let outcomes = client.increment(items).await;
        for ((key, delta), outcome) in sums.into_iter().zip(outcomes) {
            assert!(matches!(outcome, Outcome::Ok(())), "{outcome:?}");
            *acked.entry(key).or_default() += delta;
        }
    }
    assert_eq!(view(&a1).await.leader, Some(1));

    // Node 4 joins through node 2; the leader dies as soon as the join is
    // in the metadata.
    let a4 = addr();
    let dir4 = root.path().join("n4");
    let mut c4 = std::process::Command::new(env!("CARGO_BIN_EXE_tally-node"))
        .arg("--data-dir")
        .arg(&dir4)
        .arg("--listen")
        .arg(&a4)
        .args(["--seed", &n2.addr, "--no-http"])
        .env("RUST_LOG", "warn,openraft=off")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_of(&view(&n2.addr).await, 4).is_none() {
        assert!(Instant::now() < deadline, "node 4 never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n1.kill9();

    // The join completes under the new leader; or, had it been rolled
    // back, node 4 would own nothing. Either way the ring is whole.
    let deadline = Instant::now() + Duration::from_secs(90);
    let outcome = loop {
        let v = view(&n2.addr).await;
        match state_of(&v, 4) {
            Some("normal") | Some("left") => break v,
            _ => assert!(Instant::now() < deadline, "join stuck: {v:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        outcome.leader.is_some() && outcome.leader != Some(1),
        "a new leader: {outcome:?}"
    );
    assert_eq!(state_of(&outcome, 4), Some("normal"), "{outcome:?}");
    assert!(
        outcome.members.iter().all(|m| m.state == "normal"),
        "{outcome:?}"
    );
    let owned: f64 = outcome.members.iter().map(|m| m.ownership).sum();
    assert!((owned - 3.0).abs() < 1e-6, "{owned}");

    // Every count is whole, read at QUORUM through the new node (node 1 is
    // still dead: node 4 must hold its share).
    let reader = Client::connect(ClientConfig::with_seeds([a4.clone()]))
        .await
        .unwrap();
    for (key, sum) in &acked {
        let got = reader.total("events", key.as_bytes()).await.unwrap().sum;
        assert_eq!(got, *sum, "{key}");
    }
    let _ = c4.kill();
    let _ = c4.wait();
}

/// The internal steps of a join or a leave, sent by anyone, are refused
/// unless the metadata's rules allow them: a normal member is never
/// removed in one step, a phantom never finishes a join nor votes, and a
/// namespace that exists (the default one included) is never redefined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_steps_and_redefinitions_are_refused_whoever_sends_them() {
    let root = tempfile::tempdir().unwrap();
    let (_n1, a1) = bootstrap(root.path(), 2).await;
    let n2 = join(&root.path().join("n2"), &a1, 2).await;
    let a2 = n2.addr.clone();
    let client = Client::connect(ClientConfig::with_seeds([a1.clone(), a2.clone()]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < 50 {
        match client.increment(vec![inc("kept", 1)]).await.pop() {
            Some(Outcome::Ok(())) => acked += 1,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
    }

    let refused = |reply: AdminReply, what: &str| match reply {
        AdminReply::Refused { reason } => reason,
        other => panic!("{what} was not refused: {other:?}"),
    };
    // Remove of live, normal members, through either node.
    let reason = refused(
        admin(&a1, AdminRequest::Remove { host_id: 2 }).await,
        "Remove 2",
    );
    assert!(reason.contains("only a leaving member"), "{reason}");
    refused(
        admin(&a2, AdminRequest::Remove { host_id: 1 }).await,
        "Remove 1",
    );
    let v = view(&a1).await;
    assert_eq!(state_of(&v, 1), Some("normal"));
    assert_eq!(state_of(&v, 2), Some("normal"));

    // A phantom registers (nothing checks its address yet), but it never
    // votes and never serves reads.
    let phantom = format!("127.0.0.1:{}", free_port());
    let host = match admin(
        &a2,
        AdminRequest::Register {
            cluster_name: v.cluster_name.clone().unwrap(),
            address: phantom.clone(),
            rack: None,
        },
    )
    .await
    {
        AdminReply::Done {
            host_id: Some(h), ..
        } => h,
        other => panic!("{other:?}"),
    };
    let reason = refused(
        admin(
            &a1,
            AdminRequest::AddToGroup {
                host_id: host,
                address: phantom.clone(),
            },
        )
        .await,
        "AddToGroup of a phantom",
    );
    assert!(reason.contains("does not answer"), "{reason}");
    refused(
        admin(
            &a1,
            AdminRequest::AddToGroup {
                host_id: host,
                address: a2.clone(),
            },
        )
        .await,
        "AddToGroup at another member's address",
    );
    let reason = refused(
        admin(&a1, AdminRequest::FinishJoin { host_id: host }).await,
        "FinishJoin of a phantom",
    );
    assert!(reason.contains("does not answer"), "{reason}");
    assert_eq!(state_of(&view(&a1).await, host), Some("joining"));
    match admin(&a1, AdminRequest::Abort { host_id: host }).await {
        AdminReply::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !view(&a1).await.voters.contains(&host),
        "a phantom never votes"
    );

    // The default namespace, and one made through the metadata: the same
    // definition again is a no-op, another one is refused.
    let create = |name: &str, spec: &str| AdminRequest::CreateNamespace {
        name: name.into(),
        spec: spec.into(),
    };
    let reason = refused(
        admin(&a1, create("events", "minute:1d")).await,
        "redefining events",
    );
    assert!(reason.contains("never redefined"), "{reason}");
    assert!(matches!(
        admin(&a1, create("events", tally_node::DEFAULT_SPEC)).await,
        AdminReply::Done { .. }
    ));
    assert!(matches!(
        admin(&a2, create("views", "hour:30d, total")).await,
        AdminReply::Done { .. }
    ));
    assert!(matches!(
        admin(&a1, create("views", "hour:30d,total")).await,
        AdminReply::Done { .. }
    ));
    refused(
        admin(&a1, create("views", "minute:1d")).await,
        "redefining views",
    );
    // An explicit change that keeps every resolution is taken; one that
    // drops a resolution, or touches the built-in namespace, is not.
    let alter = |name: &str, spec: &str| AdminRequest::AlterNamespace {
        name: name.into(),
        spec: spec.into(),
    };
    assert!(matches!(
        admin(&a2, alter("views", "minute:1d, hour:60d, total")).await,
        AdminReply::Done { .. }
    ));
    let reason = refused(
        admin(&a1, alter("views", "minute:1d, total")).await,
        "dropping hour",
    );
    assert!(reason.contains("never drop"), "{reason}");
    refused(
        admin(&a1, alter("events", tally_node::DEFAULT_SPEC)).await,
        "altering events",
    );
    refused(
        admin(&a1, alter("nope", "total")).await,
        "altering a missing namespace",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let described = client.describe_namespace("views").await.unwrap();
        if described.resolutions.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change never reached the client's node: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged increment is still there, and hour reads work.
    let mut all = ClientConfig::with_seeds([a1.clone(), a2.clone()]);
    all.consistency = Consistency::All;
    let all = Client::connect(all).await.unwrap();
    assert_eq!(all.total("events", b"kept").await.unwrap().sum, 50);
    let now = common::now_ms();
    let hours = all
        .range(
            "events",
            b"kept",
            tally_client::Resolution::Hour,
            now - 7_200_000,
            now + 3_600_000,
        )
        .await
        .unwrap();
    assert_eq!(hours.iter().map(|p| p.sum).sum::<i64>(), 50);
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The README's three nodes, one follower killed for good (a dead node
/// awaiting removenode), then a metadata change: the leader retries the
/// dead voter with backoff, not in a loop (it once burned 60-160% of a
/// core and logged 116,572 lines in 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_voter_does_not_spin_the_metadata_leader() {
    let root = tempfile::tempdir().unwrap();
    let (n1, a1) = bootstrap(root.path(), 3).await;
    let n2 = join(&root.path().join("n2"), &a1, 2).await;
    let mut n3 = join(&root.path().join("n3"), &a1, 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while view(&a1).await.voters.len() < 3 || view(&a1).await.leader == Some(3) {
        assert!(Instant::now() < deadline, "three voters never formed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n3.kill9();
    match admin(
        &a1,
        AdminRequest::CreateNamespace {
            name: "spin".into(),
            spec: "minute:1d, total".into(),
        },
    )
    .await
    {
        AdminReply::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    let pid = match view(&a1).await.leader {
        Some(2) => n2.child.id(),
        _ => n1.child.id(),
    };
    let before = cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let share = (cpu_seconds(pid) - before) / started.elapsed().as_secs_f64();
    eprintln!(
        "leader CPU with a dead voter: {:.0}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.25,
        "the leader used {:.0}% of a core",
        share * 100.0
    );
}

/// `/readyz` says a joining node cannot serve yet, and why, until its join
/// finishes; a normal member is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_node_joins_and_200_once_it_is_normal() {
    let root = tempfile::tempdir().unwrap();
    let (n1, a1) = bootstrap(root.path(), 3).await;
    let _n2 = join(&root.path().join("n2"), &a1, 2).await;
    let n3 = join(&root.path().join("n3"), &a1, 3).await;
    let ready = |node: &NodeProcess| {
        let h = node.http.clone().unwrap();
        async move {
            tokio::task::spawn_blocking(move || http(&h, "GET", "/readyz", None).unwrap())
                .await
                .unwrap()
        }
    };
    assert_eq!(ready(&n1).await.status, 200);
    // With node 3 paused, a fourth node's join cannot settle or stream
    // from it, so it stays joining for a while.
    n3.pause();
    let a4 = addr();
    let n4 = NodeProcess::start_with(&root.path().join("n4"), &a4, &args(&["--seed", &a1]));
    wait_state(&a1, 4, "joining").await;
    let answer = ready(&n4).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("joining"), "{}", answer.body);
    n3.resume();
    wait_state(&a1, 4, "normal").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = ready(&n4).await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
