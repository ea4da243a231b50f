//! The table: created by `bxbctl migrate` (or by the consumer itself when it migrates on start),
//! only checked when the consumer must not change the schema.

use bxb_consumer_clickhouse::{ClickHouseSink, Error, SetupError};
use bxb_tests::clickhouse_url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events_of;
use crate::harness::Pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrating_on_start_a_missing_table_is_refused_until_bxbctl_migrate_creates_it() {
    let pipeline = Pipeline::new().await;
    let mut config = pipeline.config(&pipeline.group);
    config.consumer.migrate_on_start = false;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = bxb_consumer_clickhouse::run(config.clone(), listener, CancellationToken::new()).await;
    let error = outcome.expect_err("a missing table must not be consumed into");
    assert!(matches!(error, Error::Setup(SetupError::NotMigrated { .. })), "{error:?}");
    assert!(error.to_string().contains("bxbctl migrate"), "{error}");
    let server = clickhouse::Client::default().with_url(clickhouse_url()).with_validation(false);
    let databases: u64 =
        server.query("SELECT count() FROM system.databases WHERE name = ?").bind(&pipeline.database).fetch_one().await.unwrap();
    assert_eq!(databases, 0, "checking creates nothing");

    let args = pipeline.clickhouse_args();
    let created = bxb_ctl::migrate::clickhouse(&args).await.unwrap();
    assert_eq!(created, [pipeline.database.clone(), format!("{}.events_raw", pipeline.database)]);
    assert!(bxb_ctl::migrate::clickhouse(&args).await.unwrap().is_empty(), "a second run creates nothing");
    ClickHouseSink::connect(&args).await.expect("the created table is the one the consumer writes");

    let consumer = pipeline.start(config).await;
    pipeline.produce(&events_of(Uuid::new_v4(), "after-migrate", 3)).await;
    pipeline.wait_for_rows(3).await;
    consumer.stop().await.expect("a clean shutdown");
}
