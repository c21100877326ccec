//! Writing to the store safely: a transaction on one pooled connection that always ends in
//! COMMIT or ROLLBACK ([`Write`]), and single statements that write ([`Store::execute_write`]).
//! Both make sure a connection that failed cannot poison later writes.

use sqlx::AnyPool;
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::query::Query;

use super::{Backend, Store, StoreError, query_error};

pub(super) type Conn = sqlx::AnyConnection;

/// A write transaction on one pooled connection, begun and ended with plain statements rather
/// than sqlx's transaction object: after a COMMIT that failed (disk full, read-only file) the
/// latter could leave SQLite's transaction open on the connection, holding the write lock, and
/// every later "commit" on it nested in the dead transaction and lost — what sipdesk saw as
/// records written were gone at the next start. Here a failure always ends in ROLLBACK. The
/// connection is then closed, rather than returned to the pool, when the ROLLBACK failed too or
/// SQLite found its files read-only (such a connection stays read-only until reopened). It is
/// kept otherwise: on a full disk, the connection that replaced a closed one had to rebuild the
/// shared-memory WAL index and died of SIGBUS writing to it.
pub(super) struct Write {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Write {
    pub(super) async fn begin(pool: &AnyPool, backend: Backend) -> Result<Write, StoreError> {
        let mut conn = pool.acquire().await.map_err(query_error("connect"))?;
        // SQLite: take the write lock now, not when the first statement writes, so a busy
        // database is waited for (busy_timeout) instead of failing the transaction half-way.
        let begin = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let result = sqlx::query(begin).execute(&mut *conn).await;
        let mut write = Write { conn: Some(conn) };
        match result {
            Ok(_) => Ok(write),
            Err(source) => {
                let error = StoreError::Query {
                    what: "begin",
                    source,
                };
                write.roll_back(error.is_read_only()).await;
                Err(error)
            }
        }
    }

    pub(super) fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_deref_mut()
            .expect("a write's connection is there until it ends")
    }

    /// Commits when `result` is `Ok`, else rolls back; either way returns the outcome.
    pub(super) async fn end<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let value = match result {
            Ok(value) => value,
            Err(error) => {
                self.roll_back(error.is_read_only()).await;
                return Err(error);
            }
        };
        match sqlx::query("COMMIT").execute(self.conn()).await {
            Ok(_) => {
                self.conn = None;
                Ok(value)
            }
            Err(source) => {
                let error = StoreError::Query {
                    what: "commit",
                    source,
                };
                self.roll_back(error.is_read_only()).await;
                Err(error)
            }
        }
    }

    /// Rolls back (SQLite may have done so already by itself), and closes the connection when
    /// it cannot serve again.
    async fn roll_back(&mut self, read_only: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let rolled_back = match sqlx::query("ROLLBACK").execute(&mut *conn).await {
            Ok(_) => true,
            Err(e) => e.to_string().contains("no transaction is active"),
        };
        if !rolled_back || read_only {
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
    }
}

impl Drop for Write {
    /// A write abandoned half-way (its future dropped) never returns its open transaction to
    /// the pool: the connection is closed, which rolls it back.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Store {
    /// Runs one statement that writes, outside a transaction. A connection on which SQLite
    /// found the database read-only is closed instead of going back to the pool: it would stay
    /// read-only, and every write given to it fail, long after the fault was repaired.
    pub(super) async fn execute_write<'q>(
        &self,
        what: &'static str,
        query: Query<'q, sqlx::Any, AnyArguments<'q>>,
    ) -> Result<AnyQueryResult, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(query_error("connect"))?;
        let result = query.execute(&mut *conn).await.map_err(query_error(what));
        if result.as_ref().is_err_and(StoreError::is_read_only) {
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
        result
    }

    /// Like [`Store::execute_write`], for a statement that writes and returns rows.
    pub(super) async fn fetch_write<'q>(
        &self,
        what: &'static str,
        query: Query<'q, sqlx::Any, AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(query_error("connect"))?;
        let result = query.fetch_all(&mut *conn).await.map_err(query_error(what));
        if result.as_ref().is_err_and(StoreError::is_read_only) {
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
        result
    }
}
