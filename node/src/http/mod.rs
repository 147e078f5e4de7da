//! The HTTP/JSON front: the same requests as the binary protocol, for
//! services in any language, dashboards and `curl` (docs/http.md,
//! docs/openapi.yaml).
//!
//! Each route turns its JSON into the binary protocol's [`Request`] and
//! hands it to the same `Server::handle` a TCP frame reaches, so an
//! increment over HTTP meets the same checks, coordinator, op-id window
//! and limits; the answer's [`Response`] becomes JSON here. Requests take
//! their share of the node's [`Admission`] budget (connections, requests
//! in flight, bytes held) like frames do; a body over the protocol's
//! frame size is refused before it is read.
//!
//! Built on axum (over hyper): the Rust ecosystem's standard HTTP server,
//! on the tokio runtime the node already runs (see ARCHITECTURE.md,
//! "Dependencies and why").

mod auth;
mod cluster;
mod console;
mod counters;
mod distinct;
mod listener;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use tally_client::auth::Role;
use tally_client::frame::MAX_FRAME_BYTES;
use tally_client::message::Need;
use tally_client::{ErrorCode, Request, Response};
use tokio::net::TcpListener;

use crate::server::admission::Admission;
use crate::server::Server;
use listener::AdmittedListener;

/// Serves the HTTP API on `listener` until `stop` resolves.
pub async fn serve(
    server: Arc<Server>,
    admission: Arc<Admission>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let tls = server.tls().cloned();
    let app = router(server, admission.clone());
    let listener = AdmittedListener::new(listener, admission, tls);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the HTTP front stopped");
    }
}

/// What every handler reaches: the server the binary protocol uses, and
/// the node's admission budget.
#[derive(Debug, Clone)]
struct Front {
    server: Arc<Server>,
    admission: Arc<Admission>,
    /// What each route's method needs from the caller.
    needs: Arc<HashMap<(&'static str, &'static str), Need>>,
}

impl Front {
    /// Runs `request` as the binary protocol would (its share of the
    /// node's budget was taken by [`admit`]).
    async fn run(&self, request: Request) -> Result<Response, ApiError> {
        Ok(self.server.handle(request).await)
    }
}

/// Bytes counted for a request's head, on top of its body.
const HEAD_BYTES: usize = 1024;

/// Takes a request's share of the node's budget before its body is read
/// (the length it declares, or the largest body when it declares none),
/// and reads the body within the frame timeout: many slow or large
/// bodies cannot fill memory or hold connections, as frames cannot on
/// the binary port. Past the budget: `429`, nothing read.
async fn admit(
    State(front): State<Front>,
    request: axum::extract::Request,
    next: Next,
) -> HttpResponse {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let has_body = !matches!(*request.method(), Method::GET | Method::HEAD);
    let reserve = match (declared, has_body) {
        (Some(n), _) if n > MAX_FRAME_BYTES => {
            return ApiError::new(
                ErrorCode::FrameTooLarge,
                format!("a body of {n} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
            )
            .into_response()
        }
        (Some(n), _) => n,
        (None, true) => MAX_FRAME_BYTES,
        (None, false) => 0,
    };
    let slot = match front.admission.request(reserve + HEAD_BYTES) {
        Ok(slot) => slot,
        Err(why) => {
            return ApiError::new(ErrorCode::Overloaded, format!("{why}; retry with backoff"))
                .into_response()
        }
    };
    let (parts, body) = request.into_parts();
    let limit = front.admission.limits().frame_timeout;
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_FRAME_BYTES)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return ApiError::new(
                ErrorCode::FrameTooLarge,
                format!("the body exceeds the {MAX_FRAME_BYTES}-byte limit, or broke off"),
            )
            .into_response()
        }
        Err(_) => {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "Timeout".into(),
                message: format!("the body did not arrive within {limit:?}"),
            }
            .into_response()
        }
    };
    let response = next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await;
    drop(slot);
    response
}

/// A route's methods, each with what it needs from the caller.
type Methods = &'static [(&'static str, Need)];

const READ: Need = Need::Role(Role::Read);

/// Every route: its path, its methods with what each needs (a token's
/// role, when the node checks tokens), and what serves them. The router is
/// built from this table and [`routes`] lists it, so the OpenAPI file can
/// be checked against what is served.
fn table() -> Vec<(&'static str, Methods, MethodRouter<Front>)> {
    vec![
        ("/", &[("GET", Need::Nothing)], get(console::page)),
        (
            "/v1/increments",
            &[("POST", Need::Role(Role::Write))],
            post(counters::increments),
        ),
        (
            "/v1/counters/{namespace}/{key}",
            &[("GET", READ)],
            get(counters::total),
        ),
        (
            "/v1/counters/{namespace}/{key}/range",
            &[("GET", READ)],
            get(counters::range),
        ),
        (
            "/v1/counters/{namespace}/{key}/stats",
            &[("GET", READ)],
            get(counters::stats),
        ),
        ("/v1/top/{namespace}", &[("GET", READ)], get(counters::top)),
        (
            "/v1/adds",
            &[("POST", Need::Role(Role::Write))],
            post(distinct::adds),
        ),
        (
            "/v1/distinct/{namespace}/{key}",
            &[("GET", READ)],
            get(distinct::distinct),
        ),
        (
            "/v1/namespaces",
            &[("GET", READ), ("POST", Need::Role(Role::Admin))],
            get(cluster::namespaces).post(cluster::create_namespace),
        ),
        (
            "/v1/namespaces/{name}",
            &[("GET", READ)],
            get(cluster::namespace),
        ),
        ("/v1/status", &[("GET", READ)], get(cluster::status)),
        ("/v1/cluster", &[("GET", READ)], get(cluster::cluster)),
        ("/v1/ring", &[("GET", READ)], get(cluster::ring)),
        ("/healthz", &[("GET", Need::Nothing)], get(cluster::healthz)),
        ("/readyz", &[("GET", Need::Nothing)], get(cluster::readyz)),
        ("/metrics", &[("GET", READ)], get(cluster::metrics)),
    ]
}

/// Every route served, as `(method, path)`.
pub fn routes() -> Vec<(String, String)> {
    table()
        .into_iter()
        .flat_map(|(path, methods, _)| {
            methods
                .iter()
                .map(move |(m, _)| ((*m).to_owned(), path.to_owned()))
        })
        .collect()
}

fn router(server: Arc<Server>, admission: Arc<Admission>) -> Router {
    let routes = table();
    let needs: HashMap<(&'static str, &'static str), Need> = routes
        .iter()
        .flat_map(|(path, methods, _)| methods.iter().map(move |(m, need)| ((*m, *path), *need)))
        .collect();
    let front = Front {
        server,
        admission,
        needs: Arc::new(needs),
    };
    routes
        .into_iter()
        .fold(Router::new(), |router, (path, _, methods)| {
            router.route(path, methods)
        })
        .route_layer(middleware::from_fn_with_state(
            front.clone(),
            auth::authorize,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FRAME_BYTES))
        .layer(middleware::from_fn_with_state(front.clone(), admit))
        .with_state(front)
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "NotFound".into(),
        message: "no such route: see docs/http.md".into(),
    }
}

/// An error answer: `{code, message}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    /// The answer to a refusal with the binary protocol's `code`.
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            code: code_name(code),
            message: message.into(),
        }
    }

    /// A request the HTTP layer itself cannot read (bad JSON, a bad time).
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "BadRequest".into(),
            message: message.into(),
        }
    }

    /// The answer to a response the route did not expect (a refusal, or
    /// something else).
    fn from_response(response: Response) -> ApiError {
        match response {
            Response::Error { code, message } => ApiError::new(code, message),
            other => ApiError::new(
                ErrorCode::Internal,
                format!("unexpected answer {}", response_name(&other)),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

/// The name of a wire error code, as JSON carries it.
fn code_name(code: ErrorCode) -> String {
    match code {
        ErrorCode::Unknown(n) => format!("Unknown{n}"),
        other => format!("{other:?}"),
    }
}

/// The HTTP status of a refusal: 400 for a request that can never
/// succeed as sent, 404 for a namespace that does not exist, 413 for one
/// too large, 429 and 503 for load and missing replicas (retry later),
/// 504 when the outcome is unknown.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownNamespace => StatusCode::NOT_FOUND,
        ErrorCode::FrameTooLarge | ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable | ErrorCode::ShuttingDown | ErrorCode::StaleRing => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Timeout | ErrorCode::PeerLost => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Storage | ErrorCode::Internal | ErrorCode::Unknown(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A response's variant name, for an error message.
fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Increment(_) => "Increment",
        Response::Total(_) => "Total",
        Response::Range(_) => "Range",
        Response::Stats { .. } => "Stats",
        Response::Distinct { .. } => "Distinct",
        Response::Top { .. } => "Top",
        Response::Summary { .. } => "Summary",
        Response::Namespaces(_) => "Namespaces",
        Response::Status(_) => "Status",
        Response::Ack => "Ack",
        Response::Cells(_) => "Cells",
        Response::Routing(_) => "Routing",
        Response::Replicas(_) => "Replicas",
        Response::Gossip(_) => "Gossip",
        Response::Raft(_) => "Raft",
        Response::Admin(_) => "Admin",
        Response::Hashes(_) => "Hashes",
        Response::OpIds(_) => "OpIds",
        Response::RepairReport(_) => "RepairReport",
        Response::Authenticated(_) => "Authenticated",
        Response::PeerChallenge { .. } => "PeerChallenge",
        Response::Error { .. } => "Error",
    }
}
