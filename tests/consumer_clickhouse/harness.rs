//! One isolated pipeline per test: its own events and dead-letter topics, consumer group and
//! ClickHouse database, a producer that writes like the gateway, and a consumer started
//! in-process with the binary's own `run`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bxb_consumer_clickhouse::billing::{self, Granularity, Usage, UsageQuery};
use bxb_consumer_clickhouse::{ClickHouseArgs, Config, EventRow};
use bxb_event::Event;
use bxb_tests::kafka::{committed_offsets, end_offsets, EventPublisher};
use bxb_tests::{clickhouse_url, consumer_args, eventually, unique, EphemeralTopic};
use rdkafka::message::OwnedHeaders;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: i32 = 4;
pub const WAIT: Duration = Duration::from_secs(60);

pub fn fixture_events() -> Vec<Event> {
    serde_json::from_str(include_str!("../fixtures/clickhouse/events.json")).expect("fixture events parse")
}

pub use bxb_tests::kafka::now_ms;

pub struct Pipeline {
    pub topic: EphemeralTopic,
    pub dlq: EphemeralTopic,
    pub group: String,
    pub database: String,
    pub publisher: EventPublisher,
}

impl Pipeline {
    pub async fn new() -> Self {
        bxb_telemetry::init_for_tests();
        let topic = EphemeralTopic::new("ch_events", PARTITIONS).await;
        let dlq = EphemeralTopic::new("ch_dlq", 1).await;
        let publisher = EventPublisher::new(&topic.name).await;
        Self { topic, dlq, group: unique("ch_group"), database: unique("ch_db"), publisher }
    }

    pub fn clickhouse_args(&self) -> ClickHouseArgs {
        ClickHouseArgs::new(clickhouse_url(), &self.database)
    }

    pub fn config(&self, group: &str) -> Config {
        let mut consumer = consumer_args(&self.topic.name, &self.dlq.name, group);
        consumer.batch_max_events = 50;
        consumer.batch_max_wait_ms = 200;
        consumer.statistics_interval_ms = 1_000;
        consumer.sink_ready_interval_ms = 200;
        Config::new(consumer, self.clickhouse_args())
    }

    /// Starts consumer-clickhouse in this process, as the binary does.
    pub async fn start(&self, config: Config) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bxb_consumer_clickhouse::run(config, listener, shutdown.clone()));
        Running { addr, shutdown, task }
    }

    pub async fn start_default(&self) -> Running {
        self.start(self.config(&self.group)).await
    }

    /// Publishes events like the gateway: key = organization, ingestion time and trace headers.
    pub async fn produce(&self, events: &[Event]) {
        self.publisher.publish(events).await;
    }

    pub async fn produce_raw(&self, key: &str, value: &[u8], headers: OwnedHeaders) {
        self.publisher.publish_raw(key, value, headers).await;
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        self.clickhouse_args().client()
    }

    /// Every row, in Kafka order.
    pub async fn rows(&self) -> Vec<EventRow> {
        self.clickhouse()
            .query("SELECT ?fields FROM events_raw ORDER BY kafka_partition, kafka_offset, written_at_ms")
            .fetch_all()
            .await
            .unwrap_or_default()
    }

    pub async fn row_count(&self) -> u64 {
        self.clickhouse().query("SELECT count() FROM events_raw").fetch_one().await.unwrap_or(0)
    }

    pub async fn wait_for_rows(&self, count: u64) {
        eventually(&format!("{count} rows in events_raw"), WAIT, || async { (self.row_count().await >= count).then_some(()) }).await;
        assert_eq!(self.row_count().await, count, "exactly {count} rows");
    }

    /// The group's committed offset per partition (absent: nothing committed).
    pub async fn committed(&self, group: &str) -> BTreeMap<i32, i64> {
        committed_offsets(group, &self.topic.name).await
    }

    /// One past the last record of each non-empty partition.
    pub async fn end_offsets(&self) -> BTreeMap<i32, i64> {
        end_offsets(&self.topic.name).await
    }

    pub async fn wait_until_all_committed(&self, group: &str) {
        let end = self.end_offsets().await;
        eventually(&format!("group {group} to commit {end:?}"), WAIT, || async { (self.committed(group).await == end).then_some(()) })
            .await;
    }

    pub async fn usage(&self, granularity: Granularity, organization_id: Option<uuid::Uuid>) -> Vec<Usage> {
        let query = UsageQuery { from_ms: 0, to_ms: i64::MAX, granularity, organization_id };
        billing::usage(&self.clickhouse(), &query).await.expect("usage query")
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let client = clickhouse::Client::default().with_url(clickhouse_url()).with_validation(false);
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.database);
        // Best effort, off the test's runtime, like EphemeralTopic.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = runtime.block_on(client.query_raw(&sql).execute());
            }
        });
    }
}

/// A consumer started by [`Pipeline::start`].
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), bxb_consumer_clickhouse::Error>>,
}

impl Running {
    /// Asks for shutdown and returns what `run` returned.
    pub async fn stop(self) -> Result<(), bxb_consumer_clickhouse::Error> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the consumer stops").expect("the consumer task does not panic")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.addr)).await.expect("health endpoint answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

/// A TCP forwarder in front of ClickHouse (or another service) that a test can close and open
/// again, so that an outage never touches the shared server.
pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    pub async fn start() -> Self {
        Self::start_to(
            clickhouse_url().trim_start_matches("http://").trim_end_matches('/').parse().expect("ClickHouse URL is http://ip:port"),
        )
        .await
    }

    pub async fn start_to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self { addr, target, task: Some(tokio::spawn(forward(listener, target))) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and cuts every open connection: the port is closed.
    pub fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn open(&mut self) {
        let listener = eventually("the proxy port to be free again", WAIT, || async { TcpListener::bind(self.addr).await.ok() }).await;
        self.task = Some(tokio::spawn(forward(listener, self.target)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
    }
}

async fn forward(listener: TcpListener, target: SocketAddr) {
    // Dropping the set when the task is aborted aborts every connection with it.
    let mut connections = JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
