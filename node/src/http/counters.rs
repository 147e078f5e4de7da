//! Counter routes: `POST /v1/increments` (a batch, per-item results) and
//! `GET /v1/counters/{namespace}/{key}` with `/range` and `/stats`,
//! `GET /v1/top/{namespace}` (the largest keys of a window); the
//! per-item answer and the read query that distinct routes share.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_client::message::MAX_BATCH_ITEMS;
use tally_client::timespec;
use tally_client::{Consistency, ErrorCode, Increment, ItemResult, Request, Resolution, Response};

use super::{code_name, status_of, ApiError, Front};

/// `POST /v1/increments`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IncrementBatch {
    /// The namespace of items that name none (default `events`).
    namespace: Option<String>,
    consistency: Option<Consistency>,
    /// The client's deadline, in milliseconds (0 or absent: the node's).
    timeout_ms: Option<u32>,
    increments: Vec<IncrementItem>,
}

/// One increment of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IncrementItem {
    key: String,
    namespace: Option<String>,
    /// Milliseconds since the epoch.
    timestamp_ms: Option<i64>,
    /// RFC 3339, `now`, `-90m`, or milliseconds, as a string.
    timestamp: Option<String>,
    delta: Option<i64>,
    events: Option<u32>,
    /// 32 hex digits: the increment counts once however often it is sent.
    op_id: Option<String>,
}

/// One item's result, as JSON says it.
#[derive(Debug, Serialize)]
struct ItemJson {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

/// Applies a batch: one result per item, in order (`ok`, `failed` with
/// its code: nothing applied, `indeterminate` with its code: maybe
/// applied). The status says the batch as a whole: 200 every item
/// applied, 207 some, and when none was: the status of the first
/// failure, or 504 if any item's outcome is unknown.
pub(super) async fn increments(
    State(front): State<Front>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let batch: IncrementBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not an increment batch: {e}")))?;
    check_batch(batch.increments.len(), "increments")?;
    let now = front.server.now_ms();
    let default_ns = batch.namespace.as_deref().unwrap_or("events");
    let items = batch
        .increments
        .iter()
        .enumerate()
        .map(|(i, item)| increment(item, default_ns, now).map_err(|e| format!("item {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::bad_request)?;
    let request = Request::Increment {
        consistency: batch.consistency.unwrap_or_default(),
        timeout_ms: batch.timeout_ms.unwrap_or(0),
        items,
    };
    match front.run(request).await? {
        Response::Increment(results) => Ok(item_results(&results)),
        other => Err(ApiError::from_response(other)),
    }
}

/// Refuses a batch of no `what`, or of more than a request may carry.
pub(super) fn check_batch(n: usize, what: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request(format!("the batch holds no {what}")));
    }
    if n > MAX_BATCH_ITEMS {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("{n} {what}; a batch holds at most {MAX_BATCH_ITEMS}"),
        ));
    }
    Ok(())
}

/// A batch's per-item results as JSON, with the status of the batch as a
/// whole: 200 every item applied, 207 some, and when none was: the status
/// of the first failure, or 504 if any item's outcome is unknown.
pub(super) fn item_results(results: &[ItemResult]) -> (StatusCode, Json<Value>) {
    let count = |f: fn(&ItemResult) -> bool| results.iter().filter(|r| f(r)).count();
    let ok = count(|r| matches!(r, ItemResult::Ok));
    let failed = count(|r| matches!(r, ItemResult::Failed(_)));
    let indeterminate = count(|r| matches!(r, ItemResult::Indeterminate(_)));
    let status = if ok == results.len() {
        StatusCode::OK
    } else if ok > 0 {
        StatusCode::MULTI_STATUS
    } else if indeterminate > 0 {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        results
            .iter()
            .find_map(|r| match r {
                ItemResult::Failed(code) => Some(status_of(*code)),
                _ => None,
            })
            .unwrap_or(StatusCode::BAD_REQUEST)
    };
    let items: Vec<ItemJson> = results
        .iter()
        .map(|r| match r {
            ItemResult::Ok => ItemJson {
                status: "ok",
                code: None,
            },
            ItemResult::Failed(code) => ItemJson {
                status: "failed",
                code: Some(code_name(*code)),
            },
            ItemResult::Indeterminate(code) => ItemJson {
                status: "indeterminate",
                code: Some(code_name(*code)),
            },
        })
        .collect();
    (
        status,
        Json(json!({
            "results": items,
            "ok": ok,
            "failed": failed,
            "indeterminate": indeterminate,
        })),
    )
}

/// An item's time: `timestamp_ms`, or `timestamp` as text, or now.
pub(super) fn item_time(
    timestamp_ms: Option<i64>,
    timestamp: Option<&str>,
    now: i64,
) -> Result<i64, String> {
    match (timestamp_ms, timestamp) {
        (Some(_), Some(_)) => Err("give timestamp_ms or timestamp, not both".into()),
        (Some(ms), None) => Ok(ms),
        (None, Some(text)) => timespec::parse(text, now),
        (None, None) => Ok(now),
    }
}

/// One item as the binary protocol carries it.
fn increment(item: &IncrementItem, default_ns: &str, now: i64) -> Result<Increment, String> {
    let timestamp_ms = item_time(item.timestamp_ms, item.timestamp.as_deref(), now)?;
    let op_id = match &item.op_id {
        None => None,
        Some(hex) if hex.len() == 32 => {
            Some(u128::from_str_radix(hex, 16).map_err(|_| format!("op_id {hex:?} is not hex"))?)
        }
        Some(hex) => return Err(format!("op_id {hex:?} is not 32 hex digits")),
    };
    Ok(Increment {
        namespace: item.namespace.as_deref().unwrap_or(default_ns).to_owned(),
        key: item.key.as_bytes().to_vec(),
        timestamp_ms,
        delta: item.delta.unwrap_or(1),
        events: item.events.unwrap_or(1),
        op_id,
    })
}

/// The query of a read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    pub(super) consistency: Option<Consistency>,
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
}

impl ReadQuery {
    /// The resolution asked (default `default`).
    pub(super) fn resolution(&self, default: &str) -> Result<Resolution, ApiError> {
        let name = self.resolution.as_deref().unwrap_or(default);
        Resolution::from_name(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown resolution {name:?} (minute, hour, day or total)"
            ))
        })
    }

    /// `from` and `to` in ms (defaults: `default_from` and now).
    pub(super) fn window(&self, now: i64, default_from: &str) -> Result<(i64, i64), ApiError> {
        let at = |s: &str, what: &str| {
            timespec::parse(s, now).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
        };
        Ok((
            at(self.from.as_deref().unwrap_or(default_from), "from")?,
            at(self.to.as_deref().unwrap_or("now"), "to")?,
        ))
    }
}

/// `GET /v1/counters/{namespace}/{key}`: the all-time total.
pub(super) async fn total(
    State(front): State<Front>,
    Path((namespace, key)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = Request::Total {
        consistency: query.consistency.unwrap_or_default(),
        namespace: namespace.clone(),
        key: key.clone().into_bytes(),
    };
    match front.run(request).await? {
        Response::Total(c) => Ok(Json(json!({
            "namespace": namespace, "key": key, "sum": c.sum, "count": c.count,
        }))),
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /v1/counters/{namespace}/{key}/range?resolution=&from=&to=`: the
/// non-empty buckets (default: minutes of the last hour).
pub(super) async fn range(
    State(front): State<Front>,
    Path((namespace, key)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let resolution = query.resolution("minute")?;
    let (start_ms, end_ms) = query.window(front.server.now_ms(), "-1h")?;
    let request = Request::Range {
        consistency: query.consistency.unwrap_or_default(),
        namespace: namespace.clone(),
        key: key.clone().into_bytes(),
        resolution,
        start_ms,
        end_ms,
    };
    match front.run(request).await? {
        Response::Range(points) => {
            let points: Vec<Value> = points
                .iter()
                .map(|p| {
                    json!({
                        "bucket_start": timespec::format_rfc3339(p.bucket_start_ms),
                        "bucket_start_ms": p.bucket_start_ms,
                        "sum": p.sum,
                        "count": p.count,
                    })
                })
                .collect();
            Ok(Json(json!({
                "namespace": namespace, "key": key, "resolution": resolution,
                "from_ms": start_ms, "to_ms": end_ms, "points": points,
            })))
        }
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /v1/counters/{namespace}/{key}/stats?from=&to=`: sum, count and
/// average over a range (default: the last 30 days).
pub(super) async fn stats(
    State(front): State<Front>,
    Path((namespace, key)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.resolution.is_some() {
        return Err(ApiError::bad_request(
            "stats take no resolution (they read the fewest cells)",
        ));
    }
    let (start_ms, end_ms) = query.window(front.server.now_ms(), "-30d")?;
    let request = Request::Stats {
        consistency: query.consistency.unwrap_or_default(),
        namespace: namespace.clone(),
        key: key.clone().into_bytes(),
        start_ms,
        end_ms,
    };
    match front.run(request).await? {
        Response::Stats { total, cells_read } => {
            let average = if total.count == 0 {
                0.0
            } else {
                total.sum as f64 / total.count as f64
            };
            Ok(Json(json!({
                "namespace": namespace, "key": key, "from_ms": start_ms, "to_ms": end_ms,
                "sum": total.sum, "count": total.count, "average": average,
                "cells_read": cells_read,
            })))
        }
        other => Err(ApiError::from_response(other)),
    }
}

/// The query of `GET /v1/top/{namespace}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopQueryJson {
    consistency: Option<Consistency>,
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
    k: Option<u32>,
}

/// `GET /v1/top/{namespace}?resolution=&from=&to=&k=`: the `k` (default
/// 10) keys with the largest sums over the window (default: minutes of
/// the last hour), with exact sums and counts.
pub(super) async fn top(
    State(front): State<Front>,
    Path(namespace): Path<String>,
    Query(query): Query<TopQueryJson>,
) -> Result<Json<Value>, ApiError> {
    let window = ReadQuery {
        consistency: query.consistency,
        from: query.from,
        to: query.to,
        resolution: query.resolution,
    };
    let resolution = window.resolution("minute")?;
    let (start_ms, end_ms) = window.window(front.server.now_ms(), "-1h")?;
    let request = Request::Top {
        consistency: window.consistency.unwrap_or_default(),
        namespace: namespace.clone(),
        resolution,
        start_ms,
        end_ms,
        k: query.k.unwrap_or(10),
    };
    match front.run(request).await? {
        Response::Top {
            keys,
            certain_above,
            nodes_missing,
        } => Ok(Json(json!({
            "namespace": namespace, "resolution": resolution,
            "from_ms": start_ms, "to_ms": end_ms, "keys": keys,
            "certain_above": certain_above, "nodes_missing": nodes_missing,
        }))),
        other => Err(ApiError::from_response(other)),
    }
}
