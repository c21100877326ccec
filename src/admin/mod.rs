//! The admin HTTP API (axum), on loopback: what supervisors, the `sipdesk` commands and
//! monitoring ask of the running daemon. It reaches the proxy only through a
//! [`crate::control::Handle`] and the store writer's [`Health`].
//!
//! - `GET /health`, without a token: 200 when sipdesk takes calls and can write its database,
//!   503 while it is stopping or while the database refuses writes (the body says which).
//! - Everything else needs `Authorization: Bearer <token>` (compared in constant time): 401
//!   without it or with a wrong one. `DELETE /calls/{id}` ends a call in progress (an answered
//!   one with BYE to both sides), 404 for no such call. `POST /agents/{extension}/free` frees an
//!   agent: every call holding them ends (or, ringing them, moves on to the next agent).
//!
//! The token is read from where the configuration says at each request, so a new token file
//! works without a restart; by default the daemon makes one at start ([`generate_token`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use tokio::sync::watch;

use crate::config::{Config, SecretSource};
use crate::control::Handle;
use crate::routing::Extension;
use crate::store::writer::Health;

/// What the handlers share.
#[derive(Clone)]
struct Admin {
    handle: Handle,
    health: Arc<Health>,
    token: SecretSource,
    /// The configuration in force (which extensions are agents).
    config: watch::Receiver<Arc<Config>>,
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

/// Serves the API until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: Handle,
    health: Arc<Health>,
    token: SecretSource,
    config: watch::Receiver<Arc<Config>>,
    cancel: CancellationToken,
) {
    let admin = Admin {
        handle,
        health,
        token,
        config,
    };
    let app = axum::Router::new()
        .route("/health", get(health_check))
        .route("/calls/{id}", delete(end_call))
        .route("/agents/{extension}/free", post(free_agent))
        .with_state(admin);
    let stop = cancel.clone();
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(%error, "the admin API stopped");
    }
}

async fn health_check(State(admin): State<Admin>) -> Response {
    let (status, state) = if admin.handle.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if !admin.health.writable() {
        (StatusCode::SERVICE_UNAVAILABLE, "database_not_writable")
    } else {
        (StatusCode::OK, "ready")
    };
    let body = json!({
        "status": state,
        "records_waiting": admin.health.waiting(),
        "records_spilled": admin.health.spilled(),
    });
    (status, Json(body)).into_response()
}

async fn end_call(
    State(admin): State<Admin>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    match admin.handle.end_call(&id).await {
        Ok(true) => (StatusCode::OK, Json(json!({ "ended": id }))).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no call {id} in progress")),
        Err(stopped) => error(StatusCode::SERVICE_UNAVAILABLE, &stopped.to_string()),
    }
}

async fn free_agent(
    State(admin): State<Admin>,
    headers: HeaderMap,
    UrlPath(extension): UrlPath<String>,
) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let Ok(extension) = Extension::parse(&extension) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("\"{extension}\" is not an extension"),
        );
    };
    if !admin
        .config
        .borrow()
        .groups
        .iter()
        .any(|g| g.agents.iter().any(|a| a.extension == extension))
    {
        return error(
            StatusCode::NOT_FOUND,
            &format!("{extension} is not an agent of any group"),
        );
    }
    match admin.handle.free_agent(extension.clone()).await {
        Ok(calls) => (
            StatusCode::OK,
            Json(json!({ "extension": extension.as_str(), "calls_ended": calls })),
        )
            .into_response(),
        Err(stopped) => error(StatusCode::SERVICE_UNAVAILABLE, &stopped.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The answer to a request without the token (`None`: it has it).
fn refusal(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let expected = match admin.token.read() {
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
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same(given.as_bytes(), expected.expose().as_bytes()) {
        return None;
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
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
}
