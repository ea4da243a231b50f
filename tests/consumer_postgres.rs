//! consumer-postgres against the real PostgreSQL (and, end to end, Kafka and the registry): the
//! billable subset lands exactly once, partitions come and go, the binary COPY encoding is exact.
//!
//! Every test has its own database (`support::TestDb`), dropped when it ends.

#[path = "consumer_postgres/schema.rs"]
mod schema;
#[path = "consumer_postgres/support.rs"]
mod support;
#[path = "consumer_postgres/through_kafka.rs"]
mod through_kafka;

use bxb_consumer::{Record, Sink, SinkError};
use bxb_consumer_postgres::copy_binary::BinaryCopyWriter;
use sqlx::Connection;
use support::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(serde::Deserialize)]
struct CopyValues {
    decimals: Vec<String>,
    timestamps_ms: Vec<i64>,
    properties: Vec<String>,
    floats: Vec<f64>,
}

fn copy_values() -> CopyValues {
    serde_json::from_str(include_str!("fixtures/postgres/copy_values.json")).unwrap()
}

#[tokio::test]
async fn binary_copy_encoders_round_trip_exactly_through_postgres() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE round_trip (i int4, n numeric, t timestamptz, j jsonb, f float8, u uuid, s text, b int8)")
        .execute(&mut conn)
        .await
        .unwrap();
    let values = copy_values();
    // Random decimals on top of the fixture's edge cases.
    let mut decimals = values.decimals.clone();
    for _ in 0..300 {
        let int: u128 = rand::random::<u128>() % 10u128.pow(rand::random_range(0..=26));
        let frac: u64 = rand::random::<u64>() % 10u64.pow(12);
        let digits = rand::random_range(0..=12usize);
        let sign = if rand::random::<bool>() { "-" } else { "" };
        let frac_text = format!("{frac:012}");
        let text = if digits == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{}", &frac_text[..digits]) };
        decimals.push(text);
    }
    let rows = decimals.len().max(values.timestamps_ms.len()).max(values.properties.len()).max(values.floats.len()) + 1;
    let uuid = Uuid::new_v4();

    let mut w = BinaryCopyWriter::default();
    for i in 0..rows {
        w.row(8).int4(i as i32);
        match decimals.get(i) {
            Some(d) => w.numeric(d).unwrap(),
            None => w.null(),
        };
        match values.timestamps_ms.get(i) {
            Some(&t) => w.timestamptz_ms(t),
            None => w.null(),
        };
        match values.properties.get(i) {
            Some(p) => w.jsonb(p).unwrap(),
            None => w.null(),
        };
        match values.floats.get(i) {
            Some(&f) => w.float8(f),
            None => w.null(),
        };
        w.uuid(&uuid);
        w.text("héllo ☃").unwrap();
        w.int8(i64::MIN + i as i64);
    }
    let mut copy = conn.copy_in_raw("COPY round_trip FROM STDIN (FORMAT BINARY)").await.unwrap();
    copy.send(w.finish()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), rows as u64);

    #[allow(clippy::type_complexity, reason = "a row as a tuple, its columns named in the query beside it")]
    let stored: Vec<(i32, Option<String>, Option<i64>, Option<String>, Option<f64>, Uuid, String, i64)> =
        sqlx::query_as("SELECT i, n::text, (extract(epoch FROM t) * 1000)::int8, j::text, f, u, s, b FROM round_trip ORDER BY i")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(stored.len(), rows);
    for (i, n, t, j, f, u, s, b) in stored {
        let i = i as usize;
        // numeric keeps the written scale, so its text is the input with leading zeros trimmed.
        let expected_decimal = decimals.get(i).map(|d| normalize_integer_zeros(d));
        assert_eq!(n, expected_decimal, "decimal row {i}");
        assert_eq!(t, values.timestamps_ms.get(i).copied(), "timestamp row {i}");
        match values.properties.get(i) {
            Some(p) => {
                let equal: bool = sqlx::query_scalar("SELECT $1::jsonb = $2::text::jsonb")
                    .bind(j.clone().unwrap())
                    .bind(p)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                assert!(equal, "jsonb row {i}: stored {j:?}, sent {p}");
            }
            None => assert_eq!(j, None),
        }
        assert_eq!(f.map(f64::to_bits), values.floats.get(i).map(|f| f.to_bits()), "float row {i}");
        assert_eq!((u, s.as_str(), b), (uuid, "héllo ☃", i64::MIN + i as i64));
    }
    // A timestamp's text, to be sure the epoch offset is right and not merely self-consistent.
    let text: String = sqlx::query_scalar("SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM round_trip WHERE i = 4")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(text, "2000-01-01 00:00:00.000");
}

/// `-007.50` is stored as `-7.50`: PostgreSQL prints no leading zeros but keeps the scale.
fn normalize_integer_zeros(decimal: &str) -> String {
    let (sign, rest) = decimal.strip_prefix('-').map_or(("", decimal), |r| ("-", r));
    let trimmed = rest.trim_start_matches('0');
    let body = if trimmed.is_empty() || trimmed.starts_with('.') { format!("0{trimmed}") } else { trimmed.to_owned() };
    let is_zero = body.bytes().all(|b| b == b'0' || b == b'.');
    if is_zero {
        body
    } else {
        format!("{sign}{body}")
    }
}

#[tokio::test]
async fn billable_events_land_once_with_every_field_exact_and_the_rest_are_skipped() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let org = Uuid::new_v4();
    let other_org = Uuid::new_v4();
    let sink = db.sink(|_| {}).await;
    make_billable(&pool, org, "storage_gb").await;
    sink.refresh_billable().await.unwrap();

    let ts = now_ms() - 3_600_000 + 123;
    let mut billable = event(org, "tx-1", "storage_gb", ts);
    billable.properties = r#"{"region":"eu","n":1.000000000000000000001}"#.into();
    billable.value = Some(0.1);
    billable.decimal_value = Some("-99999999999999999999999999.999999999999".parse().unwrap());
    let mut bare = event(org, "tx-2", "storage_gb", ts + 1);
    bare.value = None;
    bare.decimal_value = None;
    let batch = vec![
        record(billable.clone(), 10),
        record(event(org, "tx-3", "api_calls", ts), 11),        // not billable for anyone
        record(event(other_org, "tx-4", "storage_gb", ts), 12), // billable for `org` only
        Record { ingested_at_ms: None, ..record(bare, 13) },
    ];
    let (summary, _) = sink.write_batch(&batch).await.expect("batch written");
    assert_eq!(summary.written, 2);
    assert_eq!(summary.not_billable, 2);

    #[allow(clippy::type_complexity, reason = "a row as a tuple, its columns named in the query beside it")]
    let row: (String, String, i64, bool, Option<f64>, Option<String>, Option<i64>, i32, i64, bool) = sqlx::query_as(
        "SELECT external_customer_id, code, (extract(epoch FROM \"timestamp\") * 1000)::int8,
                properties = $2::text::jsonb, value, decimal_value::text,
                (extract(epoch FROM ingested_at) * 1000)::int8, kafka_partition, kafka_offset,
                written_at BETWEEN now() - interval '1 minute' AND now()
         FROM events WHERE organization_id = $1 AND transaction_id = 'tx-1'",
    )
    .bind(org)
    .bind(&billable.properties)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "customer-1".into(),
            "storage_gb".into(),
            ts,
            true,
            Some(0.1),
            Some("-99999999999999999999999999.999999999999".into()),
            Some(1_763_900_000_010),
            0,
            10,
            true
        )
    );
    let bare_row: (Option<f64>, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT value, decimal_value::text, (extract(epoch FROM ingested_at) * 1000)::int8
         FROM events WHERE organization_id = $1 AND transaction_id = 'tx-2'",
    )
    .bind(org)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bare_row, (None, None, None));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 2);
    // Every identity is kept, billable or not: the first record decides it (docs/identity.md).
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys").await, 4);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys WHERE billable").await, 2);

    // The same batch again (a crash between write and commit re-delivers it): nothing changes.
    let (again, _) = sink.write_batch(&batch).await.unwrap();
    assert_eq!((again.written, again.already_stored), (0, 4));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 2);
}

#[tokio::test]
async fn a_retry_with_another_timestamp_is_dropped_and_the_first_record_wins() {
    let (_db, pool, sink) = api_calls_sink().await;
    let org = Uuid::new_v4();
    let today = now_ms() - 60_000;
    let yesterday = today - DAY_MS;

    // Within one batch: the first record of the identity wins, even on another day's partition.
    let batch = vec![
        record(event(org, "retried", "api_calls", yesterday), 1),
        record(event(org, "retried", "api_calls", today), 2),
        record(event(org, "single", "api_calls", today), 3),
    ];
    let (summary, _) = sink.write_batch(&batch).await.unwrap();
    assert_eq!(summary.written, 2);
    assert_eq!(summary.duplicates_in_batch, 1);
    // Across batches: the key is taken, the later timestamp is dropped.
    let (retry, _) = sink.write_batch(&[record(event(org, "single", "api_calls", yesterday + 5), 4)]).await.unwrap();
    assert_eq!((retry.written, retry.already_stored), (0, 1));

    assert_eq!(rows_of(&pool, org).await, vec![("retried".to_owned(), yesterday, 1), ("single".to_owned(), today, 3)]);
    let key_ts: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM \"timestamp\") * 1000)::int8 FROM event_keys WHERE organization_id = $1 AND transaction_id = 'retried'",
    )
    .bind(org)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(key_ts, yesterday, "the key records the partition its event went to");
}

#[tokio::test]
async fn a_better_ranked_record_that_arrives_later_replaces_the_stored_one() {
    let (_db, pool, sink) = api_calls_sink().await;
    let org = Uuid::new_v4();
    let ts = now_ms() - 60_000;
    let version = |tx: &str, code: &str, value: f64, partition: i32, appended_at_ms: i64| Record {
        partition,
        appended_at_ms,
        ..record(bxb_event::Event { value: Some(value), ..event(org, tx, code, ts) }, 7)
    };
    // The retries (partition 3) are consumed first; the originals, appended a millisecond
    // earlier to partition 1, by a slower consumer afterwards.
    let (first, _) = sink.write_batch(&[version("x", "api_calls", 2.0, 3, 1_001), version("y", "api_calls", 2.0, 3, 1_001)]).await.unwrap();
    assert_eq!((first.written, first.new_identities), (2, 2));
    let (later, _) = sink.write_batch(&[version("x", "api_calls", 1.0, 1, 1_000), version("y", "seats", 1.0, 1, 1_000)]).await.unwrap();
    assert_eq!((later.replaced, later.removed, later.written), (2, 2, 1), "{later:?}");
    let rows: Vec<(String, f64)> =
        sqlx::query_as("SELECT transaction_id, value FROM events WHERE organization_id = $1").bind(org).fetch_all(&pool).await.unwrap();
    assert_eq!(rows, [("x".to_owned(), 1.0)], "x by its first record; y's first record is not billable");
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM event_keys WHERE transaction_id = 'y' AND NOT billable AND kafka_partition = 1").await,
        1
    );
    // Delivered again, the retries change nothing.
    let (again, _) = sink.write_batch(&[version("x", "api_calls", 2.0, 3, 1_001), version("y", "api_calls", 2.0, 3, 1_001)]).await.unwrap();
    assert_eq!((again.written, again.removed, again.already_stored), (0, 0, 2));
}

#[tokio::test]
async fn a_record_read_again_after_its_metric_was_made_billable_retroactively_is_billed() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let sink = db.sink(|_| {}).await;
    let org = Uuid::new_v4();
    let batch = [record(event(org, "r", "seats", now_ms() - 60_000), 3)];
    let (first, _) = sink.write_batch(&batch).await.unwrap();
    assert_eq!((first.written, first.not_billable), (0, 1));
    // Billable since before the record: a replay (or bxbctl backfill) judges it again.
    make_billable(&pool, org, "seats").await;
    let (replayed, _) = sink.write_batch(&batch).await.unwrap();
    assert_eq!((replayed.rejudged, replayed.written), (1, 1));
    // And stopped retroactively: the row goes.
    sqlx::query("UPDATE billable_metrics SET effective_until = '2000-01-01T00:00:00Z' WHERE organization_id = $1")
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
    let (ended, _) = sink.write_batch(&batch).await.unwrap();
    assert_eq!((ended.rejudged, ended.removed), (1, 1));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn partitions_are_created_for_late_and_future_events_and_dropped_by_retention() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let sink = db
        .sink(|a| {
            a.billable_codes = vec!["api_calls".into()];
            a.retention_days = 5;
            a.max_future_days = 7;
            a.partitions_ahead = 1;
        })
        .await;
    let now = now_ms();
    let day = |ms: i64| ms - ms.rem_euclid(DAY_MS);
    let name = |ms: i64| bxb_consumer_postgres::partitions::partition_name(day(ms));
    let ahead = partition_names(&pool).await;
    assert_eq!(ahead, vec![name(now), name(now + DAY_MS)], "current and next partition exist ahead of time");

    let org = Uuid::new_v4();
    let late = now - 3 * DAY_MS;
    let future = now + 6 * DAY_MS;
    // Screened as the runtime screens what it consumes.
    let screened = |record: Record| Record { screened: sink.screen(&record.event), ..record };
    let batch = vec![
        screened(record(event(org, "late", "api_calls", late), 1)),
        screened(record(event(org, "future", "api_calls", future), 2)),
        screened(record(event(org, "too-old", "api_calls", now - 6 * DAY_MS), 3)),
        screened(record(event(org, "too-far", "api_calls", now + 8 * DAY_MS), 4)),
    ];
    let (summary, written) = sink.write_batch(&batch).await.unwrap();
    assert_eq!(summary.written, 2);
    let refused: Vec<_> = written.refused.iter().map(|r| (r.index, r.reason.as_str())).collect();
    assert_eq!(refused, [(2, "too_old"), (3, "too_far_in_future")], "refused for good: the runtime dead-letters them");
    let partitions = partition_names(&pool).await;
    assert_eq!(partitions, vec![name(late), name(now), name(now + DAY_MS), name(future)]);
    let in_late: i64 = scalar(&pool, &format!("SELECT count(*) FROM {}", name(late))).await;
    assert_eq!(in_late, 1, "the late event is in its day's partition");

    // Four days later the late event's day is past the 5-day retention; the others are not.
    let (_, dropped) = sink.maintain(now + 4 * DAY_MS).await.unwrap();
    assert_eq!(dropped, vec![name(late)]);
    let after = partition_names(&pool).await;
    assert!(!after.contains(&name(late)) && after.contains(&name(now)) && after.contains(&name(future)));
    assert_eq!(rows_of(&pool, org).await.into_iter().map(|r| r.0).collect::<Vec<_>>(), ["future"]);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys WHERE transaction_id = 'late'").await, 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM event_keys WHERE transaction_id = 'future'").await, 1);
}

#[tokio::test]
async fn two_consumers_needing_the_same_new_partition_both_succeed_and_store_each_key_once() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let configure = |a: &mut bxb_consumer_postgres::PostgresArgs| {
        a.billable_codes = vec!["api_calls".into()];
        a.partitions_ahead = 0;
    };
    let first = db.sink(configure).await;
    let second = db.sink(configure).await;
    let org = Uuid::new_v4();
    let now = now_ms();
    // Ten late days nobody has created yet, written by both at once with the same keys.
    let batch: Vec<_> = (1..=10).map(|d| record(event(org, &format!("tx-{d}"), "api_calls", now - d * DAY_MS), d)).collect();
    let (a, b) = tokio::join!(first.write_batch(&batch), second.write_batch(&batch));
    let ((a, _), (b, _)) = (a.expect("first consumer writes"), b.expect("second consumer writes"));
    assert_eq!(a.written + b.written, 10);
    assert_eq!(a.already_stored + b.already_stored, 10);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 10);
    assert_eq!(partition_names(&pool).await.len(), 11);
}

#[tokio::test]
async fn a_newly_billable_code_is_billed_from_the_next_batch_whatever_the_refresh_interval() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let sink = db.sink(|a| a.billable_refresh_ms = 3_600_000).await;
    let stop = CancellationToken::new();
    let background = sink.spawn_background(stop.clone());
    let org = Uuid::new_v4();
    let now = now_ms();

    let (before, _) = sink.write_batch(&[record(event(org, "before", "seats", now), 1)]).await.unwrap();
    assert_eq!(before.not_billable, 1);
    make_billable(&pool, org, "seats").await;
    let (after, _) = sink.write_batch(&[record(event(org, "after", "seats", now), 2)]).await.unwrap();
    assert_eq!(after.written, 1, "the change counter told the sink to reload");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events WHERE transaction_id = 'before'").await, 0);
    stop.cancel();
    background.await.unwrap();
}

#[tokio::test]
async fn failures_are_sorted_into_retry_and_fatal() {
    bxb_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let sink = db
        .sink(|a| {
            a.billable_codes = vec!["api_calls".into()];
            a.statement_timeout_ms = 500;
        })
        .await;
    let org = Uuid::new_v4();
    let batch = [record(event(org, "tx", "api_calls", now_ms()), 1)];

    // Another transaction holds the key table: the write times out, which is worth retrying.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE event_keys IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    match sink.write(&batch).await {
        Err(SinkError::Retry(message)) => assert!(message.contains("statement timeout"), "{message}"),
        other => panic!("a timed-out write must be retried, got {other:?}"),
    }
    blocker.rollback().await.unwrap();
    sink.write(&batch).await.expect("the retried batch is written");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 1);

    // A missing table only a person can fix: fatal, nothing written.
    sqlx::query("ALTER TABLE event_keys RENAME TO event_keys_gone").execute(&pool).await.unwrap();
    match sink.write(&[record(event(org, "tx-2", "api_calls", now_ms()), 2)]).await {
        Err(SinkError::Fatal(message)) => assert!(message.contains("event_keys"), "{message}"),
        other => panic!("a missing table must be fatal, got {other:?}"),
    }
    assert_eq!(scalar(&pool, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn a_nul_escape_in_properties_is_stored_as_the_replacement_character() {
    let (_db, pool, sink) = api_calls_sink().await;
    let org = Uuid::new_v4();
    let mut e = event(org, "nul", "api_calls", now_ms());
    e.properties = r#"{"a":"x\u0000y","b":"\\u0000"}"#.into();
    sink.write(&[record(e, 1)]).await.expect("jsonb cannot hold NUL, but the batch must not stall");
    let stored: bool =
        sqlx::query_scalar(r#"SELECT properties = '{"a":"x\ufffdy","b":"\\u0000"}'::jsonb FROM events"#).fetch_one(&pool).await.unwrap();
    assert!(stored);
}
