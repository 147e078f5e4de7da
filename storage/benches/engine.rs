//! Storage engine benchmark: tally's LSM against peer engines in one run.
//!
//! Workload (single thread unless noted, WAL on, no compression):
//! - blind increments of 100,000 counter keys drawn from Zipf(0.99): a merge
//!   for tally and RocksDB (an add operator), read-modify-write for fjall,
//!   which has no merge operator; in `periodic` mode (tally: ack after
//!   write(2), fsync every 10 ms; RocksDB and fjall: ack after the write
//!   reaches the OS, no fsync), in `sync` mode (fsync before ack), and in
//!   `sync` mode with 16 writer threads (group commit);
//! - point reads of Zipf keys after a flush;
//! - range reads of 1,440 consecutive minute buckets of one counter, from
//!   SSTables after a full compaction.
//!
//! Each engine and mode runs in its own child process (this binary again),
//! so peak RSS and the bytes written (`wchar` in `/proc/self/io`, for write
//! amplification) are its own. The parent prints a table and tally/peer
//! ratios. Peers are behind features: `--features bench-rocksdb` (compiles
//! RocksDB from source, ~25 min, needs libclang-dev) and
//! `--features bench-fjall`.
//!
//! `cargo bench -p tally-storage --bench engine [--features bench-rocksdb,bench-fjall]`
//! Environment: `TALLY_BENCH_SCALE` (default 1.0) scales the op counts.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const KEYS: usize = 100_000;
const ZIPF_S: f64 = 0.99;
const BUCKETS: u64 = 1_440;
const RANGE_SERIES: u64 = 100;

/// Zipf sampler over `0..n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn counter_key(id: usize) -> Vec<u8> {
    format!("video:{id:07}/views").into_bytes()
}

fn bucket_key(series: u64, bucket: u64) -> Vec<u8> {
    let mut k = format!("video:{series:07}/views/m/").into_bytes();
    k.extend_from_slice(&(bucket * 60_000).to_be_bytes());
    k
}

/// What every engine under test offers the benchmark.
trait Engine {
    fn increment(&mut self, key: &[u8], delta: i64);
    fn get(&mut self, key: &[u8]) -> Option<i64>;
    /// Values of keys in `[start, end)`.
    fn range(&mut self, start: &[u8], end: &[u8]) -> Vec<i64>;
    fn flush(&mut self);
    fn compact(&mut self);
}

struct Tally(Arc<tally_storage::Db>);

impl Engine for Tally {
    fn increment(&mut self, key: &[u8], delta: i64) {
        self.0
            .merge(key, &tally_storage::AddI64::encode(delta))
            .unwrap();
    }
    fn get(&mut self, key: &[u8]) -> Option<i64> {
        self.0
            .get(key)
            .unwrap()
            .map(|v| tally_storage::AddI64::decode(&v).unwrap())
    }
    fn range(&mut self, start: &[u8], end: &[u8]) -> Vec<i64> {
        let mut out = Vec::with_capacity(BUCKETS as usize);
        self.0
            .scan_with(start, Some(end), |_, v| {
                out.push(tally_storage::AddI64::decode(v).unwrap());
                true
            })
            .unwrap();
        out
    }
    fn flush(&mut self) {
        self.0.flush().unwrap();
    }
    fn compact(&mut self) {
        self.0.compact().unwrap();
    }
}

fn open_tally(dir: &Path, mode: &str) -> Tally {
    let durability = match mode {
        "periodic" => tally_storage::Durability::Periodic {
            interval: Duration::from_millis(10),
        },
        _ => tally_storage::Durability::Sync,
    };
    let opts = tally_storage::Options {
        durability,
        ..tally_storage::Options::default()
    };
    Tally(Arc::new(
        tally_storage::Db::open(dir, opts, Arc::new(tally_storage::AddI64)).unwrap(),
    ))
}

#[cfg(feature = "bench-rocksdb")]
mod rocks {
    use super::*;

    pub struct Rocks {
        pub db: rocksdb::DB,
        pub write: rocksdb::WriteOptions,
    }

    fn add(
        _key: &[u8],
        existing: Option<&[u8]>,
        operands: &rocksdb::MergeOperands,
    ) -> Option<Vec<u8>> {
        let mut sum = existing.map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()));
        for op in operands {
            sum = sum.wrapping_add(i64::from_le_bytes(op.try_into().unwrap()));
        }
        Some(sum.to_le_bytes().to_vec())
    }

    pub fn open(dir: &Path, mode: &str) -> Rocks {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_merge_operator_associative("add_i64", add);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_background_jobs(2);
        let db = rocksdb::DB::open(&opts, dir).unwrap();
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(mode != "periodic");
        Rocks { db, write }
    }

    impl Engine for Rocks {
        fn increment(&mut self, key: &[u8], delta: i64) {
            self.db
                .merge_opt(key, delta.to_le_bytes(), &self.write)
                .unwrap();
        }
        fn get(&mut self, key: &[u8]) -> Option<i64> {
            self.db
                .get(key)
                .unwrap()
                .map(|v| i64::from_le_bytes(v[..].try_into().unwrap()))
        }
        fn range(&mut self, start: &[u8], end: &[u8]) -> Vec<i64> {
            let mut out = Vec::new();
            let mut it = self.db.raw_iterator();
            it.seek(start);
            while it.valid() && it.key().is_some_and(|k| k < end) {
                out.push(i64::from_le_bytes(it.value().unwrap().try_into().unwrap()));
                it.next();
            }
            out
        }
        fn flush(&mut self) {
            self.db.flush().unwrap();
        }
        fn compact(&mut self) {
            self.db.compact_range::<&[u8], &[u8]>(None, None);
        }
    }
}

#[cfg(feature = "bench-fjall")]
mod fj {
    use super::*;

    pub struct Fjall {
        pub db: fjall::Database,
        pub tree: fjall::Keyspace,
        pub sync: bool,
    }

    pub fn open(dir: &Path, mode: &str) -> Fjall {
        let db = fjall::Database::builder(dir).open().unwrap();
        let tree = db
            .keyspace("counters", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Fjall {
            db,
            tree,
            sync: mode != "periodic",
        }
    }

    impl Engine for Fjall {
        fn increment(&mut self, key: &[u8], delta: i64) {
            // No merge operator: read-modify-write.
            let old = self
                .tree
                .get(key)
                .unwrap()
                .map_or(0, |v| i64::from_le_bytes(v[..].try_into().unwrap()));
            self.tree
                .insert(key, old.wrapping_add(delta).to_le_bytes())
                .unwrap();
            let mode = if self.sync {
                fjall::PersistMode::SyncData
            } else {
                fjall::PersistMode::Buffer
            };
            self.db.persist(mode).unwrap();
        }
        fn get(&mut self, key: &[u8]) -> Option<i64> {
            self.tree
                .get(key)
                .unwrap()
                .map(|v| i64::from_le_bytes(v[..].try_into().unwrap()))
        }
        fn range(&mut self, start: &[u8], end: &[u8]) -> Vec<i64> {
            self.tree
                .range(start..end)
                .map(|g| {
                    let (_, v) = g.into_inner().unwrap();
                    i64::from_le_bytes(v[..].try_into().unwrap())
                })
                .collect()
        }
        fn flush(&mut self) {
            self.db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        fn compact(&mut self) {
            self.tree.major_compact().unwrap();
        }
    }
}

fn open_engine(name: &str, dir: &Path, mode: &str) -> Box<dyn Engine> {
    match name {
        "tally" => Box::new(open_tally(dir, mode)),
        #[cfg(feature = "bench-rocksdb")]
        "rocksdb" => Box::new(rocks::open(dir, mode)),
        #[cfg(feature = "bench-fjall")]
        "fjall" => Box::new(fj::open(dir, mode)),
        other => panic!("unknown engine {other}"),
    }
}

fn proc_field(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Latency percentiles in microseconds from per-op nanoseconds.
fn percentiles(mut nanos: Vec<u64>) -> (f64, f64) {
    nanos.sort_unstable();
    let at =
        |q: f64| nanos[((nanos.len() as f64 * q) as usize).min(nanos.len() - 1)] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

struct Phase {
    ops: usize,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn timed(ops: usize, budget: Duration, mut f: impl FnMut(usize)) -> Phase {
    let mut nanos = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        f(i);
        nanos.push(t.elapsed().as_nanos() as u64);
        if i % 1024 == 0 && start.elapsed() > budget {
            break;
        }
    }
    let n = nanos.len();
    let elapsed = start.elapsed().as_secs_f64();
    let (p50_us, p99_us) = percentiles(nanos);
    Phase {
        ops: n,
        ops_per_s: n as f64 / elapsed,
        p50_us,
        p99_us,
    }
}

fn scale() -> f64 {
    std::env::var("TALLY_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn child(engine_name: &str, mode: &str) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let zipf = Zipf::new(KEYS, ZIPF_S);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut out = BTreeMap::new();
    let wchar_before = proc_field("/proc/self/io", "wchar:");

    let (writes, threads) = match mode {
        "periodic" => ((1_000_000.0 * scale()) as usize, 1),
        "sync" => ((20_000.0 * scale()) as usize, 1),
        _ => ((100_000.0 * scale()) as usize, 16),
    };
    let write_phase = if threads == 1 {
        let mut engine = open_engine(engine_name, dir.path(), mode);
        let keys: Vec<Vec<u8>> = (0..KEYS).map(counter_key).collect();
        let phase = timed(writes, Duration::from_secs(20), |_| {
            let k = zipf.sample(&mut rng);
            engine.increment(&keys[k], 1);
        });
        drop(engine);
        phase
    } else {
        multi_writer(engine_name, dir.path(), mode, writes, threads, &zipf)
    };
    out.insert("write_ops_s", write_phase.ops_per_s);
    out.insert("write_p50_us", write_phase.p50_us);
    out.insert("write_p99_us", write_phase.p99_us);

    if mode == "periodic" {
        // Reopen and flush: what the writes cost on disk includes the
        // memtable reaching an SSTable.
        let mut engine = open_engine(engine_name, dir.path(), mode);
        engine.flush();
        let written = proc_field("/proc/self/io", "wchar:") - wchar_before;
        let key_bytes = counter_key(0).len() + 8;
        out.insert("wchar_mb", written as f64 / 1e6);
        out.insert("user_mb", (write_phase.ops * key_bytes) as f64 / 1e6);

        // Point reads and ranges on the same directory.
        let keys: Vec<Vec<u8>> = (0..KEYS).map(counter_key).collect();
        let reads = (300_000.0 * scale()) as usize;
        let get = timed(reads, Duration::from_secs(15), |_| {
            let k = zipf.sample(&mut rng);
            std::hint::black_box(engine.get(&keys[k]));
        });
        out.insert("get_ops_s", get.ops_per_s);
        out.insert("get_p50_us", get.p50_us);
        out.insert("get_p99_us", get.p99_us);

        for series in 0..RANGE_SERIES {
            for bucket in 0..BUCKETS {
                engine.increment(&bucket_key(series, bucket), (bucket % 7) as i64 + 1);
            }
        }
        engine.flush();
        engine.compact();
        let ranges = (3_000.0 * scale()) as usize;
        let range = timed(ranges, Duration::from_secs(15), |i| {
            let series = i as u64 % RANGE_SERIES;
            let rows = engine.range(&bucket_key(series, 0), &bucket_key(series, BUCKETS));
            assert_eq!(rows.len() as u64, BUCKETS);
        });
        out.insert("range_ops_s", range.ops_per_s);
        out.insert("range_p50_us", range.p50_us);
        out.insert("range_p99_us", range.p99_us);
    }
    out.insert(
        "peak_rss_mb",
        proc_field("/proc/self/status", "VmHWM:") as f64 / 1024.0,
    );
    let fields: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
    println!("RESULT {}", fields.join(" "));
}

/// Runs `threads` writers, each doing `per_thread` Zipf increments through
/// `increment`; returns every op's latency in nanoseconds.
fn spawn_writers(
    threads: usize,
    per_thread: usize,
    zipf: &Zipf,
    increment: &(dyn Fn(&[u8]) + Sync),
) -> Vec<u64> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                    let mut nanos = Vec::with_capacity(per_thread);
                    for _ in 0..per_thread {
                        let key = counter_key(zipf.sample(&mut rng));
                        let t0 = Instant::now();
                        increment(&key);
                        nanos.push(t0.elapsed().as_nanos() as u64);
                    }
                    nanos
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn multi_writer(
    engine_name: &str,
    dir: &Path,
    mode: &str,
    writes: usize,
    threads: usize,
    zipf: &Zipf,
) -> Phase {
    // Only tally and RocksDB are safe to share across threads here.
    let per_thread = writes / threads;
    let start = Instant::now();
    let nanos: Vec<u64> = match engine_name {
        "tally" => {
            let db = open_tally(dir, mode).0;
            spawn_writers(threads, per_thread, zipf, &|key| {
                db.merge(key, &tally_storage::AddI64::encode(1)).unwrap()
            })
        }
        #[cfg(feature = "bench-rocksdb")]
        "rocksdb" => {
            let r = rocks::open(dir, mode);
            spawn_writers(threads, per_thread, zipf, &|key| {
                r.db.merge_opt(key, 1i64.to_le_bytes(), &r.write).unwrap()
            })
        }
        _ => {
            return Phase {
                ops: 0,
                ops_per_s: f64::NAN,
                p50_us: f64::NAN,
                p99_us: f64::NAN,
            }
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let n = nanos.len();
    let (p50_us, p99_us) = percentiles(nanos);
    Phase {
        ops: n,
        ops_per_s: n as f64 / elapsed,
        p50_us,
        p99_us,
    }
}

fn main() {
    if let Ok(spec) = std::env::var("TALLY_BENCH_CHILD") {
        let (engine, mode) = spec.split_once(':').unwrap();
        child(engine, mode);
        return;
    }
    let mut engines = vec!["tally"];
    if cfg!(feature = "bench-rocksdb") {
        engines.push("rocksdb");
    }
    if cfg!(feature = "bench-fjall") {
        engines.push("fjall");
    }
    let modes = ["periodic", "sync", "sync16"];
    let mut results: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for mode in modes {
        for engine in &engines {
            if mode == "sync16" && *engine == "fjall" {
                continue;
            }
            eprintln!("running {engine} / {mode} ...");
            let output = Command::new(std::env::current_exe().unwrap())
                .env("TALLY_BENCH_CHILD", format!("{engine}:{mode}"))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
                eprintln!(
                    "{engine}/{mode} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                std::process::exit(1);
            };
            let fields = line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(f64::NAN)))
                .collect();
            results.insert((engine.to_string(), mode.to_owned()), fields);
        }
    }
    report(&engines, &modes, &results);
}

fn report(
    engines: &[&str],
    modes: &[&str],
    results: &BTreeMap<(String, String), BTreeMap<String, f64>>,
) {
    let rows = [
        ("write_ops_s", "blind increments, ops/s"),
        ("write_p50_us", "  p50 us"),
        ("write_p99_us", "  p99 us"),
        ("get_ops_s", "point reads, ops/s"),
        ("get_p50_us", "  p50 us"),
        ("get_p99_us", "  p99 us"),
        ("range_ops_s", "1,440-bucket ranges, ops/s"),
        ("range_p50_us", "  p50 us"),
        ("range_p99_us", "  p99 us"),
        ("wchar_mb", "bytes written, MB"),
        ("user_mb", "user bytes, MB"),
        ("peak_rss_mb", "peak RSS, MB"),
    ];
    for mode in modes {
        println!("\n## mode: {mode}");
        let mut header = format!("{:<30}", "metric");
        for e in engines {
            header += &format!("{e:>14}");
        }
        for e in engines.iter().skip(1) {
            header += &format!("{:>16}", format!("tally/{e}"));
        }
        println!("{header}");
        for (key, label) in rows {
            let values: Vec<Option<f64>> = engines
                .iter()
                .map(|e| {
                    results
                        .get(&(e.to_string(), mode.to_string()))
                        .and_then(|r| r.get(key))
                        .copied()
                })
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let mut line = format!("{label:<30}");
            for v in &values {
                line += &v.map_or(format!("{:>14}", "-"), |v| format!("{v:>14.1}"));
            }
            for v in values.iter().skip(1) {
                let ratio = match (values[0], v) {
                    (Some(t), Some(p)) if *p != 0.0 => format!("{:>15.2}x", t / p),
                    _ => format!("{:>16}", "-"),
                };
                line += &ratio;
            }
            println!("{line}");
        }
        for e in engines {
            if let Some(r) = results.get(&(e.to_string(), mode.to_string())) {
                if let (Some(w), Some(u)) = (r.get("wchar_mb"), r.get("user_mb")) {
                    println!(
                        "write amplification ({e}): {:.2} (bytes written / user bytes)",
                        w / u
                    );
                }
            }
        }
    }
    println!("\n(ops/s ratios: higher is better for tally; latency ratios: lower is better)");
}
