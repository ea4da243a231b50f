//! A run's own topics, groups and databases on the shared services, and their versions (used by
//! `./dev/bench` and `./dev/chaos`).

use std::time::Duration;

use anyhow::Context;
use bxb_kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection};

use crate::settings::{postgres_url_for, StackArgs};

pub const PARTITIONS: i32 = 4;

pub fn kafka_config(stack: &StackArgs) -> anyhow::Result<ClientConfig> {
    Ok(KafkaArgs::plaintext(stack.kafka_brokers.clone()).client_config()?)
}

pub async fn create_topic(stack: &StackArgs, topic: &str) -> anyhow::Result<()> {
    bxb_kafka::admin::ensure_topic(&kafka_config(stack)?, topic, PARTITIONS, 1, &[]).await.with_context(|| format!("creating topic {topic}"))
}

pub async fn delete_topic(stack: &StackArgs, topic: &str) {
    if let Ok(config) = kafka_config(stack) {
        let _ = bxb_kafka::admin::delete_topic(&config, topic).await;
    }
}

/// Deletes a consumer group (its committed offsets) once nothing uses it.
pub async fn delete_group(stack: &StackArgs, group: &str) {
    let Ok(config) = kafka_config(stack) else { return };
    let Ok(admin) = config.create::<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>() else { return };
    let _ = admin.delete_groups(&[group], &rdkafka::admin::AdminOptions::new()).await;
}

/// Reads what one group has committed on one topic (one client for the whole watch).
pub struct GroupWatch {
    consumer: std::sync::Arc<BaseConsumer>,
    topic: String,
}

impl GroupWatch {
    pub fn new(stack: &StackArgs, group: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka_config(stack)?.set("group.id", group).create()?;
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

pub async fn admin_connection(stack: &StackArgs) -> anyhow::Result<PgConnection> {
    PgConnection::connect(&stack.postgres_url).await.context("connecting to PostgreSQL")
}

/// Creates a PostgreSQL database of the run and returns its URL.
pub async fn create_pg_database(stack: &StackArgs, name: &str) -> anyhow::Result<String> {
    let mut admin = admin_connection(stack).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.with_context(|| format!("creating database {name}"))?;
    Ok(postgres_url_for(&stack.postgres_url, name))
}

pub async fn drop_pg_database(stack: &StackArgs, name: &str) {
    if let Ok(mut admin) = admin_connection(stack).await {
        // PostgreSQL 15: no FORCE needed once the binaries are stopped; terminate stragglers first.
        let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1").bind(name).execute(&mut admin).await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"")).execute(&mut admin).await;
    }
}

pub fn clickhouse(stack: &StackArgs) -> clickhouse::Client {
    clickhouse::Client::default().with_url(&stack.clickhouse_url).with_validation(false)
}

pub async fn drop_ch_database(stack: &StackArgs, name: &str) {
    let _ = clickhouse(stack).query(&format!("DROP DATABASE IF EXISTS {name}")).execute().await;
}

/// ClickHouse's and PostgreSQL's versions, as the servers report them.
pub async fn server_versions(stack: &StackArgs) -> (String, String) {
    let ch = clickhouse(stack).query("SELECT version()").fetch_one::<String>().await.unwrap_or_else(|e| format!("unknown ({e})"));
    let pg = match admin_connection(stack).await {
        Ok(mut c) => sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&mut c).await.unwrap_or_else(|e| format!("unknown ({e})")),
        Err(e) => format!("unknown ({e})"),
    };
    (ch, pg)
}
