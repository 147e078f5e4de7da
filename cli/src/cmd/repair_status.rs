//! The anti-entropy schedule in `tally status`: a one-line summary under
//! the cluster table, and with `--repairs` one row per range: who
//! schedules it, when it was last repaired and when it is due next.
//! Each node answers for the ranges it replicates; a range's row comes
//! from the node that schedules it.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_client::admin::{AdminReply, AdminRequest, RangeRepairView, RepairScheduleView};
use tally_client::Client;

use crate::args::Cli;
use crate::output::print_json;

/// Every answering node's schedule (nodes that do not answer are left
/// out; the summary says how many answered).
pub async fn gather(cli: &Cli, addresses: &[String]) -> Vec<RepairScheduleView> {
    let mut views = Vec::new();
    for address in addresses {
        let Ok(mut config) = cli.config([address.clone()]) else {
            continue;
        };
        config.request_timeout = Duration::from_secs(2);
        config.max_retries = 0;
        config.token_aware = false;
        let Ok(client) = Client::connect(config).await else {
            continue;
        };
        if let Some(view) = schedule_of(&client).await {
            views.push(view);
        }
    }
    views
}

async fn schedule_of(client: &Client) -> Option<RepairScheduleView> {
    match client.admin(&AdminRequest::RepairSchedule).await {
        Ok(AdminReply::RepairSchedule(view)) => Some(view),
        _ => None,
    }
}

/// One row per range, from the view of the node that schedules it (or
/// of any replica, if its scheduler did not answer).
pub fn rows(views: &[RepairScheduleView]) -> Vec<(i64, RangeRepairView)> {
    // Per range: the chosen view's clock and row, and whether it is the
    // scheduler's.
    let mut rows: BTreeMap<(u64, u64), (bool, i64, RangeRepairView)> = BTreeMap::new();
    for view in views {
        for r in &view.ranges {
            let key = (r.start_token, r.end_token);
            let scheduler = r.scheduled_by == Some(view.host_id);
            let row = r.clone();
            if let Some((was_scheduler, now, seen)) = rows.remove(&key) {
                // Any replica may know of a later repair than another.
                let last = row.last_repaired_ms.max(seen.last_repaired_ms);
                let repairing = row.repairing.or(seen.repairing);
                if was_scheduler && !scheduler {
                    rows.insert(key, (true, now, seen));
                } else {
                    rows.insert(key, (scheduler, view.now_ms, row));
                }
                if let Some(entry) = rows.get_mut(&key) {
                    entry.2.last_repaired_ms = last;
                    entry.2.repairing = repairing;
                }
            } else {
                rows.insert(key, (scheduler, view.now_ms, row));
            }
        }
    }
    rows.into_values().map(|(_, now, row)| (now, row)).collect()
}

/// "3 h ago", "in 12 min", "now".
fn relative(ms: i64) -> String {
    let (future, ms) = (ms > 0, ms.unsigned_abs());
    let text = match ms / 1000 {
        0 => return "now".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// The summary line under the cluster table.
pub fn summary(views: &[RepairScheduleView], asked: usize) -> Option<String> {
    let interval = views.iter().map(|v| v.interval_ms).max()?;
    let rows = rows(views);
    let within = rows
        .iter()
        .filter(|(now, r)| {
            r.last_repaired_ms
                .is_some_and(|at| interval > 0 && now - at <= interval as i64)
        })
        .count();
    let oldest = rows
        .iter()
        .map(|(now, r)| r.last_repaired_ms.map(|at| at - now))
        .min()
        .flatten();
    let next = rows
        .iter()
        .filter_map(|(now, r)| r.next_due_ms.map(|due| (due - now).max(0)))
        .min();
    let schedule = if interval == 0 {
        "off (repair.interval_s = 0)".to_owned()
    } else {
        format!(
            "every {}",
            relative(interval as i64).trim_start_matches("in ")
        )
    };
    Some(format!(
        "anti-entropy: {schedule}; {within} of {} ranges repaired within it; least recent repair {}; next due {}{}",
        rows.len(),
        oldest.map_or("never".into(), relative),
        next.map_or("-".into(), relative),
        if views.len() < asked {
            format!(" ({} of {asked} nodes answered)", views.len())
        } else {
            String::new()
        }
    ))
}

/// `tally status --repairs`: the table, or the nodes' views as JSON.
pub fn print(views: &[RepairScheduleView], json: bool) {
    if json {
        print_json(&views);
        return;
    }
    println!(
        "{:>20}  {:>20}  {:<12} {:>9}  {:<14} {:<14} {:<9}",
        "start (excl.)", "end", "replicas", "scheduler", "last repair", "next due", "repairing"
    );
    for (now, r) in rows(views) {
        let replicas: Vec<String> = r.replicas.iter().map(u64::to_string).collect();
        println!(
            "{:>20}  {:>20}  {:<12} {:>9}  {:<14} {:<14} {:<9}",
            r.start_token,
            r.end_token,
            replicas.join(","),
            r.scheduled_by.map_or("-".into(), |h| h.to_string()),
            r.last_repaired_ms
                .map_or("never".into(), |at| relative(at - now)),
            r.next_due_ms
                .map_or("-".into(), |due| relative((due - now).max(0))),
            r.repairing.map_or("-".into(), |h| format!("host {h}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, scheduler: u64, last: Option<i64>, due: Option<i64>) -> RangeRepairView {
        RangeRepairView {
            start_token: start,
            end_token: start + 10,
            replicas: vec![1, 2],
            scheduled_by: Some(scheduler),
            last_repaired_ms: last,
            next_due_ms: due,
            repairing: None,
        }
    }

    #[test]
    fn a_range_is_shown_once_with_the_latest_repair_any_replica_knows() {
        let views = vec![
            RepairScheduleView {
                host_id: 1,
                interval_ms: 60_000,
                bytes_per_s: 1,
                now_ms: 100_000,
                ranges: vec![
                    range(0, 1, Some(50_000), Some(110_000)),
                    range(10, 2, None, None),
                ],
            },
            RepairScheduleView {
                host_id: 2,
                interval_ms: 60_000,
                bytes_per_s: 1,
                now_ms: 100_000,
                ranges: vec![
                    range(0, 1, Some(70_000), None),
                    range(10, 2, Some(20_000), Some(80_000)),
                ],
            },
        ];
        let rows = rows(&views);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.last_repaired_ms, Some(70_000));
        assert_eq!(
            rows[0].1.next_due_ms,
            Some(110_000),
            "the scheduler's due time"
        );
        assert_eq!(rows[1].1.next_due_ms, Some(80_000));
        let line = summary(&views, 3).unwrap();
        assert!(line.contains("1 of 2 ranges repaired within it"), "{line}");
        assert!(line.contains("least recent repair 80 s ago"), "{line}");
        assert!(line.contains("next due now"), "{line}");
        assert!(line.contains("(2 of 3 nodes answered)"), "{line}");
        assert_eq!(summary(&[], 1), None);
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(relative(0), "now");
        assert_eq!(relative(90_000), "in 90 s");
        assert_eq!(relative(-3 * 3600 * 1000), "3 h ago");
        assert_eq!(relative(3 * 86_400 * 1000), "in 3 d");
    }
}
