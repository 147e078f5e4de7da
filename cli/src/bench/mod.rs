//! `tally bench`: a closed-loop load generator (with an optional rate cap)
//! over Zipf-distributed keys, printing throughput and latency percentiles.

mod replay;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_client::{Add, Client, Increment, Outcome, Producer, ProducerConfig, Resolution};

use tally_client::tls::TlsClient;

use crate::http::HttpConnection;
use crate::timespec;

/// Load generator settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent workers.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Target requests per second over all workers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Increments per write request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Zipf exponent of key popularity (0: uniform).
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Fraction of requests that are reads.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// What a read asks: `total` (all-time), `stats` (sum and count over
    /// the last `--stats-days` days) or `distinct` (a distinct
    /// namespace's members per day and over the last `--stats-days` days).
    #[arg(long, default_value = "total", value_parser = ["total", "stats", "distinct"])]
    pub read: String,
    /// Write adds of members to a distinct namespace (`--ns`) instead of
    /// increments: each item adds one of `--members` members, drawn
    /// uniformly, to a key drawn as for increments.
    #[arg(long)]
    pub distinct: bool,
    /// Members `--distinct` draws from.
    #[arg(long, default_value_t = 1_000_000)]
    pub members: u64,
    /// The window of a `stats` or `distinct` read, in days.
    #[arg(long, default_value_t = 30)]
    pub stats_days: u32,
    /// Spread increments' timestamps uniformly over the last this many
    /// days (0: now), so that a later `stats` read covers many buckets.
    #[arg(long, default_value_t = 0)]
    pub spread_days: u32,
    /// Send through the aggregating producer: each worker adds single
    /// events; the producer sums per cell and sends batches. `--batch` is
    /// ignored; latency percentiles are then not measured.
    #[arg(long)]
    pub producer: bool,
    /// Namespace.
    #[arg(long, default_value = "events")]
    pub ns: String,
    /// Send the increments as JSON to this node's HTTP API
    /// (`POST /v1/increments`, one keep-alive connection per worker)
    /// instead of the binary protocol.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Send the events of this file (JSON lines or CSV, as `tally ingest`
    /// reads) one increment each, in batches of `--batch`, without op ids,
    /// until the file ends; `--duration`, `--keys` and `--zipf` are then
    /// ignored.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<std::path::PathBuf>,
}

const DAY_MS: i64 = 86_400_000;

/// Now, or a uniform instant of the last `spread_days` days.
fn timestamp(rng: &mut impl Rng, spread_days: u32) -> i64 {
    let now = timespec::now_ms();
    match spread_days {
        0 => now,
        d => now - rng.random_range(0..i64::from(d) * DAY_MS),
    }
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank+1)^s`.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Builds the sampler's table.
    pub fn new(n: usize, s: f64) -> Zipf {
        let weights: Vec<f64> = (1..=n.max(1)).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .into_iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    /// One sample.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    failed: u64,
    indeterminate: u64,
    increments: u64,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Runs the benchmark and prints its report.
pub async fn run(
    client: Client,
    args: &BenchArgs,
    json: bool,
    token: Option<String>,
    tls: Option<TlsClient>,
) -> Result<(), String> {
    if args.concurrency == 0 || args.batch == 0 || args.keys == 0 {
        return Err("concurrency, batch and keys must be at least 1".into());
    }
    if args.distinct && (args.producer || args.http.is_some() || args.replay.is_some()) {
        return Err(
            "--distinct sends adds over the binary protocol: not with --producer, --http or --replay"
                .into(),
        );
    }
    if let Some(file) = &args.replay {
        return replay::run(client, file, args, json).await;
    }
    let zipf = Arc::new(Zipf::new(args.keys, args.zipf));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let per_worker_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    let producer = args
        .producer
        .then(|| Arc::new(Producer::new(client.clone(), ProducerConfig::default())));
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, zipf, done, args) = (client.clone(), zipf.clone(), done.clone(), args.clone());
        let (token, tls) = (token.clone(), tls.clone());
        let producer = producer.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut t = Tally::default();
            let mut http: Option<HttpConnection> = None;
            // With a rate, workers are spread evenly over one interval:
            // started together they would stay in phase and send in
            // bursts of `concurrency`, measuring the burst's queue.
            let mut next = Instant::now()
                + per_worker_interval.map_or(Duration::ZERO, |every| {
                    every.mul_f64(w as f64 / args.concurrency as f64)
                });
            while Instant::now() < deadline {
                if let Some(every) = per_worker_interval {
                    next += every;
                    tokio::time::sleep_until(next.into()).await;
                }
                let began = Instant::now();
                if let Some(producer) = &producer {
                    let key = format!("video:{}/view", zipf.sample(&mut rng));
                    let at = timestamp(&mut rng, args.spread_days);
                    if producer.add(&args.ns, key.as_bytes(), at, 1).await.is_err() {
                        t.failed += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if rng.random::<f64>() < args.read_ratio {
                    let key = format!("video:{}/view", zipf.sample(&mut rng));
                    let now = timespec::now_ms();
                    let from = now - i64::from(args.stats_days) * DAY_MS;
                    let answer = if args.read == "stats" {
                        client
                            .stats(&args.ns, key.as_bytes(), from, now + 1)
                            .await
                            .map(|_| ())
                    } else if args.read == "distinct" {
                        client
                            .distinct(&args.ns, key.as_bytes(), Resolution::Day, from, now + 1)
                            .await
                            .map(|_| ())
                    } else {
                        client.total(&args.ns, key.as_bytes()).await.map(|_| ())
                    };
                    match answer {
                        Ok(()) => t.ok += 1,
                        Err(_) => t.failed += 1,
                    }
                } else if args.distinct {
                    let items: Vec<Add> = (0..args.batch)
                        .map(|_| Add {
                            namespace: args.ns.clone(),
                            key: format!("video:{}/view", zipf.sample(&mut rng)).into_bytes(),
                            timestamp_ms: timestamp(&mut rng, args.spread_days),
                            member: format!("user:{}", rng.random_range(0..args.members.max(1)))
                                .into_bytes(),
                        })
                        .collect();
                    for outcome in client.add(items).await {
                        match outcome {
                            Outcome::Ok(()) => t.increments += 1,
                            Outcome::Failed(_) => t.failed += 1,
                            Outcome::Indeterminate(_) => t.indeterminate += 1,
                        }
                    }
                    t.ok += 1;
                } else {
                    let items: Vec<Increment> = (0..args.batch)
                        .map(|_| Increment {
                            namespace: args.ns.clone(),
                            key: format!("video:{}/view", zipf.sample(&mut rng)).into_bytes(),
                            timestamp_ms: timestamp(&mut rng, args.spread_days),
                            delta: 1,
                            events: 1,
                            op_id: None,
                        })
                        .collect();
                    if let Some(addr) = &args.http {
                        match http_increments(
                            &mut http,
                            addr,
                            token.as_deref(),
                            tls.as_ref(),
                            &items,
                        )
                        .await
                        {
                            Ok((ok, failed, indeterminate)) => {
                                t.increments += ok;
                                t.failed += failed;
                                t.indeterminate += indeterminate;
                            }
                            Err(_) => {
                                http = None;
                                t.failed += items.len() as u64;
                            }
                        }
                    } else {
                        for outcome in client.increment(items).await {
                            match outcome {
                                Outcome::Ok(()) => t.increments += 1,
                                Outcome::Failed(_) => t.failed += 1,
                                Outcome::Indeterminate(_) => t.indeterminate += 1,
                            }
                        }
                    }
                    t.ok += 1;
                }
                t.latencies_us.push(began.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        }));
    }
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.duration)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let secs = started.elapsed().as_secs_f64();
        bar.set_position(secs as u64);
        bar.set_message(format!(
            "{:.0} req/s",
            done.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    let mut total = Tally::default();
    for w in workers {
        let t = w.await.map_err(|e| e.to_string())?;
        total.latencies_us.extend(t.latencies_us);
        total.ok += t.ok;
        total.failed += t.failed;
        total.indeterminate += t.indeterminate;
        total.increments += t.increments;
    }
    let produced = match &producer {
        Some(p) => Some(p.flush().await),
        None => None,
    };
    if let Some(r) = &produced {
        let d = &r.delivered;
        total.increments = d.events_acknowledged;
        total.failed += d.events_failed;
        total.indeterminate = d.events_indeterminate + d.events_expired;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    let report = serde_json::json!({
        "requests": lat.len(),
        "requests_per_s": lat.len() as f64 / elapsed,
        "increments_per_s": total.increments as f64 / elapsed,
        "writes": if args.distinct { "adds" } else { "increments" },
        "p50_us": percentile(lat, 0.50),
        "p90_us": percentile(lat, 0.90),
        "p99_us": percentile(lat, 0.99),
        "p999_us": percentile(lat, 0.999),
        "failed": total.failed,
        "indeterminate": total.indeterminate,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "read": if args.read_ratio > 0.0 { Some(&args.read) } else { None },
        "producer": produced,
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "{:<18} {:>12}",
            "requests/s",
            format!("{:.0}", lat.len() as f64 / elapsed)
        );
        println!(
            "{:<18} {:>12}",
            if args.distinct {
                "adds/s"
            } else {
                "increments/s"
            },
            format!("{:.0}", total.increments as f64 / elapsed)
        );
        for (name, q) in [
            ("p50 us", 0.50),
            ("p90 us", 0.90),
            ("p99 us", 0.99),
            ("p99.9 us", 0.999),
        ] {
            println!("{name:<18} {:>12}", percentile(lat, q));
        }
        println!("{:<18} {:>12}", "failed", total.failed);
        println!("{:<18} {:>12}", "indeterminate", total.indeterminate);
    }
    Ok(())
}

/// Sends `items` as one `POST /v1/increments` over `conn` (opened to
/// `addr` when `None`, kept open between batches) and counts the items
/// `ok`, `failed` and `indeterminate` in the answer.
async fn http_increments(
    conn: &mut Option<HttpConnection>,
    addr: &str,
    token: Option<&str>,
    tls: Option<&TlsClient>,
    items: &[Increment],
) -> Result<(u64, u64, u64), String> {
    if conn.is_none() {
        *conn = Some(HttpConnection::connect(addr, token, tls).await?);
    }
    let Some(conn) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let increments: Vec<serde_json::Value> = items
        .iter()
        .map(|i| {
            serde_json::json!({
                "key": String::from_utf8_lossy(&i.key),
                "namespace": i.namespace,
                "timestamp_ms": i.timestamp_ms,
                "delta": i.delta,
            })
        })
        .collect();
    let body = serde_json::json!({ "increments": increments }).to_string();
    let answer = conn.request("POST", "/v1/increments", Some(&body)).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
    let n = |k: &str| v[k].as_u64();
    match (n("ok"), n("failed"), n("indeterminate")) {
        (Some(ok), Some(failed), Some(indeterminate)) => Ok((ok, failed, indeterminate)),
        _ => Err(format!("unexpected answer {v}")),
    }
}
