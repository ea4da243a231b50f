//! End to end: events published to Kafka, consumed by the real runtime with the PostgreSQL sink.

use std::sync::Arc;
use std::time::Duration;

use bxb_consumer::{ConsumerArgs, Record, Sink, SinkError};
use bxb_consumer_postgres::{Config, PostgresSink};
use bxb_tests::kafka::{committed_offsets, wait_until_committed, EventPublisher};
use bxb_tests::{consumer_args, unique, EphemeralTopic};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(60);

struct Stack {
    topic: EphemeralTopic,
    dlq: EphemeralTopic,
    db: TestDb,
}

impl Stack {
    async fn new() -> Self {
        Self {
            topic: EphemeralTopic::new("pg_events", PARTITIONS).await,
            dlq: EphemeralTopic::new("pg_events_dlq", 1).await,
            db: TestDb::create().await,
        }
    }

    fn consumer_args(&self, group: &str) -> ConsumerArgs {
        let mut args = consumer_args(&self.topic.name, &self.dlq.name, group);
        args.batch_max_events = 4;
        args
    }

    fn config(&self, group: &str) -> Config {
        let mut postgres = self.db.args();
        postgres.billable_refresh_ms = 200;
        Config { consumer: self.consumer_args(group), postgres }
    }

    /// Runs consumer-postgres in `group` until every record of the topic is committed.
    async fn consume_everything(&self, group: &str) {
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let consumer = tokio::spawn(bxb_consumer_postgres::run(self.config(group), listener, shutdown.clone()));
        self.wait_committed(group).await;
        shutdown.cancel();
        consumer.await.unwrap().expect("consumer stops cleanly");
    }

    async fn wait_committed(&self, group: &str) {
        wait_until_committed(group, &self.topic.name, PARTITIONS, WAIT).await;
    }
}

/// Every stored row, for before/after comparisons: identity, timestamp, offset, write time.
async fn snapshot(pool: &PgPool) -> Vec<(Uuid, String, i64, i64, String)> {
    sqlx::query_as(
        "SELECT organization_id, transaction_id, (extract(epoch FROM \"timestamp\") * 1000)::int8,
                kafka_offset, written_at::text
         FROM events ORDER BY organization_id, transaction_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn billable_events_through_kafka_land_once_and_skipped_ones_are_committed() {
    bxb_telemetry::init_for_tests();
    let stack = Stack::new().await;
    let pool = stack.db.pool().await;
    bxb_consumer_postgres::migrate(&stack.db.args()).await.unwrap();
    let orgs: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for org in &orgs {
        make_billable(&pool, *org, "api_calls").await;
    }
    let now = now_ms();
    let mut events = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        for k in 0..5 {
            events.push(event(*org, &format!("billed-{k}"), "api_calls", now - (i as i64) * 1_000));
            events.push(event(*org, &format!("free-{k}"), "page_views", now));
        }
    }
    EventPublisher::new(&stack.topic.name).await.publish(&events).await;

    let group = unique("bxb-postgres");
    stack.consume_everything(&group).await;

    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 20);
    assert_eq!(scalar(&pool, "SELECT count(DISTINCT (organization_id, transaction_id)) FROM events").await, 20);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events WHERE code <> 'api_calls'").await, 0);
    // Every record, written or skipped, is committed (consume_everything waited for it).
    assert_eq!(committed_offsets(&group, &stack.topic.name, PARTITIONS).await.values().sum::<i64>(), 40);
}

/// Stores the first batch, then hangs as if the process died before the runtime committed it.
struct CrashAfterFirstWrite {
    inner: PostgresSink,
    crashed: Arc<Notify>,
}

impl Sink for CrashAfterFirstWrite {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, batch: &[Record]) -> Result<(), SinkError> {
        self.inner.write(batch).await?;
        self.crashed.notify_one();
        std::future::pending().await
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

#[tokio::test]
async fn a_crash_between_write_and_commit_and_a_reread_from_zero_leave_one_row_per_event() {
    bxb_telemetry::init_for_tests();
    let stack = Stack::new().await;
    let org = Uuid::new_v4();
    let now = now_ms();
    let mut events: Vec<_> = (0..12).map(|k| event(org, &format!("tx-{k}"), "api_calls", now - k * 60_000)).collect();
    // A client retry without its own timestamp: same identity, later offset, another time (and
    // another day's partition). The first one counts.
    events.push(event(org, "tx-0", "api_calls", now - 2 * DAY_MS));
    EventPublisher::new(&stack.topic.name).await.publish(&events).await;
    let group = unique("bxb-postgres");

    // The first batch reaches PostgreSQL, then the consumer dies before committing its offsets.
    let sink = stack.db.sink(|a| a.billable_codes = vec!["api_calls".into()]).await;
    let pool = sink.pool().clone();
    let crashed = Arc::new(Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doomed = tokio::spawn(bxb_consumer::run(
        stack.consumer_args(&group),
        listener,
        CrashAfterFirstWrite { inner: sink, crashed: crashed.clone() },
        CancellationToken::new(),
    ));
    tokio::time::timeout(WAIT, crashed.notified()).await.expect("the first batch is written");
    doomed.abort();
    let _ = doomed.await;
    let written_before_crash = scalar(&pool, "SELECT count(*) FROM events").await;
    assert!(written_before_crash > 0, "the crashed consumer wrote its first batch");
    let committed_at_crash = committed_offsets(&group, &stack.topic.name, PARTITIONS).await;
    assert!(
        committed_at_crash.values().all(|c| *c == 0),
        "nothing was committed before the crash: {committed_at_crash:?}"
    );

    // Restarted in the same group: the batch is delivered again, and still stored once.
    let mut config = stack.config(&group);
    config.postgres.billable_codes = vec!["api_calls".into()];
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer = tokio::spawn(bxb_consumer_postgres::run(config.clone(), listener, shutdown.clone()));
    stack.wait_committed(&group).await;
    shutdown.cancel();
    consumer.await.unwrap().expect("consumer stops cleanly");

    let after_restart = snapshot(&pool).await;
    assert_eq!(after_restart.len(), 12);
    let first = after_restart.iter().find(|r| r.1 == "tx-0").unwrap();
    assert_eq!(first.2, now, "the first occurrence of tx-0 won, not the retry");

    // Another group reading the whole topic from offset 0 changes nothing at all.
    let mut reread = config;
    reread.consumer.group_id = Some(unique("bxb-postgres-reread"));
    let reread_group = reread.consumer.group_id.clone().unwrap();
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer = tokio::spawn(bxb_consumer_postgres::run(reread, listener, shutdown.clone()));
    stack.wait_committed(&reread_group).await;
    shutdown.cancel();
    consumer.await.unwrap().expect("consumer stops cleanly");
    assert_eq!(snapshot(&pool).await, after_restart);
}
