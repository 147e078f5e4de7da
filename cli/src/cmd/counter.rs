//! Counter commands: `incr`, `get` (and `get --replicas`, every replica's
//! raw copy), `range` and `stats`.

use tally_client::{Increment, Outcome, Resolution};

use crate::args::Cli;
use crate::output::print_json;
use crate::timespec;

/// `tally incr`: one increment, with an op id when asked.
pub async fn incr(
    cli: &Cli,
    key: &str,
    delta: i64,
    ns: &str,
    at: &str,
    op_id: Option<&str>,
) -> Result<(), String> {
    let now = timespec::now_ms();

    let op_id = match op_id {
        None => None,
        Some("new") => Some(tally_client::new_op_id()),
        Some(hex) => Some(
            u128::from_str_radix(hex, 16)
                .map_err(|e| format!("--op-id {hex:?}: not 32 hex digits nor `new`: {e}"))?,
        ),
    };
    let client = cli.connect().await?;
    let timestamp_ms = timespec::parse(at, now)?;
    let item = Increment {
        namespace: ns.to_owned(),
        key: key.as_bytes().to_vec(),
        timestamp_ms,
        delta,
        events: 1,
        op_id,
    };
    let op_hex = op_id.map(|id| format!("{id:032x}"));
    match client.increment(vec![item]).await.pop() {
        Some(Outcome::Ok(())) => {
            if cli.json {
                print_json(&serde_json::json!({"ok": true, "op_id": op_hex}));
            } else if let Some(hex) = op_hex {
                println!("ok (op id {hex})");
            } else {
                println!("ok");
            }
            Ok(())
        }
        Some(Outcome::Failed(e)) => Err(format!("failed (not applied): {e}")),
        Some(Outcome::Indeterminate(e)) => Err(match op_hex {
            Some(hex) => format!(
                "indeterminate (may have been applied): {e}; resend with --op-id {hex} \
                     to count it exactly once"
            ),
            None => format!("indeterminate (may have been applied): {e}"),
        }),
        None => Err("no result".into()),
    }
}

/// `tally get --replicas`: each replica's copy of a total cell, and
/// whether they agree.
pub async fn replicas(cli: &Cli, key: &str, ns: &str) -> Result<(), String> {
    let client = cli.connect().await?;
    let views = client
        .inspect_replicas(ns, key.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&views);
    } else {
        println!(
            "{:<8} {:<22} {:>12} {:>10} {:>7}  shards (id:clock=sum)",
            "host id", "address", "sum", "count", "bytes"
        );
        for v in &views {
            let (sum, count) = v.shards.iter().fold((0i64, 0u64), |(s, c), x| {
                (s.wrapping_add(x.sum), c.wrapping_add(x.count))
            });
            let detail = match &v.error {
                Some(e) => format!("unreachable: {e}"),
                None => v
                    .shards
                    .iter()
                    .map(|x| {
                        format!(
                            "{}.{}:{}={}",
                            x.id >> 32,
                            x.id & 0xffff_ffff,
                            x.clock,
                            x.sum
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            println!(
                "{:<8} {:<22} {:>12} {:>10} {:>7}  {detail}",
                v.host_id,
                v.address,
                sum,
                count,
                v.value.len()
            );
        }
        let copies: Vec<&Vec<u8>> = views
            .iter()
            .filter(|v| v.error.is_none())
            .map(|v| &v.value)
            .collect();
        if copies.windows(2).all(|w| w[0] == w[1]) {
            println!("replicas agree");
        } else {
            println!("replicas differ (read repair or hint replay will converge them)");
        }
    }
    Ok(())
}

/// `tally get`: a counter's all-time total.
pub async fn get(cli: &Cli, key: &str, ns: &str) -> Result<(), String> {
    let client = cli.connect().await?;
    let c = client
        .total(ns, key.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&c);
    } else {
        println!("{key}: sum {} over {} increments", c.sum, c.count);
    }
    Ok(())
}

/// `tally range`: a counter's non-empty buckets.
pub async fn range(
    cli: &Cli,
    key: &str,
    ns: &str,
    resolution: &str,
    from: &str,
    to: &str,
) -> Result<(), String> {
    let now = timespec::now_ms();

    let client = cli.connect().await?;
    let res = Resolution::from_name(resolution)
        .ok_or_else(|| format!("unknown resolution {resolution:?}"))?;
    let (start, end) = (timespec::parse(from, now)?, timespec::parse(to, now)?);
    let points = client
        .range(ns, key.as_bytes(), res, start, end)
        .await
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&points);
    } else {
        println!("{:<18} {:>14} {:>10}", "bucket (UTC)", "sum", "count");
        for p in &points {
            println!(
                "{:<18} {:>14} {:>10}",
                timespec::format(p.bucket_start_ms),
                p.sum,
                p.count
            );
        }
        println!("{} buckets", points.len());
    }
    Ok(())
}

/// `tally stats`: sum, count and average over a time range.
pub async fn stats(cli: &Cli, key: &str, ns: &str, from: &str, to: &str) -> Result<(), String> {
    let now = timespec::now_ms();

    let client = cli.connect().await?;
    let (start, end) = (timespec::parse(from, now)?, timespec::parse(to, now)?);
    let (c, cells) = client
        .stats(ns, key.as_bytes(), start, end)
        .await
        .map_err(|e| e.to_string())?;
    let avg = if c.count == 0 {
        0.0
    } else {
        c.sum as f64 / c.count as f64
    };
    if cli.json {
        print_json(
            &serde_json::json!({"sum": c.sum, "count": c.count, "average": avg, "cells_read": cells}),
        );
    } else {
        println!(
            "sum {}  count {}  average {avg:.3}  ({cells} cells read)",
            c.sum, c.count
        );
    }
    Ok(())
}
