//! The background writer: takes the proxy's changes from a channel and commits them in batches,
//! so a slow or failing database never slows call routing. Changes arriving within a short
//! window share one transaction (a burst of calls costs a few statements, not a few per call);
//! a call's final record goes in with its helpdesk deliveries (the transactional outbox).
//!
//! Nothing is lost to a database fault:
//! - a write that fails (disk full, read-only file, server gone) keeps its changes, in order,
//!   and is retried with back-off; the log says why, once, then every 30 s while it lasts, and
//!   when the database takes writes again;
//! - while it fails, changes wait in memory up to `queue_limit`; beyond, the oldest go to the
//!   spill file in the state directory ([`super::spill`]), which is written back (before
//!   anything newer) once the database recovers, or at the next start. When the spill file
//!   cannot be written either, the changes are dropped with an error naming how many;
//! - a change the database refuses for what it holds (see [`StoreError::is_refused_data`]) is
//!   found by splitting the batch, written again with its text repaired (control characters
//!   escaped, very long values cut), and when even that is refused, kept as a dead record with
//!   the reason: the others are written all the same;
//! - on stop, the writer keeps trying for `stop_write_timeout`, then spills what is left, so a
//!   stop always ends in bounded time and says how many records it spilled.
//!
//! [`Health`] tells the daemon whether the database takes writes (for its status line and its
//! health check).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use super::spill::Spill;
use super::{NewDelivery, Store, StoreError};
use crate::call::{CallRecord, Change};
use crate::report::Chain;

/// The deliveries a finished call needs, one per linked helpdesk integration.
pub type Outbox = Box<dyn Fn(&CallRecord) -> Vec<NewDelivery> + Send + Sync>;

/// Most changes in one transaction.
const BATCH: usize = 2048;

/// How long the first change of a batch waits for others.
const WINDOW: Duration = Duration::from_millis(20);

/// The longest wait between two attempts while the database fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a lasting failure is logged again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Text longer than this is cut when a refused change is repaired.
const REPAIRED_TEXT: usize = 8 * 1024;

/// What the writer is told.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub url: String,
    /// Most changes waiting in memory while the database fails.
    pub queue_limit: usize,
    /// On stop, how long to keep trying before spilling.
    pub stop_write_timeout: Duration,
    pub spill: Spill,
}

/// Whether the database takes writes, as the writer last found; shared with the daemon.
#[derive(Debug)]
pub struct Health {
    writable: AtomicBool,
    waiting: AtomicUsize,
    spilled: AtomicU64,
    lost: AtomicU64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            writable: AtomicBool::new(true),
            waiting: AtomicUsize::new(0),
            spilled: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Whether the last write succeeded.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Changes waiting in memory to be written.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Changes in the spill file, waiting for the database.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Changes neither the database nor the spill file would take.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// What became of the changes when the writer stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Changes left in the spill file for the next start.
    pub spilled: u64,
    /// Changes that could be kept nowhere.
    pub lost: u64,
}

struct Writer {
    store: Store,
    settings: WriterSettings,
    outbox: Outbox,
    health: Arc<Health>,
    pending: VecDeque<Change>,
    /// Since when writes fail, and when that was last logged.
    failing: Option<(Instant, Instant)>,
    last_error: String,
}

impl Writer {
    /// The deliveries of the calls a batch ends.
    fn deliveries(&self, batch: &[Change]) -> Vec<NewDelivery> {
        batch
            .iter()
            .filter_map(|c| match c {
                Change::CallEnded(record) => Some((self.outbox)(record)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    async fn apply(&self, batch: &[Change]) -> Result<(), StoreError> {
        self.store.apply(batch, &self.deliveries(batch)).await
    }

    /// Writes a batch; when the database refuses some of its data, writes every other change
    /// and repairs or sets aside the refused ones. `Err` only for a failure that may pass.
    async fn write(&self, batch: &[Change]) -> Result<(), StoreError> {
        match self.apply(batch).await {
            Err(error) if error.is_refused_data() => {}
            other => return other,
        }
        // Halve until each refused change stands alone; the rest is written on the way.
        let mut parts: Vec<&[Change]> = vec![batch];
        while let Some(part) = parts.pop() {
            let error = match self.apply(part).await {
                Ok(()) => continue,
                Err(error) if error.is_refused_data() => error,
                Err(error) => return Err(error),
            };
            if part.len() > 1 {
                let (left, right) = part.split_at(part.len() / 2);
                parts.push(right);
                parts.push(left);
                continue;
            }
            let change = &part[0];
            let (kind, call_id) = change.describe();
            let reason = Chain(&error).to_string();
            if let Some(repaired) = repaired(change) {
                match self.apply(std::slice::from_ref(&repaired)).await {
                    Ok(()) => {
                        tracing::warn!(
                            kind,
                            call = call_id,
                            error = reason,
                            "the database refused a call record; it was written with its text repaired"
                        );
                        continue;
                    }
                    Err(error) if !error.is_refused_data() => return Err(error),
                    Err(_) => {}
                }
            }
            tracing::error!(
                kind,
                call = call_id,
                error = reason,
                "the database refused a call record; it is kept in dead_records"
            );
            self.store.save_dead(part, &reason).await?;
        }
        Ok(())
    }

    fn failed(&mut self, error: &StoreError) {
        let now = Instant::now();
        self.health.writable.store(false, Ordering::Relaxed);
        self.last_error = Chain(error).to_string();
        match &mut self.failing {
            None => {
                tracing::error!(error = %self.last_error, waiting = self.pending.len(), "cannot write call records to the database; they wait and are retried");
                self.failing = Some((now, now));
            }
            Some((since, logged)) if now.duration_since(*logged) >= REPORT_EVERY => {
                tracing::error!(error = %self.last_error, waiting = self.pending.len(), spilled = self.health.spilled(), failing_for = %humantime::format_duration(Duration::from_secs(now.duration_since(*since).as_secs())), "still cannot write call records to the database");
                *logged = now;
            }
            Some(_) => {}
        }
    }

    fn recovered(&mut self) {
        self.health.writable.store(true, Ordering::Relaxed);
        if let Some((since, _)) = self.failing.take() {
            tracing::info!(
                failed_for = %humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                "the database takes call records again"
            );
        }
    }

    /// Takes changes from the channel into the queue, spilling the oldest beyond the limit.
    fn take(&mut self, incoming: &mut Vec<Change>) {
        self.pending.extend(incoming.drain(..));
        if self.pending.len() > self.settings.queue_limit {
            let over = self.pending.len() - self.settings.queue_limit;
            // Spill a chunk at a time, so the file is not appended to for every change.
            let n = over.max(BATCH).min(self.pending.len());
            let oldest: Vec<Change> = self.pending.drain(..n).collect();
            self.spill(&oldest);
        }
        self.health
            .waiting
            .store(self.pending.len(), Ordering::Relaxed);
    }

    fn spill(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        match self.settings.spill.append(changes) {
            Ok(()) => {
                self.health
                    .spilled
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                tracing::warn!(records = changes.len(), file = %self.settings.spill.path().display(), "call records put in the spill file; they are written once the database takes them");
            }
            Err(error) => {
                self.health
                    .lost
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                tracing::error!(records = changes.len(), file = %self.settings.spill.path().display(), %error, database_error = %self.last_error, "call records lost: neither the database nor the spill file can be written");
            }
        }
    }

    /// Writes the spill file's changes (older than anything in memory) and removes it.
    async fn write_back_spill(&mut self) -> Result<(), StoreError> {
        if !self.settings.spill.exists() {
            return Ok(());
        }
        let written = write_back(&self.store, &self.settings.spill, &|record| {
            (self.outbox)(record)
        })
        .await?;
        self.health.spilled.store(0, Ordering::Relaxed);
        tracing::info!(
            records = written,
            "call records from the spill file written to the database"
        );
        Ok(())
    }

    async fn run(mut self, mut changes: UnboundedReceiver<Change>) -> Report {
        let mut incoming: Vec<Change> = Vec::with_capacity(BATCH);
        let mut open = true;
        let mut stop_at: Option<Instant> = None;
        let mut delay = Duration::from_millis(100);
        loop {
            if open {
                if self.pending.is_empty() && !self.settings.spill.exists() {
                    if changes.recv_many(&mut incoming, BATCH).await == 0 {
                        open = false;
                    } else {
                        gather(&mut changes, &mut incoming, &mut open).await;
                    }
                } else {
                    loop {
                        match changes.try_recv() {
                            Ok(change) => incoming.push(change),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                }
                self.take(&mut incoming);
            }
            if !open && stop_at.is_none() {
                stop_at = Some(Instant::now() + self.settings.stop_write_timeout);
            }
            if !open && self.pending.is_empty() && !self.settings.spill.exists() {
                break;
            }
            if stop_at.is_some_and(|at| Instant::now() >= at) {
                let left: Vec<Change> = self.pending.drain(..).collect();
                self.spill(&left);
                break;
            }
            // The spill file holds the oldest changes: they go first.
            let result = match self.write_back_spill().await {
                Ok(()) => {
                    let n = self.pending.len().min(BATCH);
                    let batch: Vec<Change> = self.pending.iter().take(n).cloned().collect();
                    self.write(&batch).await.map(|()| n)
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(n) => {
                    self.pending.drain(..n);
                    if self.pending.is_empty() && self.pending.capacity() > 4 * BATCH {
                        // A backlog is gone: so is the memory it took.
                        self.pending.shrink_to(BATCH);
                    }
                    self.health
                        .waiting
                        .store(self.pending.len(), Ordering::Relaxed);
                    self.recovered();
                    delay = Duration::from_millis(100);
                }
                Err(error) => {
                    self.failed(&error);
                    let mut wait = delay;
                    if let Some(at) = stop_at {
                        wait = wait.min(at.saturating_duration_since(Instant::now()));
                    }
                    let until = Instant::now() + wait;
                    // Keep taking changes while waiting, so the channel never grows unbounded.
                    while open {
                        match tokio::time::timeout_at(
                            until,
                            changes.recv_many(&mut incoming, BATCH),
                        )
                        .await
                        {
                            Ok(0) => open = false,
                            Ok(_) => self.take(&mut incoming),
                            Err(_) => break,
                        }
                    }
                    tokio::time::sleep_until(until).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        let report = Report {
            spilled: self.health.spilled(),
            lost: self.health.lost(),
        };
        if self.settings.spill.exists() {
            tracing::warn!(records = report.spilled, file = %self.settings.spill.path().display(), "call records that could not be written wait in the spill file; the next start writes them");
        }
        report
    }
}

/// After the first change of a batch, waits a short window for more.
async fn gather(
    changes: &mut UnboundedReceiver<Change>,
    incoming: &mut Vec<Change>,
    open: &mut bool,
) {
    let until = Instant::now() + WINDOW;
    while incoming.len() < BATCH {
        let room = BATCH - incoming.len();
        match tokio::time::timeout_at(until, changes.recv_many(incoming, room)).await {
            Ok(0) => {
                *open = false;
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Writes the changes of a spill file to the store, in batches, and removes the file. Returns
/// how many were written. Used at start, before calls are taken, and by the writer when the
/// database recovers.
pub async fn write_back(
    store: &Store,
    spill: &Spill,
    outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
) -> Result<usize, StoreError> {
    let (changes, unreadable) = match spill.read() {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(file = %spill.path().display(), %error, "cannot read the spill file; it is left where it is");
            return Ok(0);
        }
    };
    if unreadable > 0 {
        tracing::warn!(file = %spill.path().display(), lines = unreadable, "unreadable lines in the spill file skipped (a stop in the middle of writing it)");
    }
    for batch in changes.chunks(BATCH) {
        let deliveries: Vec<NewDelivery> = batch
            .iter()
            .filter_map(|c| match c {
                Change::CallEnded(record) => Some(outbox(record)),
                _ => None,
            })
            .flatten()
            .collect();
        match store.apply(batch, &deliveries).await {
            Ok(()) => {}
            Err(error) if error.is_refused_data() => {
                // Rare enough to go one at a time.
                for change in batch {
                    let one = std::slice::from_ref(change);
                    let deliveries: Vec<NewDelivery> = match change {
                        Change::CallEnded(record) => outbox(record),
                        _ => Vec::new(),
                    };
                    match store.apply(one, &deliveries).await {
                        Ok(()) => {}
                        Err(error) if error.is_refused_data() => {
                            store.save_dead(one, &Chain(&error).to_string()).await?
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            Err(error) => return Err(error),
        }
    }
    if let Err(error) = spill.remove() {
        tracing::warn!(file = %spill.path().display(), %error, "cannot remove the spill file after writing its records; they will be written again (harmlessly) at the next start");
    }
    Ok(changes.len())
}

/// A change with every text made storable: control characters as `%XX`, values cut at
/// [`REPAIRED_TEXT`] bytes. `None` when nothing needed repair.
fn repaired(change: &Change) -> Option<Change> {
    fn repair(value: &mut serde_json::Value, changed: &mut bool) {
        match value {
            serde_json::Value::String(text) => {
                let mut fixed = String::with_capacity(text.len());
                for c in text.chars() {
                    if c.is_control() {
                        fixed.push_str(&format!("%{:02X}", u32::from(c) & 0xff));
                    } else {
                        fixed.push(c);
                    }
                    if fixed.len() >= REPAIRED_TEXT {
                        break;
                    }
                }
                if fixed != *text {
                    *text = fixed;
                    *changed = true;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| repair(v, changed)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| repair(v, changed)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(change).ok()?;
    let mut changed = false;
    repair(&mut value, &mut changed);
    changed
        .then(|| serde_json::from_value(value).ok())
        .flatten()
}

/// Runs the writer on its own thread, with its own connection pool, so database work never
/// takes the proxy's thread. The thread ends once the channel closes and everything is written
/// or spilled; it returns what it spilled.
pub fn spawn(
    settings: WriterSettings,
    changes: UnboundedReceiver<Change>,
    outbox: Outbox,
    health: Arc<Health>,
) -> std::io::Result<JoinHandle<Report>> {
    std::thread::Builder::new()
        .name("sipdesk-store".to_owned())
        .spawn(move || {
            lower_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the database writer; call records are not saved");
                    return Report::default();
                }
            };
            runtime.block_on(async move {
                let store = match open_for_writing(&settings.url).await {
                    Some(store) => store,
                    None => return Report::default(),
                };
                let writer = Writer {
                    store,
                    settings,
                    outbox,
                    health,
                    pending: VecDeque::new(),
                    failing: None,
                    last_error: String::new(),
                };
                writer.run(changes).await
            })
        })
}

/// The writer's store; the daemon opened the same database a moment ago, so this only fails
/// when it went away since, and is retried.
async fn open_for_writing(url: &str) -> Option<Store> {
    let mut delay = Duration::from_millis(200);
    for _ in 0..20 {
        match Store::open(url).await {
            Ok(store) => return Some(store),
            Err(error) => {
                tracing::error!(error = %Chain(&error), "cannot open the database for writing; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::error!("the database writer gave up opening the database");
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallEvent;

    #[test]
    fn a_repaired_change_keeps_its_text_escaped_and_bounded() {
        let change = Change::Event(CallEvent {
            call_id: "c1".into(),
            seq: 1,
            at: jiff::Timestamp::UNIX_EPOCH,
            kind: "offered".into(),
            detail: format!("from \0abc\x07 {}", "x".repeat(20_000)),
        });
        let Some(Change::Event(event)) = repaired(&change) else {
            panic!("not repaired");
        };
        assert!(event.detail.starts_with("from %00abc%07 x"));
        assert!(event.detail.len() <= REPAIRED_TEXT + 4);
        let clean = Change::Event(CallEvent {
            detail: "fine".into(),
            ..event
        });
        assert_eq!(repaired(&clean), None);
    }
}
