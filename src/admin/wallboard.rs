//! `GET /wallboard`: one page for supervisors' wall screens — plain HTML, CSS and JavaScript
//! in `wallboard.html`, served as it is (no build step, no external assets). The page asks for
//! the admin token once (kept in the browser's session storage), then reads `GET /groups` and
//! follows `GET /events` (read with `fetch`, so the token goes in the Authorization header and
//! never in a URL); each agent has an available/away toggle (`PUT /agents/{extension}`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("wallboard.html");

/// `GET /wallboard`.
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
