//! Failure detection with real processes: gossip (phi accrual) plus the
//! transport's refused connections. A killed node is marked down by every
//! other node within 5 s, a restarted one up within 3 s with a new
//! generation, and a node paused for 2 s under load is not marked down.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{now_ms, Cluster};
use tally_client::{Consistency, Increment, Outcome};

/// How node `observer` sees node `host_id`: (up, generation).
async fn view(cluster: &Cluster, observer: usize, host_id: u64) -> (bool, Option<u64>) {
    let status = cluster.status(observer).await;
    let p = status.peers.iter().find(|p| p.host_id == host_id).unwrap();
    (p.up, p.generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_marked_down_everywhere_and_back_up_with_a_new_generation() {
    let mut cluster = Cluster::start(5, 3, &[]).await;
    let victim = 4; // host 5
    let observers = [0, 1, 2, 3];
    cluster
        .wait_for(10, "gossip to learn every generation", || async {
            for &o in &observers {
                let peers = cluster.status(o).await.peers;
                if peers
                    .iter()
                    .any(|p| p.host_id == 5 && p.generation.is_none())
                {
                    return Err(format!("(host {} sees {peers:?})", o + 1));
                }
            }
            Ok(())
        })
        .await;
    let old_generation = view(&cluster, 0, 5).await.1.unwrap();

    cluster.kill9(victim);
    let killed = Instant::now();
    cluster
        .wait_until(5, "every node to mark host 5 down", || async {
            for &o in &observers {
                if view(&cluster, o, 5).await.0 {
                    return false;
                }
            }
            true
        })
        .await;
    let down_after = killed.elapsed();

    cluster.restart(victim);
    let restarted = Instant::now();
    cluster
        .wait_until(
            3,
            "every node to mark host 5 up with a new generation",
            || async {
                for &o in &observers {
                    match view(&cluster, o, 5).await {
                        (true, Some(g)) if g > old_generation => {}
                        _ => return false,
                    }
                }
                true
            },
        )
        .await;
    println!(
        "host 5 marked down everywhere {:.2} s after kill -9, up with a new generation {:.2} s after restart",
        down_after.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_pause_under_load_is_not_a_false_down() {
    let cluster = Cluster::start(5, 3, &[]).await;
    let client = cluster.client(Consistency::Quorum).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ok = 0u64;
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let items: Vec<Increment> = (0..10)
                    .map(|i| Increment {
                        namespace: "events".into(),
                        key: format!("p{}", (round * 10 + i) % 100).into_bytes(),
                        timestamp_ms: now_ms(),
                        delta: 1,
                        events: 1,
                        op_id: None,
                    })
                    .collect();
                ok += client
                    .increment(items)
                    .await
                    .iter()
                    .filter(|o| matches!(o, Outcome::Ok(())))
                    .count() as u64;
                round += 1;
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = 2; // host 3
    cluster.signal(paused, "STOP");
    let started = Instant::now();
    // Watch every other node's view through the 2 s pause and 2 s after.
    let mut false_downs = Vec::new();
    let mut resumed = false;
    while started.elapsed() < Duration::from_secs(4) {
        if !resumed && started.elapsed() >= Duration::from_secs(2) {
            cluster.signal(paused, "CONT");
            resumed = true;
        }
        for o in [0, 1, 3, 4] {
            if !view(&cluster, o, 3).await.0 {
                false_downs.push((o + 1, started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let acknowledged = load.await.unwrap();
    assert!(
        acknowledged > 100,
        "the load ran ({acknowledged} acknowledged)"
    );
    assert!(
        false_downs.is_empty(),
        "host 3 was marked down during a 2 s pause: {false_downs:?}"
    );
}

/// Past `max_digests` peers gossip sends windows: rotating digests,
/// compact heartbeats, probes through other nodes. With real processes
/// and a threshold of 2 (so 5 nodes use them): a node paused with
/// SIGSTOP (no refused connection, so only gossip can tell) is marked
/// down by every other node, and up again once it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_real_sockets_convict_a_paused_node_and_see_it_return() {
    let cluster = Cluster::start(5, 3, &["--set", "gossip.max_digests=2"]).await;
    let observers = [0, 1, 2, 3];
    cluster
        .wait_for(10, "gossip to learn every generation", || async {
            for &o in &observers {
                let peers = cluster.status(o).await.peers;
                if peers.iter().any(|p| p.generation.is_none()) {
                    return Err(format!("(host {} sees {peers:?})", o + 1));
                }
            }
            Ok(())
        })
        .await;
    cluster.signal(4, "STOP");
    let paused = Instant::now();
    cluster
        .wait_until(20, "every node to mark the paused host 5 down", || async {
            for &o in &observers {
                if view(&cluster, o, 5).await.0 {
                    return false;
                }
            }
            true
        })
        .await;
    let down_after = paused.elapsed();
    cluster.signal(4, "CONT");
    let resumed = Instant::now();
    cluster
        .wait_until(10, "every node to mark host 5 up again", || async {
            for &o in &observers {
                if !view(&cluster, o, 5).await.0 {
                    return false;
                }
            }
            true
        })
        .await;
    println!(
        "windows: paused host 5 down everywhere after {:.1} s, up {:.1} s after it resumed",
        down_after.as_secs_f64(),
        resumed.elapsed().as_secs_f64()
    );
}
