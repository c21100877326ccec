//! `GET /voicemail/{id}.wav`: a voicemail's recording for whoever holds a signed link to it
//! (a helpdesk user following the link in a note, through the reverse proxy at
//! `[media] public_url`). No bearer token: the link's signature is the permission
//! ([`crate::recordings::link`]).
//!
//! A missing, wrong or expired signature is 403, checked before the store is asked, so the
//! answer says nothing of which calls exist; then 404 for a call without a recording, or one
//! retention removed. The file is the one the call record names, never a path from the URL.
//!
//! The file is streamed from disk (with `Content-Length`), never read whole, and at most
//! [`MAX_DOWNLOADS`] recordings are sent at once: beyond, 503 with `Retry-After`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::io::ReaderStream;

use super::{Shared, error, store_failed};
use crate::recordings::{self, Recordings};

/// How many recordings are sent at once; beyond, 503 with `Retry-After`.
pub(super) const MAX_DOWNLOADS: usize = 8;

/// The seconds a refused download is told to wait.
const BUSY_RETRY_AFTER: &str = "5";

static DOWNLOADS: Semaphore = Semaphore::const_new(MAX_DOWNLOADS);

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
    // A permit per download in progress, held until its body is sent (or dropped): a recording
    // is up to an hour of audio, and each download holds its file open.
    let Ok(permit) = DOWNLOADS.try_acquire() else {
        let mut busy = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many recordings are being downloaded; try again shortly",
        );
        busy.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(BUSY_RETRY_AFTER),
        );
        return busy;
    };
    match recordings::open(&call).await {
        Ok(Some((file, size, file_name))) => {
            let body = ReaderStream::new(file).map(move |chunk| {
                let _held = &permit;
                chunk
            });
            (
                [
                    (header::CONTENT_TYPE, recordings::CONTENT_TYPE.to_owned()),
                    (header::CONTENT_LENGTH, size.to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("inline; filename=\"{file_name}\""),
                    ),
                    (header::CACHE_CONTROL, "private, no-store".to_owned()),
                ],
                Body::from_stream(body),
            )
                .into_response()
        }
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
