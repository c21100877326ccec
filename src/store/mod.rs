//! Where sipdesk keeps what must survive a restart: calls and their events, round-robin cursors,
//! agent states, the outbox of helpdesk deliveries ([`outbox`]) and the contact directory
//! ([`contacts`]). SQLite is the embedded default; PostgreSQL serves several instances. Both run
//! the same SQL through sqlx's `Any` driver; [`schema`] holds the migrations.
//!
//! The proxy never waits on the database: its changes go through a channel to
//! [`writer::run`], which commits them in batches in the background, each call's final record
//! together with its deliveries.

pub mod contacts;
pub mod outbox;
mod schema;
pub mod writer;

use std::collections::HashMap;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::call::{
    CallEvent, CallRecord, CallStart, Change, Direction, EndedBy, MissedReason, Outcome,
};
use crate::routing::Extension;
pub use contacts::ContactEntry;
pub use outbox::{Backlog, Delivery, DeliveryFilter, DeliveryState, NewDelivery};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration {version} failed")]
    Migrate {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the database is at schema version {found}, newer than this sipdesk knows ({known}); upgrade sipdesk"
    )]
    TooNew { found: i64, known: i64 },
    #[error("database query failed: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "delivery {id} was taken over: its lease ran out and another worker claimed it (or an admin changed it)"
    )]
    TakenOver { id: String },
}

fn query_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A call as `sipdesk calls` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallRow {
    pub id: String,
    pub direction: String,
    pub queue: Option<String>,
    pub group: Option<String>,
    pub caller: String,
    pub callee: String,
    pub agent: Option<String>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// `None` while the call is in progress.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub ended_by: Option<String>,
    pub explanation: Vec<String>,
}

/// Which calls to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls in progress.
    pub active: bool,
    pub limit: u32,
}

fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_millis(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// An enum's snake_case name, as stored.
fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl Store {
    /// Opens the database (creating an SQLite file if needed) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let connect_url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(5))
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            });
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets `sipdesk calls` read while the daemon writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS sipdesk_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate { version: 0, source })?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM sipdesk_schema")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>("v"))
            .map_err(|source| StoreError::Migrate { version: 0, source })?;
        let known = schema::MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (version, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let fail = |source| StoreError::Migrate {
                version: *version,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(fail)?;
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query("INSERT INTO sipdesk_schema (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(millis(Timestamp::now()))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
        }
        Ok(())
    }

    /// Commits a batch of changes, and the deliveries of the calls it ends, in one transaction,
    /// with one multi-row statement per kind of change (a round trip per statement is what
    /// costs, not a row).
    pub async fn apply(
        &self,
        changes: &[Change],
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut starts = Vec::new();
        let mut events = Vec::new();
        let mut ends = Vec::new();
        let mut cursors: Vec<(&str, &str)> = Vec::new();
        for change in changes {
            match change {
                Change::CallStarted(start) => starts.push(start),
                Change::Event(event) => events.push(event),
                Change::CallEnded(record) => ends.push(record.as_ref()),
                Change::Cursor { group, extension } => {
                    // The last position of each group wins; one row per group per statement.
                    cursors.retain(|(g, _)| g != group);
                    cursors.push((group, extension));
                }
            }
        }
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        for chunk in starts.chunks(ROWS) {
            insert_starts(&mut tx, self.backend, chunk).await?;
        }
        for chunk in events.chunks(ROWS) {
            insert_events(&mut tx, self.backend, chunk).await?;
        }
        for chunk in ends.chunks(ROWS) {
            upsert_records(&mut tx, self.backend, chunk).await?;
        }
        let now = Timestamp::now();
        for chunk in deliveries.chunks(ROWS) {
            outbox::insert(&mut tx, self.backend, chunk, now).await?;
        }
        if !cursors.is_empty() {
            let now = millis(Timestamp::now());
            let sql = format!(
                "INSERT INTO cursors (group_name, extension, updated_at) VALUES {}
                 ON CONFLICT (group_name) DO UPDATE SET extension = excluded.extension, updated_at = excluded.updated_at",
                placeholders(self.backend, cursors.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for (group, extension) in &cursors {
                query = query.bind(*group).bind(*extension).bind(now);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(query_error("save cursors"))?;
        }
        tx.commit().await.map_err(query_error("commit"))
    }

    /// The round-robin cursors, by group.
    pub async fn cursors(&self) -> Result<HashMap<String, Extension>, StoreError> {
        let rows = sqlx::query("SELECT group_name, extension FROM cursors")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read cursors"))?;
        let mut cursors = HashMap::new();
        for row in rows {
            let group: String = row
                .try_get("group_name")
                .map_err(query_error("read cursors"))?;
            let extension: String = row
                .try_get("extension")
                .map_err(query_error("read cursors"))?;
            if let Ok(extension) = Extension::parse(&extension) {
                cursors.insert(group, extension);
            }
        }
        Ok(cursors)
    }

    /// Every agent state set by an agent or supervisor: extension → away.
    pub async fn agent_states(&self) -> Result<Vec<(Extension, bool)>, StoreError> {
        let rows = sqlx::query("SELECT extension, state FROM agent_states ORDER BY extension")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read agent states"))?;
        let mut states = Vec::new();
        for row in rows {
            let extension: String = row
                .try_get("extension")
                .map_err(query_error("read agent states"))?;
            let state: String = row
                .try_get("state")
                .map_err(query_error("read agent states"))?;
            if let Ok(extension) = Extension::parse(&extension) {
                states.push((extension, state == "away"));
            }
        }
        Ok(states)
    }

    /// Records an agent as away or available.
    pub async fn set_agent_state(
        &self,
        extension: &Extension,
        away: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_states (extension, state, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (extension) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(extension.as_str())
        .bind(if away { "away" } else { "available" })
        .bind(millis(Timestamp::now()))
        .execute(&self.pool)
        .await
        .map_err(query_error("save agent state"))?;
        Ok(())
    }

    /// Closes calls a previous run left in progress (crash, kill -9): answered ones as ended
    /// when sipdesk stopped, unanswered ones as missed (interrupted), each with the deliveries
    /// `outbox` gives it, in one transaction. Returns how many. Every open call is taken as this
    /// instance's: one instance per database (calls carry no owner yet, which sharing a
    /// database between instances will need).
    pub async fn close_interrupted(
        &self,
        now: Timestamp,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        let rows = sqlx::query("SELECT * FROM calls WHERE ended_at IS NULL")
            .fetch_all(&mut *tx)
            .await
            .map_err(query_error("read interrupted calls"))?;
        let mut records = Vec::new();
        for row in &rows {
            let mut record = call_record(row)?;
            record.ended_at = now;
            if record.answered_at.is_some() {
                record.outcome = Outcome::Answered;
                record.ended_by = Some(EndedBy::Interrupted);
            } else {
                record.outcome = Outcome::Missed;
                record.reason = Some(MissedReason::Interrupted);
            }
            records.push(record);
        }
        let deliveries: Vec<NewDelivery> = records.iter().flat_map(outbox).collect();
        let refs: Vec<&CallRecord> = records.iter().collect();
        for chunk in refs.chunks(ROWS) {
            upsert_records(&mut tx, self.backend, chunk).await?;
        }
        for chunk in deliveries.chunks(ROWS) {
            outbox::insert(&mut tx, self.backend, chunk, now).await?;
        }
        tx.commit().await.map_err(query_error("commit"))?;
        Ok(records.len() as u64)
    }

    /// A call's record as ticket rules read it; `None` for an unknown id. A call still in
    /// progress reads as missed at its start.
    pub async fn call_record(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM calls WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read call"))?;
        row.as_ref().map(call_record).transpose()
    }

    /// Recent calls, newest first.
    pub async fn calls(&self, filter: CallFilter) -> Result<Vec<CallRow>, StoreError> {
        let sql = if filter.active {
            "SELECT * FROM calls WHERE ended_at IS NULL ORDER BY started_at DESC LIMIT $1"
        } else {
            "SELECT * FROM calls ORDER BY started_at DESC LIMIT $1"
        };
        let rows = sqlx::query(sql)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list calls"))?;
        rows.iter().map(call_row).collect()
    }

    /// One call's events, in order.
    pub async fn events(&self, call_id: &str) -> Result<Vec<CallEvent>, StoreError> {
        let rows = sqlx::query("SELECT call_id, seq, at, kind, detail FROM call_events WHERE call_id = $1 ORDER BY seq")
            .bind(call_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list call events"))?;
        let e = || query_error("list call events");
        let mut events = Vec::new();
        for row in rows {
            events.push(CallEvent {
                call_id: row.try_get("call_id").map_err(e())?,
                seq: row.try_get::<i64, _>("seq").map_err(e())?.unsigned_abs(),
                at: from_millis(row.try_get("at").map_err(e())?),
                kind: row.try_get("kind").map_err(e())?,
                detail: row.try_get("detail").map_err(e())?,
            });
        }
        Ok(events)
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's bind limits.
const ROWS: usize = 100;

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values; on SQLite `(?, ?), (?, ?)`, the
/// same parameters in the same order. SQLite finds the index of each numbered parameter by
/// scanning the statement's list of them, which made binding a 2,000-value statement quadratic
/// (15% of sipdesk's CPU at 3,000 calls/s); anonymous `?` parameters are bound by position.
fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", row * columns + column + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

async fn insert_starts(
    tx: &mut Tx<'_>,
    backend: Backend,
    starts: &[&CallStart],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO calls (id, sip_call_id, direction, queue, caller, callee, started_at)
         VALUES {} ON CONFLICT (id) DO NOTHING",
        placeholders(backend, starts.len(), 7)
    );
    let mut query = sqlx::query(&sql);
    for start in starts {
        query = query
            .bind(start.id.as_str())
            .bind(start.sip_call_id.as_str())
            .bind(name(&start.direction))
            .bind(start.queue.clone())
            .bind(start.caller.as_str())
            .bind(start.callee.as_str())
            .bind(millis(start.started_at));
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(query_error("save call starts"))?;
    Ok(())
}

async fn insert_events(
    tx: &mut Tx<'_>,
    backend: Backend,
    events: &[&CallEvent],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO call_events (call_id, seq, at, kind, detail) VALUES {}
         ON CONFLICT (call_id, seq) DO NOTHING",
        placeholders(backend, events.len(), 5)
    );
    let mut query = sqlx::query(&sql);
    for event in events {
        query = query
            .bind(event.call_id.as_str())
            .bind(event.seq as i64)
            .bind(millis(event.at))
            .bind(event.kind.as_str())
            .bind(event.detail.as_str());
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(query_error("save call events"))?;
    Ok(())
}

async fn upsert_records(
    tx: &mut Tx<'_>,
    backend: Backend,
    records: &[&CallRecord],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO calls (id, sip_call_id, direction, queue, group_name, groups_json, caller, callee,
             agent, agent_email, started_at, answered_at, ended_at, outcome, reason, ended_by,
             out_of_hours, recording_url, explanation_json, tags_json)
         VALUES {}
         ON CONFLICT (id) DO UPDATE SET
             group_name = excluded.group_name, groups_json = excluded.groups_json,
             agent = excluded.agent, agent_email = excluded.agent_email,
             answered_at = excluded.answered_at, ended_at = excluded.ended_at,
             outcome = excluded.outcome, reason = excluded.reason, ended_by = excluded.ended_by,
             out_of_hours = excluded.out_of_hours, recording_url = excluded.recording_url,
             explanation_json = excluded.explanation_json, tags_json = excluded.tags_json",
        placeholders(backend, records.len(), 20)
    );
    let mut query = sqlx::query(&sql);
    for r in records {
        query = query
            .bind(r.id.as_str())
            .bind(r.sip_call_id.as_str())
            .bind(name(&r.direction))
            .bind(r.queue.clone())
            .bind(r.group.clone())
            .bind(json(&r.groups))
            .bind(r.caller.as_str())
            .bind(r.callee.as_str())
            .bind(r.agent.clone())
            .bind(r.agent_email.clone())
            .bind(millis(r.started_at))
            .bind(r.answered_at.map(millis))
            .bind(millis(r.ended_at))
            .bind(name(&r.outcome))
            .bind(r.reason.map(|x| name(&x)))
            .bind(r.ended_by.map(|x| name(&x)))
            .bind(i32::from(r.out_of_hours))
            .bind(r.recording_url.clone())
            .bind(json(&r.explanation))
            .bind(json(&r.tags));
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(query_error("save call records"))?;
    Ok(())
}

/// An enum stored by its snake_case name.
fn parse_name<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn call_record(row: &AnyRow) -> Result<CallRecord, StoreError> {
    let e = || query_error("read call");
    let text = |name: &str| row.try_get::<Option<String>, _>(name).map_err(e());
    let list = |name: &str| -> Result<Vec<String>, StoreError> {
        Ok(serde_json::from_str(&row.try_get::<String, _>(name).map_err(e())?).unwrap_or_default())
    };
    let started_at = from_millis(row.try_get("started_at").map_err(e())?);
    Ok(CallRecord {
        id: row.try_get("id").map_err(e())?,
        sip_call_id: row.try_get("sip_call_id").map_err(e())?,
        direction: text("direction")?
            .and_then(|d| parse_name(&d))
            .unwrap_or(Direction::Inbound),
        queue: text("queue")?,
        group: text("group_name")?,
        groups: list("groups_json")?,
        caller: row.try_get("caller").map_err(e())?,
        callee: row.try_get("callee").map_err(e())?,
        agent: text("agent")?,
        agent_email: text("agent_email")?,
        started_at,
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")
            .map_err(e())?
            .map(from_millis),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_at")
            .map_err(e())?
            .map_or(started_at, from_millis),
        outcome: text("outcome")?
            .and_then(|o| parse_name(&o))
            .unwrap_or(Outcome::Missed),
        reason: text("reason")?.and_then(|r| parse_name(&r)),
        ended_by: text("ended_by")?.and_then(|b| parse_name(&b)),
        out_of_hours: row.try_get::<i32, _>("out_of_hours").map_err(e())? != 0,
        recording_url: text("recording_url")?,
        explanation: list("explanation_json")?,
        tags: list("tags_json")?,
    })
}

fn call_row(row: &AnyRow) -> Result<CallRow, StoreError> {
    let e = || query_error("read call");
    let explanation: String = row.try_get("explanation_json").map_err(e())?;
    Ok(CallRow {
        id: row.try_get("id").map_err(e())?,
        direction: row.try_get("direction").map_err(e())?,
        queue: row.try_get("queue").map_err(e())?,
        group: row.try_get("group_name").map_err(e())?,
        caller: row.try_get("caller").map_err(e())?,
        callee: row.try_get("callee").map_err(e())?,
        agent: row.try_get("agent").map_err(e())?,
        started_at: from_millis(row.try_get("started_at").map_err(e())?),
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")
            .map_err(e())?
            .map(from_millis),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_at")
            .map_err(e())?
            .map(from_millis),
        outcome: row.try_get("outcome").map_err(e())?,
        reason: row.try_get("reason").map_err(e())?,
        ended_by: row.try_get("ended_by").map_err(e())?,
        explanation: serde_json::from_str(&explanation).unwrap_or_default(),
    })
}
