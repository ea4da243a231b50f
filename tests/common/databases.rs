//! A PostgreSQL database and a ClickHouse database of its own for one test, dropped when the
//! test ends, pass or fail, so migrations, partitions and tables never meet another test's.
//! Their schemas are applied by `bxbctl migrate`'s own code (`bxb_ctl::migrate`), the one
//! entry point a deployment runs too.

use sqlx::{Connection, PgConnection, PgPool};

use crate::{clickhouse_url, postgres_url, unique};

/// Runs `work` to completion on a runtime of its own: Drop may run inside the test's runtime,
/// which cannot block on a future.
fn block_on_own_runtime<F: std::future::Future<Output = ()> + Send + 'static>(work: F) {
    let worker = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(work);
        }
    });
    let _ = worker.join();
}

pub struct TestPostgres {
    pub name: String,
    pub url: String,
}

impl TestPostgres {
    /// A new database with every migration applied.
    pub async fn create() -> Self {
        let db = Self::create_empty().await;
        bxb_ctl::migrate::postgres(&db.url).await.expect("bxbctl migrate: PostgreSQL");
        db
    }

    /// A new database without any table (what a deployment has before `bxbctl migrate`).
    pub async fn create_empty() -> Self {
        let name = unique("bxb_pg");
        let mut admin = PgConnection::connect(&postgres_url()).await.expect("connect to the shared database");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        let base = postgres_url();
        let (server, _) = base.rsplit_once('/').expect("URL ends in a database name");
        Self { url: format!("{server}/{name}"), name }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.expect("connect to the test database")
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        block_on_own_runtime(async move {
            if let Ok(mut admin) = PgConnection::connect(&postgres_url()).await {
                let _ = sqlx::query(&sql).execute(&mut admin).await;
            }
        });
    }
}

pub struct TestClickHouse {
    pub database: String,
}

impl TestClickHouse {
    /// A name for the database, which does not exist yet (consumer-clickhouse creates it at
    /// start when it migrates on start).
    pub fn new() -> Self {
        Self { database: unique("bxb_ch") }
    }

    /// A new database with `events_raw`, created by `bxbctl migrate`'s code.
    pub async fn create() -> Self {
        let db = Self::new();
        bxb_ctl::migrate::clickhouse(&db.args()).await.expect("bxbctl migrate: ClickHouse");
        db
    }

    /// The consumer's settings for this database.
    pub fn args(&self) -> bxb_consumer_clickhouse::ClickHouseArgs {
        bxb_consumer_clickhouse::ClickHouseArgs::new(clickhouse_url(), &self.database)
    }

    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(clickhouse_url()).with_validation(false).with_database(&self.database)
    }
}

impl Default for TestClickHouse {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestClickHouse {
    fn drop(&mut self) {
        let client = clickhouse::Client::default().with_url(clickhouse_url()).with_validation(false);
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.database);
        block_on_own_runtime(async move {
            let _ = client.query(&sql).execute().await;
        });
    }
}
