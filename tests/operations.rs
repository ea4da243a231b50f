//! Operating the pipeline: replay by resetting offsets (bxbctl and Kafka's own tool), the
//! refusal to reset a live group, and `bxbctl verify` between the two stores.

#[path = "operations/stack.rs"]
mod stack;

use std::collections::{BTreeMap, HashSet};

use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use bxb_ctl::replay::{self, ReplayError, Target};
use bxb_ctl::verify::{self, VerifyScope};
use bxb_event::{Decimal, Event};
use bxb_tests::eventually;
use bxb_tests::kafka::{committed_offsets, end_offsets, now_ms};
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use stack::{workload, Stack, BILLABLE, WAIT};
use uuid::Uuid;

const HOUR_MS: i64 = 3_600_000;

fn base_ms() -> i64 {
    let two_days_ago = now_ms() - 48 * HOUR_MS;
    two_days_ago - two_days_ago % HOUR_MS
}

fn organizations(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// Every hour, every organization, the billable code of the stack.
fn everything() -> VerifyScope {
    VerifyScope { from_ms: 0, to_ms: now_ms() + HOUR_MS, organization_id: None, billable_codes: vec![BILLABLE.into()] }
}

/// The first event of every identity, in publish order: what both stores must count.
fn distinct(events: &[Event]) -> Vec<&Event> {
    let mut seen = HashSet::new();
    events.iter().filter(|e| seen.insert((e.organization_id, e.transaction_id.clone()))).collect()
}

fn assert_counts_match_what_was_published(snapshot: &stack::Snapshot, events: &[Event]) {
    let first = distinct(events);
    let billable: Vec<_> = first.iter().filter(|e| e.code == BILLABLE).collect();
    assert_eq!(snapshot.postgres.len(), billable.len(), "PostgreSQL holds each billable identity once");
    for e in &billable {
        let row = snapshot.postgres.iter().find(|r| r.0 == e.organization_id && r.1 == e.transaction_id).expect("row");
        assert_eq!(row.3, e.timestamp_ms, "the first record of a retried transaction wins");
    }
    let counted: u64 = snapshot.clickhouse.iter().map(|u| u.events).sum();
    assert_eq!(counted, first.len() as u64, "ClickHouse's billing query counts each identity once");
}

async fn replay_both(stack: &Stack, target: &Target) -> i64 {
    let config = stack.kafka_config();
    let mut reread = 0;
    for group in [&stack.clickhouse_group, &stack.postgres_group] {
        let plans = replay::plan(&config, group, &stack.topic.name, &[], target).expect("plan");
        replay::execute(&config, group, &stack.topic.name, &plans).expect("execute");
        reread = plans.iter().map(|p| p.reread).sum();
    }
    reread
}

#[tokio::test]
async fn replays_to_earliest_with_bxbctl_and_with_kafkas_tool_change_no_count() {
    let stack = Stack::new().await;
    let events = workload(&organizations(3), 60, base_ms());
    stack.publish(&events).await;
    stack.consume_everything().await;
    let before = stack.snapshot().await;
    assert_counts_match_what_was_published(&before, &events);

    // A dry run changes nothing and says how much would be read again.
    let config = stack.kafka_config();
    let committed = committed_offsets(&stack.clickhouse_group, &stack.topic.name).await;
    let plans = replay::plan(&config, &stack.clickhouse_group, &stack.topic.name, &[], &Target::Earliest).unwrap();
    assert_eq!(plans.iter().map(|p| p.reread).sum::<i64>(), events.len() as i64);
    assert_eq!(committed_offsets(&stack.clickhouse_group, &stack.topic.name).await, committed);

    assert_eq!(replay_both(&stack, &Target::Earliest).await, events.len() as i64);
    let rewound = committed_offsets(&stack.postgres_group, &stack.topic.name).await;
    assert!(rewound.values().all(|o| *o == 0), "offsets are back at the start: {rewound:?}");
    stack.consume_everything().await;
    assert_eq!(stack.snapshot().await, before, "bxbctl replay to earliest");

    for group in [&stack.clickhouse_group, &stack.postgres_group] {
        stack.reset_with_kafka_tool(group, &["--to-earliest"]);
    }
    stack.consume_everything().await;
    assert_eq!(stack.snapshot().await, before, "kafka-consumer-groups --reset-offsets --to-earliest");
}

#[tokio::test]
async fn replays_to_a_datetime_and_to_offsets_change_no_count() {
    let stack = Stack::new().await;
    let orgs = organizations(2);
    let events = workload(&orgs, 40, base_ms());
    let (first_half, second_half) = events.split_at(20);
    stack.publish(first_half).await;
    // Kafka stamps records with their produce time; leave a clear gap before the second half.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let middle_ms = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stack.publish(second_half).await;
    stack.consume_everything().await;
    let before = stack.snapshot().await;
    assert_counts_match_what_was_published(&before, &events);

    assert_eq!(replay_both(&stack, &Target::Timestamp(middle_ms)).await, second_half.len() as i64);
    stack.consume_everything().await;
    assert_eq!(stack.snapshot().await, before, "replay to a datetime");

    let end = end_offsets(&stack.topic.name).await;
    let (&partition, &high) = end.iter().next().expect("a partition with records");
    let reread = replay_both(&stack, &Target::Offsets(BTreeMap::from([(partition, 1)]))).await;
    assert_eq!(reread, high - 1, "only the named partition moves");
    stack.consume_everything().await;
    assert_eq!(stack.snapshot().await, before, "replay to an offset");
}

#[tokio::test]
async fn a_group_with_live_consumers_is_not_reset() {
    let stack = Stack::new().await;
    stack.publish(&workload(&organizations(1), 5, base_ms())).await;
    let consumers = stack.start_consumers().await;
    stack.drain().await;

    let config = stack.kafka_config();
    let refused = replay::plan(&config, &stack.postgres_group, &stack.topic.name, &[], &Target::Earliest);
    assert!(matches!(refused, Err(ReplayError::GroupActive { .. })), "bxbctl must refuse: {refused:?}");
    let tool = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/kafka-consumer-groups"))
        .args(["--group", &stack.postgres_group, "--topic", &stack.topic.name, "--reset-offsets", "--to-earliest", "--execute"])
        .output()
        .unwrap();
    let committed = committed_offsets(&stack.postgres_group, &stack.topic.name).await;
    assert!(committed.values().all(|o| *o > 0) && !committed.is_empty(), "Kafka's tool refused too ({tool:?}): {committed:?}");

    consumers.stop().await;
    // Once the consumers have left, the same reset goes through.
    eventually("the group to be empty", WAIT, || async {
        replay::plan(&config, &stack.postgres_group, &stack.topic.name, &[], &Target::Earliest).ok()
    })
    .await;
}

#[tokio::test]
async fn verify_agrees_on_a_clean_run_and_reports_an_injected_difference() {
    let stack = Stack::new().await;
    let events = workload(&organizations(2), 30, base_ms());
    stack.publish(&events).await;
    stack.consume_everything().await;

    let pool = stack.pool().await;
    let scope = everything();
    let clean = verify::verify(&pool, &stack.clickhouse_args(), &scope).await.unwrap();
    assert!(clean.buckets > 0);
    assert_eq!(clean.differences, vec![], "a clean run agrees");

    let victim = distinct(&events).into_iter().find(|e| e.code == BILLABLE).unwrap();
    sqlx::query("DELETE FROM events WHERE organization_id = $1 AND transaction_id = $2")
        .bind(victim.organization_id)
        .bind(&victim.transaction_id)
        .execute(&pool)
        .await
        .unwrap();
    let broken = verify::verify(&pool, &stack.clickhouse_args(), &scope).await.unwrap();
    assert_eq!(broken.differences.len(), 1, "{:?}", broken.differences);
    let difference = &broken.differences[0];
    assert_eq!(difference.key.0, victim.organization_id);
    assert_eq!(difference.key.2, victim.timestamp_ms - victim.timestamp_ms % HOUR_MS);
    let (pg, ch) = (difference.postgres.as_ref().map_or(0, |b| b.events), difference.clickhouse.as_ref().unwrap().events);
    assert_eq!(ch - pg, 1, "ClickHouse has the event PostgreSQL lost");
}

#[tokio::test]
async fn verify_buckets_hours_in_utc_whatever_the_postgres_session_time_zone() {
    let stack = Stack::new().await;
    let events = workload(&organizations(2), 30, base_ms());
    stack.publish(&events).await;
    stack.consume_everything().await;

    // A half-hour zone: an hour truncated there starts at half past a UTC hour.
    let pool = PgPoolOptions::new()
        .after_connect(|connection, _| Box::pin(async move { connection.execute("SET TIME ZONE 'Asia/Kolkata'").await.map(drop) }))
        .connect(&stack.postgres.url)
        .await
        .unwrap();
    let zone: String = sqlx::query_scalar("SHOW TimeZone").fetch_one(&pool).await.unwrap();
    assert_eq!(zone, "Asia/Kolkata");
    let report = verify::verify(&pool, &stack.clickhouse_args(), &everything()).await.unwrap();
    assert!(report.buckets > 0);
    assert_eq!(report.differences, vec![], "the stores hold the same events");
}

#[tokio::test]
async fn verify_reports_a_decimal_sum_beyond_decimal_38_12_as_an_overflow() {
    let stack = Stack::new().await;
    let org = Uuid::new_v4();
    let (overflowing_hour, fine_hour) = (base_ms(), base_ms() + HOUR_MS);
    // 30 × 10^25 = 3 × 10^26 is past Decimal(38, 12), and past the Int128 ClickHouse adds it in.
    let huge: Decimal = "10000000000000000000000000".parse().unwrap();
    let events: Vec<Event> = (0..33)
        .map(|i| {
            let (timestamp_ms, decimal_value) =
                if i < 30 { (overflowing_hour + i, huge.clone()) } else { (fine_hour + i, "1.5".parse().unwrap()) };
            Event {
                organization_id: org,
                transaction_id: format!("large-{i}"),
                external_customer_id: "customer-1".into(),
                code: BILLABLE.into(),
                timestamp_ms,
                properties: "{}".into(),
                value: Some(1.0),
                decimal_value: Some(decimal_value),
            }
        })
        .collect();
    stack.publish(&events).await;
    stack.consume_everything().await;

    // ClickHouse itself answers a valid-looking number, wrapped around (read in RowBinary: 18.16
    // prints large Decimal128 values wrong).
    let raw: i128 = stack
        .clickhouse
        .client()
        .query("SELECT sum(assumeNotNull(decimal_value)) FROM events_raw WHERE timestamp_ms < ?")
        .bind(fine_hour)
        .fetch_one()
        .await
        .unwrap();
    let wrapped = (0..30).fold(0i128, |sum, _| sum.wrapping_add(10i128.pow(37)));
    assert_eq!(raw, wrapped, "sum(decimal_value) times 10^12: 3 × 10^38 - 2^128");
    let usage = billing::usage(
        &stack.clickhouse_args().client(),
        &UsageQuery { from_ms: 0, to_ms: now_ms() + HOUR_MS, granularity: Granularity::Hour, organization_id: None },
    )
    .await
    .unwrap();
    let overflowed = usage.iter().find(|u| u.bucket_start_ms == overflowing_hour).expect("the bucket");
    assert_eq!(overflowed.decimal_value_sum, None, "billing::usage gives no wrapped sum: {overflowed:?}");
    let fine = usage.iter().find(|u| u.bucket_start_ms == fine_hour).expect("the bucket");
    assert_eq!(fine.decimal_value_sum, Some("4.5".parse().unwrap()));

    let report = verify::verify(&stack.pool().await, &stack.clickhouse_args(), &everything()).await.unwrap();
    assert_eq!(report.buckets, 2);
    assert_eq!(report.differences.len(), 1, "the other hour agrees: {:?}", report.differences);
    let difference = &report.differences[0];
    assert_eq!(difference.key, (org, BILLABLE.to_owned(), overflowing_hour));
    assert!(difference.decimal_overflow());
    let (postgres, clickhouse) = (difference.postgres.as_ref().unwrap(), difference.clickhouse.as_ref().unwrap());
    assert_eq!((postgres.events, clickhouse.events), (30, 30), "the counts agree, only the sum cannot be held");
    let hour = time::OffsetDateTime::from_unix_timestamp(overflowing_hour / 1000).unwrap();
    let hour = hour.format(&time::format_description::well_known::Rfc3339).unwrap();
    let message = difference.to_string();
    assert!(message.starts_with(&format!("{org} {BILLABLE} {hour}: the decimal_value sum overflows Decimal(38, 12);")), "{message}");
}

#[tokio::test]
async fn a_directly_produced_event_lands_in_both_stores() {
    let stack = Stack::new().await;
    let org = Uuid::new_v4();
    let lines = format!(
        "{{\"organization_id\":\"{org}\",\"transaction_id\":\"direct-1\",\"external_customer_id\":\"c1\",\"code\":\"{BILLABLE}\",\"decimal_value\":\"1.25\"}}\n\
         {{\"organization_id\":\"{org}\",\"transaction_id\":\"direct-2\",\"external_customer_id\":\"c1\",\"code\":\"page_views\"}}\n"
    );
    let window = bxb_event::ingest::TimestampWindow { max_age_ms: 86_400_000, max_future_skew_ms: 300_000 };
    let (events, errors) = bxb_ctl::produce::parse_lines(lines.as_bytes(), window);
    assert_eq!((events.len(), errors), (2, vec![]));
    let settings = bxb_publish::ProducerArgs::default();
    bxb_ctl::produce::publish(&stack.kafka_config(), &settings, &stack.publisher.registry, &stack.topic.name, &events).await.unwrap();

    let consumers = stack.start_consumers().await;
    stack.drain().await;
    consumers.stop().await;
    let snapshot = stack.snapshot().await;
    assert_eq!(
        snapshot.postgres.iter().map(|r| (r.0, r.1.as_str())).collect::<Vec<_>>(),
        [(org, "direct-1")],
        "the billable one is in PostgreSQL"
    );
    assert_eq!(snapshot.clickhouse.iter().map(|u| u.events).sum::<u64>(), 2, "both are in ClickHouse");
}

#[tokio::test]
async fn a_newer_schema_registered_by_a_direct_producer_is_read_without_a_restart() {
    use apache_avro::types::Value;
    let stack = Stack::new().await;
    let org = Uuid::new_v4();
    let v1 = workload(&[org], 3, base_ms());
    stack.publish(&v1).await;
    let consumers = stack.start_consumers().await;
    stack.drain().await;

    // A producer adds an optional field and registers the new version itself.
    let v2_json = include_str!("fixtures/operations/event_v2.avsc");
    let subject = bxb_event::registry::value_subject(&stack.topic.name);
    let v2_id = stack.publisher.registry.register_schema(&subject, v2_json).await.expect("BACKWARD compatible");
    assert_ne!(v2_id, stack.publisher.encoder.schema_id());
    let v2 = apache_avro::Schema::parse_str(v2_json).unwrap();
    let event = Event { transaction_id: "v2-1".into(), ..v1[0].clone() };
    let Value::Record(mut fields) = bxb_event::avro::to_value(&event) else { unreachable!() };
    fields.push(("region".into(), Value::Union(1, Box::new(Value::String("eu-west-1".into())))));
    let datum =
        apache_avro::writer::datum::GenericDatumWriter::builder(&v2).build().unwrap().write_value_to_vec(Value::Record(fields)).unwrap();
    let value = bxb_event::registry::frame(v2_id, &datum);
    let headers = bxb_kafka::headers::event_headers(&tracing::Span::none(), now_ms());
    stack.publisher.publish_raw(&event.kafka_key(), &value, headers).await;

    stack.drain().await;
    consumers.stop().await;
    let snapshot = stack.snapshot().await;
    assert!(snapshot.postgres.iter().any(|r| r.1 == "v2-1"), "consumer-postgres read the v2 record");
    assert_eq!(snapshot.clickhouse.iter().map(|u| u.events).sum::<u64>(), 4, "consumer-clickhouse read the v2 record");
}
