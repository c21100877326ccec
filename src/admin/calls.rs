//! `/calls`: calls in progress from the proxy's snapshot, ended ones from the store; ending a
//! stuck call; tagging an ended one.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Shared, bad_body, error, stopping, store_failed};
use crate::store::CallFilter;
use crate::store::tags::{self, TagRefused};

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// Only calls in progress (from the proxy, not the store).
    #[serde(default)]
    active: bool,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    50
}

/// `GET /calls?active=true&limit=50`.
pub(super) async fn list(
    State(shared): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "active is true or false, limit a number from 1 to 1000",
        );
    };
    if query.active {
        let live = shared.handle.live();
        return Json(json!({ "calls": live.calls })).into_response();
    }
    let limit = query.limit.clamp(1, 1000);
    match shared
        .store
        .calls(CallFilter {
            active: false,
            limit,
        })
        .await
    {
        Ok(calls) => Json(json!({ "calls": calls })).into_response(),
        Err(failure) => store_failed("list calls", &failure),
    }
}

/// `GET /calls/{id}`: the call as stored, its events and deliveries, and, while it is in
/// progress, its live state (`live`).
pub(super) async fn show(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let live = shared.handle.live().call(&id).cloned();
    let stored = match shared.store.call(&id).await {
        Ok(stored) => stored,
        Err(failure) => return store_failed("read the call", &failure),
    };
    if stored.is_none() && live.is_none() {
        return error(StatusCode::NOT_FOUND, &format!("no call {id}"));
    }
    let events = match shared.store.events(&id).await {
        Ok(events) => events,
        Err(failure) => return store_failed("read the call's events", &failure),
    };
    let deliveries = match shared.store.deliveries_of(&id).await {
        Ok(deliveries) => deliveries,
        Err(failure) => return store_failed("read the call's deliveries", &failure),
    };
    Json(json!({
        "id": id,
        "live": live,
        "call": stored,
        "events": events,
        "deliveries": deliveries,
    }))
    .into_response()
}

/// `DELETE /calls/{id}`: ends a call in progress (an answered one with BYE to both sides),
/// recorded as ended by an admin and reported like any other.
pub(super) async fn end(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    match shared.handle.end_call(&id).await {
        Ok(true) => Json(json!({ "ended": id })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no call {id} in progress")),
        Err(_) => stopping(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TagBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /calls/{id}/tags` with `{"add": [...], "remove": [...]}`: changes an ended call's
/// tags within two hours of its end, and queues the change for its helpdesks.
pub(super) async fn tag(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<TagBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(rejection),
    };
    let (add, remove) = match tags::normalize(&body.add, &body.remove) {
        Ok(both) => both,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let integrations: Vec<String> = shared
        .config()
        .helpdesks
        .iter()
        .map(|h| h.name.clone())
        .collect();
    match shared
        .store
        .tag_call(&id, &add, &remove, jiff::Timestamp::now(), &integrations)
        .await
    {
        Ok(Ok(tagged)) => Json(json!({
            "id": id,
            "tags": tagged.retag.tags,
            "added": tagged.retag.added,
            "removed": tagged.retag.removed,
            "queued_for": tagged.integrations,
        }))
        .into_response(),
        Ok(Err(refused @ TagRefused::NoSuchCall(_))) => {
            error(StatusCode::NOT_FOUND, &refused.to_string())
        }
        Ok(Err(refused)) => error(StatusCode::CONFLICT, &refused.to_string()),
        Err(failure) => store_failed("tag the call", &failure),
    }
}
