//! Agents held by instances sharing one PostgreSQL database (`agent_holds`): claimed before a
//! call rings them, told as they are freed or go into wrap-up, read whole when an instance
//! starts listening, freed with an instance that stops or dies. The claim itself is the
//! `sipdesk_claim` function ([`super::schema`]); every change is notified by triggers. Times
//! are the database's clock, so instances on hosts whose clocks differ still agree.
//!
//! SQLite serves one instance: nothing here is used on it.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::Row;

use super::{POSTGRES_NOW, Store, StoreError, duration_millis, query_error};
use crate::proxy::{Claim, Hold};

/// What an instance holds of an agent, told: busy (`$5` NULL) or in wrap-up for `$5`
/// milliseconds more, by the database's clock.
static HOLD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO agent_holds AS h (extension, instance, call_id, state, version, since, until)
         VALUES ($1, $2, NULL, $3, $4, {POSTGRES_NOW}, {POSTGRES_NOW} + $5)
         ON CONFLICT (extension) DO UPDATE SET instance = excluded.instance,
             state = excluded.state, version = excluded.version, since = excluded.since,
             until = excluded.until,
             call_id = CASE WHEN h.instance = excluded.instance THEN h.call_id END
         WHERE (h.instance = excluded.instance AND h.version < excluded.version)
            OR (h.until IS NOT NULL AND h.until <= excluded.since)"
    )
});

/// One hold as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub extension: String,
    pub instance: String,
    pub hold: Hold,
}

/// One instance's claims, or its holds, on a connection of their own, kept open: a pooled
/// connection is pinged each time it is handed out, which would make every claim two round
/// trips instead of one. A PostgreSQL connection, not the store's `Any` one, so the agents go
/// as arrays; and one that does not wait for its commits to reach the disk: holds and cursors
/// are soft state (after a crash of the server the instances tell their holds again), and a
/// claim waiting for a disk flush would hold every call queued behind it.
pub struct AgentsLink {
    url: String,
    conn: Option<sqlx::PgConnection>,
}

impl AgentsLink {
    pub fn new(url: &str) -> AgentsLink {
        AgentsLink {
            url: url.to_owned(),
            conn: None,
        }
    }

    /// The connection, made when there is none. Its settings go with the connection's
    /// start-up, not as statements of their own (round trips the claim would wait for): a
    /// statement waiting on a lock gives up rather than hang, as on the store's pool, and
    /// commits do not wait for the disk.
    async fn conn(&mut self) -> Result<&mut sqlx::PgConnection, StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)
                    .map_err(query_error("connect to share agents"))?
                    .options([
                        ("lock_timeout", "5s"),
                        ("statement_timeout", "30s"),
                        ("synchronous_commit", "off"),
                    ]);
                <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                    .await
                    .map_err(query_error("connect to share agents"))?
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Claims the next agent of `claim`'s group for `instance`: the agent held, or `None`
    /// when nobody of the group is free. One round trip (and a connection first, when the
    /// last one failed).
    pub async fn claim(
        &mut self,
        instance: &str,
        claim: &Claim,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        let result = sqlx::query("SELECT sipdesk_claim($1, $2, $3, $4, $5, $6) AS agent")
            .bind(claim.group.as_str())
            .bind(&claim.agents[..])
            .bind(&claim.skip[..])
            .bind(instance)
            .bind(claim.call_id.as_str())
            .bind(version(claim.version))
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get::<Option<String>, _>("agent"));
        self.ended(result).map_err(query_error("claim an agent"))
    }

    /// Tells what `instance` holds of an agent now. A hold older (by `version`) than what the
    /// row says is ignored; a release (`Free`) frees the hold of its version or an older one,
    /// never a newer claim. Another instance's hold is never touched: only a wrap-up that is
    /// over gives way.
    pub async fn tell(
        &mut self,
        instance: &str,
        extension: &str,
        hold: Hold,
        version: u64,
    ) -> Result<(), StoreError> {
        let (state, left) = match hold {
            Hold::Free => ("", None),
            Hold::Busy => ("busy", None),
            Hold::WrapUp(left) => ("wrap_up", Some(duration_millis(left))),
        };
        let conn = self.conn().await?;
        let result = if hold == Hold::Free {
            sqlx::query(
                "DELETE FROM agent_holds WHERE extension = $1 AND instance = $2 AND version <= $3",
            )
            .bind(extension)
            .bind(instance)
            .bind(self::version(version))
            .execute(&mut *conn)
            .await
        } else {
            sqlx::query(HOLD.as_str())
                .bind(extension)
                .bind(instance)
                .bind(state)
                .bind(self::version(version))
                .bind(left)
                .execute(&mut *conn)
                .await
        }
        .map(|_| ());
        self.ended(result)
            .map_err(query_error("tell an agent's hold"))
    }

    /// A statement's result; a connection that failed is made afresh next time (the server
    /// may have gone, or the session be broken).
    fn ended<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Forgets the connection (one that timed out may be in any state).
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

impl Store {
    /// Every hold, wrap-ups with the time they have left (those over are left out).
    pub async fn holds(&self) -> Result<Vec<HoldRow>, StoreError> {
        let sql = format!(
            "SELECT extension, instance, state, until - {now} AS left_ms FROM agent_holds
             WHERE until IS NULL OR until > {now}",
            now = self.database_now()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read agent holds"))?;
        let failed = || query_error("read agent holds");
        let mut holds = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get("state").map_err(failed())?;
            let left: Option<i64> = row.try_get("left_ms").map_err(failed())?;
            holds.push(HoldRow {
                extension: row.try_get("extension").map_err(failed())?,
                instance: row.try_get("instance").map_err(failed())?,
                hold: read_hold(&state, left),
            });
        }
        Ok(holds)
    }

    /// Undoes a claim whose answer was lost (it timed out, or the connection broke): the
    /// agent it may have held is free again, unless a later change of this instance holds them.
    pub async fn drop_claim(&self, instance: &str, claim: &Claim) -> Result<(), StoreError> {
        self.execute_write(
            "undo a claim",
            sqlx::query(
                "DELETE FROM agent_holds WHERE instance = $1 AND call_id = $2 AND version = $3",
            )
            .bind(instance.to_owned())
            .bind(claim.call_id.clone())
            .bind(version(claim.version)),
        )
        .await?;
        Ok(())
    }

    /// Frees every agent `instance` holds (it starts again, or stops).
    pub async fn free_holds(&self, instance: &str) -> Result<u64, StoreError> {
        let done = self
            .execute_write(
                "free the instance's agents",
                sqlx::query("DELETE FROM agent_holds WHERE instance = $1")
                    .bind(instance.to_owned()),
            )
            .await?;
        Ok(done.rows_affected())
    }
}

/// A hold's state as stored or notified: `busy`, `wrap_up` (with the milliseconds left) or
/// `free`.
pub fn read_hold(state: &str, left_ms: Option<i64>) -> Hold {
    match (state, left_ms) {
        ("busy", _) => Hold::Busy,
        ("wrap_up", Some(left)) if left > 0 => {
            Hold::WrapUp(Duration::from_millis(left.unsigned_abs()))
        }
        _ => Hold::Free,
    }
}

/// A version as stored (BIGINT); versions start from the wall clock in microseconds, far
/// below its limit.
fn version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}
