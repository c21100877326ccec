//! Where sipdesk keeps what must survive a restart: calls and their events, round-robin cursors,
//! agent states, the outbox of helpdesk deliveries ([`outbox`]) and the contact directory
//! ([`contacts`]). SQLite is the embedded default; PostgreSQL serves several instances. Both run
//! the same SQL through sqlx's `Any` driver; [`schema`] holds the migrations.
//!
//! The proxy never waits on the database: its changes go through a channel to
//! [`writer::run`], which commits them in batches in the background, each call's final record
//! together with its deliveries.

pub mod contacts;
pub mod holds;
pub mod outbox;
pub mod replies;
mod rows;
mod schema;
pub mod spill;
pub mod tags;
mod write;
pub mod writer;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::call::{
    AgentLeg, AgentSetting, CallEvent, CallRecord, Change, EndedBy, MissedReason, Outcome,
};
use crate::routing::Extension;
use rows::{
    CALL_COLUMNS, ROWS, cached, call_record, call_row, insert_events, insert_starts, placeholders,
    upsert_records,
};
use write::{Conn, Write};

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

impl StoreError {
    /// Whether the database refused the data itself (a value it cannot store, a constraint),
    /// so writing the same rows again can never succeed; other failures (disk full, read-only
    /// file, lost connection, lock) may pass.
    pub fn is_refused_data(&self) -> bool {
        let source = match self {
            StoreError::Query { source, .. } | StoreError::Migrate { source, .. } => source,
            _ => return false,
        };
        let Some(database) = source.as_database_error() else {
            return matches!(
                source,
                sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. }
            );
        };
        if database.kind() != sqlx::error::ErrorKind::Other {
            // Unique, foreign key, not-null or check violation, on either database.
            return true;
        }
        let code = database.code().unwrap_or_default();
        if database
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            // Class 22 (data exception: a value it cannot take), class 23 (integrity).
            code.starts_with("22") || code.starts_with("23")
        } else {
            // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH and their extended codes.
            code.parse::<i32>()
                .is_ok_and(|c| matches!(c & 0xff, 18..=20))
        }
    }
}

impl StoreError {
    /// Whether SQLite found the database's files read-only (SQLITE_READONLY and its extended
    /// codes): a chmod, `chattr +i` or a file system remounted read-only.
    pub fn is_read_only(&self) -> bool {
        match self {
            StoreError::Query { source, .. } => source
                .as_database_error()
                .filter(|e| {
                    e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_none()
                })
                .and_then(|e| e.code())
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| code & 0xff == 8),
            _ => false,
        }
    }
}

/// Text as stored: a NUL character, which PostgreSQL refuses in text and SQLite's C interface
/// cuts strings at, is written as `%00` (as a SIP URI would escape it). Every text that comes
/// from outside (SIP headers, helpdesk answers) is bound through this.
pub(crate) fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "%00"))
    } else {
        Cow::Borrowed(value)
    }
}

fn text_opt(value: &Option<String>) -> Option<String> {
    value.as_deref().map(|v| text(v).into_owned())
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
    /// SQLite: one more connection, outside the pool, that stays open and idle for the store's
    /// life. The first connection to open a WAL database rebuilds its shared-memory index, and
    /// on a full or failing disk writing to that mapping kills the process with SIGBUS; since a
    /// pooled connection that saw an error is closed ([`Store::apply`]), the anchor makes sure
    /// the one that replaces it is never the first.
    _anchor: Option<Arc<std::sync::Mutex<sqlx::AnyConnection>>>,
    /// The instance this store works for, when it claims deliveries and sweeps recordings:
    /// on PostgreSQL, a voicemail's file is on the machine of the instance that recorded it.
    instance: Option<Arc<str>>,
}

/// A call as `sipdesk calls` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallRow {
    pub id: String,
    /// The SIP Call-ID of the caller's leg, as in the PBX's logs.
    pub sip_call_id: String,
    pub direction: String,
    pub queue: Option<String>,
    pub group: Option<String>,
    pub caller: String,
    pub callee: String,
    /// Who held the call last (after any transfer).
    pub agent: Option<String>,
    /// Every agent who held the answered call, with their times.
    pub agents: Vec<AgentLeg>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// `None` while the call is in progress.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub ended_by: Option<String>,
    pub explanation: Vec<String>,
    /// The message the caller left (outcome `voicemail`).
    pub voicemail: Option<crate::call::Voicemail>,
    /// The text, when the row is a text message rather than a call.
    pub sms: Option<crate::call::Text>,
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

/// A duration as stored: whole milliseconds.
fn duration_millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whose open calls [`Store::close_interrupted_on`] closes.
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// Every open call (SQLite: one instance).
    Any,
    /// This instance's, and those without an owner (written before calls had one).
    Mine(&'a str),
    /// A dead instance's (checked again as they are read).
    Dead(&'a str),
}

/// SQL: the call's owner (`calls.instance`) is dead — no row in `instances`, or a heartbeat
/// older than its `dead_after` by the database's clock `now`.
fn dead_owner(now: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = calls.instance
                     AND i.heartbeat_at >= {now} - i.dead_after_ms)"
    )
}

/// The database's clock in milliseconds, as PostgreSQL says it.
const POSTGRES_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The PostgreSQL advisory lock key the migrations run under ("sipdesk" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6970_6465_736b;
/// The advisory lock key under which one instance at a time closes the calls of dead ones.
const TAKEOVER_LOCK: i64 = 0x0073_6970_6465_736c;

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
        // SQLite connections are never closed for age: see `_anchor` and `Write`.
        let lifetime = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(std::time::Duration::from_secs(30 * 60)),
        };
        let options = AnyPoolOptions::new()
            .idle_timeout(lifetime.map(|l| l / 3))
            .max_lifetime(lifetime)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            });
        let options = if backend == Backend::Postgres {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    // A statement waiting on a lock (another session holding a table) gives up
                    // rather than hang: the writer then retries, and says why.
                    sqlx::query("SET lock_timeout = '5s'")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("SET statement_timeout = '30s'")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
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
        let anchor = match backend {
            Backend::Sqlite => {
                let conn = pool
                    .acquire()
                    .await
                    .map_err(|source| StoreError::Connect {
                        url: redact(url),
                        source,
                    })?
                    .detach();
                Some(Arc::new(std::sync::Mutex::new(conn)))
            }
            Backend::Postgres => None,
        };
        let store = Store {
            pool,
            backend,
            _anchor: anchor,
            instance: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The store as `instance` uses it to deliver and sweep: on PostgreSQL, the deliveries of
    /// a voicemail another live instance recorded are left to it (the file is on its
    /// machine), and only this instance's recordings are swept. Once the recorder is dead
    /// any instance delivers (saying the file is gone when it cannot reach it).
    pub fn for_instance(&self, instance: &str) -> Store {
        Store {
            instance: Some(Arc::from(instance)),
            ..self.clone()
        }
    }

    /// SQL that is true unless the call `call_id` (a column) has a voicemail recorded by
    /// another live instance than this store's.
    pub(crate) fn not_anothers_voicemail(&self, call_id: &str) -> String {
        match (&self.instance, self.backend) {
            (Some(me), Backend::Postgres) => format!(
                "NOT EXISTS (SELECT 1 FROM calls vc JOIN instances vi ON vi.id = vc.instance
                   WHERE vc.id = {call_id} AND vc.voicemail_json IS NOT NULL
                     AND vc.instance <> '{}'
                     AND vi.heartbeat_at >= {} - vi.dead_after_ms)",
                me.replace('\'', "''"),
                self.database_now()
            ),
            _ => "1 = 1".to_owned(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Brings the schema up to date. On PostgreSQL the instances starting together take turns
    /// under a session advisory lock, so each migration runs once (two `CREATE TABLE IF NOT
    /// EXISTS` at once can both fail on PostgreSQL's catalog); SQLite's own write lock does the
    /// same for it.
    async fn migrate(&self) -> Result<(), StoreError> {
        let fail = |source| StoreError::Migrate { version: 0, source };
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        if self.backend == Backend::Postgres {
            // Another instance may be running a long migration: wait for it, however long
            // (this connection is closed afterwards, so the pool's timeouts stay as they are).
            for setting in ["SET lock_timeout = 0", "SET statement_timeout = 0"] {
                sqlx::query(setting)
                    .execute(&mut *conn)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_lock($1)) AS l")
                .bind(MIGRATION_LOCK)
                .fetch_one(&mut *conn)
                .await
                .map_err(fail)?;
        }
        let result = self.migrate_on(&mut conn).await;
        if self.backend == Backend::Postgres {
            // Closing the connection would release it too; a pooled one must say so.
            let unlocked =
                sqlx::query("SELECT 1 AS unlocked FROM (SELECT pg_advisory_unlock($1)) AS u")
                    .bind(MIGRATION_LOCK)
                    .fetch_one(&mut *conn)
                    .await;
            // Closed either way: it holds no lock then, and no changed timeouts go back to the
            // pool.
            let _ = unlocked;
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
        result
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS sipdesk_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *conn)
            .await
            .map_err(|source| StoreError::Migrate { version: 0, source })?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM sipdesk_schema")
            .fetch_one(&mut *conn)
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
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(fail)?;
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            if self.backend == Backend::Postgres {
                let whole = schema::POSTGRES_ONLY
                    .iter()
                    .filter(|(v, _)| v == version)
                    .flat_map(|(_, statements)| statements.iter());
                for statement in whole {
                    sqlx::raw_sql(statement)
                        .execute(&mut *tx)
                        .await
                        .map_err(fail)?;
                }
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
    /// costs, not a row). On failure nothing of the batch is written, and the connection is
    /// closed rather than returned to the pool: after a failed COMMIT (disk full) SQLite can
    /// keep the transaction open on it, holding the write lock, and what later "commits" on
    /// that connection would only be nested in the dead transaction and lost.
    pub async fn apply(
        &self,
        changes: &[Change],
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let result = self.apply_on(write.conn(), changes, deliveries).await;
        write.end(result).await
    }

    async fn apply_on(
        &self,
        conn: &mut Conn,
        changes: &[Change],
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut starts = Vec::new();
        let mut events = Vec::new();
        let mut ends = Vec::new();
        let mut answers = Vec::new();
        let mut cursors: Vec<(&str, &str)> = Vec::new();
        let mut agents: Vec<&AgentSetting> = Vec::new();
        for change in changes {
            match change {
                Change::CallStarted(start) => starts.push(start),
                Change::Event(event) => events.push(event),
                Change::CallEnded(record) => ends.push(record.as_ref()),
                Change::Answered {
                    id,
                    at,
                    agent,
                    agent_email,
                } => answers.push((id, *at, agent, agent_email)),
                Change::Cursor { group, extension } => {
                    // The last position of each group wins; one row per group per statement.
                    cursors.retain(|(g, _)| g != group);
                    cursors.push((group, extension));
                }
                Change::Agent(setting) => {
                    agents.retain(|a| a.extension != setting.extension);
                    agents.push(setting);
                }
            }
        }
        for chunk in starts.chunks(ROWS) {
            insert_starts(conn, self.backend, chunk).await?;
        }
        for chunk in events.chunks(ROWS) {
            insert_events(conn, self.backend, chunk).await?;
        }
        for chunk in answers.chunks(ROWS) {
            // A call that ended in the same batch keeps its final record.
            let sql = format!(
                "WITH v (id, at, agent, email) AS (VALUES {})
                 UPDATE calls SET answered_at = v.at, agent = v.agent, agent_email = v.email
                 FROM v WHERE calls.id = v.id AND calls.ended_at IS NULL",
                placeholders(self.backend, chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql).persistent(cached(chunk.len()));
            for (id, at, agent, email) in chunk {
                query = query
                    .bind(id.as_str())
                    .bind(millis(*at))
                    .bind(agent.as_deref().map(|a| text(a).into_owned()))
                    .bind(email.as_deref().map(|e| text(e).into_owned()));
            }
            query
                .execute(&mut *conn)
                .await
                .map_err(query_error("save answers"))?;
        }
        for chunk in ends.chunks(ROWS) {
            upsert_records(conn, self.backend, chunk).await?;
        }
        let now = Timestamp::now();
        for chunk in deliveries.chunks(ROWS) {
            outbox::insert(conn, self.backend, chunk, now).await?;
        }
        if !cursors.is_empty() {
            let now = millis(Timestamp::now());
            let sql = format!(
                "INSERT INTO cursors (group_name, extension, updated_at) VALUES {}
                 ON CONFLICT (group_name) DO UPDATE SET extension = excluded.extension, updated_at = excluded.updated_at",
                placeholders(self.backend, cursors.len(), 3)
            );
            let mut query = sqlx::query(&sql).persistent(cached(cursors.len()));
            for (group, extension) in &cursors {
                query = query
                    .bind(text(group).into_owned())
                    .bind(text(extension).into_owned())
                    .bind(now);
            }
            query
                .execute(&mut *conn)
                .await
                .map_err(query_error("save cursors"))?;
        }
        for setting in agents {
            agent_state_query(setting)
                .execute(&mut *conn)
                .await
                .map_err(query_error("save agent state"))?;
        }
        Ok(())
    }

    /// Keeps changes the database refused (see [`StoreError::is_refused_data`]) as dead
    /// records, with the reason, so they are not lost and do not hold back the others.
    pub async fn save_dead(&self, changes: &[Change], reason: &str) -> Result<(), StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let now = millis(Timestamp::now());
        let mut result = Ok(());
        for change in changes {
            let (kind, call_id) = change.describe();
            // JSON escapes every control character, so the payload itself is always storable.
            let payload = serde_json::to_string(change).unwrap_or_default();
            // The same change refused twice (a retried batch) is kept once.
            let id = format!("{kind}:{:016x}", fnv1a(payload.as_bytes()));
            result = sqlx::query(
                "INSERT INTO dead_records (id, recorded_at, kind, call_id, reason, payload) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(now)
            .bind(kind)
            .bind(text(call_id).into_owned())
            .bind(text(reason).into_owned())
            .bind(payload)
            .execute(write.conn())
            .await
            .map(|_| ())
            .map_err(query_error("save dead records"));
            if result.is_err() {
                break;
            }
        }
        write.end(result).await
    }

    /// How many records the database refused, kept as dead records.
    pub async fn dead_records(&self) -> Result<Vec<DeadRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT recorded_at, kind, call_id, reason, payload FROM dead_records ORDER BY recorded_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read dead records"))?;
        let e = || query_error("read dead records");
        rows.iter()
            .map(|row| {
                Ok(DeadRecord {
                    recorded_at: from_millis(row.try_get("recorded_at").map_err(e())?),
                    kind: row.try_get("kind").map_err(e())?,
                    call_id: row.try_get("call_id").map_err(e())?,
                    reason: row.try_get("reason").map_err(e())?,
                    payload: row.try_get("payload").map_err(e())?,
                })
            })
            .collect()
    }

    /// Proves the database can be written now: a transaction that updates one row. sipdesk
    /// reports ready only after this succeeds, so a service user that cannot write its
    /// database fails at start with the reason instead of losing every call record.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let result = sqlx::query(
            "INSERT INTO write_check (id, checked_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(millis(Timestamp::now()))
        .execute(write.conn())
        .await
        .map(|_| ())
        .map_err(query_error("write check"));
        write.end(result).await
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

    /// Every agent state set by an agent or supervisor, by extension.
    pub async fn agent_states(&self) -> Result<Vec<AgentSetting>, StoreError> {
        let rows = sqlx::query(
            "SELECT extension, state, reason, updated_at FROM agent_states ORDER BY extension",
        )
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
            let reason: Option<String> = row
                .try_get("reason")
                .map_err(query_error("read agent states"))?;
            let at: i64 = row
                .try_get("updated_at")
                .map_err(query_error("read agent states"))?;
            states.push(AgentSetting {
                extension,
                away: state == "away",
                reason,
                at: Timestamp::from_millisecond(at).unwrap_or_default(),
            });
        }
        Ok(states)
    }

    /// Records an agent as away or available, at once (the daemon's own changes go through the
    /// store writer as [`Change::Agent`]).
    pub async fn set_agent_state(&self, setting: &AgentSetting) -> Result<(), StoreError> {
        self.execute_write("save agent state", agent_state_query(setting))
            .await?;
        Ok(())
    }

    /// Closes calls a previous run of `instance` left in progress (crash, kill -9): answered
    /// ones as ended when sipdesk stopped, unanswered ones as missed (interrupted), each with
    /// the deliveries `outbox` gives it, in one transaction. Returns their SIP Call-IDs. On
    /// PostgreSQL only this instance's calls (and calls written before calls had an owner) are
    /// closed, under the takeover lock (a survivor may be closing them at the same moment):
    /// other instances' calls are theirs. SQLite serves one instance, so every open call is its
    /// own (whatever the instance was called when it took it).
    pub async fn close_interrupted(
        &self,
        now: Timestamp,
        instance: &str,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    ) -> Result<Vec<String>, StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let owner = match self.backend {
            Backend::Sqlite => Owner::Any,
            Backend::Postgres => Owner::Mine(instance),
        };
        let result = async {
            if self.backend == Backend::Postgres {
                // Waits for a takeover in progress, however long it takes.
                sqlx::query("SET LOCAL lock_timeout = 0")
                    .execute(&mut *write.conn())
                    .await
                    .map_err(query_error("close interrupted calls"))?;
                sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                    .bind(TAKEOVER_LOCK)
                    .fetch_one(&mut *write.conn())
                    .await
                    .map_err(query_error("close interrupted calls"))?;
                // The agents the previous run held are free: none of its calls go on here.
                sqlx::query("DELETE FROM agent_holds WHERE instance = $1")
                    .bind(instance.to_owned())
                    .execute(&mut *write.conn())
                    .await
                    .map_err(query_error("close interrupted calls"))?;
            }
            self.close_interrupted_on(write.conn(), now, owner, outbox)
                .await
        }
        .await;
        write.end(result).await
    }

    /// The database's clock in milliseconds, as SQL: every instance's heartbeat is written and
    /// judged by the one clock they share, whatever their hosts' clocks say.
    fn database_now(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => POSTGRES_NOW,
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// This process takes the name `instance` (`[cluster]`), with its own random `token`: its
    /// row in `instances`, heartbeat now. Refused (`false`) while another process holding the
    /// name is alive (its heartbeat younger than its `dead_after`): two instances with one
    /// name would close each other's calls.
    pub async fn join_cluster(
        &self,
        instance: &str,
        token: &str,
        dead_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = self.database_now();
        let sql = format!(
            "INSERT INTO instances (id, token, started_at, heartbeat_at, dead_after_ms)
             VALUES ($1, $2, {now}, {now}, $3)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token,
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                 dead_after_ms = excluded.dead_after_ms
             WHERE instances.token = excluded.token
                OR instances.heartbeat_at < excluded.heartbeat_at - instances.dead_after_ms"
        );
        let done = self
            .execute_write(
                "join the cluster",
                sqlx::query(&sql)
                    .bind(instance.to_owned())
                    .bind(token.to_owned())
                    .bind(duration_millis(dead_after)),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The token of the process holding `instance`'s name, if any.
    pub async fn cluster_holder(&self, instance: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT token FROM instances WHERE id = $1")
            .bind(instance.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read the instance"))?;
        row.map(|r| r.try_get::<String, _>("token"))
            .transpose()
            .map_err(query_error("read the instance"))
    }

    /// Takes `instance`'s name from the process whose token is `from` (known to be gone).
    pub async fn take_cluster_name(
        &self,
        instance: &str,
        from: &str,
        token: &str,
        dead_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE instances SET token = $3, started_at = {now}, heartbeat_at = {now},
                 dead_after_ms = $4
             WHERE id = $1 AND token = $2",
            now = self.database_now()
        );
        let done = self
            .execute_write(
                "join the cluster",
                sqlx::query(&sql)
                    .bind(instance.to_owned())
                    .bind(from.to_owned())
                    .bind(token.to_owned())
                    .bind(duration_millis(dead_after)),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// This process stops: its name is free at once (a call it leaves in progress is then
    /// any live instance's to close).
    pub async fn leave_cluster(&self, instance: &str, token: &str) -> Result<(), StoreError> {
        self.free_holds(instance).await?;
        self.execute_write(
            "leave the cluster",
            sqlx::query("DELETE FROM instances WHERE id = $1 AND token = $2")
                .bind(instance.to_owned())
                .bind(token.to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Says this instance is alive. `false`: its row is another process's now (it was taken
    /// for dead, its calls closed, and the name taken again).
    pub async fn heartbeat(
        &self,
        instance: &str,
        token: &str,
        dead_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // dead_after too: a reload may have changed it, and others judge by the row's.
        let sql = format!(
            "UPDATE instances SET heartbeat_at = {}, dead_after_ms = $3 WHERE id = $1 AND token = $2",
            self.database_now()
        );
        let done = self
            .execute_write(
                "write the instance heartbeat",
                sqlx::query(&sql)
                    .bind(instance.to_owned())
                    .bind(token.to_owned())
                    .bind(duration_millis(dead_after)),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Closes the open calls of instances whose heartbeat is older than their `dead_after`
    /// (by the database's clock), or that have no row, as [`Store::close_interrupted`] does for
    /// a restart, and forgets those instances. One instance at a time does it (an advisory lock
    /// on PostgreSQL; one that finds it taken does nothing this time), so two survivors never
    /// close, or report, a call twice; each call's owner is checked again as it is closed, so
    /// an instance that came back in between keeps its calls. Returns the dead instances and
    /// the SIP Call-IDs of the calls closed.
    pub async fn take_over_dead(
        &self,
        me: &str,
        now: Timestamp,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut write = Write::begin(&self.pool, self.backend).await?;
        let result = self.take_over_on(write.conn(), me, now, outbox).await;
        write.end(result).await
    }

    async fn take_over_on(
        &self,
        conn: &mut Conn,
        me: &str,
        now: Timestamp,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let failed = || query_error("take over dead instances");
        if self.backend == Backend::Postgres {
            let got: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS got")
                .bind(TAKEOVER_LOCK)
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| row.try_get("got"))
                .map_err(failed())?;
            if !got {
                return Ok((Vec::new(), Vec::new()));
            }
        }
        // The stale rows go first, row-locked: an owner's heartbeat racing this waits, then
        // finds no row and learns it was taken for dead. Then the calls of every owner without
        // a live row (those just removed, and any that never wrote one) are closed, each owner
        // checked again row by row (it may have joined again meanwhile).
        let sql = format!(
            "DELETE FROM instances WHERE id <> $1 AND heartbeat_at < {} - dead_after_ms RETURNING id",
            self.database_now()
        );
        sqlx::query(&sql)
            .bind(me.to_owned())
            .fetch_all(&mut *conn)
            .await
            .map_err(failed())?;
        // Their agents are free (and those of any instance that left without freeing them).
        if self.backend == Backend::Postgres {
            sqlx::query(
                "DELETE FROM agent_holds WHERE instance <> $1
                   AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = agent_holds.instance)",
            )
            .bind(me.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(failed())?;
        }
        let sql = format!(
            "SELECT DISTINCT instance FROM calls
             WHERE ended_at IS NULL AND instance IS NOT NULL AND instance <> '' AND instance <> $1
               AND {}",
            dead_owner(self.database_now())
        );
        let rows = sqlx::query(&sql)
            .bind(me.to_owned())
            .fetch_all(&mut *conn)
            .await
            .map_err(failed())?;
        let mut dead = Vec::new();
        let mut closed = Vec::new();
        for row in &rows {
            let instance: String = row.try_get("instance").map_err(failed())?;
            let theirs = self
                .close_interrupted_on(conn, now, Owner::Dead(&instance), outbox)
                .await?;
            if !theirs.is_empty() {
                dead.push(instance);
                closed.extend(theirs);
            }
        }
        Ok((dead, closed))
    }

    async fn close_interrupted_on(
        &self,
        conn: &mut Conn,
        now: Timestamp,
        owner: Owner<'_>,
        outbox: &(dyn Fn(&CallRecord) -> Vec<NewDelivery> + Sync),
    ) -> Result<Vec<String>, StoreError> {
        let (filter, instance) = match owner {
            Owner::Any => ("", None),
            Owner::Mine(me) => (
                " AND (instance = $1 OR instance IS NULL OR instance = '')",
                Some(me),
            ),
            Owner::Dead(other) => (" AND instance = $1", Some(other)),
        };
        // A dead owner is checked again row by row: it may have come back since.
        let dead_check = match owner {
            Owner::Dead(_) => format!(" AND {}", dead_owner(self.database_now())),
            _ => String::new(),
        };
        let sql =
            format!("SELECT {CALL_COLUMNS} FROM calls WHERE ended_at IS NULL{filter}{dead_check}");
        let mut query = sqlx::query(&sql);
        if let Some(instance) = instance {
            query = query.bind(instance.to_owned());
        }
        let rows = query
            .fetch_all(&mut *conn)
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
            upsert_records(conn, self.backend, chunk).await?;
        }
        for chunk in deliveries.chunks(ROWS) {
            outbox::insert(conn, self.backend, chunk, now).await?;
        }
        Ok(records.into_iter().map(|r| r.sip_call_id).collect())
    }

    /// A call's record as ticket rules read it; `None` for an unknown id. A call still in
    /// progress reads as missed at its start.
    pub async fn call_record(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.call_by_id(id)
            .await?
            .as_ref()
            .map(call_record)
            .transpose()
    }

    /// Up to `limit` calls that ended before `before` with a voicemail whose file retention has
    /// not removed yet ([`Store::voicemail_removed`]), oldest first, after the call `after`
    /// (`(ended_at, id)` of the last one of the previous batch): what retention looks at, a batch
    /// at a time.
    pub async fn voicemails_before(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, &str)>,
        limit: u32,
    ) -> Result<Vec<(String, Timestamp, crate::call::Voicemail)>, StoreError> {
        let (after_end, after_id) = match after {
            Some((at, id)) => (millis(at), id),
            None => (i64::MIN, ""),
        };
        // On PostgreSQL only this instance's recordings: the others' are on their machines.
        let mine = match (&self.instance, self.backend) {
            (Some(me), Backend::Postgres) => format!(
                " AND (instance IS NULL OR instance = '' OR instance = '{}')",
                me.replace('\'', "''")
            ),
            _ => String::new(),
        };
        let sql = format!(
            "SELECT id, ended_at, voicemail_json FROM calls \
             WHERE voicemail_json IS NOT NULL AND voicemail_removed_at IS NULL AND ended_at < $1 \
             AND (ended_at > $2 OR (ended_at = $2 AND id > $3)){mine} \
             ORDER BY ended_at, id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(millis(before))
            .bind(after_end)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list voicemails"))?;
        let e = || query_error("list voicemails");
        let mut found = Vec::new();
        for row in rows {
            let id: String = row.try_get("id").map_err(e())?;
            let ended_at: i64 = row.try_get("ended_at").map_err(e())?;
            let json: Option<String> = row.try_get("voicemail_json").map_err(e())?;
            let ended_at = Timestamp::from_millisecond(ended_at).unwrap_or(Timestamp::MIN);
            match json.and_then(|j| serde_json::from_str(&j).ok()) {
                Some(voicemail) => found.push((id, ended_at, voicemail)),
                // Unreadable: nothing to remove, and never worth reading again.
                None => self.voicemail_removed(&id, Timestamp::now()).await?,
            }
        }
        Ok(found)
    }

    /// Records that a call's recording is gone (removed by retention, or found missing), so
    /// retention does not read the call again.
    pub async fn voicemail_removed(&self, call_id: &str, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE calls SET voicemail_removed_at = $1 WHERE id = $2")
            .bind(millis(at))
            .bind(call_id)
            .execute(&self.pool)
            .await
            .map_err(query_error("mark a voicemail removed"))?;
        Ok(())
    }

    /// The row of one call; `None` for an unknown id.
    async fn call_by_id(&self, id: &str) -> Result<Option<sqlx::any::AnyRow>, StoreError> {
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read call"))
    }

    /// Recent calls, newest first.
    pub async fn calls(&self, filter: CallFilter) -> Result<Vec<CallRow>, StoreError> {
        let only_active = if filter.active {
            "WHERE ended_at IS NULL "
        } else {
            ""
        };
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls {only_active}ORDER BY started_at DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list calls"))?;
        rows.iter().map(call_row).collect()
    }

    /// One call as listed; `None` for an unknown id.
    pub async fn call(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        self.call_by_id(id)
            .await?
            .as_ref()
            .map(call_row)
            .transpose()
    }

    /// Inbound calls that started at or after `since`, oldest first (today's figures).
    pub async fn inbound_calls_since(&self, since: Timestamp) -> Result<Vec<CallRow>, StoreError> {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE started_at >= $1 AND direction = 'inbound' AND sms_json IS NULL \
             ORDER BY started_at"
        );
        let rows = sqlx::query(&sql)
            .bind(millis(since))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list today's calls"))?;
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

/// FNV-1a, 64 bits: a stable digest (the same in every process and version).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A change the database refused, as kept in `dead_records`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadRecord {
    pub recorded_at: Timestamp,
    /// `call_started`, `event`, `call_ended` or `cursor`.
    pub kind: String,
    pub call_id: String,
    /// What the database said.
    pub reason: String,
    /// The change as JSON.
    pub payload: String,
}

/// The statement that saves one agent state.
fn agent_state_query(
    setting: &AgentSetting,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO agent_states (extension, state, reason, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (extension) DO UPDATE SET state = excluded.state, reason = excluded.reason,
         updated_at = excluded.updated_at",
    )
    .bind(setting.extension.as_str())
    .bind(if setting.away { "away" } else { "available" })
    .bind(setting.reason.as_deref())
    .bind(millis(setting.at))
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
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
