//! Distinct-count routes: `POST /v1/adds` (members added to keys of
//! distinct namespaces, per-item results) and
//! `GET /v1/distinct/{namespace}/{key}` (estimates per bucket and over
//! the range).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_client::timespec;
use tally_client::{Add, Consistency, Request, Response};

use super::counters::{check_batch, item_results, item_time, ReadQuery};
use super::{ApiError, Front};

/// `POST /v1/adds`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBatch {
    /// The namespace of items that name none.
    namespace: Option<String>,
    consistency: Option<Consistency>,
    /// The client's deadline, in milliseconds (0 or absent: the node's).
    timeout_ms: Option<u32>,
    adds: Vec<AddItem>,
}

/// One member added to a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddItem {
    key: String,
    member: String,
    namespace: Option<String>,
    /// Milliseconds since the epoch.
    timestamp_ms: Option<i64>,
    /// RFC 3339, `now`, `-90m`, or milliseconds, as a string.
    timestamp: Option<String>,
}

/// Adds a batch of members: one result per item, in order, statuses as
/// for increments. Adding a member again changes nothing, so an
/// `indeterminate` item may simply be sent again.
pub(super) async fn adds(
    State(front): State<Front>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let batch: AddBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a batch of adds: {e}")))?;
    check_batch(batch.adds.len(), "adds")?;
    let now = front.server.now_ms();
    let items = batch
        .adds
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let namespace = item
                .namespace
                .as_deref()
                .or(batch.namespace.as_deref())
                .ok_or_else(|| format!("item {i}: no namespace (on the item or the batch)"))?;
            Ok(Add {
                namespace: namespace.to_owned(),
                key: item.key.as_bytes().to_vec(),
                timestamp_ms: item_time(item.timestamp_ms, item.timestamp.as_deref(), now)
                    .map_err(|e| format!("item {i}: {e}"))?,
                member: item.member.as_bytes().to_vec(),
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(ApiError::bad_request)?;
    let request = Request::Add {
        consistency: batch.consistency.unwrap_or_default(),
        timeout_ms: batch.timeout_ms.unwrap_or(0),
        items,
    };
    match front.run(request).await? {
        Response::Increment(results) => Ok(item_results(&results)),
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /v1/distinct/{namespace}/{key}?resolution=&from=&to=`: estimated
/// distinct members per non-empty bucket and over the whole range
/// (default: days of the last 7).
pub(super) async fn distinct(
    State(front): State<Front>,
    Path((namespace, key)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let resolution = query.resolution("day")?;
    let (start_ms, end_ms) = query.window(front.server.now_ms(), "-7d")?;
    let request = Request::Distinct {
        consistency: query.consistency.unwrap_or_default(),
        namespace: namespace.clone(),
        key: key.clone().into_bytes(),
        resolution,
        start_ms,
        end_ms,
    };
    match front.run(request).await? {
        Response::Distinct { points, union } => {
            let points: Vec<Value> = points
                .iter()
                .map(|p| {
                    json!({
                        "bucket_start": timespec::format_rfc3339(p.bucket_start_ms),
                        "bucket_start_ms": p.bucket_start_ms,
                        "estimate": p.estimate,
                    })
                })
                .collect();
            Ok(Json(json!({
                "namespace": namespace, "key": key, "resolution": resolution,
                "from_ms": start_ms, "to_ms": end_ms, "points": points, "distinct": union,
            })))
        }
        other => Err(ApiError::from_response(other)),
    }
}
