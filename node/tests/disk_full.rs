//! A real `tally-node` on a real file system that fills up (a small tmpfs
//! in a private mount namespace, so no root is needed): `status` says the
//! disk is full and why, counts the WAL, the log does not flood (and, in
//! a file, carries no colour codes), and the documented recovery (free
//! space, restart) keeps every acknowledged increment.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, inc};
use tally_client::{Client, ClientConfig, Outcome, StorageHealth};

async fn client_of(addr: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut config = ClientConfig::with_seeds([addr.to_owned()]);
        config.connect_timeout = Duration::from_secs(1);
        config.max_retries = 0;
        if let Ok(c) = Client::connect(config).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the node at {addr} never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_shows_in_status_and_a_restart_with_space_keeps_every_acknowledged_increment() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = dir.path().join("node.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let node = env!("CARGO_BIN_EXE_tally-node");
    let data = mnt.join("data");
    // The node runs on a 6 MiB file system; once it is stopped, the file
    // system grows (the operator frees space) and the node starts again.
    let run = format!(
        "{node} --data-dir {data} --listen {addr} --durability sync --config {config} --no-http",
        data = data.display(),
        config = dir.path().join("node.toml").display(),
    );
    std::fs::write(
        dir.path().join("node.toml"),
        "[storage]\nmemtable_mib = 1\n",
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs {mnt} || exit 9\n{run}\necho restarting >&2\nmount -o remount,size=64m {mnt} || exit 9\nexec {run}\n",
        mnt = mnt.display()
    );
    let mut shell = Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c", &script])
        .env("RUST_LOG", "warn,openraft=off")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = client_of(&addr).await;

    // Long keys fill the disk within a few hundred batches.
    let key = "k".repeat(900);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut failed = 0;
    for batch in 0..400 {
        let keys: Vec<String> = (0..50).map(|i| format!("{key}{batch}-{i}")).collect();
        let items = keys.iter().map(|k| inc(k, 1)).collect();
        for (k, r) in keys.into_iter().zip(client.increment(items).await) {
            match r {
                Outcome::Ok(()) => acknowledged.push(k),
                _ => failed += 1,
            }
        }
        if failed > 2_000 {
            break;
        }
    }
    assert!(failed > 0, "the disk never filled");
    assert!(!acknowledged.is_empty());
    let status = client.status().await.unwrap();
    eprintln!(
        "{} acknowledged, {failed} failed; storage {:?} ({}); disk {} B, WAL {} B",
        acknowledged.len(),
        status.storage,
        status.storage_error,
        status.disk_bytes,
        status.wal_bytes
    );
    assert_eq!(status.storage, StorageHealth::DiskFull);
    assert!(
        status.storage_error.contains("no space"),
        "{}",
        status.storage_error
    );
    assert!(status.wal_bytes > 0);
    assert!(
        status.disk_bytes >= status.wal_bytes,
        "disk_bytes counts the WAL"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "a log written to a file carries no colour codes"
    );
    let lines = text.matches("counter write failed").count();
    assert!(lines <= 20, "{lines} log lines for {failed} failed writes");

    // Recovery: stop the node, free space, start it again.
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c).contains(&addr)
                        && !String::from_utf8_lossy(&c).contains("sh\0-c")
                })
                .unwrap_or(false)
        })
        .unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("restarting")
    {
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client_of(&addr).await;
    let status = client.status().await.unwrap();
    assert_eq!(
        status.storage,
        StorageHealth::Ok,
        "{}",
        status.storage_error
    );
    for k in acknowledged.iter().step_by(7) {
        assert_eq!(
            client.total("events", k.as_bytes()).await.unwrap().sum,
            1,
            "{k}"
        );
    }
    let r = client.increment(vec![inc("after", 1)]).await.pop();
    assert!(matches!(r, Some(Outcome::Ok(()))), "{r:?}");
    // The shell became the second node (exec).
    let _ = shell.kill();
    let _ = shell.wait();
}
