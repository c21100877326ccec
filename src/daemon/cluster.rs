//! Instances sharing a database (`[cluster]`). On PostgreSQL each instance writes a heartbeat
//! every third of `dead_after`; when another instance's calls are open and its heartbeat is
//! older than `dead_after` (it was killed, or its host died), the first live instance to look
//! closes those calls as interrupted and reports them, once (see
//! [`crate::store::Store::take_over_dead`]). SQLite is for one instance: a second `sipdesk run`
//! on the same file is refused ([`lock_sqlite`]).
//!
//! Agents, the round-robin and the contact directory are shared through the database too
//! ([`super::shared`]). Not built: fencing an instance that comes back after it was taken for
//! dead (its calls were closed and its agents freed meanwhile; it goes on with the calls it
//! still holds, and writes their records, which then replace the interrupted ones).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Control, DaemonError};
use crate::config::Config;
use crate::store::Store;

/// This process's token in the cluster: its host (name and boot), its pid and a random part,
/// so a restart can tell that the run holding its name is a dead process of this same boot of
/// this same machine (two machines may share a host name; a pid is only meaningful within a
/// boot).
pub(super) fn token() -> String {
    format!(
        "{}:{}:{}:{:016x}",
        crate::config::host_name(),
        boot_id(),
        std::process::id(),
        fastrand::u64(..)
    )
}

/// The kernel's id of this boot (random per boot), or "" when it cannot be read.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Whether `token` is a process of this host that no longer runs (a crash or `kill -9`, whose
/// name need not be waited for).
pub(super) fn is_dead_here(token: &str) -> bool {
    let mut parts = token.rsplitn(4, ':');
    let (_random, pid, boot, host) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(boot), Some(host)) = (pid.and_then(|p| p.parse::<i32>().ok()), boot, host)
    else {
        return false;
    };
    let here = boot_id();
    if host != crate::config::host_name()
        || here.is_empty()
        || boot != here
        || pid == std::process::id() as i32
    {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) }) != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The lock on a SQLite database held by the running instance; released when dropped (or
/// when the process dies, by the kernel).
pub(super) struct SqliteLock {
    _file: File,
}

/// Takes the instance lock of the SQLite database `database` (a file beside it), or says which
/// process holds it. The `sipdesk` commands do not take it: they may read and write while the
/// daemon runs.
pub(super) fn lock_sqlite(database: &Path) -> Result<SqliteLock, DaemonError> {
    // Beside the file, named after all of it (`sipdesk.db-instance-lock`, as SQLite names its
    // `-wal`), in the directory as the kernel names it (a symlink leads to the same lock).
    let directory = database
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .unwrap_or_default();
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = directory.join(format!("{name}-instance-lock"));
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

/// Heartbeats and takeovers, on PostgreSQL, until `cancel`. Another instance's calls are taken
/// over only after this one's own heartbeats have gone through without a break for
/// `dead_after`: after a database outage every heartbeat is old, and the first instance back
/// must not take the others, alive all along, for dead. The SIP Call-IDs of calls taken over
/// go to the proxy (`Control::Interrupted`), so their late BYEs still reach the PBX.
pub(super) fn spawn(
    store: Store,
    token: String,
    config: watch::Receiver<Arc<Config>>,
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut healthy_since: Option<Instant> = None;
        let mut failing = false;
        let mut displaced = false;
        loop {
            let (me, dead_after) = {
                let config = config.borrow();
                (config.cluster.instance.clone(), config.cluster.dead_after)
            };
            tokio::select! {
                _ = tokio::time::sleep(dead_after / 3) => {}
                _ = cancel.cancelled() => return,
            }
            // A heartbeat that hangs (a half-open connection after a failover) is a failed one.
            let heartbeat =
                tokio::time::timeout(dead_after / 3, store.heartbeat(&me, &token, dead_after));
            let heartbeat = match heartbeat.await {
                Ok(result) => result,
                Err(_) => Err(crate::store::StoreError::Query {
                    what: "write the instance heartbeat (no answer in time)",
                    source: sqlx::Error::PoolTimedOut,
                }),
            };
            let beat = match heartbeat {
                // Taken for dead meanwhile: the name is claimed again, unless another process
                // holds it now.
                Ok(false) => store.join_cluster(&me, &token, dead_after).await.inspect(|joined| {
                    if !displaced {
                        tracing::error!(instance = %me, "this instance was taken for dead by another (its calls in progress were closed as interrupted and reported); check the database connection and the hosts' load");
                        displaced = true;
                    }
                    if !joined {
                        tracing::error!(instance = %me, "another running sipdesk has this instance name: give each instance its own [cluster] instance");
                    }
                }),
                other => other,
            };
            match beat {
                Ok(true) => {
                    displaced = false;
                    if failing {
                        tracing::info!(instance = %me, "the instance heartbeat is written again");
                        failing = false;
                    }
                    let since = *healthy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < dead_after {
                        continue;
                    }
                }
                Ok(false) => {
                    healthy_since = None;
                    continue;
                }
                Err(error) => {
                    healthy_since = None;
                    if !failing {
                        failing = true;
                        tracing::warn!(instance = %me, error = %error, "cannot write the instance heartbeat; other instances may take this one for dead after dead_after");
                    }
                    continue;
                }
            }
            let outbox = |record: &crate::call::CallRecord| {
                crate::delivery::outbox_entries(&config.borrow(), record)
            };
            match store
                .take_over_dead(&me, jiff::Timestamp::now(), &outbox)
                .await
            {
                Ok((dead, closed)) if !dead.is_empty() => {
                    tracing::warn!(
                        instances = %dead.join(", "),
                        calls = closed.len(),
                        "instances silent for longer than dead_after: their calls in progress are closed as interrupted and reported"
                    );
                    let _ = control.send(Control::Interrupted(closed));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(instance = %me, error = %error, "cannot check for dead instances; trying again at the next heartbeat");
                }
            }
        }
    });
}
