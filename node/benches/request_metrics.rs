//! What the request metrics cost per request: `RequestMetrics::request`
//! and, for an increment batch of 16, `RequestMetrics::items`, the only
//! metrics work on the hot path (everything else `/metrics` shows is read
//! when a scrape comes). One thread, then two threads recording into the
//! same families (a node's runtime on 2 cores). bench/RESULTS.md sets the
//! figure against the server CPU per request that `bench/run.sh`
//! measures.
//!
//! `cargo bench -p tally-node --bench request_metrics`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::ItemResult;
use tally_node::metrics::RequestMetrics;

const REQUESTS: u64 = 2_000_000;

fn record(metrics: &RequestMetrics, n: u64, batch: &[ItemResult]) {
    for i in 0..n {
        let took = Duration::from_micros(50 + (i % 2000));
        metrics.request("increment", took, None);
        metrics.items(batch);
    }
}

fn main() {
    let batch = vec![ItemResult::Ok; 16];
    for round in 1..=3 {
        let metrics = RequestMetrics::default();
        let started = Instant::now();
        record(&metrics, REQUESTS, &batch);
        let one = started.elapsed().as_nanos() as f64 / REQUESTS as f64;

        let metrics = Arc::new(RequestMetrics::default());
        let started = Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (metrics, batch) = (metrics.clone(), batch.clone());
                std::thread::spawn(move || record(&metrics, REQUESTS / 2, &batch))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Wall time over both threads' requests: what the node's two
        // workers pay together per request.
        let two = started.elapsed().as_nanos() as f64 / REQUESTS as f64 * 2.0;
        println!(
            "round {round}: {one:.0} ns per increment request of 16 items on one thread, \
             {two:.0} ns of CPU per request with two threads recording"
        );
    }
}
