//! The ClickHouse statements of `schemas/clickhouse/` on the current engine as well as on the
//! local 18.16 server.
//!
//! The local stack has only Debian's ClickHouse 18.16; docker-compose and production run
//! current releases. chdb (`chdb-core` from PyPI, installed by `./dev/install`, run by
//! `clickhouse_current/run_sql.py`) embeds the current engine in-process, so here:
//!
//! - the statements `bxbctl migrate` sends (`bxb_schemas::clickhouse`: the database and table
//!   checks, `CREATE DATABASE`, `events_raw.sql`, twice) run on it without error or new server
//!   warning, and consumer-clickhouse's start-up check (`schema::COLUMNS_QUERY`, the same
//!   comparison, and `schema::PARTITION_LIMIT_QUERY`) passes there;
//! - the same rows go into a fresh database on 18.16 (through `ClickHouseSink`, as the consumer
//!   writes) and into chdb (`INSERT ... VALUES`), and `queries/usage.sql` answers the same on
//!   both, before and after merges: on 18.16 as `billing::usage` runs it (parameters as
//!   literals), on the current engine both that way and with ClickHouse query parameters, and
//!   both equal what the rows say it must answer.
//!
//! Without chdb-python the suite fails; it never skips.

#[path = "clickhouse_current/chdb.rs"]
mod chdb;
#[path = "clickhouse_current/rows.rs"]
mod rows;

use bxb_consumer::Sink;
use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use bxb_consumer_clickhouse::schema::{column_differences, Column, COLUMNS_QUERY, PARTITION_LIMIT_QUERY};
use bxb_consumer_clickhouse::{ClickHouseSink, EVENTS_RAW_COLUMNS};
use bxb_schemas::clickhouse::{EVENTS_RAW_TABLE, USAGE_QUERY};
use bxb_tests::databases::TestClickHouse;
use chdb::Statement;

/// The database of the chdb runs; each run has a data directory of its own, so it is always new.
/// 18.16 gets a database of its own per test (`TestClickHouse`).
const DATABASE: &str = "bxb_current";

const WARNINGS: &str = "SELECT message FROM system.warnings ORDER BY message";

#[test]
fn the_migration_and_the_start_up_check_pass_on_the_current_engine() {
    let mut statements = vec![Statement::new("the server warnings before", WARNINGS)];
    statements.extend(chdb::migrate(DATABASE));
    statements.push(Statement::new("the start-up column check", chdb::bind(COLUMNS_QUERY, &[DATABASE, EVENTS_RAW_TABLE])));
    statements.push(Statement::new("the partition limit check", PARTITION_LIMIT_QUERY));
    statements.push(Statement::new("the server warnings after", WARNINGS));
    let run = chdb::run(&statements);
    assert!(run.version.starts_with("26."), "chdb-core runs ClickHouse {}, expected 26", run.version);

    let (warnings_before, rest) = run.outputs.split_first().expect("an output per statement");
    let (migrate, rest) = rest.split_at(chdb::MIGRATE_OUTPUTS.len());
    assert_eq!(migrate, chdb::MIGRATE_OUTPUTS, "the database and table checks before and after creating them");
    let [columns, partition_limit, warnings_after] = rest else { panic!("three more outputs expected: {rest:?}") };
    let columns: Vec<Column> = columns
        .lines()
        .map(|l| {
            let mut fields = l.split('\t');
            let mut next = || fields.next().unwrap_or_else(|| panic!("three columns expected: {l:?}")).to_owned();
            Column { name: next(), r#type: next(), default_kind: next() }
        })
        .collect();
    assert_eq!(columns.len(), EVENTS_RAW_COLUMNS.len(), "{columns:?}");
    assert_eq!(column_differences(&columns), None, "consumer-clickhouse's start-up check on ClickHouse {}", run.version);
    assert_eq!(partition_limit, "1\n", "current releases limit the partitions of an insert (the sink lifts it)");
    assert_eq!(warnings_after, warnings_before, "the DDL made the server warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_answers_the_same_on_the_current_engine_as_on_18_16() {
    bxb_telemetry::init_for_tests();
    let batches = rows::batches();
    let rows = rows::rows(&batches);
    let cases = rows::cases();
    let expected: Vec<Vec<String>> = cases.iter().map(|c| rows::expected(&rows, &c.query)).collect();
    assert!(expected[0].len() > 40 && expected.last().is_some_and(Vec::is_empty), "the cases cover many buckets and none");

    // 18.16: the database as `bxbctl migrate` creates it, the rows as the consumer writes them.
    let old = TestClickHouse::create().await;
    let sink = ClickHouseSink::connect(&old.args()).await.expect("consumer-clickhouse's start-up check on 18.16");
    for batch in &batches {
        sink.write(batch).await.expect("the consumer's insert");
    }
    let client = old.client();
    let mut old_answers = Vec::new();
    for merged in [false, true] {
        if merged {
            client.query("OPTIMIZE TABLE events_raw FINAL").execute().await.expect("OPTIMIZE on 18.16");
        }
        for case in &cases {
            let usage = billing::usage(&client, &case.query).await.unwrap_or_else(|e| panic!("{} on 18.16: {e}", case.name));
            old_answers.push(rows::usage_lines(&usage));
        }
    }

    let mut statements = chdb::migrate(DATABASE);
    for (i, batch) in rows.iter().enumerate() {
        statements.push(chdb::insert(format!("insert of batch {i}"), batch));
    }
    for merged in [false, true] {
        if merged {
            statements.push(Statement::new("OPTIMIZE", "OPTIMIZE TABLE events_raw FINAL"));
        }
        for case in &cases {
            statements.push(Statement::new(format!("{} (literals)", case.name), billing::usage_sql(&case.query)));
            statements.push(Statement::new(format!("{} (query parameters)", case.name), USAGE_QUERY).with_params(&parameters(&case.query)));
        }
    }
    let run = chdb::run(&statements);
    let mut answers = run.outputs[chdb::MIGRATE_OUTPUTS.len() + rows.len()..].iter();
    for (merged, old_answers) in [false, true].into_iter().zip(old_answers.chunks(cases.len())) {
        if merged {
            assert_eq!(answers.next().map(String::as_str), Some(""), "OPTIMIZE answers nothing");
        }
        let when = if merged { "after merges" } else { "before merges" };
        for ((case, expected), old) in cases.iter().zip(&expected).zip(old_answers) {
            let literals = rows::tsv_lines(answers.next().expect("an answer per statement"));
            let parameters = rows::tsv_lines(answers.next().expect("an answer per statement"));
            rows::assert_same(old, expected, &format!("18.16, {}, {when}", case.name));
            rows::assert_same(&literals, expected, &format!("ClickHouse {} with literals, {}, {when}", run.version, case.name));
            rows::assert_same(&parameters, expected, &format!("ClickHouse {} with query parameters, {}, {when}", run.version, case.name));
        }
    }
}

/// The query parameters of `usage.sql` for `query`, as `billing::usage_sql` fills them in.
fn parameters(query: &UsageQuery) -> Vec<(&'static str, String)> {
    let clamp = |ms: i64| ms.clamp(0, bxb_event::validate::MAX_TIMESTAMP_MS + 1);
    vec![
        ("bucket_ms", query.granularity.millis().to_string()),
        ("from_ms", clamp(query.from_ms).to_string()),
        ("to_ms", clamp(query.to_ms).to_string()),
        ("all_organizations", u8::from(query.organization_id.is_none()).to_string()),
        ("organization_id", query.organization_id.unwrap_or_default().hyphenated().to_string()),
    ]
}

/// Migration 2 (a version-1 `events_raw` to the rank layout) and the first-records query of
/// `bxbctl backfill`, on the current engine: the rows move with append time 0, and the query
/// picks the first record of each identity by (appended_at_ms, partition, offset).
#[test]
fn the_rank_migration_and_the_first_records_query_run_on_the_current_engine() {
    use bxb_schemas::clickhouse::{events_raw_next_ddl, events_raw_rank_migration, EVENTS_RAW_V1_DDL, SCHEMA_VERSIONS_DDL};
    let v1_row = |tx: &str, code: &str, partition: i32, offset: i64| {
        format!(
            "INSERT INTO events_raw (organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, \
             properties, value, decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset) VALUES \
             ('00000000-0000-0000-0000-000000000001', '{tx}', 'c', '{code}', 1796000000, 1796000000123, '{{}}', 1, 1.5, NULL, 0, {partition}, {offset})"
        )
    };
    let mut statements = vec![
        Statement::new("CREATE DATABASE", "CREATE DATABASE IF NOT EXISTS rank_upgrade"),
        Statement::new("USE", "USE rank_upgrade"),
        Statement::new("version 1", EVENTS_RAW_V1_DDL),
        Statement::new("a, first", v1_row("a", "api_calls", 0, 1)),
        Statement::new("a, retry", v1_row("a", "page_views", 0, 4)),
        Statement::new("b", v1_row("b", "api_calls", 0, 2)),
        Statement::new("bxb_schema_versions", SCHEMA_VERSIONS_DDL),
        Statement::new("events_raw_next", events_raw_next_ddl()),
    ];
    for (i, statement) in events_raw_rank_migration().into_iter().enumerate() {
        statements.push(Statement::new(format!("migration 2, statement {i}"), statement));
    }
    // A record of identity b appended later to another partition: b's first record stays.
    statements.push(Statement::new(
        "a later record",
        "INSERT INTO events_raw (organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, properties, \
         value, decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset, appended_at_ms) VALUES \
         ('00000000-0000-0000-0000-000000000001', 'b', 'c', 'page_views', 1796000000, 1796000000123, '{}', 2, 2.5, NULL, 0, 3, 0, 1796000000200)",
    ));
    statements.push(Statement::new("rows at version 0", "SELECT count() FROM events_raw WHERE appended_at_ms = 0"));
    let everything = UsageQuery { from_ms: 0, to_ms: 4_000_000_000_000, granularity: Granularity::Day, organization_id: None };
    statements.push(Statement::new(
        "first records",
        format!("SELECT transaction_id, code, kafka_partition, kafka_offset FROM ({})", billing::first_records_sql(&everything)),
    ));
    let run = chdb::run(&statements);
    let n = run.outputs.len();
    assert_eq!(run.outputs[n - 2], "3\n", "the version-1 rows moved with append time 0");
    assert_eq!(run.outputs[n - 1], "a\tapi_calls\t0\t1\nb\tapi_calls\t0\t2\n", "ClickHouse {}", run.version);
}
