//! `GET /events`: server-sent events of call and agent changes, for the wallboard and anything
//! that watches the queues. The stream opens with a `snapshot` event (every call in progress and
//! every agent), then sends `call`, `call_ended` and `agent` events as the proxy publishes them;
//! a comment every 15 seconds keeps proxies and browsers from closing it. A reader that falls
//! too far behind gets a fresh `snapshot` instead of the events it missed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;

fn snapshot(shared: &Shared) -> Event {
    let live = shared.handle.live();
    Event::default()
        .event("snapshot")
        .data(serde_json::to_string(live.as_ref()).unwrap_or_default())
}

/// `GET /events`.
pub(super) async fn stream(
    State(shared): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the snapshot is read, so nothing falls between the two.
    let events = shared.handle.subscribe();
    let first = Some(snapshot(&shared));
    let stream = futures_util::stream::unfold(
        (first, events, shared),
        |(first, mut events, shared)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (None, events, shared)));
            }
            let event = match events.recv().await {
                Ok(event) => Event::default()
                    .event(event.name())
                    .data(serde_json::to_string(event.as_ref()).unwrap_or_default()),
                Err(RecvError::Lagged(_)) => {
                    // Start again from now: the snapshot, then only what comes after it (not
                    // the older events still buffered).
                    events = events.resubscribe();
                    snapshot(&shared)
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (None, events, shared)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
