//! Helpers shared by the black-box tests: databases to test against, and (in [`daemon`]) the
//! real binary and SIPp.
#![allow(dead_code)]

pub(crate) mod calls;
pub(crate) mod daemon;
pub(crate) mod fs;
pub(crate) mod helpscout;
pub(crate) mod intercom;
pub(crate) mod klaviyo;
pub(crate) mod receiver;
pub(crate) mod server;
pub(crate) mod texts;
pub(crate) mod zendesk;

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database: an SQLite file in a temporary directory, or a new PostgreSQL database on
/// the server named by `SIPDESK_TEST_POSTGRES_URL`.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) label: &'static str,
    cleanup: Option<(String, String)>,
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sipdesk-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TestDb {
            url: format!("sqlite://{}/sipdesk.db", dir.display()),
            label: "sqlite",
            cleanup: None,
        }
    }

    /// A new PostgreSQL database, or `None` when `SIPDESK_TEST_POSTGRES_URL` is not set.
    pub(crate) async fn postgres() -> Option<TestDb> {
        let admin = std::env::var("SIPDESK_TEST_POSTGRES_URL").ok()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("sipdesk_test_{}_{n}", std::process::id());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("SIPDESK_TEST_POSTGRES_URL is reachable");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(TestDb {
            url: format!("{base}/{name}"),
            label: "postgres",
            cleanup: Some((admin, name)),
        })
    }

    /// SQLite, and PostgreSQL when configured.
    pub(crate) async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        match TestDb::postgres().await {
            Some(db) => dbs.push(db),
            None => {
                eprintln!("SIPDESK_TEST_POSTGRES_URL is not set: this test runs on SQLite only")
            }
        }
        dbs
    }

    pub(crate) async fn drop_db(self) {
        if let Some((admin, name)) = &self.cleanup {
            if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}
