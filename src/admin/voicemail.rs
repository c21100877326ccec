//! `GET /voicemail/{id}.wav`: a voicemail's recording for whoever holds a signed link to it
//! (a helpdesk user following the link in a note, through the reverse proxy at
//! `[media] public_url`). No bearer token: the link's signature is the permission
//! ([`crate::recordings::link`]).
//!
//! A missing, wrong or expired signature is 403, checked before the store is asked, so the
//! answer says nothing of which calls exist; then 404 for a call without a recording, or one
//! retention removed. The file is the one the call record names, never a path from the URL.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::{Shared, error, store_failed};
use crate::recordings::{self, Recordings};

#[derive(Deserialize)]
pub(super) struct Signed {
    #[serde(default)]
    expires: String,
    #[serde(default)]
    signature: String,
}

pub(super) async fn recording(
    State(shared): State<Shared>,
    Path(file): Path<String>,
    Query(signed): Query<Signed>,
) -> Response {
    let Some(call_id) = file.strip_suffix(".wav") else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    let recordings = Recordings::of(&shared.config());
    match recordings.check(
        call_id,
        &signed.expires,
        &signed.signature,
        Timestamp::now(),
    ) {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return error(StatusCode::FORBIDDEN, &refused.to_string()),
        Err(key) => {
            tracing::error!(error = %crate::report::Chain(&key), "admin API: cannot check a voicemail link");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the media key cannot be read",
            );
        }
    }
    let call = match shared.store.call_record(call_id).await {
        Ok(Some(call)) => call,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such recording"),
        Err(failure) => return store_failed("read the call", &failure),
    };
    match recordings::audio(&call).await {
        Ok(Some(audio)) => (
            [
                (header::CONTENT_TYPE, recordings::CONTENT_TYPE.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{}\"", audio.file_name),
                ),
                (header::CACHE_CONTROL, "private, no-store".to_owned()),
            ],
            audio.bytes,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such recording"),
        Err(missing) => {
            tracing::info!(call = %call_id, "a voicemail link was followed: {missing}");
            error(
                StatusCode::NOT_FOUND,
                "the recording was removed (retention) or cannot be read",
            )
        }
    }
}
