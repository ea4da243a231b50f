//! A run's own topics, groups and databases on the shared services: created, watched, and
//! removed at the end (what was created is recorded in [`Created`]).

use std::time::Duration;

use bxb_kafka::admin::PartitionPosition;
use bxb_kafka::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sqlx::{Connection, PgConnection};

use crate::error::{Error, Result};
use crate::stack::StackArgs;

/// Partitions of a run's events topics: as many as the dev stack's `events`.
pub const PARTITIONS: i32 = 4;
/// How long one group-position query may wait for the broker.
const KAFKA_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn kafka_error(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    let what = what.into();
    move |source| Error::Kafka { what, source }
}

fn postgres_error(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let what = what.into();
    move |source| Error::Postgres { what, source }
}

/// Plaintext client settings for the stack's brokers.
pub fn kafka_config(stack: &StackArgs) -> Result<ClientConfig> {
    Ok(KafkaArgs::plaintext(stack.kafka_brokers.clone()).client_config()?)
}

/// Creates `topic` with `partitions` (replication 1), or does nothing if it exists. Record
/// timestamps are the broker's append time: of several records of one identity the first by
/// that time counts, and the chaos run's truth ranks them so too.
pub async fn create_topic(stack: &StackArgs, topic: &str, partitions: i32) -> Result<()> {
    bxb_kafka::admin::ensure_topic(&kafka_config(stack)?, topic, partitions, 1, &[("message.timestamp.type", "LogAppendTime")])
        .await
        .map_err(kafka_error(format!("creating topic {topic}")))
}

/// Deletes `topic`; best effort (cleanup must go on).
pub async fn delete_topic(stack: &StackArgs, topic: &str) {
    if let Ok(config) = kafka_config(stack) {
        let _ = bxb_kafka::admin::delete_topic(&config, topic).await;
    }
}

/// Deletes a consumer group (its committed offsets) once nothing uses it; best effort.
pub async fn delete_group(stack: &StackArgs, group: &str) {
    let Ok(config) = kafka_config(stack) else { return };
    let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() else { return };
    let _ = admin.delete_groups(&[group], &AdminOptions::new()).await;
}

/// Where `group` stands on every partition of `topic` ([`bxb_kafka::admin::group_positions`],
/// off the async threads).
pub async fn group_positions(stack: &StackArgs, group: &str, topic: &str) -> Result<Vec<PartitionPosition>> {
    let (config, group, topic) = (kafka_config(stack)?, group.to_owned(), topic.to_owned());
    let what = format!("reading the positions of group {group} on {topic}");
    tokio::task::spawn_blocking(move || bxb_kafka::admin::group_positions(&config, &group, &topic, KAFKA_QUERY_TIMEOUT))
        .await?
        .map_err(kafka_error(what))
}

/// The sum of `group`'s committed offsets on `topic` (0 where it has none): how many records
/// of a topic filled from offset 0 the group has finished.
pub async fn committed_total(stack: &StackArgs, group: &str, topic: &str) -> Result<i64> {
    Ok(group_positions(stack, group, topic).await?.iter().map(|p| p.committed.unwrap_or(0)).sum())
}

/// A connection to the stack's own database, from which a run creates and drops its own.
pub async fn admin_connection(stack: &StackArgs) -> Result<PgConnection> {
    PgConnection::connect(&stack.postgres_url).await.map_err(postgres_error("connecting"))
}

/// Creates a PostgreSQL database of the run and returns its URL.
pub async fn create_pg_database(stack: &StackArgs, name: &str) -> Result<String> {
    let mut admin = admin_connection(stack).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .map_err(postgres_error(format!("creating database {name}")))?;
    Ok(stack.postgres_url_of(name))
}

/// Drops a PostgreSQL database of the run; best effort.
pub async fn drop_pg_database(stack: &StackArgs, name: &str) {
    if let Ok(mut admin) = admin_connection(stack).await {
        // PostgreSQL 15: no FORCE needed once the binaries are stopped; terminate stragglers first.
        let _ =
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1").bind(name).execute(&mut admin).await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"")).execute(&mut admin).await;
    }
}

/// A client of the stack's ClickHouse server (no database chosen; `with_database` for one).
pub fn clickhouse(stack: &StackArgs) -> clickhouse::Client {
    clickhouse::Client::default().with_url(&stack.clickhouse_url).with_validation(false)
}

/// Drops a ClickHouse database of the run; best effort.
pub async fn drop_ch_database(stack: &StackArgs, name: &str) {
    let _ = clickhouse(stack).query(&format!("DROP DATABASE IF EXISTS {name}")).execute().await;
}

/// ClickHouse's and PostgreSQL's versions, as the servers report them.
pub async fn server_versions(stack: &StackArgs) -> (String, String) {
    let ch = clickhouse(stack).query("SELECT version()").fetch_one::<String>().await.unwrap_or_else(|e| format!("unknown ({e})"));
    let pg = match admin_connection(stack).await {
        Ok(mut c) => {
            sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&mut c).await.unwrap_or_else(|e| format!("unknown ({e})"))
        }
        Err(e) => format!("unknown ({e})"),
    };
    (ch, pg)
}

/// What a run created on the shared services and must remove.
#[derive(Debug, Default)]
pub struct Created {
    pub topics: Vec<String>,
    pub groups: Vec<String>,
    pub pg_databases: Vec<String>,
    pub ch_databases: Vec<String>,
}

impl Created {
    /// Removes everything, best effort, groups before their topics; call it once the binaries
    /// using them are stopped. The schema subjects of the topics stay in the registry: harmless.
    pub async fn remove(self, stack: &StackArgs) {
        for group in &self.groups {
            delete_group(stack, group).await;
        }
        for topic in &self.topics {
            delete_topic(stack, topic).await;
        }
        for database in &self.ch_databases {
            drop_ch_database(stack, database).await;
        }
        for database in &self.pg_databases {
            drop_pg_database(stack, database).await;
        }
    }
}
