//! `/agents`: every agent's live state; setting one available or away; freeing one held by a
//! stuck call.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Shared, bad_body, error, stopping};
use crate::routing::Extension;

/// The longest reason kept for being away.
const REASON_LIMIT: usize = 200;

/// `GET /agents`.
pub(super) async fn list(State(shared): State<Shared>) -> Response {
    Json(json!({ "agents": shared.handle.live().agents })).into_response()
}

/// `GET /agents/{extension}`.
pub(super) async fn show(State(shared): State<Shared>, Path(extension): Path<String>) -> Response {
    match shared.handle.live().agent(&extension) {
        Some(agent) => Json(agent).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("{extension} is not an agent of any group"),
        ),
    }
}

/// A configured agent's extension, or the answer saying why not.
fn agent(shared: &Shared, extension: &str) -> Result<Extension, Box<Response>> {
    let Ok(parsed) = Extension::parse(extension) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("\"{extension}\" is not an extension"),
        )));
    };
    let config = shared.config();
    if !config
        .groups
        .iter()
        .any(|g| g.agents.iter().any(|a| a.extension == parsed))
    {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("{extension} is not an agent of any group"),
        )));
    }
    Ok(parsed)
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wanted {
    Available,
    Away,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    state: Wanted,
    reason: Option<String>,
}

/// `PUT /agents/{extension}` with `{"state": "away", "reason": "lunch"}` or
/// `{"state": "available"}`: taken by routing at once, kept across restarts.
pub(super) async fn set(
    State(shared): State<Shared>,
    Path(extension): Path<String>,
    body: Result<Json<SetBody>, JsonRejection>,
) -> Response {
    let extension = match agent(&shared, &extension) {
        Ok(extension) => extension,
        Err(refused) => return *refused,
    };
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(rejection),
    };
    let away = matches!(body.state, Wanted::Away);
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(reason) = &reason {
        if !away {
            return error(StatusCode::BAD_REQUEST, "a reason goes with \"away\" only");
        }
        if reason.chars().count() > REASON_LIMIT || reason.chars().any(char::is_control) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("a reason is one line of at most {REASON_LIMIT} characters"),
            );
        }
    }
    match shared
        .handle
        .set_agent(extension.clone(), away, reason)
        .await
    {
        Ok(changed) => Json(json!({
            "extension": extension.as_str(),
            "state": if away { "away" } else { "available" },
            "changed": changed,
        }))
        .into_response(),
        Err(_) => stopping(),
    }
}

/// `POST /agents/{extension}/free`: every call holding the agent ends (both phones get BYE)
/// or, while it rings them, moves on to the next agent.
pub(super) async fn free(State(shared): State<Shared>, Path(extension): Path<String>) -> Response {
    let extension = match agent(&shared, &extension) {
        Ok(extension) => extension,
        Err(refused) => return *refused,
    };
    match shared.handle.free_agent(extension.clone()).await {
        Ok(calls) => {
            Json(json!({ "extension": extension.as_str(), "calls_ended": calls })).into_response()
        }
        Err(_) => stopping(),
    }
}
