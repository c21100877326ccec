//! Tags added or removed after a call ended (`sipdesk calls tag CALL_ID +averia -vip`): the
//! call's record changes, an event says so, and every integration the call was delivered to
//! (or is being delivered to) gets a tag delivery — all in one transaction. A tag delivery
//! belongs to the call's contact like the call's own, so the outbox carries it out after the
//! call's own delivery.
//!
//! Tags change only within [`TAG_WINDOW`] of the call's end (the Intercom seed's two hours);
//! later, the change is refused with that reason.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::write::Write;
use super::{Store, StoreError, from_millis, millis, query_error};

/// How long after a call ended its tags may still change.
pub const TAG_WINDOW: Duration = Duration::from_secs(2 * 3600);

/// What a tag delivery does: the tags added and removed (kept in the delivery's `action`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retag {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The call's tags after the change.
    pub tags: Vec<String>,
}

impl Retag {
    pub fn parse(action: &str) -> Option<Retag> {
        #[derive(Deserialize)]
        struct Action {
            retag: Retag,
        }
        serde_json::from_str::<Action>(action).ok().map(|a| a.retag)
    }

    fn action(&self) -> String {
        serde_json::json!({ "retag": self }).to_string()
    }
}

/// Why a tag change was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagRefused {
    #[error("no call has the id {0}")]
    NoSuchCall(String),
    #[error("the call is still in progress; tag it once it ended")]
    InProgress,
    #[error("the call ended at {ended}, more than two hours ago: its tags can no longer change")]
    TooLate { ended: Timestamp },
    #[error("nothing changes: the call's tags are already {0:?}")]
    NothingChanged(Vec<String>),
}

/// A tag change made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub retag: Retag,
    /// The integrations the change is queued for.
    pub integrations: Vec<String>,
}

/// Tags to add and remove as written by a person (the CLI, the admin API): each trimmed, lower
/// case, one word without commas, none both added and removed.
pub fn normalize(add: &[String], remove: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let clean = |list: &[String]| -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for tag in list {
            let clean = tag.trim().to_lowercase();
            if clean.is_empty() || clean.contains(',') || clean.chars().any(char::is_whitespace) {
                return Err(format!(
                    "\"{tag}\": a tag is one word, without commas or spaces"
                ));
            }
            if !out.contains(&clean) {
                out.push(clean);
            }
        }
        Ok(out)
    };
    let (add, remove) = (clean(add)?, clean(remove)?);
    if let Some(both) = add.iter().find(|t| remove.contains(t)) {
        return Err(format!("{both}: added and removed at once; say which"));
    }
    if add.is_empty() && remove.is_empty() {
        return Err("no tag to add or remove".to_owned());
    }
    Ok((add, remove))
}

impl Store {
    /// Adds and removes tags on an ended call and queues the change for every integration the
    /// call went to among `integrations` (those configured now).
    pub async fn tag_call(
        &self,
        call_id: &str,
        add: &[String],
        remove: &[String],
        now: Timestamp,
        integrations: &[String],
    ) -> Result<Result<Tagged, TagRefused>, StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let result = self
            .tag_call_on(&mut write, call_id, add, remove, now, integrations)
            .await;
        write.end(result).await
    }

    async fn tag_call_on(
        &self,
        write: &mut Write,
        call_id: &str,
        add: &[String],
        remove: &[String],
        now: Timestamp,
        integrations: &[String],
    ) -> Result<Result<Tagged, TagRefused>, StoreError> {
        let conn = write.conn();
        // The row is locked until the end (PostgreSQL; SQLite's BEGIN IMMEDIATE already holds
        // the whole database), so two changes at once apply one after the other.
        let lock = match self.backend {
            super::Backend::Postgres => " FOR UPDATE",
            super::Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT ended_at, tags_json FROM calls WHERE id = $1{lock}"
        ))
        .bind(call_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_error("read call"))?;
        let Some(row) = row else {
            return Ok(Err(TagRefused::NoSuchCall(call_id.to_owned())));
        };
        let e = || query_error("read call");
        let Some(ended) = row.try_get::<Option<i64>, _>("ended_at").map_err(e())? else {
            return Ok(Err(TagRefused::InProgress));
        };
        let ended = from_millis(ended);
        // An end "in the future" (clocks of two hosts apart) counts as just now.
        let since = now.duration_since(ended);
        if since.is_positive() && since.unsigned_abs() > TAG_WINDOW {
            return Ok(Err(TagRefused::TooLate { ended }));
        }
        let old: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("tags_json").map_err(e())?)
                .unwrap_or_default();
        // Each tag once, in the order given.
        let once = |list: &[String], keep: &dyn Fn(&String) -> bool| {
            let mut out: Vec<String> = Vec::new();
            for tag in list {
                if keep(tag) && !out.contains(tag) {
                    out.push(tag.clone());
                }
            }
            out
        };
        let removed = once(remove, &|t| old.contains(t));
        let added = once(add, &|t| !old.contains(t) && !remove.contains(t));
        if added.is_empty() && removed.is_empty() {
            return Ok(Err(TagRefused::NothingChanged(old)));
        }
        let mut tags: Vec<String> = old.into_iter().filter(|t| !removed.contains(t)).collect();
        tags.extend(added.iter().cloned());
        let retag = Retag {
            added,
            removed,
            tags,
        };
        sqlx::query("UPDATE calls SET tags_json = $1 WHERE id = $2")
            .bind(serde_json::to_string(&retag.tags).unwrap_or_else(|_| "[]".to_owned()))
            .bind(call_id)
            .execute(&mut *conn)
            .await
            .map_err(query_error("save call tags"))?;
        let detail = retag
            .added
            .iter()
            .map(|t| format!("+{t}"))
            .chain(retag.removed.iter().map(|t| format!("-{t}")))
            .collect::<Vec<_>>()
            .join(" ");
        sqlx::query(
            "INSERT INTO call_events (call_id, seq, at, kind, detail)
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, 'tagged', $3 FROM call_events WHERE call_id = $4",
        )
        .bind(call_id)
        .bind(millis(now))
        .bind(detail)
        .bind(call_id)
        .execute(&mut *conn)
        .await
        .map_err(query_error("save call event"))?;
        // The call's own deliveries that did or will write something.
        let own = sqlx::query(
            "SELECT id, integration, contact_key, call_started_at FROM deliveries
             WHERE call_id = $1 AND action IS NULL AND state <> 'skipped' ORDER BY integration",
        )
        .bind(call_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_error("read deliveries"))?;
        let mut queued = Vec::new();
        for row in own {
            let e = || query_error("read deliveries");
            let id: String = row.try_get("id").map_err(e())?;
            let integration: String = row.try_get("integration").map_err(e())?;
            if !integrations.contains(&integration) {
                // No longer configured: nobody would carry the change out.
                continue;
            }
            let earlier = sqlx::query(
                "SELECT COUNT(*) AS n FROM deliveries WHERE call_id = $1 AND integration = $2",
            )
            .bind(call_id)
            .bind(integration.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(e())?
            .try_get::<i64, _>("n")
            .map_err(e())?;
            let now = millis(now);
            sqlx::query(
                "INSERT INTO deliveries (id, call_id, integration, contact_key, call_started_at, created_at, state,
                     pending_since, next_attempt_at, updated_at, action)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10)",
            )
            // Zero-padded: the outbox orders one contact's deliveries by id as text.
            .bind(format!("{id}:tags:{earlier:06}"))
            .bind(call_id)
            .bind(integration.as_str())
            .bind(row.try_get::<String, _>("contact_key").map_err(e())?)
            .bind(row.try_get::<i64, _>("call_started_at").map_err(e())?)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(retag.action())
            .execute(&mut *conn)
            .await
            .map_err(query_error("save tag delivery"))?;
            queued.push(integration);
        }
        Ok(Ok(Tagged {
            retag,
            integrations: queued,
        }))
    }
}
