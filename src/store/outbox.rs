//! The outbox: one delivery per call and linked helpdesk integration, written in the same
//! transaction as the call's final record, then carried out by the delivery worker.
//!
//! A delivery moves `pending` → `in_progress` (claimed, with a lease) → `done`, `skipped` (the
//! rules log nothing, with the reason) or `failed` (a helpdesk answer that will never succeed, or
//! still failing after `give_up_after`); a retryable failure puts it back to `pending` with a
//! later `next_attempt_at`. What each step learnt (the helpdesk contact, the request about to be
//! sent) is saved as it happens, so a retry — or a restart after `kill -9` — resumes there.
//!
//! Deliveries for one contact on one integration are claimed in call order: a delivery waits
//! while an earlier one of the same contact is pending or in progress (a failed one no longer
//! holds the others back). Claims take a lease, renewed while the work goes on, so a delivery
//! whose worker died is taken up again once its lease runs out; on PostgreSQL the claim uses
//! `FOR UPDATE SKIP LOCKED`, so instances sharing the database never take the same delivery.
//!
//! Every write a worker makes about a delivery it claimed names that claim (the delivery as
//! claimed: its id and attempt number) and only lands while the claim holds. A worker whose
//! lease ran out (a stalled process, a lost database connection) gets
//! [`StoreError::TakenOver`] and stops, instead of overwriting what the new claimant does —
//! in particular it cannot save, and so cannot send, a request after losing the delivery.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{cached, placeholders};
use super::write::Conn;
use super::{Backend, Store, StoreError, from_millis, millis, query_error, text};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    InProgress,
    Done,
    Skipped,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InProgress => "in_progress",
            DeliveryState::Done => "done",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state a name stands for; `None` for none of them.
    pub fn from_name(text: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::InProgress,
            DeliveryState::Done,
            DeliveryState::Skipped,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    fn parse(text: &str) -> DeliveryState {
        match text {
            "in_progress" => DeliveryState::InProgress,
            "done" => DeliveryState::Done,
            "skipped" => DeliveryState::Skipped,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// A delivery to write with its call's final record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub call_id: String,
    pub integration: String,
    /// Orders the deliveries of one contact: the caller's E.164 number, or `anonymous`.
    pub contact_key: String,
    pub call_started_at: Timestamp,
    /// `Some(reason)`: the integration's rules log nothing for this call; kept as `skipped` so
    /// `sipdesk deliveries` can say why a call has no ticket.
    pub skipped: Option<String>,
}

impl NewDelivery {
    /// The id of the delivery of a call to an integration.
    pub fn id_of(call_id: &str, integration: &str) -> String {
        format!("{call_id}:{integration}")
    }
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub call_id: String,
    pub integration: String,
    pub contact_key: String,
    pub call_started_at: Timestamp,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: Timestamp,
    /// Since when the delivery has been waiting to succeed (reset by a manual retry); it fails
    /// after `give_up_after` from here.
    pub pending_since: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    /// What was done (the ticket), or why nothing was.
    pub detail: Option<String>,
    /// The helpdesk contact, once found or created.
    pub contact_id: Option<String>,
    /// The request about to be sent (helpdesk-specific), kept so a retry sends the same one.
    pub request: Option<String>,
    pub ticket_id: Option<String>,
    pub updated_at: Timestamp,
    /// `None` for a call's own delivery; for a later change to a call already delivered (tags
    /// added or removed), what to do, as JSON ([`crate::store::tags::Retag`]).
    pub action: Option<String>,
}

/// Which deliveries to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    pub limit: u32,
}

/// Pending and failed deliveries, per integration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub integration: String,
    pub pending: u64,
    pub in_progress: u64,
    pub failed: u64,
    pub done: u64,
}

const COLUMNS: usize = 11;

/// Inserts deliveries inside the transaction that ends their calls. A delivery that exists
/// already (the same call ended twice in the store's eyes) is left as it is.
pub(super) async fn insert(
    conn: &mut Conn,
    backend: Backend,
    deliveries: &[NewDelivery],
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO deliveries (id, call_id, integration, contact_key, call_started_at, created_at, state,
             pending_since, next_attempt_at, detail, updated_at)
         VALUES {} ON CONFLICT (id) DO NOTHING",
        placeholders(backend, deliveries.len(), COLUMNS)
    );
    let now = millis(now);
    let mut query = sqlx::query(&sql).persistent(cached(deliveries.len()));
    for d in deliveries {
        let state = if d.skipped.is_some() {
            DeliveryState::Skipped
        } else {
            DeliveryState::Pending
        };
        query = query
            .bind(NewDelivery::id_of(&d.call_id, &d.integration))
            .bind(d.call_id.as_str())
            .bind(d.integration.as_str())
            .bind(text(&d.contact_key).into_owned())
            .bind(millis(d.call_started_at))
            .bind(now)
            .bind(state.as_str())
            .bind(now)
            .bind(now)
            .bind(d.skipped.as_deref().map(|s| text(s).into_owned()))
            .bind(now);
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(query_error("save deliveries"))?;
    Ok(())
}

pub(super) fn delivery(row: &AnyRow) -> Result<Delivery, StoreError> {
    let e = || query_error("read delivery");
    Ok(Delivery {
        id: row.try_get("id").map_err(e())?,
        call_id: row.try_get("call_id").map_err(e())?,
        integration: row.try_get("integration").map_err(e())?,
        contact_key: row.try_get("contact_key").map_err(e())?,
        call_started_at: from_millis(row.try_get("call_started_at").map_err(e())?),
        state: DeliveryState::parse(&row.try_get::<String, _>("state").map_err(e())?),
        attempts: u32::try_from(row.try_get::<i32, _>("attempts").map_err(e())?).unwrap_or(0),
        created_at: from_millis(row.try_get("created_at").map_err(e())?),
        pending_since: from_millis(row.try_get("pending_since").map_err(e())?),
        next_attempt_at: from_millis(row.try_get("next_attempt_at").map_err(e())?),
        last_error: row.try_get("last_error").map_err(e())?,
        detail: row.try_get("detail").map_err(e())?,
        contact_id: row.try_get("contact_id").map_err(e())?,
        request: row.try_get("request").map_err(e())?,
        ticket_id: row.try_get("ticket_id").map_err(e())?,
        updated_at: from_millis(row.try_get("updated_at").map_err(e())?),
        action: row.try_get("action").map_err(e())?,
    })
}

const SELECT: &str = "SELECT id, call_id, integration, contact_key, call_started_at, state, attempts, created_at, pending_since,
    next_attempt_at, last_error, detail, contact_id, request, ticket_id, updated_at, action FROM deliveries";

/// The condition under which a claim still holds, compared with the claim's attempt number:
/// the delivery is in progress and nobody claimed it since (each claim counts an attempt).
const CLAIM_HOLDS: &str = "state = 'in_progress' AND attempts";

/// A parameter of [`Store::write_claimed`].
enum Param<'v> {
    Text(Option<&'v str>),
    Int(i64),
}

/// `Ok` when a write about `claim` landed, [`StoreError::TakenOver`] when it matched nothing.
fn claim_held(claim: &Delivery, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(StoreError::TakenOver {
            id: claim.id.clone(),
        });
    }
    Ok(())
}

impl Store {
    /// Takes up to `limit` due deliveries of `integration` for this worker until `lease_until`:
    /// pending ones whose time has come, and in-progress ones whose lease ran out, oldest call
    /// first, never one whose contact has an earlier delivery still pending, nor any delivery in
    /// progress (a tag change of an earlier call must not run beside a later call's delivery).
    pub async fn claim_deliveries(
        &self,
        integration: &str,
        limit: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The outer state check is evaluated again on the locked row (PostgreSQL), so a row
        // another instance claimed meanwhile is not claimed twice.
        let voicemail = self.not_anothers_voicemail("d.call_id");
        let sql = format!(
            "UPDATE deliveries SET state = 'in_progress', attempts = attempts + 1, lease_until = $1, updated_at = $2
             WHERE id IN (
                 SELECT d.id FROM deliveries d
                 WHERE d.integration = $3
                   AND ((d.state = 'pending' AND d.next_attempt_at <= $2)
                        OR (d.state = 'in_progress' AND d.lease_until < $2))
                   AND NOT EXISTS (
                       SELECT 1 FROM deliveries e
                       WHERE e.integration = d.integration AND e.contact_key = d.contact_key
                         AND e.id <> d.id
                         AND (e.state = 'in_progress'
                              OR (e.state = 'pending'
                                  AND (e.call_started_at < d.call_started_at
                                       OR (e.call_started_at = d.call_started_at AND e.id < d.id)))))
                   AND {voicemail}
                 ORDER BY d.call_started_at, d.id
                 LIMIT $4 {lock})
               AND ((state = 'pending' AND next_attempt_at <= $2)
                    OR (state = 'in_progress' AND lease_until < $2))
             RETURNING id, call_id, integration, contact_key, call_started_at, state, attempts, created_at, pending_since,
                 next_attempt_at, last_error, detail, contact_id, request, ticket_id, updated_at, action"
        );
        let query = sqlx::query(&sql)
            .bind(millis(lease_until))
            .bind(millis(now))
            .bind(integration)
            .bind(i64::from(limit));
        let rows = self.fetch_write("claim deliveries", query).await?;
        rows.iter().map(delivery).collect()
    }

    /// Extends the lease of deliveries still being worked on.
    pub async fn renew_leases(
        &self,
        ids: &[String],
        lease_until: Timestamp,
    ) -> Result<(), StoreError> {
        for id in ids {
            let query = sqlx::query(
                "UPDATE deliveries SET lease_until = $1 WHERE id = $2 AND state = 'in_progress'",
            )
            .bind(millis(lease_until))
            .bind(id.as_str());
            self.execute_write("renew delivery lease", query).await?;
        }
        Ok(())
    }

    /// Gives every in-progress delivery back (at start, when this is the only instance: SQLite).
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let query = sqlx::query(
            "UPDATE deliveries SET state = 'pending', lease_until = NULL WHERE state = 'in_progress'",
        );
        let done = self.execute_write("release delivery leases", query).await?;
        Ok(done.rows_affected())
    }

    /// Saves the helpdesk contact a claimed delivery found or created (`None`: look for it
    /// again).
    pub async fn delivery_contact(
        &self,
        claim: &Delivery,
        contact_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update_delivery(
            "save delivery contact",
            "contact_id = $1",
            claim,
            contact_id,
        )
        .await
    }

    /// Saves the request a claimed delivery is about to send (`None`: none is outstanding).
    pub async fn delivery_request(
        &self,
        claim: &Delivery,
        request: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update_delivery("save delivery request", "request = $1", claim, request)
            .await
    }

    async fn update_delivery(
        &self,
        what: &'static str,
        set: &str,
        claim: &Delivery,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write_claimed(what, set, &[Param::Text(value)], claim)
            .await
    }

    /// Marks a claimed delivery done, with the ticket it wrote.
    pub async fn delivery_done(
        &self,
        claim: &Delivery,
        ticket_id: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.write_claimed(
            "finish delivery",
            "state = 'done', ticket_id = $1, detail = $2, last_error = NULL, request = NULL, lease_until = NULL",
            &[Param::Text(Some(ticket_id)), Param::Text(Some(detail))],
            claim,
        )
        .await
    }

    /// Marks a claimed delivery skipped: the rules log nothing, for this reason.
    pub async fn delivery_skipped(&self, claim: &Delivery, reason: &str) -> Result<(), StoreError> {
        self.end_delivery(claim, DeliveryState::Skipped, None, Some(reason))
            .await
    }

    /// Marks a claimed delivery failed for good (until an admin retries it).
    pub async fn delivery_failed(&self, claim: &Delivery, error: &str) -> Result<(), StoreError> {
        self.end_delivery(claim, DeliveryState::Failed, Some(error), None)
            .await
    }

    async fn end_delivery(
        &self,
        claim: &Delivery,
        state: DeliveryState,
        error: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write_claimed(
            "end delivery",
            "state = $1, last_error = COALESCE($2, last_error), detail = COALESCE($3, detail), lease_until = NULL",
            &[
                Param::Text(Some(state.as_str())),
                Param::Text(error),
                Param::Text(detail),
            ],
            claim,
        )
        .await
    }

    /// Puts a claimed delivery back to wait until `next_attempt_at`, with the reason it failed
    /// this time.
    pub async fn delivery_retry_later(
        &self,
        claim: &Delivery,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write_claimed(
            "reschedule delivery",
            "state = 'pending', last_error = $1, next_attempt_at = $2, lease_until = NULL",
            &[
                Param::Text(Some(error)),
                Param::Int(millis(next_attempt_at)),
            ],
            claim,
        )
        .await
    }

    /// Tries the delivery again at `next_attempt_at` after an attempt that did not fail but
    /// waited (see [`crate::helpdesk::HelpdeskError::Wait`]): the claim's attempt is given back,
    /// so `attempts` keeps counting failures.
    pub async fn delivery_wait(
        &self,
        claim: &Delivery,
        reason: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write_claimed(
            "reschedule delivery",
            "state = 'pending', last_error = $1, next_attempt_at = $2, lease_until = NULL, attempts = attempts - 1",
            &[
                Param::Text(Some(reason)),
                Param::Int(millis(next_attempt_at)),
            ],
            claim,
        )
        .await
    }

    /// `UPDATE deliveries SET <set>` (whose parameters are `params`, `$1`…), stamped with the
    /// time, for as long as `claim` holds.
    async fn write_claimed(
        &self,
        what: &'static str,
        set: &str,
        params: &[Param<'_>],
        claim: &Delivery,
    ) -> Result<(), StoreError> {
        let n = params.len();
        let sql = format!(
            "UPDATE deliveries SET {set}, updated_at = ${} WHERE id = ${} AND {CLAIM_HOLDS} = ${}",
            n + 1,
            n + 2,
            n + 3
        );
        let mut query = sqlx::query(&sql);
        for param in params {
            query = match *param {
                Param::Text(value) => query.bind(value.map(|v| text(v).into_owned())),
                Param::Int(number) => query.bind(number),
            };
        }
        let query = query
            .bind(millis(Timestamp::now()))
            .bind(claim.id.as_str())
            .bind(i64::from(claim.attempts));
        let done = self.execute_write(what, query).await?;
        claim_held(claim, done.rows_affected())
    }

    /// Sends a failed delivery again now, as if new: `give_up_after` counts from now. A pending
    /// one is sent now instead of at its next attempt. Done and skipped deliveries are left as
    /// they are: sending them again would log the call twice, or where the rules said not to.
    /// Returns whether a delivery was changed.
    pub async fn retry_delivery(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, pending_since = $1, attempts = 0,
                 lease_until = NULL, updated_at = $1 WHERE id = $2 AND state IN ('failed', 'pending')",
        )
        .bind(millis(now))
        .bind(id);
        let done = self.execute_write("retry delivery", query).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sends every failed delivery again now. Returns how many.
    pub async fn retry_failed_deliveries(&self, now: Timestamp) -> Result<u64, StoreError> {
        let query = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, pending_since = $1, attempts = 0,
                 lease_until = NULL, updated_at = $1 WHERE state = 'failed'",
        )
        .bind(millis(now));
        let done = self.execute_write("retry failed deliveries", query).await?;
        Ok(done.rows_affected())
    }

    /// One delivery.
    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("{SELECT} WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read delivery"))?;
        row.as_ref().map(delivery).transpose()
    }

    /// Recent deliveries, newest call first.
    pub async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let sql = match filter.state {
            Some(state) => format!(
                "{SELECT} WHERE state = '{}' ORDER BY call_started_at DESC, id LIMIT $1",
                state.as_str()
            ),
            None => format!("{SELECT} ORDER BY call_started_at DESC, id LIMIT $1"),
        };
        let rows = sqlx::query(&sql)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list deliveries"))?;
        rows.iter().map(delivery).collect()
    }

    /// The deliveries of one call.
    pub async fn deliveries_of(&self, call_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!("{SELECT} WHERE call_id = $1 ORDER BY integration");
        let rows = sqlx::query(&sql)
            .bind(call_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list deliveries"))?;
        rows.iter().map(delivery).collect()
    }

    /// How many deliveries each integration has in each state.
    pub async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        let rows = sqlx::query("SELECT integration, state, COUNT(*) AS n FROM deliveries GROUP BY integration, state ORDER BY integration")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("count deliveries"))?;
        let mut out: Vec<Backlog> = Vec::new();
        for row in rows {
            let e = || query_error("count deliveries");
            let integration: String = row.try_get("integration").map_err(e())?;
            let state: String = row.try_get("state").map_err(e())?;
            let n = u64::try_from(row.try_get::<i64, _>("n").map_err(e())?).unwrap_or(0);
            if out.last().is_none_or(|b| b.integration != integration) {
                out.push(Backlog {
                    integration,
                    ..Backlog::default()
                });
            }
            let entry = out.last_mut().expect("pushed above");
            match DeliveryState::parse(&state) {
                DeliveryState::Pending => entry.pending += n,
                DeliveryState::InProgress => entry.in_progress += n,
                DeliveryState::Failed => entry.failed += n,
                DeliveryState::Done => entry.done += n,
                DeliveryState::Skipped => {}
            }
        }
        Ok(out)
    }
}
