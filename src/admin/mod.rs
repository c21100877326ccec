//! The admin HTTP API (axum), on loopback: what supervisors, the wallboard, the `sipdesk`
//! commands and monitoring ask of the running daemon. JSON in and out; the whole contract is
//! `GET /openapi.json` (`openapi.json` beside this file), and a test checks every route here
//! against it.
//!
//! - Without a token: `GET /health` (200 ready; 503 while stopping or while the database
//!   refuses writes, the body says which), `GET /openapi.json`, and `GET /wallboard` (the page
//!   asks for the token and sends it with each request it makes), and
//!   `GET /voicemail/{id}.wav` with a signed link's `expires` and `signature` instead
//!   ([`voicemail`]).
//! - Everything else needs `Authorization: Bearer <token>`, compared in constant time: 401
//!   without it or with a wrong one; a bad body is 400 with the reason, an unknown call or
//!   extension 404.
//! - Live answers (calls in progress, agents, groups now, `/events`) come from the proxy's
//!   published snapshot through the [`Handle`]; what happened (ended calls, today's figures,
//!   deliveries) from the store. Changes go to the proxy as commands, never to its tables.
//!
//! The token is read from where the configuration says at each request, so a new token file
//! works without a restart; by default the daemon makes one at start ([`generate_token`]).

mod agents;
mod calls;
mod deliveries;
mod events;
mod groups;
mod metrics;
mod voicemail;
mod wallboard;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::Handle;
use crate::store::Store;
use crate::store::writer::Health;

/// The API's contract.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
#[derive(Clone)]
pub struct Shared {
    /// The way to the proxy's thread and its live snapshot.
    pub handle: Handle,
    /// Whether the store writer can write.
    pub health: Arc<Health>,
    /// For what happened: ended calls, deliveries, today's figures.
    pub store: Store,
    /// The configuration in force.
    pub config: watch::Receiver<Arc<Config>>,
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen for the admin API on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the admin token to {path}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes a new random token to `path`, readable by sipdesk's user only.
pub fn generate_token(path: &Path) -> Result<(), AdminError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| AdminError::Token {
        path: path.display().to_string(),
        source,
    };
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(fail)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = path.with_extension("token.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(token.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// Binds the admin API's address; serving starts with [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AdminError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Every route; the ones after the token check need it.
fn router(shared: Shared) -> axum::Router {
    let protected = axum::Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/calls", get(calls::list))
        .route("/calls/{id}", get(calls::show).delete(calls::end))
        .route("/calls/{id}/tags", post(calls::tag))
        .route("/agents", get(agents::list))
        .route("/agents/{extension}", get(agents::show).put(agents::set))
        .route("/agents/{extension}/free", post(agents::free))
        .route("/groups", get(groups::list))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}/retry", post(deliveries::retry))
        .route("/events", get(events::stream))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorized));
    axum::Router::new()
        .route("/health", get(health_check))
        .route("/openapi.json", get(openapi))
        .route("/wallboard", get(wallboard::page))
        .route("/voicemail/{file}", get(voicemail::recording))
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

/// Serves the API until `cancel` fires.
pub async fn serve(listener: tokio::net::TcpListener, shared: Shared, cancel: CancellationToken) {
    let stop = cancel.clone();
    if let Err(error) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(%error, "the admin API stopped");
    }
}

async fn health_check(State(shared): State<Shared>) -> Response {
    let (status, state) = if shared.handle.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if !shared.health.writable() {
        (StatusCode::SERVICE_UNAVAILABLE, "database_not_writable")
    } else {
        (StatusCode::OK, "ready")
    };
    let body = json!({
        "status": state,
        "records_waiting": shared.health.waiting(),
        "records_spilled": shared.health.spilled(),
    });
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A JSON error: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// 503 when the proxy's thread no longer answers.
fn stopping() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "sipdesk is stopping")
}

/// 500 for a store that failed, logged with its cause.
fn store_failed(what: &str, failure: &crate::store::StoreError) -> Response {
    tracing::error!(error = %crate::report::Chain(failure), "admin API: cannot {what}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("cannot {what}: the database did not answer"),
    )
}

/// A JSON body that failed to parse, as 400 with the reason (axum's own rejection is text).
fn bad_body(rejection: axum::extract::rejection::JsonRejection) -> Response {
    error(StatusCode::BAD_REQUEST, &rejection.body_text())
}

/// Lets the request through when it carries the token.
async fn authorized(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    match refusal(&shared, request.headers()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// The answer to a request without the token (`None`: it has it).
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let source = shared.config().admin.token.source();
    let expected = match source.read() {
        Ok(token) => token,
        Err(why) => {
            tracing::error!(why, "the admin API has no token to compare with");
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin token cannot be read",
            ));
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same(given.as_bytes(), expected.expose().as_bytes()) {
        return None;
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn the_contract_is_json_and_names_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/health",
            "/openapi.json",
            "/wallboard",
            "/metrics",
            "/calls",
            "/calls/{id}",
            "/calls/{id}/tags",
            "/agents",
            "/agents/{extension}",
            "/agents/{extension}/free",
            "/groups",
            "/deliveries",
            "/deliveries/{id}/retry",
            "/events",
            "/voicemail/{file}",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
    }
}
