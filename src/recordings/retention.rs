//! Removing old recordings: every hour (and once at start), the recordings of calls that ended
//! more than `[media] retention` ago are deleted when every delivery of their call is `done` or
//! `skipped`. A call with a delivery still pending, in progress or failed keeps its recording
//! (a failed one can be retried by an admin); the next sweep after it is done removes it. The
//! call record stays, and names the file; links to it answer 404 from then on.
//!
//! A removed recording (or one found already gone) is marked on its call
//! (`voicemail_removed_at`), so a sweep reads only the calls past the retention whose file may
//! still be there, in batches of [`BATCH`] — not every voicemail ever recorded.
//!
//! Runs on the delivery worker's thread, beside the integrations' loops, and stops with them.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Recordings;
use crate::config::Config;
use crate::store::{DeliveryState, Store, StoreError};

/// How often old recordings are looked for.
pub const EVERY: Duration = Duration::from_secs(3600);

/// How many calls one query of a sweep reads.
const BATCH: u32 = 200;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Recordings deleted.
    pub removed: usize,
    /// Old recordings kept because a delivery of their call is not done.
    pub kept: usize,
}

/// Removes the recordings past `retention` at `now` whose deliveries are all done.
pub async fn sweep(
    store: &Store,
    recordings: &Recordings,
    now: Timestamp,
) -> Result<Swept, StoreError> {
    let retention =
        jiff::SignedDuration::try_from(recordings.retention()).unwrap_or(jiff::SignedDuration::MAX);
    let cutoff = now.checked_sub(retention).unwrap_or(Timestamp::MIN);
    let mut swept = Swept::default();
    let mut after: Option<(Timestamp, String)> = None;
    loop {
        let batch = store
            .voicemails_before(
                cutoff,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                BATCH,
            )
            .await?;
        let Some((last_id, last_end, _)) = batch.last() else {
            break;
        };
        after = Some((*last_end, last_id.clone()));
        let full = batch.len() == BATCH as usize;
        for (call_id, _, voicemail) in batch {
            let path = std::path::Path::new(&voicemail.file);
            if !path.exists() {
                // Removed by hand, or by a sweep that stopped before it could say so.
                store.voicemail_removed(&call_id, now).await?;
                continue;
            }
            let deliveries = store.deliveries_of(&call_id).await?;
            let done = deliveries
                .iter()
                .all(|d| matches!(d.state, DeliveryState::Done | DeliveryState::Skipped));
            if !done {
                swept.kept += 1;
                continue;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(call = %call_id, file = %voicemail.file, "recording removed: older than the retention and delivered");
                    store.voicemail_removed(&call_id, now).await?;
                    swept.removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    store.voicemail_removed(&call_id, now).await?;
                }
                Err(error) => {
                    tracing::warn!(call = %call_id, file = %voicemail.file, %error, "cannot remove an old recording");
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(swept)
}

/// Sweeps at once, then every [`EVERY`], with the configuration in force, until `stop`.
pub async fn run(store: Store, config: watch::Receiver<Arc<Config>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let recordings = Recordings::of(&config.borrow());
        match sweep(&store, &recordings, Timestamp::now()).await {
            Ok(Swept {
                removed: 0,
                kept: 0,
            }) => {}
            Ok(swept) => tracing::info!(
                removed = swept.removed,
                kept = swept.kept,
                "old recordings swept; those kept wait for their deliveries"
            ),
            Err(error) => {
                tracing::warn!(error = %crate::report::Chain(&error), "cannot look for old recordings; trying again in an hour")
            }
        }
    }
}
