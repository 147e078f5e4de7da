//! Cluster routes: namespaces (list, one, create), this node's status, the
//! routing table, and the probes a load balancer or an orchestrator asks:
//! `/healthz` (the process answers) and `/readyz` (it can serve: storage
//! open and healthy, a member of the ring).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::{ErrorCode, Request, Response};

use super::{ApiError, Front};

/// `GET /v1/namespaces`.
pub(super) async fn namespaces(State(front): State<Front>) -> Result<Json<Value>, ApiError> {
    match front.run(Request::ListNamespaces).await? {
        Response::Namespaces(list) => Ok(Json(json!({ "namespaces": list }))),
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /v1/namespaces/{name}`.
pub(super) async fn namespace(
    State(front): State<Front>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match front.run(Request::DescribeNamespace { name }).await? {
        Response::Namespaces(mut list) if list.len() == 1 => Ok(Json(json!(list.remove(0)))),
        other => Err(ApiError::from_response(other)),
    }
}

/// `POST /v1/namespaces`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewNamespace {
    name: String,
    /// Resolutions and retention, e.g. `minute:7d, hour:90d, day:2y, total`.
    spec: String,
}

/// `POST /v1/namespaces`: creates a namespace through the metadata leader
/// (clusters started with `--init`/`--seed`).
pub(super) async fn create_namespace(
    State(front): State<Front>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewNamespace = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not {{name, spec}}: {e}")))?;
    let request = AdminRequest::CreateNamespace {
        name: new.name.clone(),
        spec: new.spec,
    };
    let payload = request.to_bytes();
    let reply = match front.run(Request::Admin { payload }).await? {
        Response::Admin(bytes) => {
            AdminReply::from_bytes(&bytes).map_err(|e| ApiError::new(ErrorCode::Internal, e))?
        }
        other => return Err(ApiError::from_response(other)),
    };
    match reply {
        AdminReply::Done { epoch, .. } => Ok((
            StatusCode::CREATED,
            Json(json!({ "name": new.name, "epoch": epoch })),
        )),
        AdminReply::Refused { reason } => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "Refused".into(),
            message: reason,
        }),
        AdminReply::Failed { reason } => Err(ApiError::new(ErrorCode::Unavailable, reason)),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected reply {other:?}"),
        )),
    }
}

/// `GET /v1/status`: this node as `tally status` shows it.
pub(super) async fn status(State(front): State<Front>) -> Result<Json<Value>, ApiError> {
    match front.run(Request::Status).await? {
        Response::Status(status) => Ok(Json(json!(status))),
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /v1/cluster`: every member, up or down, with what it reports
/// about itself (as `tally status` shows it).
pub(super) async fn cluster(State(front): State<Front>) -> Json<Value> {
    Json(json!(front.server.overview().await))
}

/// `GET /v1/ring`: the routing table (token ranges and their replicas).
pub(super) async fn ring(State(front): State<Front>) -> Result<Json<Value>, ApiError> {
    match front.run(Request::Routing).await? {
        Response::Routing(table) => Ok(Json(json!(table))),
        other => Err(ApiError::from_response(other)),
    }
}

/// `GET /healthz`: the process is alive and answers.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when this node can serve (storage healthy, a member
/// of the ring in the normal state), else 503 with the reason.
pub(super) async fn readyz(State(front): State<Front>) -> (StatusCode, Json<Value>) {
    match front.server.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        ),
    }
}

/// `GET /metrics`: the node's metrics, in the OpenMetrics text format
/// when the scraper asks for it (Prometheus does), else in the classic
/// Prometheus text format (curl, `promtool check metrics`); 404 when the
/// node runs with `http.metrics = false`.
pub(super) async fn metrics(
    State(front): State<Front>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let Some(text) = front.server.scrape().await else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "MetricsOff".into(),
            message: "this node runs with metrics off (http.metrics = false)".into(),
        });
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            classic(&text),
        )
    })
}

/// The classic Prometheus text format of an OpenMetrics exposition: a
/// counter family is named with its `_total` suffix in `HELP` and `TYPE`
/// (as its samples are), and the `UNIT` and `EOF` lines go.
fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_with_their_total() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
                  x_requests_total{kind=\"a\"} 3\n# HELP x_disk_bytes Disk.\n\
                  # TYPE x_disk_bytes gauge\n# UNIT x_disk_bytes bytes\nx_disk_bytes 7\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total{kind=\"a\"} 3\n# HELP x_disk_bytes Disk.\n\
             # TYPE x_disk_bytes gauge\nx_disk_bytes 7\n"
        );
    }
}
