//! The delivery worker: carries out the outbox ([`crate::store::outbox`]) against the helpdesks,
//! on its own thread, so a slow or dead helpdesk never slows call routing.
//!
//! - Which deliveries a call gets ([`outbox_entries`]): one per integration linked to a group the
//!   call reached (a text: to one of its number's groups; a helpdesk reply sent as a text is
//!   skipped for the integration it was written in); a call the rules do not log there (its type is not logged, or it came out of
//!   hours) gets a `skipped` delivery that says why, so no call is left without an answer to
//!   "where is its ticket?".
//! - Each integration runs its own loop: it claims due deliveries in call order (one contact's
//!   deliveries never overlap), up to `concurrency` at once, and hands each to the connector.
//!   The connector paces every request under the helpdesk's limit ([`crate::helpdesk::http`]).
//! - An attempt that can be retried waits 1 s, 2 s, 4 s… (at most 10 minutes, each wait drawn
//!   between half and all of that, so a burst of failures does not come back at once), or as
//!   long as the helpdesk asked, whichever is longer. After `give_up_after` without success, or
//!   at once for an answer that will never succeed, the delivery is `failed` with the reason;
//!   `sipdesk deliveries retry` sends it again.
//! - The secret is read again for each batch of claims: a corrected token file or environment
//!   works without a reload. A configuration reload restarts the loops with the new settings;
//!   deliveries being worked on finish with the old ones, their leases renewed until they do,
//!   so the new loops never take one of them up a second time.
//! - Beside the loops, old voicemail recordings are swept away
//!   ([`crate::recordings::retention`]).
//! - Leases (30 s, renewed every 10 s) bring back the deliveries of a worker that died; on
//!   SQLite, where one sipdesk owns the database, they are released at start straight away.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::call::CallRecord;
use crate::config::{Config, HelpdeskSettings, Kind, Secret, Vendor};
use crate::directory::Directory;
use crate::helpdesk::{Connector, Delivered, HelpdeskError, Job, Party};
use crate::phone::Region;
use crate::recordings::Recordings;
use crate::store::{Backend, Delivery, NewDelivery, Store, StoreError};
use crate::tickets::{self, Log, Skip};

/// How long a claimed delivery is held before another worker may take it.
const LEASE: Duration = Duration::from_secs(30);
/// How often the leases of deliveries in progress are extended.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often an idle integration looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between two attempts (before the helpdesk's own `Retry-After`).
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// On stop, how long deliveries in progress may take to finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The deliveries a finished call needs: one per integration linked to a group it reached.
pub fn outbox_entries(config: &Config, record: &CallRecord) -> Vec<NewDelivery> {
    let mut call = record.clone();
    if call.group.is_none() {
        // A call interrupted before routing finished knows only its queue.
        if let Some(id) = call
            .queue
            .as_deref()
            .and_then(|q| config.groups.by_queue(q))
        {
            let name = config.groups.get(id).name.to_string();
            call.groups.push(name.clone());
            call.group = Some(name);
        }
    }
    let contact_key = Party::of(record, config.defaults.region).key().to_owned();
    config
        .helpdesks
        .iter()
        .filter_map(|h| {
            let skipped = match tickets::logs(&h.rules, &call) {
                Ok(()) => None,
                Err(Skip::NotLinked) => return None,
                Err(other) => Some(other.to_string()),
            };
            // A reply written in a helpdesk is on its ticket already.
            let skipped = match call.sms.as_ref().and_then(|t| t.via.as_deref()) {
                Some(via) if via == h.name && skipped.is_none() => Some(
                    "the reply was written in this helpdesk; it is on its ticket already"
                        .to_owned(),
                ),
                _ => skipped,
            };
            Some(NewDelivery {
                call_id: record.id.clone(),
                integration: h.name.clone(),
                contact_key: contact_key.clone(),
                call_started_at: record.started_at,
                skipped,
            })
        })
        .collect()
}

/// How long to wait before attempt `attempts + 1`: exponential, with jitter, at least what the
/// helpdesk asked for.
pub fn backoff(attempts: u32, asked: Option<Duration>) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let full = Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF);
    let jittered = full.mul_f64(0.5 + fastrand::f64() * 0.5);
    asked.map_or(jittered, |asked| asked.max(jittered))
}

/// Starts the worker on its own thread. It runs until `stop` fires, then lets deliveries in
/// progress finish (for a few seconds) and returns.
pub fn spawn(
    url: String,
    config: watch::Receiver<Arc<Config>>,
    directory: Arc<Directory>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("sipdesk-delivery".to_owned()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start the delivery worker; deliveries wait in the database");
                return;
            }
        };
        runtime.block_on(run(url, config, directory, stop));
    })
}

async fn run(
    url: String,
    mut config: watch::Receiver<Arc<Config>>,
    directory: Arc<Directory>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    let store = loop {
        match Store::open(&url).await {
            Ok(store) => break store,
            Err(error) => {
                tracing::error!(error = %crate::report::Chain(&error), "the delivery worker cannot open the database; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    // Voicemail recordings are files of the instance that took the call: it delivers them.
    let store = store.for_instance(&config.borrow().cluster.instance);
    if store.backend() == Backend::Sqlite {
        match store.release_all_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deliveries = n,
                "taking up deliveries the previous run left in progress"
            ),
            Err(error) => {
                tracing::warn!(error = %crate::report::Chain(&error), "cannot release old delivery leases; they run out by themselves")
            }
        }
    }
    let sweeper = tokio::spawn(crate::recordings::retention::run(
        store.clone(),
        config.clone(),
        stop.clone(),
    ));
    loop {
        let current = config.borrow_and_update().clone();
        let recordings = Arc::new(Recordings::of(&current));
        warn_without_links(&current);
        let round = stop.child_token();
        let loops: Vec<_> = current
            .helpdesks
            .iter()
            .map(|settings| {
                let integration = Integration {
                    settings: Arc::new(settings.clone()),
                    recordings: recordings.clone(),
                    region: current.defaults.region,
                    store: store.clone(),
                    directory: directory.clone(),
                };
                tokio::spawn(integration.run(round.clone(), stop.clone()))
            })
            .collect();
        let changed = tokio::select! {
            _ = stop.cancelled() => false,
            changed = config.changed() => changed.is_ok(),
        };
        round.cancel();
        for handle in loops {
            let _ = handle.await;
        }
        if !changed {
            let _ = sweeper.await;
            return;
        }
    }
}

/// Says once per configuration which integrations will get voicemails without a link, because
/// `[media] public_url` is not set (those that take the file itself do not need one).
fn warn_without_links(config: &Config) {
    if config.media.public_url.is_some() {
        return;
    }
    for settings in &config.helpdesks {
        let needs_link = match &settings.vendor {
            Vendor::Intercom(_) | Vendor::Klaviyo(_) => true,
            Vendor::Webhook(own) => !own.inline_audio,
            Vendor::Zendesk(own) if own.rules.voice_comments => {
                if settings.rules.log.voicemail != Log::Nothing {
                    tracing::warn!(integration = %settings.name, "voice_comments: a voicemail cannot be a voice comment without [media] public_url; its recording is attached to the note instead");
                }
                false
            }
            Vendor::Zendesk(_) | Vendor::HelpScout(_) => false,
        };
        if needs_link && settings.rules.log.voicemail != Log::Nothing {
            tracing::warn!(integration = %settings.name, "voicemails reach this integration without a link to the recording: set [media] public_url (where its users reach sipdesk's admin HTTP server through a reverse proxy)");
        }
    }
}

/// One integration's delivery loop.
struct Integration {
    settings: Arc<HelpdeskSettings>,
    recordings: Arc<Recordings>,
    region: Region,
    store: Store,
    directory: Arc<Directory>,
}

/// The connector, with the secret it was made with.
type Built = Option<(Secret, Arc<Connector>)>;

impl Integration {
    /// Claims and delivers until `cancel` fires (a reload, or `stop`).
    async fn run(self, cancel: CancellationToken, stop: CancellationToken) {
        let this = Arc::new(self);
        let concurrency = this.settings.concurrency as usize;
        let slots = Arc::new(Semaphore::new(concurrency));
        let working: Arc<Mutex<HashSet<String>>> = Arc::default();
        let renewal = tokio::spawn(renew_leases(this.store.clone(), working.clone()));
        let mut built: Built = None;
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let room = 1 + slots.available_permits() as u32;
            let now = Timestamp::now();
            let claimed = match this
                .store
                .claim_deliveries(&this.settings.name, room, now, lease_end(now))
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(integration = %this.settings.name, error = %crate::report::Chain(&error), "cannot claim deliveries");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
            let connector = this.connector(&mut built);
            let mut permits = vec![first];
            while permits.len() < claimed.len() {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            for (delivery, permit) in claimed.into_iter().zip(
                permits
                    .into_iter()
                    .map(Some)
                    .chain(std::iter::repeat_with(|| None)),
            ) {
                let this = this.clone();
                let connector = connector.clone();
                let working = working.clone();
                working
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(delivery.id.clone());
                tokio::spawn(async move {
                    this.attempt(&delivery, connector).await;
                    working
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&delivery.id);
                    drop(permit);
                });
            }
        }
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if !stop.is_cancelled() {
            // A reload: the deliveries in progress finish in the background, their leases
            // renewed until then, while the new loop starts.
            tokio::spawn(async move {
                let _ = slots.acquire_many(all).await;
                renewal.abort();
            });
            return;
        }
        // Stopping: let the deliveries in progress finish, for a while.
        if tokio::time::timeout(STOP_GRACE, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(integration = %this.settings.name, "stopping with deliveries in progress; they resume at the next start");
        }
        renewal.abort();
    }

    /// The connector for this batch: rebuilt when the secret changed, or `Err` with why there
    /// is none.
    fn connector(&self, built: &mut Built) -> Result<Arc<Connector>, String> {
        let secret = self.settings.secret.read()?;
        if let Some((old, connector)) = built.as_ref() {
            if *old == secret {
                return Ok(connector.clone());
            }
        }
        let connector = Arc::new(Connector::new(&self.settings, self.region)?);
        *built = Some((secret, connector.clone()));
        Ok(connector)
    }

    /// One attempt at one delivery, its result saved.
    async fn attempt(&self, delivery: &Delivery, connector: Result<Arc<Connector>, String>) {
        let name = &self.settings.name;
        let result = match (self.store.call_record(&delivery.call_id).await, connector) {
            // The rule in force now: a call type turned to "none" by a reload after the
            // delivery was queued, and before anything was sent, is not logged.
            (Ok(Some(call)), Ok(_))
                if delivery.action.is_none()
                    && delivery.request.is_none()
                    && self.settings.rules.log.get(call.call_type()) == Log::Nothing =>
            {
                Ok(Delivered::Skipped(
                    tickets::not_logged(&self.settings.rules, call.call_type()).to_string(),
                ))
            }
            (Ok(Some(call)), Ok(connector)) => {
                let party = Party::of(&call, self.region);
                // Said on the delivery where the helpdesk has an anonymous contact.
                let has_contacts = matches!(self.settings.kind(), Kind::Zendesk | Kind::HelpScout);
                let unreadable = match &party {
                    Party::Anonymous { sent: Some(sent) }
                        if has_contacts && delivery.action.is_none() =>
                    {
                        Some(sent.clone())
                    }
                    _ => None,
                };
                let job = Job {
                    delivery,
                    party,
                    call: &call,
                    store: &self.store,
                    directory: &self.directory,
                    recordings: &self.recordings,
                };
                match (connector.deliver(&job).await, unreadable) {
                    (Ok(Delivered::Ticket { id, detail }), Some(sent)) => Ok(Delivered::Ticket {
                        id,
                        detail: format!(
                            "{detail}; \"{sent}\" is not a phone number: logged under the anonymous contact"
                        ),
                    }),
                    (result, _) => result,
                }
            }
            (Ok(None), _) => Err(HelpdeskError::Permanent(format!(
                "the call {} is not in the database",
                delivery.call_id
            ))),
            (Err(error), _) => Err(HelpdeskError::from(error)),
            (_, Err(reason)) => Err(HelpdeskError::Retry {
                reason,
                after: None,
            }),
        };
        let saved = match result {
            Ok(Delivered::Ticket { id, detail }) => {
                tracing::info!(integration = %name, call = %delivery.call_id, ticket = %id, attempts = delivery.attempts, "{detail}");
                self.store.delivery_done(delivery, &id, &detail).await
            }
            Ok(Delivered::Skipped(reason)) => {
                tracing::info!(integration = %name, call = %delivery.call_id, "not logged: {reason}");
                self.store.delivery_skipped(delivery, &reason).await
            }
            Err(HelpdeskError::TakenOver(reason)) => {
                tracing::warn!(integration = %name, call = %delivery.call_id, "attempt stopped: {reason}");
                return;
            }
            Err(HelpdeskError::Permanent(reason)) => {
                tracing::error!(integration = %name, call = %delivery.call_id, delivery = %delivery.id, "delivery failed: {reason}");
                self.store.delivery_failed(delivery, &reason).await
            }
            Err(HelpdeskError::Wait { reason, after }) => {
                let now = Timestamp::now();
                let waited = now.duration_since(delivery.pending_since).unsigned_abs();
                if waited >= self.settings.give_up_after {
                    let reason = format!(
                        "gave up after {}: {reason}",
                        humantime::format_duration(self.settings.give_up_after)
                    );
                    tracing::error!(integration = %name, call = %delivery.call_id, delivery = %delivery.id, "delivery failed: {reason}");
                    self.store.delivery_failed(delivery, &reason).await
                } else {
                    tracing::info!(integration = %name, call = %delivery.call_id, retry_in = %humantime::format_duration(after), "delivery waits: {reason}");
                    let next = now.checked_add(after).unwrap_or(now);
                    self.store.delivery_wait(delivery, &reason, next).await
                }
            }
            Err(HelpdeskError::Retry { reason, after }) => {
                let now = Timestamp::now();
                let waited = now.duration_since(delivery.pending_since).unsigned_abs();
                if waited >= self.settings.give_up_after {
                    let reason = format!(
                        "gave up after {} and {} attempts: {reason}",
                        humantime::format_duration(self.settings.give_up_after),
                        delivery.attempts
                    );
                    tracing::error!(integration = %name, call = %delivery.call_id, delivery = %delivery.id, "delivery failed: {reason}");
                    self.store.delivery_failed(delivery, &reason).await
                } else {
                    let wait = backoff(delivery.attempts, after);
                    tracing::warn!(integration = %name, call = %delivery.call_id, attempts = delivery.attempts, retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)), "delivery will be retried: {reason}");
                    let next = now.checked_add(wait).unwrap_or(now);
                    self.store
                        .delivery_retry_later(delivery, &reason, next)
                        .await
                }
            }
        };
        if let Err(error @ StoreError::TakenOver { .. }) = &saved {
            tracing::warn!(integration = %name, call = %delivery.call_id, "attempt result not saved: {error}");
        } else if let Err(error) = saved {
            tracing::error!(integration = %name, delivery = %delivery.id, error = %crate::report::Chain(&error), "cannot save the delivery's result; it is retried when its lease runs out");
        }
    }
}

fn lease_end(now: Timestamp) -> Timestamp {
    now.checked_add(LEASE).unwrap_or(now)
}

/// Extends the leases of the deliveries in `working` until aborted.
async fn renew_leases(store: Store, working: Arc<Mutex<HashSet<String>>>) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let ids: Vec<String> = working
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        if ids.is_empty() {
            continue;
        }
        if let Err(error) = store.renew_leases(&ids, lease_end(Timestamp::now())).await {
            tracing::warn!(error = %crate::report::Chain(&error), "cannot extend delivery leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_ten_minutes_and_honours_the_helpdesk() {
        for _ in 0..200 {
            for (attempts, full) in [
                (1, 1),
                (2, 2),
                (3, 4),
                (6, 32),
                (10, 512),
                (11, 600),
                (40, 600),
            ] {
                let wait = backoff(attempts, None);
                let full = Duration::from_secs(full);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempts}: {wait:?}"
                );
            }
            assert!(backoff(1, Some(Duration::from_secs(30))) == Duration::from_secs(30));
            assert!(backoff(12, Some(Duration::from_secs(1))) >= Duration::from_secs(300));
        }
    }
}
