//! Instances sharing a database (`[cluster]`). On PostgreSQL each instance writes a heartbeat
//! every third of `dead_after`; when another instance's calls are open and its heartbeat is
//! older than `dead_after` (it was killed, or its host died), the first live instance to look
//! closes those calls as interrupted and reports them, once (see
//! [`crate::store::Store::take_over_dead`]). SQLite is for one instance: a second `sipdesk run`
//! on the same file is refused ([`lock_sqlite`]).
//!
//! Not built yet (issue 12): agents' states and round-robin cursors shared between instances,
//! the directory refreshed by LISTEN/NOTIFY, and fencing an instance that comes back after it
//! was taken for dead.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Control, DaemonError};
use crate::config::Config;
use crate::store::Store;

/// The lock on a SQLite database held by the running instance; released when dropped (or
/// when the process dies, by the kernel).
pub(super) struct SqliteLock {
    _file: File,
}

/// Takes the instance lock of the SQLite database `database` (a file beside it), or says which
/// process holds it. The `sipdesk` commands do not take it: they may read and write while the
/// daemon runs.
pub(super) fn lock_sqlite(database: &Path) -> Result<SqliteLock, DaemonError> {
    let path = database.with_extension("instance-lock");
    let fail = |source| DaemonError::StateDirectory {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(DaemonError::AlreadyRunning {
            database: database.display().to_string(),
            pid: holder.trim().to_owned(),
        });
    }
    file.set_len(0).map_err(fail)?;
    file.rewind().map_err(fail)?;
    writeln!(file, "{}", std::process::id()).map_err(fail)?;
    Ok(SqliteLock { _file: file })
}

/// Heartbeats and takeovers, on PostgreSQL, until `cancel`. The SIP Call-IDs of calls taken
/// over go to the proxy (`Control::Interrupted`), so their late BYEs still reach the PBX.
pub(super) fn spawn(
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let (me, dead_after) = {
                let config = config.borrow();
                (config.cluster.instance.clone(), config.cluster.dead_after)
            };
            tokio::select! {
                _ = tokio::time::sleep(dead_after / 3) => {}
                _ = cancel.cancelled() => return,
            }
            let now = jiff::Timestamp::now();
            let dead_since = now - jiff::SignedDuration::try_from(dead_after).unwrap_or_default();
            let outbox = |record: &crate::call::CallRecord| {
                crate::delivery::outbox_entries(&config.borrow(), record)
            };
            let result = match store.heartbeat(&me, now).await {
                Ok(()) => store.take_over_dead(&me, now, dead_since, &outbox).await,
                Err(error) => Err(error),
            };
            match result {
                Ok((dead, closed)) => {
                    if failing {
                        tracing::info!(instance = %me, "the instance heartbeat is written again");
                        failing = false;
                    }
                    if !dead.is_empty() {
                        tracing::warn!(
                            instances = %dead.join(", "),
                            calls = closed.len(),
                            "instances silent for longer than dead_after: their calls in progress are closed as interrupted and reported"
                        );
                        let _ = control.send(Control::Interrupted(closed));
                    }
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(instance = %me, error = %error, "cannot write the instance heartbeat; other instances may take this one for dead after dead_after");
                }
                Err(_) => {}
            }
        }
    });
}
