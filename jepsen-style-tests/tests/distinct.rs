//! Distinct counts under the harness's faults: three real nodes take
//! adds of members from clients bound one to each node while the nemesis
//! partitions the network and kill -9s nodes. After healing, hints and a
//! repair pass, every replica of every key holds, byte for byte, the
//! sketch of exactly the members whose adds may have applied (each
//! acknowledged add, and each with an unknown outcome, sent again until
//! acknowledged: an add is idempotent), and adding members again changes
//! no byte.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::{Add, Client, Outcome};
use tally_jepsen::cluster::{Cluster, ClusterConfig};
use tally_jepsen::nemesis::{self, FaultKind};
use tally_node::counter::hll::Sketch;

const KEYS: [&str; 4] = ["video/a", "video/b", "video/c", "video/d"];

fn add(key: &str, member: &str) -> Add {
    Add {
        namespace: "viewers".into(),
        key: key.as_bytes().to_vec(),
        timestamp_ms: tally_testkit::now_ms(),
        member: member.as_bytes().to_vec(),
    }
}

/// What the clients know of their adds: per key, the members certainly
/// applied and those that may have been.
#[derive(Debug, Default)]
struct Ledger {
    applied: Vec<BTreeSet<String>>,
    maybe: BTreeSet<(usize, String)>,
}

/// Adds members until `until`: each batch 20 members of one key, new ones
/// mostly, some again.
async fn writer(c: usize, client: Client, ledger: Arc<Mutex<Ledger>>, until: Instant) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
    let mut next = 0u64;
    while Instant::now() < until {
        let k = rng.random_range(0..KEYS.len());
        let members: Vec<String> = (0..20)
            .map(|_| {
                if next > 0 && rng.random_bool(0.2) {
                    format!("w{c}-{}", rng.random_range(0..next))
                } else {
                    next += 1;
                    format!("w{c}-{next}")
                }
            })
            .collect();
        let outcomes = client
            .add(members.iter().map(|m| add(KEYS[k], m)).collect())
            .await;
        {
            let mut ledger = ledger.lock().unwrap();
            for (m, o) in members.into_iter().zip(outcomes) {
                match o {
                    Outcome::Ok(()) => {
                        ledger.applied[k].insert(m);
                    }
                    Outcome::Indeterminate(_) => {
                        ledger.maybe.insert((k, m));
                    }
                    Outcome::Failed(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_cells_converge_byte_for_byte_under_partitions_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(ClusterConfig {
        nodes: 3,
        replication_factor: 3,
        node_bin: tally_testkit::node_bin(),
        dir: dir.path().to_path_buf(),
        durability: "periodic".into(),
        extra_args: vec![
            "--set".into(),
            "namespaces.viewers=distinct, minute:1d, day:30d, total".into(),
        ],
        token: None,
        tls_ca: None,
    })
    .await
    .unwrap();
    let ledger = Arc::new(Mutex::new(Ledger {
        applied: vec![BTreeSet::new(); KEYS.len()],
        maybe: BTreeSet::new(),
    }));
    let until = Instant::now() + Duration::from_secs(12);
    let mut writers = Vec::new();
    for c in 0..3 {
        let client = cluster.client(c, Duration::from_secs(1)).await.unwrap();
        writers.push(tokio::spawn(writer(c, client, ledger.clone(), until)));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(26);
    let mut faults = Vec::new();
    while Instant::now() + Duration::from_secs(3) < until {
        tokio::time::sleep(nemesis::quiet(&mut rng)).await;
        let kinds = [FaultKind::Partition, FaultKind::Kill];
        let Some((_, what, active)) = nemesis::inject(&mut cluster, &kinds, &mut rng).await else {
            break;
        };
        tokio::time::sleep(nemesis::hold(&mut rng)).await;
        nemesis::heal(&mut cluster, active).await.unwrap();
        faults.push(what);
    }
    for w in writers {
        w.await.unwrap();
    }
    cluster.heal().unwrap();
    assert!(cluster.wait_ready(Duration::from_secs(30)).await);

    // Adds whose outcome is unknown are sent again until acknowledged:
    // they then certainly applied, once.
    let client = cluster.client(0, Duration::from_secs(5)).await.unwrap();
    let maybe: Vec<(usize, String)> = ledger.lock().unwrap().maybe.iter().cloned().collect();
    for (k, m) in &maybe {
        let outcome = client.add(vec![add(KEYS[*k], m)]).await;
        assert!(outcome[0].is_ok(), "{m}: {outcome:?}");
        ledger.lock().unwrap().applied[*k].insert(m.clone());
    }
    assert!(cluster.wait_hints_drained(Duration::from_secs(60)).await);
    for i in 0..cluster.len() {
        let admin = cluster.client(i, Duration::from_secs(120)).await.unwrap();
        admin.repair().await.unwrap();
    }

    let applied = ledger.lock().unwrap().applied.clone();
    let mut members = 0;
    for (k, set) in applied.iter().enumerate() {
        let mut exact = Sketch::new(14);
        set.iter().for_each(|m| exact.add(m.as_bytes()));
        let views = client
            .inspect_replicas("viewers", KEYS[k].as_bytes())
            .await
            .unwrap();
        assert_eq!(views.len(), 3);
        for v in &views {
            assert!(
                v.value == exact.encode(),
                "{}: host {}'s sketch is not that of the {} members written (faults: {faults:?})",
                KEYS[k],
                v.host_id,
                set.len()
            );
        }
        members += set.len();
        // Adding members again changes nothing.
        let again: Vec<Add> = set.iter().take(50).map(|m| add(KEYS[k], m)).collect();
        assert!(client.add(again).await.iter().all(Outcome::is_ok));
        let after = client
            .inspect_replicas("viewers", KEYS[k].as_bytes())
            .await
            .unwrap();
        assert!(
            after.iter().all(|v| v.value == exact.encode()),
            "{}",
            KEYS[k]
        );
    }
    assert!(members > 500, "only {members} members written");
    assert!(!faults.is_empty());
    eprintln!(
        "{members} members over {} keys ({} resent after unknown outcomes) through {faults:?}",
        KEYS.len(),
        maybe.len()
    );
    cluster.stop();
}
