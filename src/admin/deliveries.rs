//! `/deliveries`: what became of each call on each helpdesk, and sending a failed one again.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Shared, error, store_failed};
use crate::store::{DeliveryFilter, DeliveryState};

#[derive(Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

/// `GET /deliveries?state=failed&limit=50`, newest call first.
pub(super) async fn list(
    State(shared): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "limit is a number from 1 to 1000");
    };
    let state = match query.state.as_deref() {
        None => None,
        Some(name) => match DeliveryState::from_name(name) {
            Some(state) => Some(state),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "\"{name}\" is not a delivery state: pending, in_progress, done, skipped or failed"
                    ),
                );
            }
        },
    };
    let filter = DeliveryFilter {
        state,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    match shared.store.deliveries(filter).await {
        Ok(deliveries) => Json(json!({ "deliveries": deliveries })).into_response(),
        Err(failure) => store_failed("list deliveries", &failure),
    }
}

/// `POST /deliveries/{id}/retry`: a failed (or pending) delivery is sent again now, its
/// `give_up_after` counted from now. A done or skipped one is left alone (409): sending it again
/// would log the call twice.
pub(super) async fn retry(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let existing = match shared.store.delivery(&id).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no delivery {id}")),
        Err(failure) => return store_failed("read the delivery", &failure),
    };
    match shared
        .store
        .retry_delivery(&id, jiff::Timestamp::now())
        .await
    {
        Ok(true) => Json(json!({ "id": id, "state": "pending" })).into_response(),
        Ok(false) => error(
            StatusCode::CONFLICT,
            &format!(
                "delivery {id} is {}: only a failed or pending delivery is sent again",
                existing.state.as_str()
            ),
        ),
        Err(failure) => store_failed("retry the delivery", &failure),
    }
}
