//! Helpers of the consumer-postgres suite: a PostgreSQL database per test, events and records,
//! and records.

use bxb_consumer::Record;
use bxb_consumer_postgres::{PostgresArgs, PostgresSink};
use bxb_event::Event;
use bxb_tests::databases::TestPostgres;
use sqlx::PgPool;
use uuid::Uuid;

pub const DAY_MS: i64 = 86_400_000;

pub use bxb_tests::kafka::now_ms;

/// A database of its own for one test (see `bxb_tests::databases`), with the sink's settings.
pub struct TestDb {
    pub db: TestPostgres,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let db = TestPostgres::create().await;
        Self { url: db.url.clone(), db }
    }

    pub async fn pool(&self) -> PgPool {
        self.db.pool().await
    }

    pub fn args(&self) -> PostgresArgs {
        PostgresArgs::with_url(&self.url)
    }

    /// A database of its own without any table, for tests of the migrations themselves.
    pub async fn create_empty() -> Self {
        let db = TestPostgres::create_empty().await;
        Self { url: db.url.clone(), db }
    }

    /// A started sink on this database (migrated by [`TestPostgres::create`]): billable
    /// metrics loaded, partitions created ahead.
    pub async fn sink(&self, configure: impl FnOnce(&mut PostgresArgs)) -> PostgresSink {
        let mut args = self.args();
        configure(&mut args);
        PostgresSink::connect(args).await.expect("sink starts")
    }
}

/// A database of its own and a started sink on it for which `api_calls` is billable for every
/// organization.
pub async fn api_calls_sink() -> (TestDb, PgPool, PostgresSink) {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let sink = db.sink(|a| a.billable_codes = vec!["api_calls".into()]).await;
    (db, pool, sink)
}

pub fn event(organization_id: Uuid, transaction_id: &str, code: &str, timestamp_ms: i64) -> Event {
    Event {
        code: code.to_owned(),
        timestamp_ms,
        properties: r#"{"region":"eu-west-1"}"#.into(),
        value: Some(2.5),
        decimal_value: Some("12.000000000345".parse().unwrap()),
        ..bxb_event::test_support::event_of(organization_id, transaction_id)
    }
}

pub fn record(event: Event, offset: i64) -> Record {
    Record {
        event,
        partition: 0,
        offset,
        appended_at_ms: 1_763_900_000_000 + offset,
        screened: None,
        ingested_at_ms: Some(1_763_900_000_000 + offset),
    }
}

/// Makes `code` billable for the organization for every record, past and future.
pub async fn make_billable(pool: &PgPool, organization_id: Uuid, code: &str) {
    sqlx::query("INSERT INTO billable_metrics (organization_id, code, effective_from) VALUES ($1, $2, '-infinity')")
        .bind(organization_id)
        .bind(code)
        .execute(pool)
        .await
        .expect("insert billable metric");
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of one organization as (transaction_id, timestamp ms, kafka_offset), in key order.
pub async fn rows_of(pool: &PgPool, organization_id: Uuid) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT transaction_id, (extract(epoch FROM \"timestamp\") * 1000)::int8, kafka_offset
         FROM events WHERE organization_id = $1 ORDER BY transaction_id, \"timestamp\"",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
    .expect("read events")
}

pub async fn partition_names(pool: &PgPool) -> Vec<String> {
    let mut conn = pool.acquire().await.unwrap();
    bxb_consumer_postgres::partitions::list(&mut conn).await.unwrap().into_iter().map(|p| p.name).collect()
}
