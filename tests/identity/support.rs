//! A topic, both stores and both consumers for one test, and what each store bills.

use std::collections::BTreeMap;
use std::time::Duration;

use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use bxb_event::{Decimal, Event};
use bxb_tests::databases::{TestClickHouse, TestPostgres};
use bxb_tests::kafka::{wait_until_committed, EventPublisher};
use bxb_tests::{consumer_args, unique, EphemeralTopic};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);
pub const HOUR_MS: i64 = 3_600_000;
pub const BILLABLE: &str = "api_calls";
pub const NOT_BILLABLE: &str = "page_views";

/// One test's topic (four partitions), dead-letter topic, databases and publisher.
pub struct Stack {
    pub topic: EphemeralTopic,
    pub dlq: EphemeralTopic,
    pub postgres: TestPostgres,
    pub clickhouse: TestClickHouse,
    pub publisher: EventPublisher,
    pub pool: PgPool,
}

/// A consumer running in this process.
pub struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("no panic").expect("the consumer stops cleanly");
    }
}

impl Stack {
    pub async fn new(partitions: i32) -> Self {
        bxb_telemetry::init_for_tests();
        let topic = EphemeralTopic::new("identity", partitions).await;
        let dlq = EphemeralTopic::new("identity_dlq", 1).await;
        let postgres = TestPostgres::create().await;
        let clickhouse = TestClickHouse::create().await;
        let publisher = EventPublisher::new(&topic.name).await;
        let pool = postgres.pool().await;
        Self { topic, dlq, postgres, clickhouse, publisher, pool }
    }

    fn consumer_args(&self, group: &str) -> bxb_consumer::ConsumerArgs {
        let mut args = consumer_args(&self.topic.name, &self.dlq.name, group);
        args.batch_max_events = 100;
        args.batch_max_wait_ms = 100;
        args
    }

    pub fn postgres_args(&self) -> bxb_consumer_postgres::PostgresArgs {
        let mut args = bxb_consumer_postgres::PostgresArgs::with_url(&self.postgres.url);
        args.billable_codes = vec![BILLABLE.into()];
        args
    }

    /// Starts consumer-postgres in `group`, with `configure`d settings.
    pub async fn start_postgres(&self, group: &str, configure: impl FnOnce(&mut bxb_consumer_postgres::PostgresArgs)) -> Running {
        let mut postgres = self.postgres_args();
        configure(&mut postgres);
        let config = bxb_consumer_postgres::Config::new(self.consumer_args(group), postgres);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let run = bxb_consumer_postgres::run(config, listener, shutdown.clone());
        let task = tokio::spawn(async move { run.await.map_err(|e| e.to_string()) });
        Running { shutdown, task }
    }

    pub async fn start_clickhouse(&self, group: &str) -> Running {
        let config = bxb_consumer_clickhouse::Config::new(self.consumer_args(group), self.clickhouse.args());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let run = bxb_consumer_clickhouse::run(config, listener, shutdown.clone());
        let task = tokio::spawn(async move { run.await.map_err(|e| e.to_string()) });
        Running { shutdown, task }
    }

    /// Runs both consumers, each in a group of its own, until they committed the whole topic.
    pub async fn consume_everything(&self) {
        let (pg_group, ch_group) = (unique("identity_pg"), unique("identity_ch"));
        let postgres = self.start_postgres(&pg_group, |_| {}).await;
        let clickhouse = self.start_clickhouse(&ch_group).await;
        wait_until_committed(&pg_group, &self.topic.name, WAIT).await;
        wait_until_committed(&ch_group, &self.topic.name, WAIT).await;
        postgres.stop().await;
        clickhouse.stop().await;
    }

    /// PostgreSQL's billing: per (code, hour) the rows, their values and decimal values.
    pub async fn postgres_usage(&self) -> Bill {
        postgres_usage(&self.pool).await
    }

    /// ClickHouse's billing query over everything, per (code, hour).
    pub async fn clickhouse_usage(&self) -> Bill {
        clickhouse_usage(&self.clickhouse.client()).await
    }
}

/// Usage per (code, hour start): events, sum of value, exact sum of decimal_value (scaled by
/// 10^12, as `Decimal(38, 12)` stores it).
pub type Bill = BTreeMap<(String, i64), (u64, f64, i128)>;

fn scaled(decimal: &Decimal) -> i128 {
    decimal.to_scaled_i128(12).expect("a Decimal(38, 12)")
}

/// A row of [`postgres_usage`]'s query: code, hour, count, sum(value), sum(decimal_value)::text.
type UsageRow = (String, i64, i64, Option<f64>, Option<String>);

pub async fn postgres_usage(pool: &PgPool) -> Bill {
    let rows: Vec<UsageRow> = sqlx::query_as(
        r#"SELECT code, (floor(extract(epoch FROM "timestamp") * 1000 / 3600000) * 3600000)::int8, count(*),
                  sum(value), sum(decimal_value)::text
           FROM events GROUP BY 1, 2"#,
    )
    .fetch_all(pool)
    .await
    .expect("PostgreSQL usage");
    rows.into_iter()
        .map(|(code, hour, events, value, decimal)| {
            let decimal = decimal.map_or(0, |d| scaled(&d.parse().expect("a decimal")));
            ((code, hour), (events as u64, value.unwrap_or(0.0), decimal))
        })
        .collect()
}

pub async fn clickhouse_usage(client: &clickhouse::Client) -> Bill {
    let everything = UsageQuery { from_ms: 0, to_ms: i64::MAX / 2, granularity: Granularity::Hour, organization_id: None };
    billing::usage(client, &everything)
        .await
        .expect("ClickHouse usage")
        .into_iter()
        .map(|u| {
            ((u.code, u.bucket_start_ms), (u.events, u.value_sum, scaled(u.decimal_value_sum.as_ref().expect("within Decimal(38, 12)"))))
        })
        .collect()
}

/// The bill of `events`, computed here: what a store must say when these are the first records.
pub fn bill_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Bill {
    let mut bill = Bill::new();
    for event in events {
        let entry = bill.entry((event.code.clone(), event.timestamp_ms - event.timestamp_ms % HOUR_MS)).or_insert((0, 0.0, 0));
        entry.0 += 1;
        entry.1 += event.value.unwrap_or(0.0);
        entry.2 += event.decimal_value.as_ref().map_or(0, scaled);
    }
    bill
}

/// An event of `organization` with these fields, at `hour` hours after a fixed recent hour.
pub fn version(organization: Uuid, transaction_id: &str, code: &str, hour: i64, value: f64) -> Event {
    let base = bxb_tests::kafka::now_ms() / HOUR_MS * HOUR_MS - 24 * HOUR_MS;
    Event {
        code: code.into(),
        timestamp_ms: base + hour * HOUR_MS + 1_234,
        value: Some(value),
        // Another decimal for every value, with a digit at the last of the twelve places.
        decimal_value: Some(format!("{}.000000000001", (value * 1000.0) as i64).parse().unwrap()),
        ..bxb_event::test_support::event_of(organization, transaction_id)
    }
}
