//! Records produced to chosen partitions, consumed by both real consumers: both stores bill
//! each identity by its first record, and by nothing else.

use std::time::Duration;

use bxb_tests::dead_letters::read_dead_letters;
use bxb_tests::kafka::wait_until_committed;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use uuid::Uuid;

use super::support::*;

/// What the stores hold of an identity in PostgreSQL: (transaction_id, code, value, hour).
async fn postgres_rows(stack: &Stack) -> Vec<(String, String, f64, i64)> {
    sqlx::query_as(
        r#"SELECT transaction_id, code, value, (floor(extract(epoch FROM "timestamp") * 1000 / 3600000) * 3600000)::int8
           FROM events ORDER BY transaction_id"#,
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

/// One organization's first records in partition 2, then, 2 s later, retries of each in
/// partition 0 at the same offsets: the placement a Java client's partitioner gives where the
/// gateway's librdkafka default gave another. Retries change value, code (both ways) and hour.
#[tokio::test]
async fn one_organization_in_two_partitions_is_billed_by_its_first_records_in_both_stores() {
    let stack = Stack::new(4).await;
    let org = Uuid::new_v4();
    let first = [
        version(org, "a", BILLABLE, 1, 1.0),
        version(org, "b", NOT_BILLABLE, 1, 1.0),
        version(org, "c", BILLABLE, 1, 1.0),
        version(org, "d", BILLABLE, 1, 1.0),
    ];
    let retries = [
        version(org, "a", BILLABLE, 1, 2.0),     // another value
        version(org, "b", BILLABLE, 1, 2.0),     // made billable
        version(org, "c", BILLABLE, 2, 2.0),     // another hour
        version(org, "d", NOT_BILLABLE, 1, 2.0), // made not billable
    ];
    let first_offsets = stack.publisher.publish_to(2, &first).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retry_offsets = stack.publisher.publish_to(0, &retries).await;
    assert_eq!(first_offsets, retry_offsets, "each pair at the same offset of its partition");

    stack.consume_everything().await;

    let truth = bill_of(&first);
    let billable_truth = bill_of(first.iter().filter(|e| e.code == BILLABLE));
    assert_eq!(stack.clickhouse_usage().await, truth, "ClickHouse bills the first records");
    assert_eq!(stack.postgres_usage().await, billable_truth, "PostgreSQL bills the billable first records");
    let rows = postgres_rows(&stack).await;
    let kept: Vec<(&str, f64)> = rows.iter().map(|(tx, _, value, _)| (tx.as_str(), *value)).collect();
    assert_eq!(kept, [("a", 1.0), ("c", 1.0), ("d", 1.0)]);
    // ClickHouse keeps every record; a merge must not collapse two records of one identity.
    let client = stack.clickhouse.client();
    client.query("OPTIMIZE TABLE events_raw FINAL").execute().await.unwrap();
    let stored: u64 = client.query("SELECT count() FROM events_raw").fetch_one().await.unwrap();
    assert_eq!(stored, 8);
    assert_eq!(stack.clickhouse_usage().await, truth, "the same after merges");
}

/// Records of a topic with one partition; the topic grows to four and the retries land in a
/// new partition, at lower offsets than their originals. The originals still count.
#[tokio::test]
async fn retries_placed_after_a_partition_increase_lose_to_the_earlier_records() {
    let stack = Stack::new(1).await;
    let org = Uuid::new_v4();
    let padding: Vec<_> = (0..5).map(|i| version(org, &format!("pad-{i}"), BILLABLE, 0, 0.5)).collect();
    let first = [version(org, "x", BILLABLE, 3, 1.0), version(org, "y", NOT_BILLABLE, 3, 1.0)];
    stack.publisher.publish_to(0, &padding).await;
    let first_offsets = stack.publisher.publish_to(0, &first).await;

    // Consume what is there, so the retries meet stored identities.
    stack.consume_everything().await;

    let admin: AdminClient<DefaultClientContext> = bxb_tests::kafka_config().create().unwrap();
    for result in admin.create_partitions([&NewPartitions::new(&stack.topic.name, 4)], &AdminOptions::new()).await.unwrap() {
        result.expect("the topic grows to four partitions");
    }
    let retries = [version(org, "x", BILLABLE, 4, 2.0), version(org, "y", BILLABLE, 3, 2.0)];
    // A new producer, which knows the new partitions from its first metadata.
    let publisher = bxb_tests::kafka::EventPublisher::new(&stack.topic.name).await;
    let retry_offsets = publisher.publish_to(3, &retries).await;
    assert!(retry_offsets.iter().zip(&first_offsets).all(|(r, f)| r < f), "{retry_offsets:?} {first_offsets:?}");

    stack.consume_everything().await;

    let firsts: Vec<_> = padding.iter().chain(&first).collect();
    assert_eq!(stack.clickhouse_usage().await, bill_of(firsts.iter().copied()));
    assert_eq!(stack.postgres_usage().await, bill_of(firsts.iter().copied().filter(|e| e.code == BILLABLE)));
}

/// A metric made billable (its row committed) just before its events are sent: every one is
/// billed, long before the consumer's periodic refresh would have seen the row.
#[tokio::test]
async fn a_metric_made_billable_just_before_its_events_is_billed() {
    let stack = Stack::new(2).await;
    let org = Uuid::new_v4();
    let group = bxb_tests::unique("identity_pg");
    // An hour between refreshes: only the per-batch check can see the new row.
    let postgres = stack.start_postgres(&group, |args| args.billable_refresh_ms = 3_600_000).await;
    // The consumer has loaded the table (one record of another organization written).
    stack.publisher.publish(&[version(Uuid::new_v4(), "warm-up", BILLABLE, 0, 1.0)]).await;
    wait_until_committed(&group, &stack.topic.name, WAIT).await;

    sqlx::query("INSERT INTO billable_metrics (organization_id, code) VALUES ($1, 'storage_gb')")
        .bind(org)
        .execute(&stack.pool)
        .await
        .unwrap();
    let events: Vec<_> = (0..10).map(|i| version(org, &format!("s{i}"), "storage_gb", 2, i as f64)).collect();
    stack.publisher.publish(&events).await;
    wait_until_committed(&group, &stack.topic.name, WAIT).await;
    postgres.stop().await;

    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE organization_id = $1").bind(org).fetch_one(&stack.pool).await.unwrap();
    assert_eq!(stored, 10, "every event accepted after its metric became billable is in PostgreSQL");
}

/// A billable event older than the partitions PostgreSQL keeps is refused for good: it goes to
/// the dead-letter topic with its reason, is committed, and the events around it are written.
#[tokio::test]
async fn a_billable_event_postgres_cannot_store_goes_to_the_dead_letter_topic() {
    let stack = Stack::new(1).await;
    let org = Uuid::new_v4();
    let mut too_old = version(org, "old", BILLABLE, 0, 1.0);
    too_old.timestamp_ms -= 40 * 24 * HOUR_MS;
    let mut old_not_billable = version(org, "old-other", NOT_BILLABLE, 0, 1.0);
    old_not_billable.timestamp_ms -= 40 * 24 * HOUR_MS;
    let fine = version(org, "fine", BILLABLE, 0, 1.0);
    stack.publisher.publish(&[too_old.clone(), old_not_billable, fine.clone()]).await;

    let group = bxb_tests::unique("identity_pg");
    let postgres = stack.start_postgres(&group, |args| args.retention_days = 30).await;
    wait_until_committed(&group, &stack.topic.name, WAIT).await;
    postgres.stop().await;

    let letters = read_dead_letters(&stack.dlq.name, 1, WAIT).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("bxb-dlq-reason").as_deref(), Some("too_old"));
    assert_eq!(letters[0].header("bxb-dlq-source-offset").as_deref(), Some("0"));
    assert_eq!(stack.postgres_usage().await, bill_of([&fine]));
}
