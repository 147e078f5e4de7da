//! Three metadata group members over an in-memory transport: a leader is
//! elected, commands commit and apply on every member, host ids come from
//! the log, a new leader takes over when the old one goes, and a member
//! restarted from its directory recovers the state and catches up.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_consensus::{
    Command, CommandResult, GroupConfig, MetadataGroup, ProposeError, RaftTransport,
    TransportFuture,
};

#[derive(Debug, Default)]
struct Registry {
    groups: Mutex<HashMap<u64, MetadataGroup>>,
    down: Mutex<HashSet<u64>>,
    /// Calls made to a node while it was down.
    calls_to_down: AtomicU64,
}

#[derive(Debug)]
struct InMemory(Arc<Registry>);

impl RaftTransport for InMemory {
    fn call<'a>(&'a self, target: u64, _address: &'a str, payload: Vec<u8>) -> TransportFuture<'a> {
        Box::pin(async move {
            if self.0.down.lock().unwrap().contains(&target) {
                self.0.calls_to_down.fetch_add(1, Ordering::Relaxed);
                return Err(format!("node {target} is down"));
            }
            let group = self.0.groups.lock().unwrap().get(&target).cloned();
            match group {
                Some(g) => g.handle(&payload).await,
                None => Err(format!("node {target} unknown")),
            }
        })
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        snapshot_every: 10,
    }
}

async fn open(registry: &Arc<Registry>, id: u64, dir: &Path) -> MetadataGroup {
    let transport = Arc::new(InMemory(registry.clone()));
    let group = MetadataGroup::open(id, dir, transport, config())
        .await
        .unwrap();
    registry.groups.lock().unwrap().insert(id, group.clone());
    group
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proposes through whichever member leads.
async fn propose(registry: &Registry, command: Command) -> CommandResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let groups: Vec<MetadataGroup> =
            registry.groups.lock().unwrap().values().cloned().collect();
        let down = registry.down.lock().unwrap().clone();
        for g in groups.iter().filter(|g| !down.contains(&g.id())) {
            match g.propose(command.clone()).await {
                Ok(r) => return r,
                Err(ProposeError::NotLeader { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader took {command:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn join(address: &str, token: u64) -> Command {
    Command::Join {
        cluster_name: "c".into(),
        address: address.into(),
        rack: None,
        tokens: vec![token],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_agree_survive_a_lost_leader_and_recover_from_disk() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_owned()).collect();
    let registry = Arc::new(Registry::default());
    let mut members = Vec::new();
    for (i, dir) in paths.iter().enumerate() {
        members.push(open(&registry, i as u64 + 1, dir).await);
    }
    members[0].initialize("n1").await.unwrap();
    wait_for("node 1 to lead", || members[0].leader() == Some(1)).await;
    members[0]
        .add_member(2, "n2", BTreeSet::from([1, 2]))
        .await
        .unwrap();
    members[0]
        .add_member(3, "n3", BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();

    let boot = propose(
        &registry,
        Command::Bootstrap {
            cluster_name: "c".into(),
            replication_factor: 3,
            address: "n1".into(),
            rack: None,
            tokens: vec![100],
        },
    )
    .await;
    assert!(
        matches!(
            boot,
            CommandResult::Applied {
                host_id: Some(1),
                ..
            }
        ),
        "{boot:?}"
    );
    for (i, token) in [(2u64, 200u64), (3, 300)] {
        let r = propose(&registry, join(&format!("n{i}"), token)).await;
        assert!(
            matches!(r, CommandResult::Applied { host_id: Some(h), .. } if h == i),
            "{r:?}"
        );
        propose(&registry, Command::FinishJoin { host: i }).await;
    }
    for k in 0..15 {
        propose(
            &registry,
            Command::CreateNamespace {
                name: format!("ns{k}"),
                spec: "total".into(),
            },
        )
        .await;
    }
    let epoch = members[0].state().epoch;
    wait_for("every member to apply everything", || {
        members.iter().all(|m| m.state().epoch == epoch)
    })
    .await;
    assert_eq!(
        members[2].state().cluster_map().unwrap().members().count(),
        3
    );

    // The leader goes away: another one takes over and the log goes on.
    let old = members[0].leader().unwrap();
    registry.down.lock().unwrap().insert(old);
    members[(old - 1) as usize].shutdown().await;
    let r = propose(&registry, join("n4", 400)).await;
    assert!(
        matches!(
            r,
            CommandResult::Applied {
                host_id: Some(4),
                ..
            }
        ),
        "ids continue from the log under a new leader: {r:?}"
    );
    let survivors: Vec<&MetadataGroup> = members.iter().filter(|m| m.id() != old).collect();
    wait_for("a new leader", || {
        survivors
            .iter()
            .any(|m| m.leader().is_some_and(|l| l != old))
    })
    .await;

    // The old leader restarts from its directory: its own log and snapshot
    // give back what it had, and it catches up with the rest.
    let had = members[(old - 1) as usize].state().epoch;
    registry.groups.lock().unwrap().remove(&old);
    let restarted = open(&registry, old, &paths[(old - 1) as usize]).await;
    wait_for("the restarted member to recover its own state", || {
        restarted.state().epoch >= had
    })
    .await;
    registry.down.lock().unwrap().remove(&old);
    let now = survivors[0].state().epoch;
    wait_for("the restarted member to catch up", || {
        restarted.state().epoch >= now
    })
    .await;
    assert_eq!(*restarted.state(), *survivors[0].state());
    assert!(restarted.state().members.contains_key(&4));
}

/// A voter that is down for good is retried with backoff, not in a loop:
/// once a leader spun 5,000-15,000 AppendEntries a second on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_stays_down_is_retried_with_backoff() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let registry = Arc::new(Registry::default());
    let mut members = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        members.push(open(&registry, i as u64 + 1, dir.path()).await);
    }
    members[0].initialize("n1").await.unwrap();
    wait_for("node 1 to lead", || members[0].leader() == Some(1)).await;
    for id in [2, 3] {
        let voters = (1..=id).collect();
        members[0]
            .add_member(id, &format!("n{id}"), voters)
            .await
            .unwrap();
    }
    registry.down.lock().unwrap().insert(3);
    let started = Instant::now();
    for i in 0..5 {
        let r = propose(&registry, join(&format!("a{i}"), 100 + i)).await;
        assert!(matches!(
            r,
            CommandResult::Applied { .. } | CommandResult::Refused { .. }
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = registry.calls_to_down.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    // Backoff doubles from 100 ms to 2 s: about a dozen tries in 3 s.
    assert!(
        calls as f64 / secs < 20.0,
        "{calls} calls to a down voter in {secs:.1} s"
    );
    assert!(calls > 0, "the leader never tried the down voter");
    // It still comes back: replication resumes once it answers.
    registry.down.lock().unwrap().remove(&3);
    let target = members[0].state().epoch;
    wait_for("node 3 to catch up", || members[2].state().epoch == target).await;
}
