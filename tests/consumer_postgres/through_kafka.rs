//! End to end: events published to Kafka, consumed by the real runtime with the PostgreSQL sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bxb_consumer::{ConsumerArgs, Record, Sink, SinkError, Written};
use bxb_consumer_postgres::{Config, PostgresSink, WriteSummary};
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
        Config::new(self.consumer_args(group), postgres)
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

    /// Runs the bare runtime with `sink` in `args`' group until every record of the topic is
    /// committed.
    async fn consume_everything_with(&self, args: ConsumerArgs, sink: impl Sink) {
        let group = args.group_id.clone().expect("a test names its group");
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let consumer = tokio::spawn(bxb_consumer::run(args, listener, sink, shutdown.clone()));
        self.wait_committed(&group).await;
        shutdown.cancel();
        consumer.await.unwrap().expect("consumer stops cleanly");
    }

    async fn wait_committed(&self, group: &str) {
        wait_until_committed(group, &self.topic.name, WAIT).await;
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
    assert_eq!(committed_offsets(&group, &stack.topic.name).await.values().sum::<i64>(), 40);
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

    async fn write(&self, batch: &[Record]) -> Result<Written, SinkError> {
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
    let committed_at_crash = committed_offsets(&group, &stack.topic.name).await;
    assert!(committed_at_crash.values().all(|c| *c == 0), "nothing was committed before the crash: {committed_at_crash:?}");

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

/// The PostgreSQL sink, keeping what each batch write did.
struct SummarizedSink {
    inner: PostgresSink,
    summaries: Arc<Mutex<Vec<WriteSummary>>>,
}

impl Sink for SummarizedSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, batch: &[Record]) -> Result<Written, SinkError> {
        let (summary, written) = self.inner.write_batch(batch).await?;
        self.summaries.lock().unwrap().push(summary);
        Ok(written)
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

#[tokio::test]
async fn one_batch_of_stored_and_new_identities_keeps_the_first_record_of_each() {
    bxb_telemetry::init_for_tests();
    let stack = Stack::new().await;
    let pool = stack.db.pool().await;
    // One organization: its records share one Kafka partition, so offsets follow publish order
    // from 0.
    let org = Uuid::new_v4();
    make_billable(&pool, org, "api_calls").await;
    let publisher = EventPublisher::new(&stack.topic.name).await;
    let group = unique("bxb-postgres");
    let base = now_ms() - 2 * 3_600_000;
    let stored = |i: i64| event(org, &format!("a-{i:02}"), "api_calls", base - i * 1_000);

    let first: Vec<_> = (1..=50).map(stored).collect();
    publisher.publish(&first).await;
    stack.consume_everything(&group).await;
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 50);

    // One burst: new identities, client retries of stored ones on another day's or hour's
    // partition with another value, an identity twice, and events that are not billable.
    let retry = |i: i64| {
        let moved = if i % 2 == 1 { -DAY_MS } else { 3_600_000 };
        let mut e = stored(i);
        e.timestamp_ms += moved;
        e.value = Some(99.0);
        e.decimal_value = Some("99".parse().unwrap());
        e.properties = r#"{"region":"retried"}"#.into();
        e
    };
    let twice = event(org, "c-01", "api_calls", base + 600_000);
    let mut twice_again = twice.clone();
    twice_again.timestamp_ms -= DAY_MS;
    twice_again.value = Some(99.0);
    let mut burst = vec![twice.clone()];
    for i in 1..=50 {
        burst.push(event(org, &format!("b-{i:02}"), "api_calls", base + i * 1_000));
        if i <= 25 {
            burst.push(retry(i));
        }
        if i % 5 == 0 {
            burst.push(event(org, &format!("free-{i:02}"), "page_views", base));
        }
    }
    burst.push(twice_again);
    publisher.publish(&burst).await;

    // The whole burst is one batch: it flushes when full, long before its wait runs out.
    let mut args = stack.consumer_args(&group);
    args.batch_max_events = burst.len();
    args.batch_max_wait_ms = WAIT.as_millis() as u64;
    let summaries = Arc::new(Mutex::new(Vec::new()));
    let sink = SummarizedSink { inner: stack.db.sink(|_| {}).await, summaries: summaries.clone() };
    stack.consume_everything_with(args, sink).await;
    // Written and already stored in one write: the keys' COPY failed and the fallback insert ran.
    assert_eq!(
        *summaries.lock().unwrap(),
        vec![WriteSummary {
            written: 51,
            new_identities: 61,
            already_stored: 25,
            not_billable: 10,
            duplicates_in_batch: 1,
            ..WriteSummary::default()
        }]
    );

    // Each identity once, as its first record had it.
    let offset_in_burst = |e: &bxb_event::Event| 50 + burst.iter().position(|b| b == e).unwrap() as i64;
    let mut expected: Vec<(String, i64, i64)> =
        first.iter().zip(0..).map(|(e, offset)| (e.transaction_id.clone(), e.timestamp_ms, offset)).collect();
    for e in burst.iter().filter(|e| e.transaction_id.starts_with("b-")) {
        expected.push((e.transaction_id.clone(), e.timestamp_ms, offset_in_burst(e)));
    }
    expected.push((twice.transaction_id.clone(), twice.timestamp_ms, offset_in_burst(&twice)));
    expected.sort();
    let mut rows = rows_of(&pool, org).await;
    rows.sort();
    assert_eq!(rows, expected);
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM events WHERE value = 2.5 AND decimal_value = 12.000000000345 AND properties->>'region' = 'eu-west-1'"
        )
        .await,
        101,
        "no retried value was stored"
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM event_keys k JOIN events e USING (organization_id, transaction_id) WHERE k.\"timestamp\" = e.\"timestamp\"").await,
        101,
        "every key names the partition of its stored event"
    );
    // And the ten identities that are not billable hold their keys, without rows.
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys").await, 111);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys WHERE NOT billable").await, 10);
}
