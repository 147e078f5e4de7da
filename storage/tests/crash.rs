//! Real-process crash test: a child process writes under load and is killed
//! with SIGKILL at a random moment; after reopening, every write it
//! acknowledged must be there, and nothing may be corrupt.
//!
//! The child is this same test binary started with `TALLY_CRASH_CHILD_DIR`
//! set. Each of its writer threads commits batches `put t{w}/{i:08}` +
//! `merge counter/{w} += 1` and prints `ack {w} {i}` after each returns, so
//! the parent knows a lower bound of what was acknowledged. The check after
//! each kill is exact: for every writer, the keys present are exactly
//! `0..n` for some `n` (batches are atomic and ordered), `n` covers every
//! acknowledged batch, and the counter equals `n`.
//!
//! `TALLY_CRASH_ROUNDS` (default 4) sets the number of kills; rounds
//! alternate between `sync` and `periodic` durability (kill -9 keeps the
//! page cache, so neither may lose an acknowledged write). The seed comes
//! from `TALLY_CRASH_SEED` or the clock and is printed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tally_storage::{AddI64, Db, Durability, Options};

const WRITERS: usize = 4;

fn options(sync: bool) -> Options {
    Options {
        durability: if sync {
            Durability::Sync
        } else {
            Durability::Periodic {
                interval: Duration::from_millis(10),
            }
        },
        memtable_bytes: 64 << 10,
        target_file_bytes: 64 << 10,
        level1_bytes: 256 << 10,
        ..Options::default()
    }
}

fn child(dir: &Path, sync: bool) {
    let db = Arc::new(Db::open(dir, options(sync), Arc::new(AddI64)).unwrap());
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let counter = format!("counter/{w}");
                let start = db
                    .get(counter.as_bytes())
                    .unwrap()
                    .map_or(0, |v| AddI64::decode(&v).unwrap());
                for i in start.. {
                    let mut batch = tally_storage::WriteBatch::new();
                    batch.put(format!("t{w}/{i:08}"), vec![b'x'; 100]);
                    batch.merge(counter.clone(), AddI64::encode(1));
                    db.write(batch).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {w} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn verify(dir: &Path, acked: &[i64; WRITERS]) -> Result<(), String> {
    let db = Db::open(dir, options(true), Arc::new(AddI64))
        .map_err(|e| format!("reopen failed: {e}"))?;
    for (w, &max_acked) in acked.iter().enumerate() {
        let counter = db
            .get(format!("counter/{w}").as_bytes())
            .map_err(|e| e.to_string())?
            .map_or(0, |v| AddI64::decode(&v).unwrap());
        let prefix = format!("t{w}/");
        let keys = db
            .scan(
                prefix.as_bytes(),
                Some(format!("t{w}0").as_bytes()),
                usize::MAX,
            )
            .map_err(|e| e.to_string())?;
        if keys.len() as i64 != counter {
            return Err(format!(
                "writer {w}: {} keys but counter {counter}",
                keys.len()
            ));
        }
        for (i, (k, _)) in keys.iter().enumerate() {
            if *k != format!("t{w}/{i:08}").into_bytes() {
                return Err(format!(
                    "writer {w}: key {i} is {:?}, writes are not a prefix",
                    String::from_utf8_lossy(k)
                ));
            }
        }
        if counter < max_acked + 1 {
            return Err(format!(
                "writer {w}: acknowledged batch {max_acked} but only {counter} survived"
            ));
        }
    }
    db.close().map_err(|e| e.to_string())
}

fn main() {
    if let Ok(dir) = std::env::var("TALLY_CRASH_CHILD_DIR") {
        let sync = std::env::var("TALLY_CRASH_SYNC").is_ok_and(|v| v == "1");
        child(Path::new(&dir), sync);
        return;
    }
    let rounds: usize = std::env::var("TALLY_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("TALLY_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            #[allow(clippy::disallowed_methods)]
            let now = std::time::SystemTime::now();
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test: {rounds} rounds, seed {seed} (TALLY_CRASH_SEED={seed} to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut total_acked = 0u64;
    for round in 0..rounds {
        let sync = round % 2 == 0;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("TALLY_CRASH_CHILD_DIR", dir.path())
            .env("TALLY_CRASH_SYNC", if sync { "1" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The kill timer starts at the first acknowledgement, so a slow
        // start (a loaded machine, a debug build) cannot leave the round
        // without acknowledged writes to check.
        let (first_ack, first_ack_seen) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut acked = [-1i64; WRITERS];
            let mut count = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ack") {
                    continue;
                }
                let w: usize = parts.next().unwrap().parse().unwrap();
                let i: i64 = parts.next().unwrap().parse().unwrap();
                acked[w] = acked[w].max(i);
                if count == 0 {
                    let _ = first_ack.send(());
                }
                count += 1;
            }
            (acked, count)
        });
        let _ = first_ack_seen.recv_timeout(Duration::from_secs(60));
        let run_ms = rng.random_range(300..1500);
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let (acked, count) = reader.join().unwrap();
        total_acked += count;
        println!(
            "round {round}: {} mode, killed {run_ms} ms after its first ack ({status}), {count} acknowledged batches, last per writer {acked:?}",
            if sync { "sync" } else { "periodic" }
        );
        if count == 0 {
            println!("crash test FAILED (seed {seed}): the child acknowledged nothing");
            std::process::exit(1);
        }
        if let Err(e) = verify(dir.path(), &acked) {
            println!("crash test FAILED in round {round} (seed {seed}): {e}");
            std::process::exit(1);
        }
    }
    println!("crash test: {rounds} passed, 0 failed ({total_acked} acknowledged batches checked)");
}
