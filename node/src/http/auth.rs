//! Who may call each route: the caller is the bearer token of the
//! `Authorization` header (`crate::security`), checked against what the
//! route's method needs before the route parses its body (the body itself
//! was read within the node's admission budget and frame timeout, as
//! every body is). A refusal is `401`
//! (with `WWW-Authenticate: Bearer`) or `403`, and changes nothing.

use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response as HttpResponse};
use tally_client::message::Need;

use super::{ApiError, Front};
use crate::security::{Caller, Refusal};

/// Lets the request through when its caller may call its route.
pub(super) async fn authorize(
    State(front): State<Front>,
    matched: Option<MatchedPath>,
    request: axum::extract::Request,
    next: Next,
) -> HttpResponse {
    let access = front.server.access();
    if !access.is_enforced() {
        return next.run(request).await;
    }
    let need = matched
        .and_then(|path| {
            front
                .needs
                .get(&(request.method().as_str(), path.as_str()))
                .copied()
        })
        .unwrap_or(Need::Nothing);
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or("")
                .trim()
        });
    let caller = match bearer {
        None => Ok(Caller::Anonymous),
        Some(token) => access.bearer(token),
    };
    match caller.and_then(|caller| access.check(&caller, need)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            front.server.refused(None, request.uri().path(), &refusal);
            let mut answer = ApiError::new(refusal.code(), refusal.message()).into_response();
            if matches!(refusal, Refusal::Unauthenticated(_)) {
                answer.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tally\""),
                );
            }
            answer
        }
    }
}
