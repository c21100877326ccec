//! The background writer: takes the proxy's changes from a channel and commits them in batches,
//! so a slow disk never slows call routing. Changes arriving within a short window share one
//! transaction (a burst of calls costs a few statements, not a few per call). A failed commit is
//! retried with back-off, keeping the batch; nothing is dropped.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::Store;
use crate::call::Change;

/// Most changes in one transaction.
const BATCH: usize = 2048;

/// How long the first change of a batch waits for others.
const WINDOW: Duration = Duration::from_millis(20);

/// Commits changes until the channel closes (every sender dropped), then returns once all are
/// written.
pub async fn run(store: Store, mut changes: UnboundedReceiver<Change>) {
    let mut batch: Vec<Change> = Vec::with_capacity(BATCH);
    let mut open = true;
    while open {
        if changes.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + WINDOW;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(until, changes.recv_many(&mut batch, room)).await {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        while let Err(error) = store.apply(&batch).await {
            tracing::error!(error = %format!("{error:#}"), changes = batch.len(), "cannot write to the database; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        batch.clear();
    }
}
