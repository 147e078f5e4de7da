//! `tally bench --replay FILE`: sends a file's events (the formats of
//! `tally ingest`) as they are, one increment each, in batches of
//! `--batch` over `--concurrency` connections, without op ids, spool or
//! checkpoint: the plain path that `tally ingest`'s exactly-once path is
//! measured against (bench/ingest.sh).

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use tally_client::{Client, Increment, Outcome};

use super::BenchArgs;
use crate::ingest::events::{parse, Columns, Format, Line};

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    indeterminate: AtomicU64,
}

/// Replays `file` and prints events/s.
pub async fn run(client: Client, file: &Path, args: &BenchArgs, json: bool) -> Result<(), String> {
    let format = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        Format::Csv
    } else {
        Format::Jsonl
    };
    let reader = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?,
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Increment>>(2 * args.concurrency.max(1));
    let (batch, ns) = (args.batch.max(1), args.ns.clone());
    let started = Instant::now();
    // Reading and parsing on a thread of its own, as `tally ingest` does
    // it on the runtime: the workers only send.
    let reading = std::thread::spawn(move || -> Result<u64, String> {
        let mut items = Vec::with_capacity(batch);
        let mut columns = Columns::default();
        let mut events = 0u64;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            match parse(format, &line, &columns, i == 0) {
                Ok(Line::Event(e)) => {
                    items.push(Increment {
                        namespace: e.namespace.unwrap_or_else(|| ns.clone()),
                        key: e.key.into_bytes(),
                        timestamp_ms: e.ts,
                        delta: e.delta,
                        events: 1,
                        op_id: None,
                    });
                    events += 1;
                }
                Ok(Line::Skip(header)) => columns = header.unwrap_or(columns),
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
            if items.len() == batch && tx.blocking_send(std::mem::take(&mut items)).is_err() {
                break;
            }
        }
        if !items.is_empty() {
            let _ = tx.blocking_send(items);
        }
        Ok(events)
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let counts = Arc::new(Counts::default());
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, rx, counts) = (client.clone(), rx.clone(), counts.clone());
            tokio::spawn(async move {
                loop {
                    let Some(items) = rx.lock().await.recv().await else {
                        return;
                    };
                    for outcome in client.increment(items).await {
                        let counter = match outcome {
                            Outcome::Ok(()) => &counts.ok,
                            Outcome::Failed(_) => &counts.failed,
                            Outcome::Indeterminate(_) => &counts.indeterminate,
                        };
                        counter.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let events = reading
        .join()
        .map_err(|_| "the reader panicked".to_string())??;
    let seconds = started.elapsed().as_secs_f64();
    let ok = counts.ok.load(Relaxed);
    let report = serde_json::json!({
        "events": events,
        "acknowledged": ok,
        "failed": counts.failed.load(Relaxed),
        "indeterminate": counts.indeterminate.load(Relaxed),
        "seconds": seconds,
        "events_per_s": ok as f64 / seconds,
        "batch": batch,
        "concurrency": args.concurrency,
    });
    if json {
        println!("{report}");
    } else {
        println!("{:<18} {:>12}", "events", events);
        println!("{:<18} {:>12.0}", "events/s", ok as f64 / seconds);
        println!("{:<18} {:>12}", "failed", counts.failed.load(Relaxed));
        println!(
            "{:<18} {:>12}",
            "indeterminate",
            counts.indeterminate.load(Relaxed)
        );
    }
    Ok(())
}
