//! The upgrade to the identity rule: stores written as the previous release wrote them (its
//! layouts, its duplicates and its defect: a billable retry stored in PostgreSQL after a
//! non-billable first record), migrated by `bxbctl migrate`, fed by the new consumers, then
//! reconciled by `bxbctl backfill`, end exact under the rule.

use std::borrow::Cow;

use bxb_consumer_postgres::partitions::Partitions;
use bxb_ctl::backfill::{backfill, BackfillScope};
use bxb_event::Event;
use bxb_schemas::clickhouse::EVENTS_RAW_V1_DDL;
use bxb_tests::databases::{TestClickHouse, TestPostgres};
use bxb_tests::kafka::EventPublisher;
use bxb_tests::{clickhouse_url, EphemeralTopic};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use super::support::*;

/// The first migration of the identity rule; the previous release had those before it.
const RULE_MIGRATION: i64 = 20261201000001;

/// A record as the previous release stored it: its event and its place in Kafka.
struct Legacy {
    event: Event,
    partition: i32,
    offset: i64,
}

fn legacy(event: Event, offset: i64) -> Legacy {
    Legacy { event, partition: 0, offset }
}

/// PostgreSQL with the previous release's migrations only.
async fn previous_postgres() -> TestPostgres {
    let db = TestPostgres::create_empty().await;
    let before: Vec<_> = bxb_schemas::postgres::MIGRATOR.migrations.iter().filter(|m| m.version < RULE_MIGRATION).cloned().collect();
    assert!(before.len() < bxb_schemas::postgres::MIGRATOR.migrations.len());
    let previous = Migrator { migrations: Cow::Owned(before), ..Migrator::DEFAULT };
    previous.run(&db.pool().await).await.expect("the previous release's migrations");
    db
}

/// ClickHouse with the previous release's `events_raw`.
async fn previous_clickhouse() -> TestClickHouse {
    let db = TestClickHouse::new();
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    server.query(&format!("CREATE DATABASE `{}`", db.database)).execute().await.unwrap();
    db.client().query(EVENTS_RAW_V1_DDL).execute().await.unwrap();
    db
}

async fn insert_clickhouse_v1(client: &clickhouse::Client, rows: &[&Legacy]) {
    for row in rows {
        let e = &row.event;
        let sql = format!(
            "INSERT INTO events_raw (organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, \
             properties, value, decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset) \
             SELECT toUUID('{}'), '{}', '{}', '{}', toDateTime({}), {}, '{{}}', toNullable({}), toNullable(toDecimal128('{}', 12)), \
             CAST(NULL AS Nullable(Int64)), {}, toInt32({}), {}",
            e.organization_id,
            e.transaction_id,
            e.external_customer_id,
            e.code,
            e.timestamp_ms / 1000,
            e.timestamp_ms,
            e.value.unwrap(),
            e.decimal_value.as_ref().unwrap().as_str(),
            e.timestamp_ms + 10,
            row.partition,
            row.offset
        );
        client.query(&sql).execute().await.unwrap();
    }
}

async fn insert_postgres_v1(db: &TestPostgres, rows: &[&Legacy]) {
    let pool = db.pool().await;
    let partitions = Partitions::new(&bxb_consumer_postgres::PostgresArgs::with_url(&db.url));
    let timestamps: Vec<i64> = rows.iter().map(|r| r.event.timestamp_ms).collect();
    partitions.ensure_covering(&pool, &timestamps).await.unwrap();
    for row in rows {
        let e = &row.event;
        let at = bxb_consumer_postgres::partitions::datetime(e.timestamp_ms);
        sqlx::query(r#"INSERT INTO event_keys (organization_id, transaction_id, "timestamp") VALUES ($1, $2, $3)"#)
            .bind(e.organization_id)
            .bind(&e.transaction_id)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            r#"INSERT INTO events (organization_id, transaction_id, external_customer_id, code, "timestamp", value,
                                   decimal_value, kafka_partition, kafka_offset)
               VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8, $9)"#,
        )
        .bind(e.organization_id)
        .bind(&e.transaction_id)
        .bind(&e.external_customer_id)
        .bind(&e.code)
        .bind(at)
        .bind(e.value)
        .bind(e.decimal_value.as_ref().map(|d| d.as_str().to_owned()))
        .bind(row.partition)
        .bind(row.offset)
        .execute(&pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn stores_of_the_previous_release_end_exact_under_the_rule() {
    bxb_telemetry::init_for_tests();
    let org = Uuid::new_v4();
    // What the previous release had consumed: partition 0, offsets 0..7 of the topic it read.
    let a1 = legacy(version(org, "a", BILLABLE, 1, 1.0), 0);
    let b1 = legacy(version(org, "b", NOT_BILLABLE, 1, 1.0), 1);
    let c1 = legacy(version(org, "c", BILLABLE, 2, 1.0), 2);
    let d1 = legacy(version(org, "d", BILLABLE, 1, 1.0), 3);
    let a2 = legacy(version(org, "a", BILLABLE, 1, 2.0), 5);
    let b2 = legacy(version(org, "b", BILLABLE, 3, 2.0), 6);
    // ClickHouse: every record, and d written twice (a retried batch).
    let clickhouse = previous_clickhouse().await;
    insert_clickhouse_v1(&clickhouse.client(), &[&a1, &b1, &c1, &d1, &d1, &a2, &b2]).await;
    // PostgreSQL: the first billable record it wrote of each identity; for b, the retry.
    let postgres = previous_postgres().await;
    insert_postgres_v1(&postgres, &[&a1, &c1, &d1, &b2]).await;

    // The upgrade: bxbctl migrate (the consumers stopped).
    bxb_ctl::migrate::postgres(&postgres.url).await.expect("PostgreSQL migrates");
    let migrated = bxb_ctl::migrate::clickhouse(&clickhouse.args()).await.expect("ClickHouse migrates");
    assert!(migrated.iter().any(|m| m.contains("upgraded to version 2")), "{migrated:?}");
    // Every row the old table held (its merges may already have collapsed some) moved, with
    // append time 0; the old table stays for the operator.
    let count = |sql: &'static str| {
        let client = clickhouse.client();
        async move { client.query(sql).fetch_one::<u64>().await.unwrap() }
    };
    let old_rows = count("SELECT count() FROM events_raw_before_rank").await;
    assert!(old_rows >= 4, "{old_rows}");
    assert_eq!(count("SELECT count() FROM events_raw WHERE appended_at_ms = 0").await, old_rows);
    assert!(bxb_ctl::migrate::clickhouse(&clickhouse.args()).await.unwrap().is_empty(), "migrate is idempotent");

    // The new consumers read new records: a third version of a, and a new identity.
    let topic = EphemeralTopic::new("upgrade", 2).await;
    let dlq = EphemeralTopic::new("upgrade_dlq", 1).await;
    let publisher = EventPublisher::new(&topic.name).await;
    let a3 = version(org, "a", BILLABLE, 1, 3.0);
    let e1 = version(org, "e", BILLABLE, 2, 1.0);
    publisher.publish_to(1, &[a3, e1.clone()]).await;
    let pool = postgres.pool().await;
    let stack = Stack { topic, dlq, postgres, clickhouse, publisher, pool };
    stack.consume_everything().await;

    // bxbctl backfill over the history.
    let mut args = stack.postgres_args();
    args.retention_days = 400;
    let sink = bxb_consumer_postgres::PostgresSink::connect(args).await.unwrap();
    let now = bxb_tests::kafka::now_ms();
    let scope = BackfillScope { from_ms: now - 3 * 24 * HOUR_MS, to_ms: now + 24 * HOUR_MS, organization_id: None };
    let report = backfill(&sink, &stack.clickhouse.args(), &scope).await.expect("backfill");
    assert_eq!((report.summary.replaced, report.summary.removed), (1, 1), "b's billable retry goes: {report:?}");

    // The truth: the first record of each identity, by the order the records reached Kafka.
    let firsts = [&a1.event, &b1.event, &c1.event, &d1.event, &e1];
    assert_eq!(stack.clickhouse_usage().await, bill_of(firsts));
    assert_eq!(stack.postgres_usage().await, bill_of(firsts.into_iter().filter(|e| e.code == BILLABLE)));
    // A second backfill changes nothing.
    let again = backfill(&sink, &stack.clickhouse.args(), &scope).await.unwrap();
    assert_eq!((again.summary.written, again.summary.removed, again.summary.new_identities), (0, 0, 0), "{again:?}");
}
