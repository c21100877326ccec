//! The background writer: takes the proxy's changes from a channel and commits them in batches,
//! so a slow disk never slows call routing. Changes arriving within a short window share one
//! transaction (a burst of calls costs a few statements, not a few per call); a call's final
//! record goes in with its helpdesk deliveries (the transactional outbox). A failed commit is
//! retried with back-off, keeping the batch; nothing is dropped.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::{NewDelivery, Store};
use crate::call::{CallRecord, Change};

/// The deliveries a finished call needs, one per linked helpdesk integration.
pub type Outbox = Box<dyn Fn(&CallRecord) -> Vec<NewDelivery> + Send + Sync>;

/// Most changes in one transaction.
const BATCH: usize = 2048;

/// How long the first change of a batch waits for others.
const WINDOW: Duration = Duration::from_millis(20);

/// Commits changes until the channel closes (every sender dropped), then returns once all are
/// written.
pub async fn run(store: Store, mut changes: UnboundedReceiver<Change>, outbox: Outbox) {
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
        let deliveries: Vec<NewDelivery> = batch
            .iter()
            .filter_map(|c| match c {
                Change::CallEnded(record) => Some(outbox(record)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut delay = Duration::from_millis(100);
        while let Err(error) = store.apply(&batch, &deliveries).await {
            tracing::error!(error = %format!("{error:#}"), changes = batch.len(), "cannot write to the database; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        batch.clear();
    }
}

/// Runs the writer on its own thread, with its own connection pool, so database work never
/// takes the proxy's thread. The thread ends once the channel closes and everything is written.
pub fn spawn(
    url: String,
    changes: UnboundedReceiver<Change>,
    outbox: Outbox,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("sipdesk-store".to_owned()).spawn(move || {
        lower_priority();
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start the database writer; call records are not saved");
                return;
            }
        };
        runtime.block_on(async move {
            let mut delay = Duration::from_millis(200);
            let store = loop {
                match Store::open(&url).await {
                    Ok(store) => break store,
                    Err(error) => {
                        tracing::error!(error = %format!("{error:#}"), "cannot open the database for writing; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            };
            run(store, changes, outbox).await;
        });
    })
}

/// Lowers this thread's scheduling priority (nice 10), so under CPU pressure the SIP path wins;
/// threads started from here (SQLite's) inherit it. Records only wait a little longer.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; on failure nothing changes.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if result != 0 {
        tracing::debug!("cannot lower the database writer's priority");
    }
}
