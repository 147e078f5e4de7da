//! `GET /`: the console, one HTML page with its script inline, compiled
//! into the binary so a user needs no build step and no network. It reads
//! only the JSON API; `console.html` says what it shows.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("console.html");

/// `GET /`.
pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
