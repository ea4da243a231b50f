//! The whole pipeline behind one test: its own topics, both consumers started in-process with
//! their binaries' `run`, a PostgreSQL and a ClickHouse database of their own.

use std::time::Duration;

use bxb_consumer::ConsumerArgs;
use bxb_consumer_clickhouse::billing::{self, Granularity, Usage, UsageQuery};
use bxb_consumer_clickhouse::ClickHouseArgs;
use bxb_consumer_postgres::PostgresArgs;
use bxb_event::Event;
use bxb_tests::databases::{TestClickHouse, TestPostgres};
use bxb_tests::kafka::{now_ms, wait_until_committed, EventPublisher};
use bxb_tests::{clickhouse_url, consumer_args, unique, EphemeralTopic};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PARTITIONS: i32 = 4;
pub const WAIT: Duration = Duration::from_secs(90);
/// Billable for every organization in these tests; every other code is not.
pub const BILLABLE: &str = "api_calls";

pub struct Stack {
    pub topic: EphemeralTopic,
    pub dlq: EphemeralTopic,
    pub publisher: EventPublisher,
    pub postgres: TestPostgres,
    pub clickhouse: TestClickHouse,
    pub clickhouse_group: String,
    pub postgres_group: String,
}

/// Both consumers, running.
pub struct Consumers {
    shutdown: CancellationToken,
    clickhouse: JoinHandle<Result<(), bxb_consumer_clickhouse::Error>>,
    postgres: JoinHandle<Result<(), bxb_consumer_postgres::Error>>,
}

impl Consumers {
    /// Stops both and checks they stopped cleanly (they leave their groups).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.clickhouse).await.expect("stops").expect("no panic").expect("clean stop");
        tokio::time::timeout(WAIT, self.postgres).await.expect("stops").expect("no panic").expect("clean stop");
    }
}

/// What each store counts: PostgreSQL's rows (identity, code, timestamp) and ClickHouse's
/// billing usage per organization, code and hour.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub postgres: Vec<(Uuid, String, String, i64)>,
    pub clickhouse: Vec<Usage>,
}

impl Stack {
    pub async fn new() -> Self {
        bxb_telemetry::init_for_tests();
        let topic = EphemeralTopic::new("ops_events", PARTITIONS).await;
        let publisher = EventPublisher::new(&topic.name).await;
        Self {
            dlq: EphemeralTopic::new("ops_dlq", 1).await,
            topic,
            publisher,
            postgres: TestPostgres::create().await,
            clickhouse: TestClickHouse::new(),
            clickhouse_group: unique("ops_ch"),
            postgres_group: unique("ops_pg"),
        }
    }

    fn consumer_args(&self, group: &str) -> ConsumerArgs {
        let mut args = consumer_args(&self.topic.name, &self.dlq.name, group);
        args.batch_max_events = 20;
        args
    }

    pub fn clickhouse_args(&self) -> ClickHouseArgs {
        ClickHouseArgs::new(clickhouse_url(), &self.clickhouse.database)
    }

    pub fn postgres_args(&self) -> PostgresArgs {
        let mut args = PostgresArgs::with_url(&self.postgres.url);
        args.billable_codes = vec![BILLABLE.to_owned()];
        args
    }

    pub async fn start_consumers(&self) -> Consumers {
        let shutdown = CancellationToken::new();
        let clickhouse = bxb_consumer_clickhouse::Config::new(self.consumer_args(&self.clickhouse_group), self.clickhouse_args());
        let postgres = bxb_consumer_postgres::Config::new(self.consumer_args(&self.postgres_group), self.postgres_args());
        let ch_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pg_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Consumers {
            clickhouse: tokio::spawn(bxb_consumer_clickhouse::run(clickhouse, ch_listener, shutdown.clone())),
            postgres: tokio::spawn(bxb_consumer_postgres::run(postgres, pg_listener, shutdown.clone())),
            shutdown,
        }
    }

    /// Waits until both groups have committed everything on the topic.
    pub async fn drain(&self) {
        for group in [&self.clickhouse_group, &self.postgres_group] {
            wait_until_committed(group, &self.topic.name, WAIT).await;
        }
    }

    /// Starts both consumers, waits until they have read everything, stops them.
    pub async fn consume_everything(&self) {
        let consumers = self.start_consumers().await;
        self.drain().await;
        consumers.stop().await;
    }

    pub async fn pool(&self) -> PgPool {
        self.postgres.pool().await
    }

    pub async fn snapshot(&self) -> Snapshot {
        let pool = self.pool().await;
        let postgres = sqlx::query_as(
            "SELECT organization_id, transaction_id, code, (extract(epoch FROM \"timestamp\") * 1000)::bigint
             FROM events ORDER BY 1, 2",
        )
        .fetch_all(&pool)
        .await
        .expect("PostgreSQL rows");
        let query = UsageQuery { from_ms: 0, to_ms: now_ms() + 86_400_000, granularity: Granularity::Hour, organization_id: None };
        let clickhouse = billing::usage(&self.clickhouse_args().client(), &query).await.expect("usage query");
        Snapshot { postgres, clickhouse }
    }

    /// Resets a group's offsets with Kafka's own tool, as an operator would.
    pub fn reset_with_kafka_tool(&self, group: &str, how: &[&str]) {
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/kafka-consumer-groups");
        let output = std::process::Command::new(tool)
            .args(["--group", group, "--topic", &self.topic.name, "--reset-offsets", "--execute"])
            .args(how)
            .output()
            .expect("run dev/kafka-consumer-groups");
        assert!(output.status.success(), "kafka-consumer-groups failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn kafka_config(&self) -> rdkafka::ClientConfig {
        bxb_tests::kafka_config()
    }

    pub async fn publish(&self, events: &[Event]) {
        self.publisher.publish(events).await;
    }
}

/// `count` events over several organizations: every third not billable, and every tenth a
/// client retry of an earlier transaction carrying a different timestamp.
pub fn workload(organizations: &[Uuid], count: usize, base_ms: i64) -> Vec<Event> {
    let mut events: Vec<Event> = (0..count)
        .map(|i| Event {
            organization_id: organizations[i % organizations.len()],
            transaction_id: format!("tx-{i}"),
            external_customer_id: format!("customer-{}", i % 5),
            code: if i % 3 == 2 { "page_views".into() } else { BILLABLE.into() },
            timestamp_ms: base_ms + i as i64 * 60_000,
            properties: format!(r#"{{"i":{i}}}"#),
            value: Some(i as f64 * 0.5),
            decimal_value: Some(format!("{i}.125").parse().unwrap()),
        })
        .collect();
    let retries: Vec<Event> = events.iter().step_by(10).map(|e| Event { timestamp_ms: e.timestamp_ms + 3_600_000, ..e.clone() }).collect();
    events.extend(retries);
    events
}
