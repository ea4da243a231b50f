//! consumer-clickhouse against real Kafka, the schema registry and ClickHouse: events land once
//! and exactly, offsets are committed only after the insert, poison goes to the dead-letter
//! topic, and the billing queries stay exact through duplicates, replays, outages and a group
//! of two consumers.

#[path = "consumer_clickhouse/harness.rs"]
mod harness;
#[path = "consumer_clickhouse/schema.rs"]
mod schema;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bxb_consumer::{Record, Sink, SinkError};
use bxb_consumer_clickhouse::billing::{Granularity, Usage};
use bxb_consumer_clickhouse::{ClickHouseSink, EventRow};
use bxb_event::registry::{frame, value_subject};
use bxb_event::{Decimal, Event};
use bxb_kafka::headers;
use bxb_tests::dead_letters::DeadLetter;
use bxb_tests::{eventually, unique};
use harness::{fixture_events, Pipeline, Proxy, WAIT};
use rdkafka::message::OwnedHeaders;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_once_with_every_field_exact() {
    let pipeline = Pipeline::new().await;
    let events = fixture_events();
    let before = harness::now_ms();
    pipeline.produce(&events).await;
    let consumer = pipeline.start_default().await;

    pipeline.wait_for_rows(events.len() as u64).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let rows = pipeline.rows().await;
    for event in &events {
        let row = rows.iter().find(|r| r.transaction_id == event.transaction_id).expect("a row per event");
        assert_eq!(row.organization_id, event.organization_id);
        assert_eq!(row.external_customer_id, event.external_customer_id);
        assert_eq!(row.code, event.code);
        assert_eq!(row.timestamp_ms, event.timestamp_ms);
        assert_eq!(i64::from(row.timestamp), event.timestamp_ms.div_euclid(1000));
        assert_eq!(row.properties, event.properties, "properties byte for byte");
        assert_eq!(row.value.map(f64::to_bits), event.value.map(f64::to_bits));
        assert_eq!(row.decimal_value, event.decimal_value.as_ref().map(|d| d.to_scaled_i128(12).unwrap()));
        let ingested = row.ingested_at_ms.expect("the ingestion time header is kept");
        assert!(ingested >= before && ingested <= row.written_at_ms, "{ingested} {}", row.written_at_ms);
    }
    let (status, _) = consumer.get("/readyz").await;
    assert_eq!(status, 200);
    let (_, metrics) = consumer.get("/metrics").await;
    for name in [
        "bxb_consumer_events_consumed_total",
        "bxb_consumer_events_written_total",
        "bxb_consumer_batch_size_events",
        "bxb_consumer_write_duration_seconds",
        "bxb_consumer_commit_duration_seconds",
        "bxb_consumer_end_to_end_latency_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // Lag comes from librdkafka statistics, once per statistics interval.
    eventually("consumer lag in /metrics", WAIT, || async {
        consumer.get("/metrics").await.1.contains("bxb_consumer_lag_events{").then_some(())
    })
    .await;
    consumer.stop().await.expect("a clean shutdown");
    assert_eq!(pipeline.rows().await.len(), events.len(), "nothing written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_not_committed_while_clickhouse_is_unreachable_and_is_written_after() {
    let pipeline = Pipeline::new().await;
    let mut proxy = Proxy::start().await;
    let mut config = pipeline.config(&pipeline.group);
    config.clickhouse.url = proxy.url();
    config.clickhouse.write_timeout_ms = 2_000;
    let consumer = pipeline.start(config).await;

    let first = events_of(Uuid::new_v4(), "before", 10);
    pipeline.produce(&first).await;
    pipeline.wait_for_rows(10).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let committed_before = pipeline.committed(&pipeline.group).await;

    proxy.close();
    let second = events_of(Uuid::new_v4(), "during", 10);
    pipeline.produce(&second).await;
    eventually("readiness to report the sink down", WAIT, || async {
        let (status, body) = consumer.get("/readyz").await;
        (status == 503 && body.contains("sink")).then_some(())
    })
    .await;
    // Several attempts fail meanwhile; none of them commits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pipeline.committed(&pipeline.group).await, committed_before);
    assert_eq!(pipeline.row_count().await, 10);

    proxy.open().await;
    pipeline.wait_for_rows(20).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let usage = pipeline.usage(Granularity::Day, None).await;
    assert_eq!(usage.iter().map(|u| u.events).sum::<u64>(), 20);
    consumer.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_renamed_away_stops_the_consumer_without_committing_and_a_restart_writes_the_rest() {
    let pipeline = Pipeline::new().await;
    let consumer = pipeline.start_default().await;
    let first = events_of(Uuid::new_v4(), "kept", 5);
    pipeline.produce(&first).await;
    pipeline.wait_for_rows(5).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let committed_before = pipeline.committed(&pipeline.group).await;

    let rename = |from: &str, to: &str| format!("RENAME TABLE `{0}`.{from} TO `{0}`.{to}", pipeline.database);
    pipeline.clickhouse().query_raw(&rename("events_raw", "events_raw_away")).execute().await.unwrap();
    pipeline.produce(&events_of(Uuid::new_v4(), "refused", 5)).await;
    let outcome = tokio::time::timeout(WAIT, consumer.task).await.expect("a missing table stops the consumer").unwrap();
    let error = outcome.expect_err("a missing table is fatal").to_string();
    assert!(error.contains("UNKNOWN_TABLE"), "{error}");
    assert_eq!(pipeline.committed(&pipeline.group).await, committed_before, "nothing unwritten is committed");

    pipeline.clickhouse().query_raw(&rename("events_raw_away", "events_raw")).execute().await.unwrap();
    let restarted = pipeline.start_default().await;
    pipeline.wait_for_rows(10).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    assert_eq!(pipeline.usage(Granularity::Hour, None).await.iter().map(|u| u.events).sum::<u64>(), 10);
    restarted.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_a_replay_from_offset_zero_and_merges_leave_the_billing_queries_exact() {
    let pipeline = Pipeline::new().await;
    let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = events_of(org_a, "a", 30);
    events.extend(events_of(org_b, "b", 20));
    // Client retries: same identity, later record, other values, one in another month.
    let mut retry_same_hour = events[3].clone();
    retry_same_hour.value = Some(1000.0);
    retry_same_hour.decimal_value = Some("1000".parse().unwrap());
    let mut retry_next_month = events[35].clone();
    retry_next_month.timestamp_ms += 40 * 86_400_000;
    retry_next_month.code = "other_code".into();
    let mut exact_resend = events[10].clone();
    exact_resend.properties = r#"{"resent":true}"#.into();
    events.extend([retry_same_hour, retry_next_month, exact_resend, events[0].clone()]);
    pipeline.produce(&events).await;

    let first = pipeline.start_default().await;
    pipeline.wait_for_rows(events.len() as u64).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    first.stop().await.expect("a clean shutdown");
    let expected = |granularity, organization| expected_usage(&events, granularity, organization);
    let check = |stage: &'static str| {
        let pipeline = &pipeline;
        async move {
            for granularity in [Granularity::Hour, Granularity::Day] {
                for organization in [None, Some(org_a), Some(org_b)] {
                    let actual = sorted(pipeline.usage(granularity, organization).await);
                    assert_eq!(actual, expected(granularity, organization), "{stage}: {granularity:?} {organization:?}");
                }
            }
        }
    };
    check("first read").await;

    // A replay from offset 0: a new group re-reads and re-writes every record.
    let replay_group = unique("ch_replay");
    let replay = pipeline.start(pipeline.config(&replay_group)).await;
    pipeline.wait_for_rows(2 * events.len() as u64).await;
    pipeline.wait_until_all_committed(&replay_group).await;
    replay.stop().await.expect("a clean shutdown");
    check("after the replay").await;

    // Merges collapse the replay's copies, one row per Kafka record, and never two records of
    // one identity (the billing query chooses among those).
    let records = |rows: &[EventRow]| {
        rows.iter().map(|r| (r.organization_id, r.transaction_id.clone(), r.kafka_partition, r.kafka_offset)).collect::<BTreeSet<_>>()
    };
    let before = records(&pipeline.rows().await);
    assert_eq!(before.len(), events.len(), "every record is written, twice");
    pipeline.clickhouse().query_raw("OPTIMIZE TABLE events_raw FINAL").execute().await.unwrap();
    let after = pipeline.rows().await;
    assert_eq!(after.len(), events.len(), "one row per Kafka record after merging");
    assert_eq!(records(&after), before);
    check("after merges").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_kind_goes_to_the_dead_letter_topic_and_the_consumer_carries_on() {
    let pipeline = Pipeline::new().await;
    let org = Uuid::new_v4();
    let good = events_of(org, "good", 2);
    let mut broken = events_of(org, "broken", 1).remove(0);
    broken.code = "no spaces allowed".into();
    let other_schema = include_str!("fixtures/clickhouse/other_record.avsc");
    let other_id = pipeline.publisher.registry.register_schema(&value_subject(&unique("ch_other")), other_schema).await.unwrap();
    // {"invoice_id": 7, "total": 1.5}: a zig-zag long, then a little-endian double.
    let other: Vec<u8> = [&[14u8][..], &1.5f64.to_le_bytes()].concat();
    let key = org.hyphenated().to_string();
    let trace = OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "traceparent",
        value: Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..]),
    });
    // A schema id the registry does not know is not poison but a wait for the registry
    // (tests/hostile_consumer.rs); the key mismatch and the hostile schemas are there too.
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_wire_format", vec![0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]),
        ("invalid_fields", pipeline.publisher.encoder.encode(&broken)),
        ("incompatible_schema", frame(other_id, &other)),
    ];
    pipeline.produce(&good[..1]).await;
    for (_, value) in &poison {
        pipeline.produce_raw(&key, value, trace.clone()).await;
    }
    pipeline.produce(&good[1..]).await;

    let consumer = pipeline.start_default().await;
    pipeline.wait_for_rows(2).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let written: HashSet<String> = pipeline.rows().await.into_iter().map(|r| r.transaction_id).collect();
    assert_eq!(written, good.iter().map(|e| e.transaction_id.clone()).collect());

    let dead = read_dead_letters(&pipeline.dlq.name, poison.len()).await;
    for (reason, value) in &poison {
        let letter = dead
            .iter()
            .find(|d| d.header(headers::DLQ_REASON).as_deref() == Some(*reason))
            .unwrap_or_else(|| panic!("no dead letter for {reason}"));
        assert_eq!(&letter.value, value, "{reason}: the original value");
        assert_eq!(letter.key.as_deref(), Some(key.as_bytes()), "{reason}: the original key");
        assert_eq!(letter.header("traceparent").as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(letter.header(headers::DLQ_SOURCE_TOPIC).as_deref(), Some(pipeline.topic.name.as_str()));
        assert_eq!(letter.header(headers::DLQ_CONSUMER_GROUP).as_deref(), Some(pipeline.group.as_str()));
        assert!(letter.header(headers::DLQ_ERROR).is_some_and(|e| !e.is_empty()));
        assert!(letter.header(headers::DLQ_SOURCE_OFFSET).is_some_and(|o| o.parse::<i64>().is_ok()));
        assert!(letter.header(headers::DLQ_AT_MS).is_some_and(|t| t.parse::<i64>().is_ok()));
    }
    let (_, metrics) = consumer.get("/metrics").await;
    assert!(metrics.contains("bxb_consumer_events_dead_lettered_total"), "dead letters are counted");
    consumer.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_split_the_partitions_and_write_everything_once() {
    let pipeline = Pipeline::new().await;
    let args = pipeline.clickhouse_args();
    // Without `run`, nothing creates the table: connect only checks it.
    bxb_ctl::migrate::clickhouse(&args).await.expect("bxbctl migrate: ClickHouse");
    let mut instances = Vec::new();
    for _ in 0..2 {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let sink = Recording { inner: ClickHouseSink::connect(&args).await.unwrap(), partitions: seen.clone() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let consumer_args = pipeline.config(&pipeline.group).consumer;
        let task = tokio::spawn(bxb_consumer::run(consumer_args, listener, sink, shutdown.clone()));
        instances.push((seen, shutdown, task));
    }

    // Organizations spread over every partition; keep publishing until both members write.
    let mut events = Vec::new();
    eventually("both consumers to write part of the topic", WAIT, || {
        let wave: Vec<Event> = (0..8).flat_map(|i| events_of(Uuid::new_v4(), &format!("w{i}"), 5)).collect();
        events.extend(wave.clone());
        let (pipeline, instances) = (&pipeline, &instances);
        async move {
            pipeline.produce(&wave).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            instances.iter().all(|(seen, _, _)| !seen.lock().unwrap().is_empty()).then_some(())
        }
    })
    .await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let usage = pipeline.usage(Granularity::Hour, None).await;
    assert_eq!(sorted(usage), expected_usage(&events, Granularity::Hour, None));
    let partitions: Vec<HashSet<i32>> = instances.iter().map(|(seen, _, _)| seen.lock().unwrap().clone()).collect();
    assert!(partitions.iter().all(|p| !p.is_empty()), "each member wrote some partitions: {partitions:?}");
    for (_, shutdown, task) in instances {
        shutdown.cancel();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().expect("a clean shutdown");
    }
}

/// The real ClickHouse sink, noting which partitions this instance wrote.
struct Recording {
    inner: ClickHouseSink,
    partitions: Arc<Mutex<HashSet<i32>>>,
}

impl Sink for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn write(&self, batch: &[Record]) -> Result<bxb_consumer::Written, SinkError> {
        let written = self.inner.write(batch).await?;
        self.partitions.lock().unwrap().extend(batch.iter().map(|r| r.partition));
        Ok(written)
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

/// `count` events of one organization with values whose sums are exact in binary.
fn events_of(organization_id: Uuid, prefix: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| Event {
            organization_id,
            transaction_id: format!("{prefix}-{i}"),
            external_customer_id: format!("customer-{}", i % 3),
            code: ["api_calls", "storage"][i % 2].into(),
            timestamp_ms: 1_763_900_000_000 + i as i64 * 1_200_017,
            properties: format!(r#"{{"i":{i}}}"#),
            value: (i % 4 != 0).then_some(i as f64 * 0.5),
            decimal_value: (i % 3 != 0).then(|| format!("{i}.00000000000{}", i % 10).parse().unwrap()),
        })
        .collect()
}

/// What the billing queries must return: each identity once, as its first record.
fn expected_usage(events: &[Event], granularity: Granularity, organization: Option<Uuid>) -> Vec<Usage> {
    let mut seen = HashSet::new();
    let mut buckets: BTreeMap<(Uuid, String, i64), (u64, f64, i128)> = BTreeMap::new();
    for event in events.iter().filter(|e| organization.is_none_or(|o| o == e.organization_id)) {
        if !seen.insert((event.organization_id, event.transaction_id.clone())) {
            continue;
        }
        let bucket = event.timestamp_ms - event.timestamp_ms % granularity.millis();
        let entry = buckets.entry((event.organization_id, event.code.clone(), bucket)).or_default();
        entry.0 += 1;
        entry.1 += event.value.unwrap_or(0.0);
        entry.2 += event.decimal_value.as_ref().map_or(0, |d| d.to_scaled_i128(12).unwrap());
    }
    buckets
        .into_iter()
        .map(|((organization_id, code, bucket_start_ms), (events, value_sum, scaled))| Usage {
            organization_id,
            code,
            bucket_start_ms,
            events,
            value_sum,
            decimal_value_sum: Some(scaled_decimal(scaled)),
        })
        .collect()
}

fn scaled_decimal(scaled: i128) -> Decimal {
    let digits = format!("{:013}", scaled.unsigned_abs());
    let (int_part, frac) = digits.split_at(digits.len() - 12);
    format!("{}{int_part}.{frac}", if scaled < 0 { "-" } else { "" }).parse().unwrap()
}

fn sorted(mut usage: Vec<Usage>) -> Vec<Usage> {
    usage.sort_by(|a, b| (a.organization_id, &a.code, a.bucket_start_ms).cmp(&(b.organization_id, &b.code, b.bucket_start_ms)));
    usage
}

/// The first `count` dead letters of `topic` (the reader of `tests/common`, with this suite's wait).
async fn read_dead_letters(topic: &str, count: usize) -> Vec<DeadLetter> {
    bxb_tests::dead_letters::read_dead_letters(topic, count, WAIT).await
}
