//! The schema: applied by `bxbctl migrate` (or by the consumer itself when it migrates on
//! start), only checked when the consumer must not change it.

use bxb_consumer_postgres::{Config, Error, PostgresSink, SetupError};
use bxb_tests::{consumer_args, unique};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TABLES: &str =
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('events', 'event_keys', 'billable_metrics', 'api_keys')";

#[tokio::test]
async fn migrations_apply_once_and_again_without_change() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create_empty().await;
    let applied = bxb_ctl::migrate::postgres(&db.url).await.unwrap();
    assert!(applied.len() >= 3 && applied.iter().any(|m| m.contains("gateway api keys")), "{applied:?}");
    assert_eq!(bxb_ctl::migrate::postgres(&db.url).await.unwrap(), Vec::<String>::new(), "nothing left to apply");
    // What the consumer runs at start with BXB_MIGRATE_ON_START=true: the same migrations.
    bxb_consumer_postgres::schema::migrate(&db.args()).await.unwrap();
    let pool = db.pool().await;
    assert_eq!(scalar(&pool, TABLES).await, 4);
    let brin = scalar(&pool, "SELECT count(*) FROM pg_indexes WHERE tablename = 'events' AND indexdef LIKE '%USING brin%'").await;
    assert_eq!(brin, 1);
}

#[tokio::test]
async fn without_migrating_on_start_an_unmigrated_database_is_refused_and_left_alone() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create_empty().await;
    // The schema is checked before Kafka is contacted: these topics need not exist.
    let mut consumer = consumer_args(&unique("never_read"), &unique("never_read_dlq"), &unique("bxb-postgres"));
    consumer.migrate_on_start = false;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = bxb_consumer_postgres::run(Config::new(consumer, db.args()), listener, CancellationToken::new()).await;
    let error = outcome.expect_err("an unmigrated database must not be consumed into");
    assert!(matches!(error, Error::Setup(SetupError::NotMigrated(_))), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("is not applied") && message.contains("bxbctl migrate"), "{message}");
    let pool = db.pool().await;
    assert_eq!(scalar(&pool, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").await, 0, "checking changes nothing");

    bxb_ctl::migrate::postgres(&db.url).await.unwrap();
    PostgresSink::connect(db.args()).await.expect("a migrated database is taken without migrating");
}
