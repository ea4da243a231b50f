//! The run's own topics, groups and databases on the shared services, and their versions.

use std::time::Duration;

use anyhow::Context;
use bxb_kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection};

use crate::settings::{postgres_url_for, BenchArgs};

pub const PARTITIONS: i32 = 4;

pub fn kafka_config(args: &BenchArgs) -> anyhow::Result<ClientConfig> {
    Ok(KafkaArgs::plaintext(args.kafka_brokers.clone()).client_config()?)
}

pub async fn create_topic(args: &BenchArgs, topic: &str) -> anyhow::Result<()> {
    bxb_kafka::admin::ensure_topic(&kafka_config(args)?, topic, PARTITIONS, 1, &[]).await.with_context(|| format!("creating topic {topic}"))
}

pub async fn delete_topic(args: &BenchArgs, topic: &str) {
    if let Ok(config) = kafka_config(args) {
        let _ = bxb_kafka::admin::delete_topic(&config, topic).await;
    }
}

/// Deletes a consumer group (its committed offsets) once nothing uses it.
pub async fn delete_group(args: &BenchArgs, group: &str) {
    let Ok(config) = kafka_config(args) else { return };
    let Ok(admin) = config.create::<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>() else { return };
    let _ = admin.delete_groups(&[group], &rdkafka::admin::AdminOptions::new()).await;
}

/// Reads what one group has committed on one topic (one client for the whole watch).
pub struct GroupWatch {
    consumer: std::sync::Arc<BaseConsumer>,
    topic: String,
}

impl GroupWatch {
    pub fn new(args: &BenchArgs, group: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka_config(args)?.set("group.id", group).create()?;
        Ok(Self { consumer: std::sync::Arc::new(consumer), topic: topic.to_owned() })
    }

    /// The sum over the topic's partitions of the committed offsets (0 where nothing is).
    pub async fn committed_total(&self) -> anyhow::Result<i64> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for partition in 0..PARTITIONS {
                tpl.add_partition(&topic, partition);
            }
            let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
            Ok(committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum())
        })
        .await?
    }
}

pub async fn admin_connection(args: &BenchArgs) -> anyhow::Result<PgConnection> {
    PgConnection::connect(&args.postgres_url).await.context("connecting to PostgreSQL")
}

/// Creates a PostgreSQL database of the run and returns its URL.
pub async fn create_pg_database(args: &BenchArgs, name: &str) -> anyhow::Result<String> {
    let mut admin = admin_connection(args).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.with_context(|| format!("creating database {name}"))?;
    Ok(postgres_url_for(&args.postgres_url, name))
}

pub async fn drop_pg_database(args: &BenchArgs, name: &str) {
    if let Ok(mut admin) = admin_connection(args).await {
        // PostgreSQL 15: no FORCE needed once the binaries are stopped; terminate stragglers first.
        let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1").bind(name).execute(&mut admin).await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"")).execute(&mut admin).await;
    }
}

pub fn clickhouse(args: &BenchArgs) -> clickhouse::Client {
    clickhouse::Client::default().with_url(&args.clickhouse_url).with_validation(false)
}

pub async fn drop_ch_database(args: &BenchArgs, name: &str) {
    let _ = clickhouse(args).query(&format!("DROP DATABASE IF EXISTS {name}")).execute().await;
}

/// ClickHouse's and PostgreSQL's versions, as the servers report them.
pub async fn server_versions(args: &BenchArgs) -> (String, String) {
    let ch = clickhouse(args).query("SELECT version()").fetch_one::<String>().await.unwrap_or_else(|e| format!("unknown ({e})"));
    let pg = match admin_connection(args).await {
        Ok(mut c) => sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&mut c).await.unwrap_or_else(|e| format!("unknown ({e})")),
        Err(e) => format!("unknown ({e})"),
    };
    (ch, pg)
}
