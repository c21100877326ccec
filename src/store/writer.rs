//! The background writer: takes the proxy's changes from a channel and commits them in batches,
//! so a slow or failing database never slows call routing. Changes arriving within a short
//! window share one transaction (a burst of calls costs a few statements, not a few per call);
//! a call's final record goes in with its helpdesk deliveries (the transactional outbox).
//!
//! Nothing is lost to a database fault:
//! - a write that fails (disk full, read-only file, server gone) or hangs (a lock held
//!   elsewhere: every attempt is bounded by [`ATTEMPT_TIMEOUT`]) keeps its changes, in order,
//!   and is retried with back-off; the log says why, once, then every 30 s while it lasts, and
//!   when the database takes writes again. Changes keep being taken from the channel meanwhile,
//!   so they are always counted against the limit below;
//! - while it fails, changes wait in memory up to `queue_limit`; beyond, the oldest go to the
//!   spill file in the state directory ([`super::spill`]), which is written back (before
//!   anything newer) once the database takes a write again, or at the next start. When the
//!   spill file cannot be written either, the changes are dropped with an error naming how many;
//! - a change the database refuses for what it holds (see [`StoreError::is_refused_data`]) is
//!   found by splitting the batch, written again with its text repaired (control characters
//!   escaped, very long values cut), and when even that is refused, kept as a dead record with
//!   the reason: the others are written all the same;
//! - on stop, the writer keeps trying for `stop_write_timeout`, then spills what is left (an
//!   attempt still running is abandoned), so a stop always ends in bounded time and says how
//!   many records it spilled.
//!
//! A customer's text is answered (202) only once it is kept: the writer tells the proxy the id
//! of each inbound text it has written, or put in the spill file ([`WriterSettings::kept`]).
//! While the database fails, texts go to the spill file at once rather than wait in memory (those
//! waiting when an attempt fails, and those arriving while it fails), so a trunk is never told
//! "accepted" for a text a crash could still lose; when the spill file cannot take them either,
//! they wait in memory for the database like any change, unanswered.
//!
//! Writing a change twice is harmless (starts and events are inserted once, a final record is
//! the same upsert, a delivery exists once), which is what lets an abandoned attempt, or a spill
//! file written back after a crash, simply be done again.
//!
//! [`Health`] tells the daemon whether the database takes writes (for its status line and
//! `/health`); when idle, the writer proves it every 30 s.

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
pub type Outbox = Arc<dyn Fn(&CallRecord) -> Vec<NewDelivery> + Send + Sync>;

/// Most changes in one transaction.
const BATCH: usize = 2048;

/// How long the first change of a batch waits for others.
const WINDOW: Duration = Duration::from_millis(20);

/// The longest one write may take before it is abandoned as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two attempts while the database fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a lasting failure is logged again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// How often an idle writer checks that the database can still be written.
const IDLE_CHECK: Duration = Duration::from_secs(30);

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
    /// Told the id of each customer's text once it is written or spilled.
    pub kept: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// The ids of the customers' texts among these changes.
fn inbound_texts(changes: &[Change]) -> impl Iterator<Item = &str> {
    changes.iter().filter_map(|change| match change {
        Change::CallEnded(record)
            if record.sms.is_some() && record.direction == crate::call::Direction::Inbound =>
        {
            Some(record.id.as_str())
        }
        _ => None,
    })
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
    /// Whether the last write (or check) succeeded.
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
    /// Whether the spill file holds changes for the next start.
    pub spill_left: bool,
    /// Changes this run put in the spill file and did not write back.
    pub spilled: u64,
    /// Changes that could be kept nowhere.
    pub lost: u64,
}

/// How one bounded attempt ended.
enum Attempt {
    Done(Result<(), StoreError>),
    TimedOut,
    /// The stop deadline came first.
    Stopping,
}

struct Writer {
    settings: WriterSettings,
    /// Opened when first needed, and again after it could not be.
    store: Option<Store>,
    outbox: Outbox,
    health: Arc<Health>,
    pending: VecDeque<Change>,
    /// Since when writes fail, and when that was last logged.
    failing: Option<(Instant, Instant)>,
    last_error: String,
}

impl Writer {
    fn failed(&mut self, error: &str) {
        let now = Instant::now();
        self.health.writable.store(false, Ordering::Relaxed);
        self.last_error = error.to_owned();
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

    /// The store, opened now if it is not yet.
    async fn store(&mut self) -> Result<Store, StoreError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let store = Store::open(&self.settings.url).await?;
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Takes changes from the channel into the queue, spilling the oldest beyond the limit.
    fn take(&mut self, incoming: &mut Vec<Change>) {
        let is_text = |c: &Change| inbound_texts(std::slice::from_ref(c)).next().is_some();
        if self.failing.is_some() && self.settings.kept.is_some() && incoming.iter().any(is_text) {
            // The database fails: new texts go to the spill file at once (their senders wait
            // for that), the rest queue as usual.
            let (texts, rest): (Vec<Change>, Vec<Change>) = incoming.drain(..).partition(is_text);
            if !self.spill_kept(&texts) {
                self.pending.extend(texts);
            }
            incoming.extend(rest);
        }
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

    /// Tells the proxy these changes' texts are kept.
    fn kept(&self, changes: &[Change]) {
        if let Some(kept) = &self.settings.kept {
            for id in inbound_texts(changes) {
                let _ = kept.send(id.to_owned());
            }
        }
    }

    /// While the database fails: the texts waiting go to the spill file now, so their senders
    /// can be answered. When the spill file cannot take them either, they stay where they were,
    /// for the database.
    fn spill_texts(&mut self) {
        let is_text = |c: &Change| inbound_texts(std::slice::from_ref(c)).next().is_some();
        if self.settings.kept.is_none() || !self.pending.iter().any(is_text) {
            return;
        }
        let before: Vec<Change> = self.pending.drain(..).collect();
        let (texts, rest): (Vec<Change>, Vec<Change>) = before.iter().cloned().partition(is_text);
        if self.spill_kept(&texts) {
            self.pending.extend(rest);
        } else {
            self.pending.extend(before);
        }
        self.health
            .waiting
            .store(self.pending.len(), Ordering::Relaxed);
    }

    /// Texts to the spill file, told kept when they are in it; whether they are.
    fn spill_kept(&self, texts: &[Change]) -> bool {
        match self.settings.spill.append(texts) {
            Ok(()) => {
                self.kept(texts);
                self.health
                    .spilled
                    .fetch_add(texts.len() as u64, Ordering::Relaxed);
                tracing::warn!(texts = texts.len(), file = %self.settings.spill.path().display(), "customers' texts put in the spill file while the database fails; they are written once it takes them");
                true
            }
            Err(error) => {
                tracing::error!(texts = texts.len(), %error, "the spill file cannot take customers' texts either: they wait in memory for the database");
                false
            }
        }
    }

    fn spill(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        match self.settings.spill.append(changes) {
            Ok(()) => {
                self.kept(changes);
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

    /// When idle: whether the database can still be written.
    async fn check(&mut self) {
        let result = match self.store().await {
            Ok(store) => {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, store.check_writable()).await {
                    Ok(result) => result.map_err(|e| Chain(&e).to_string()),
                    Err(_) => Err(timed_out()),
                }
            }
            Err(error) => Err(Chain(&error).to_string()),
        };
        match result {
            Ok(()) => self.recovered(),
            Err(error) => self.failed(&error),
        }
    }

    async fn run(mut self, mut changes: UnboundedReceiver<Change>) -> Report {
        let mut incoming: Vec<Change> = Vec::with_capacity(BATCH);
        let mut open = true;
        let mut stop_at: Option<Instant> = None;
        let mut delay = Duration::from_millis(100);
        loop {
            if open {
                if self.pending.is_empty() && !self.settings.spill.exists() {
                    match tokio::time::timeout(IDLE_CHECK, changes.recv_many(&mut incoming, BATCH))
                        .await
                    {
                        Ok(0) => open = false,
                        Ok(_) => gather(&mut changes, &mut incoming, &mut open).await,
                        Err(_) => {
                            self.check().await;
                            continue;
                        }
                    }
                } else {
                    open = drain(&mut changes, &mut incoming);
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
            let n = self.pending.len().min(BATCH);
            let batch: Vec<Change> = self.pending.iter().take(n).cloned().collect();
            let outcome = match self.store().await {
                Err(error) => Attempt::Done(Err(error)),
                Ok(store) => {
                    let attempt = attempt(
                        store,
                        self.settings.spill.clone(),
                        self.outbox.clone(),
                        batch,
                        self.failing.is_some(),
                    );
                    tokio::pin!(attempt);
                    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
                    // Keep taking changes while the attempt runs: they count, and the channel
                    // never grows unseen (they join the queue once the attempt is over).
                    loop {
                        tokio::select! {
                            result = &mut attempt => break Attempt::Done(result),
                            _ = tokio::time::sleep_until(deadline) => break Attempt::TimedOut,
                            _ = sleep_until(stop_at) => break Attempt::Stopping,
                            got = changes.recv_many(&mut incoming, BATCH), if open => {
                                if got == 0 {
                                    open = false;
                                    stop_at = Some(Instant::now() + self.settings.stop_write_timeout);
                                }
                            }
                        }
                    }
                }
            };
            let error = match outcome {
                Attempt::Done(Ok(())) => {
                    // The written batch leaves the queue before the changes that came meanwhile
                    // join it (which may spill its front).
                    let written: Vec<Change> = self.pending.drain(..n).collect();
                    self.kept(&written);
                    self.take(&mut incoming);
                    if self.pending.is_empty() && self.pending.capacity() > 4 * BATCH {
                        // A backlog is gone: so is the memory it took.
                        self.pending.shrink_to(BATCH);
                    }
                    self.health
                        .waiting
                        .store(self.pending.len(), Ordering::Relaxed);
                    if !self.settings.spill.exists() {
                        self.health.spilled.store(0, Ordering::Relaxed);
                    }
                    self.recovered();
                    delay = Duration::from_millis(100);
                    continue;
                }
                Attempt::Stopping => {
                    self.take(&mut incoming);
                    continue;
                }
                Attempt::Done(Err(error)) => {
                    self.take(&mut incoming);
                    Chain(&error).to_string()
                }
                Attempt::TimedOut => {
                    self.take(&mut incoming);
                    timed_out()
                }
            };
            self.failed(&error);
            self.spill_texts();
            let mut wait = delay;
            if let Some(at) = stop_at {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            let until = Instant::now() + wait;
            while open {
                match tokio::time::timeout_at(until, changes.recv_many(&mut incoming, BATCH)).await
                {
                    Ok(0) => open = false,
                    Ok(_) => self.take(&mut incoming),
                    Err(_) => break,
                }
            }
            tokio::time::sleep_until(until).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        let report = Report {
            spill_left: self.settings.spill.exists(),
            spilled: self.health.spilled(),
            lost: self.health.lost(),
        };
        if self.settings.spill.exists() {
            tracing::warn!(records = self.health.spilled(), file = %self.settings.spill.path().display(), "call records that could not be written wait in the spill file; the next start writes them");
        }
        report
    }
}

fn timed_out() -> String {
    format!(
        "the database did not answer within {} (a lock held elsewhere, or the server stalled)",
        humantime::format_duration(ATTEMPT_TIMEOUT)
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes what the channel holds without waiting; `false` once it is closed.
fn drain(changes: &mut UnboundedReceiver<Change>, incoming: &mut Vec<Change>) -> bool {
    loop {
        match changes.try_recv() {
            Ok(change) => incoming.push(change),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// One attempt: the spill file first (it holds the oldest changes), then `batch`. When the
/// database has been failing, a cheap write check comes first, so the spill file is not read
/// for nothing.
async fn attempt(
    store: Store,
    spill: Spill,
    outbox: Outbox,
    batch: Vec<Change>,
    probe_first: bool,
) -> Result<(), StoreError> {
    if spill.exists() {
        if probe_first {
            store.check_writable().await?;
        }
        let written = write_back(&store, &spill, outbox.as_ref()).await?;
        tracing::info!(
            records = written,
            "call records from the spill file written to the database"
        );
    }
    write_changes(&store, outbox.as_ref(), &batch).await
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

/// The deliveries of the calls a batch ends.
fn deliveries(
    outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    batch: &[Change],
) -> Vec<NewDelivery> {
    batch
        .iter()
        .filter_map(|c| match c {
            Change::CallEnded(record) => Some(outbox(record)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Writes a batch; when the database refuses some of its data, writes every other change and
/// repairs or sets aside the refused ones. `Err` only for a failure that may pass.
async fn write_changes(
    store: &Store,
    outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    batch: &[Change],
) -> Result<(), StoreError> {
    async fn apply(
        store: &Store,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
        part: &[Change],
    ) -> Result<(), StoreError> {
        store.apply(part, &deliveries(outbox, part)).await
    }
    match apply(store, outbox, batch).await {
        Err(error) if error.is_refused_data() => {}
        other => return other,
    }
    // Halve until each refused change stands alone; the rest is written on the way.
    let mut parts: Vec<&[Change]> = vec![batch];
    while let Some(part) = parts.pop() {
        let error = match apply(store, outbox, part).await {
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
            match apply(store, outbox, std::slice::from_ref(&repaired)).await {
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
        store.save_dead(part, &reason).await?;
    }
    Ok(())
}

/// Writes the changes of a spill file to the store, a batch at a time as it reads them, and
/// removes the file. Returns how many were written. Used at start, before calls are taken, and
/// by the writer when the database recovers. A file that cannot be read is moved aside (and
/// said so) rather than tried again and again.
pub async fn write_back(
    store: &Store,
    spill: &Spill,
    outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
) -> Result<usize, StoreError> {
    let mut reader = match spill.reader() {
        Ok(Some(reader)) => reader,
        Ok(None) => return Ok(0),
        Err(error) => {
            set_aside(spill, &error);
            return Ok(0);
        }
    };
    let mut written = 0;
    let mut unreadable = 0;
    loop {
        let (batch, bad) = match reader.next_batch(BATCH) {
            Ok(read) => read,
            Err(error) => {
                set_aside(spill, &error);
                return Ok(written);
            }
        };
        unreadable += bad;
        if batch.is_empty() {
            break;
        }
        write_changes(store, outbox, &batch).await?;
        written += batch.len();
    }
    if unreadable > 0 {
        tracing::warn!(file = %spill.path().display(), lines = unreadable, "unreadable lines in the spill file skipped (a stop in the middle of writing it)");
    }
    if let Err(error) = spill.remove() {
        tracing::warn!(file = %spill.path().display(), %error, "cannot remove the spill file after writing its records; they will be written again (harmlessly) at the next start");
    }
    Ok(written)
}

fn set_aside(spill: &Spill, error: &std::io::Error) {
    match spill.set_aside() {
        Ok(to) => {
            tracing::error!(file = %spill.path().display(), moved_to = %to.display(), %error, "the spill file cannot be read; it was moved aside for an admin to look at")
        }
        Err(move_error) => {
            tracing::error!(file = %spill.path().display(), %error, %move_error, "the spill file cannot be read, nor moved aside")
        }
    }
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
                    health.writable.store(false, Ordering::Relaxed);
                    return Report::default();
                }
            };
            let writer = Writer {
                settings,
                store: None,
                outbox,
                health,
                pending: VecDeque::new(),
                failing: None,
                last_error: String::new(),
            };
            runtime.block_on(writer.run(changes))
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
