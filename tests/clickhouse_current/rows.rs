//! The rows both servers get, the usage queries asked of them, what each must answer (worked
//! out here from the rows, without ClickHouse), and the one text every answer is compared as.

use std::collections::BTreeMap;
use std::str::FromStr;

use bxb_consumer::Record;
use bxb_consumer_clickhouse::billing::{checked_decimal_sum, Granularity, Usage, UsageQuery};
use bxb_consumer_clickhouse::{EventRow, DECIMAL_SCALE};
use bxb_event::{Decimal, Event};
use uuid::Uuid;

/// 2026-03-31T18:00:00Z: the first records run into April and some retries are 45 days away, so
/// the table has four month partitions, and the ranges below cut across a month boundary.
pub const BASE_MS: i64 = 1_774_980_000_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// When the rows were written (`written_at_ms`); no query reads it.
const WRITTEN_AT_MS: i64 = BASE_MS + 400 * DAY_MS;

pub fn organizations() -> [Uuid; 3] {
    [
        Uuid::from_u128(0x0b5b_0001_0000_4000_8000_0000_0000_00c1),
        Uuid::from_u128(0xf00d_0002_0000_4000_8000_0000_0000_00c2),
        Uuid::from_u128(0x7e57_0003_0000_4000_8000_0000_0000_00c3),
    ]
}

const CODES: [&str; 3] = ["api_calls", "storage_gb", "seats"];

/// The batches, in the order they are inserted, as the consumer receives them (each
/// organization on one Kafka partition, offsets rising per partition). Every
/// (organization_id, transaction_id) has its first record among the originals; the retries
/// (another timestamp, some in another month, another value, decimal and code) and the exact
/// redeliveries (the same offset again, as after a replay) come later on Kafka but are inserted
/// first and last, so the first record must be chosen by offset, not by arrival.
pub fn batches() -> Vec<Vec<Record>> {
    let orgs = organizations();
    let partition_of = |org: usize| [0, 1, 0][org];
    let mut next_offset = [0i64; 2];
    let mut take_offset = |org: usize| {
        let p = partition_of(org) as usize;
        next_offset[p] += 1;
        next_offset[p] * 3 + 100
    };
    let record = |i: usize, event: Event, offset: i64| Record {
        partition: partition_of(i % 3),
        offset,
        // Appended in offset order, six offsets to a millisecond: records of both partitions share
        // milliseconds, so that partition and offset break ties.
        appended_at_ms: 1_790_000_000_000 + offset / 6,
        screened: None,
        ingested_at_ms: (!i.is_multiple_of(7)).then_some(event.timestamp_ms + 50),
        event,
    };

    let originals: Vec<Record> = (0..90)
        .map(|i| {
            let event = Event {
                organization_id: orgs[i % 3],
                transaction_id: format!("tx-{i:03}"),
                external_customer_id: format!("customer-{}", i % 4),
                code: CODES[(i / 3) % 3].to_owned(),
                // Every 23 minutes, at odd milliseconds: 34.5 hours from BASE_MS.
                timestamp_ms: BASE_MS + i as i64 * 23 * 60_000 + (i as i64 * 7919) % 1000,
                properties: if i.is_multiple_of(11) {
                    r#"{"note":"it's \"quoted\" \\ here","n":1}"#.to_owned()
                } else {
                    format!(r#"{{"n":{i}}}"#)
                },
                value: value(i, 0),
                decimal_value: decimal(i, 0),
            };
            record(i, event, take_offset(i % 3))
        })
        .collect();

    let mut retries = Vec::new();
    for (i, first) in originals.iter().enumerate().filter(|(i, _)| i.is_multiple_of(6) || i % 9 == 4) {
        let mut event = first.event.clone();
        // Earlier and later, across the hour, the day, and a month partition.
        event.timestamp_ms += [-3 * HOUR_MS - 17, 45 * DAY_MS, 2 * HOUR_MS + 1, -45 * DAY_MS][i % 4];
        event.code = CODES[(i / 3 + 1) % 3].to_owned();
        event.value = value(i, 1);
        event.decimal_value = decimal(i, 1);
        retries.push(record(i, event, take_offset(i % 3)));
    }
    let redeliveries: Vec<Record> = originals.iter().filter(|r| r.offset % 10 == 3).cloned().collect();
    let (early, late) = originals.split_at(40);
    vec![retries, early.to_vec(), [late, &redeliveries].concat()]
}

/// Multiples of 1/4 (and NULL): sums of them are exact in any order, so two engines that add in
/// different orders must still agree to the bit.
fn value(i: usize, variant: usize) -> Option<f64> {
    (!i.is_multiple_of(5)).then(|| (i * 3 + variant * 17) as f64 * 0.25 - 20.0)
}

/// Twelve fraction digits (trailing zeros included), negatives, NULL, and values near the limit
/// of Decimal(38, 12) in a group that sums back into range.
fn decimal(i: usize, variant: usize) -> Option<Decimal> {
    let text = match (i, variant) {
        (_, _) if i % 4 == 1 => return None,
        (30, 0) => "99999999999999999999999999.999999999999".to_owned(),
        (39, 0) => "-99999999999999999999999999.999999999998".to_owned(),
        _ => {
            let sign = if (i + variant).is_multiple_of(3) { "-" } else { "" };
            let fraction = (i as u64 * 987_654_321_987 + variant as u64 * 123_456_789) % 1_000_000_000_000;
            format!("{sign}{}.{fraction:012}", i * 1_234_567 + variant)
        }
    };
    Some(text.parse().expect("a valid decimal"))
}

/// Every row of every batch, as the consumer writes it.
pub fn rows(batches: &[Vec<Record>]) -> Vec<Vec<EventRow>> {
    batches.iter().map(|b| b.iter().map(|r| EventRow::from_record(r, WRITTEN_AT_MS).expect("a valid row")).collect()).collect()
}

/// A usage query and its name.
pub struct Case {
    pub name: &'static str,
    pub query: UsageQuery,
}

pub fn cases() -> Vec<Case> {
    let orgs = organizations();
    let everything = (BASE_MS - 60 * DAY_MS, BASE_MS + 60 * DAY_MS);
    // From 23:30:00.123 on 31 March to 21:10:00.007 on 1 April: cuts hours, both days and the
    // month boundary, and leaves out identities whose first record is outside but a retry inside.
    let cut = (BASE_MS + 5 * HOUR_MS + 30 * 60_000 + 123, BASE_MS + 27 * HOUR_MS + 10 * 60_000 + 7);
    let case = |name, (from_ms, to_ms): (i64, i64), granularity, organization_id| Case {
        name,
        query: UsageQuery { from_ms, to_ms, granularity, organization_id },
    };
    vec![
        case("hours, every organization, the whole range", everything, Granularity::Hour, None),
        case("days, every organization, the whole range", everything, Granularity::Day, None),
        case("hours, every organization, a range that cuts through", cut, Granularity::Hour, None),
        case("days, every organization, a range that cuts through", cut, Granularity::Day, None),
        case("hours, one organization, a range that cuts through", cut, Granularity::Hour, Some(orgs[1])),
        case("days, one organization, the whole range", everything, Granularity::Day, Some(orgs[0])),
        case("days, an organization without events", everything, Granularity::Day, Some(Uuid::from_u128(0xdead))),
    ]
}

/// What the usage query must answer, from the rows alone: each identity once, with its first
/// record (lowest (appended_at_ms, partition, offset)), if that record is in the range.
pub fn expected(rows: &[Vec<EventRow>], query: &UsageQuery) -> Vec<String> {
    let mut first: BTreeMap<(Uuid, &str), &EventRow> = BTreeMap::new();
    for row in rows.iter().flatten() {
        let entry = first.entry((row.organization_id, row.transaction_id.as_str())).or_insert(row);
        let rank = |r: &EventRow| (r.appended_at_ms, r.kafka_partition, r.kafka_offset);
        if rank(row) < rank(entry) {
            *entry = row;
        }
    }
    let bucket_ms = query.granularity.millis();
    // (ClickHouse's order of the organization, organization, code, bucket) -> (events, sums).
    type Bucket<'a> = ((u64, u64), Uuid, &'a str, i64);
    let mut usage: BTreeMap<Bucket<'_>, (u64, f64, i128)> = BTreeMap::new();
    for row in first.values() {
        let in_range = (query.from_ms..query.to_ms).contains(&row.timestamp_ms);
        if in_range && query.organization_id.is_none_or(|org| org == row.organization_id) {
            let bucket = row.timestamp_ms - row.timestamp_ms % bucket_ms;
            let sums = usage.entry((uuid_order(row.organization_id), row.organization_id, row.code.as_str(), bucket)).or_default();
            sums.0 += 1;
            sums.1 += row.value.unwrap_or(0.0);
            sums.2 += row.decimal_value.unwrap_or(0);
        }
    }
    usage.into_iter().map(|((_, org, code, bucket), (events, value, decimal))| line(org, code, bucket, events, value, decimal)).collect()
}

/// How ClickHouse (18.16 and current releases alike) orders UUIDs: by their last eight bytes,
/// then their first eight, each as a big-endian number; not as their text.
fn uuid_order(uuid: Uuid) -> (u64, u64) {
    let bits = uuid.as_u128();
    (bits as u64, (bits >> 64) as u64)
}

/// Panics with the lines that differ when `answer` is not `expected`.
pub fn assert_same(answer: &[String], expected: &[String], what: &str) {
    if answer == expected {
        return;
    }
    let missing: Vec<&String> = expected.iter().filter(|l| !answer.contains(l)).collect();
    let extra: Vec<&String> = answer.iter().filter(|l| !expected.contains(l)).collect();
    if missing.is_empty() && extra.is_empty() {
        panic!("{what}: the same rows in another order\n  answer: {answer:#?}\n  expected: {expected:#?}");
    }
    panic!("{what}: {} rows instead of {}\n  missing: {missing:#?}\n  unexpected: {extra:#?}", answer.len(), expected.len());
}

/// The normalized text of one answer row: decimals canonical (no trailing zeros), floats as
/// Rust's shortest round-trip text.
fn line(organization_id: Uuid, code: &str, bucket_start_ms: i64, events: u64, value_sum: f64, decimal_scaled: i128) -> String {
    format!("{organization_id} {code} {bucket_start_ms} {events} {value_sum:?} {}", scaled_text(decimal_scaled))
}

/// A Decimal(38, 12) given as its value times 10^12, as canonical decimal text.
pub fn scaled_text(scaled: i128) -> String {
    let digits = format!("{:0>13}", scaled.unsigned_abs());
    let (int_part, frac_part) = digits.split_at(digits.len() - DECIMAL_SCALE as usize);
    let sign = if scaled < 0 { "-" } else { "" };
    let decimal: Decimal = format!("{sign}{int_part}.{frac_part}").parse().expect("a Decimal(38, 12) is a valid decimal");
    decimal.to_string()
}

/// What consumer-clickhouse's `billing::usage` answered, as normalized lines.
pub fn usage_lines(usage: &[Usage]) -> Vec<String> {
    usage
        .iter()
        .map(|u| {
            let scaled = u.decimal_value_sum.as_ref().and_then(|d| d.to_scaled_i128(DECIMAL_SCALE)).expect("a Decimal(38, 12)");
            line(u.organization_id, &u.code, u.bucket_start_ms, u.events, u.value_sum, scaled)
        })
        .collect()
}

/// The usage query's TabSeparatedRaw output, as normalized lines. The Float64 check of the
/// decimal sum is not part of a line: it is rounded differently by each engine (and far off where
/// values near the limit cancel out); it must only not make `billing::usage` call the sum an
/// overflow.
pub fn tsv_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            let [org, code, bucket, events, value, decimal, decimal_f64] = fields[..] else { panic!("seven columns expected: {l:?}") };
            let decimal: Decimal = parse("decimal_value_sum", decimal);
            let scaled = decimal.to_scaled_i128(DECIMAL_SCALE).expect("fits Decimal(38, 12)");
            let check: f64 = parse("decimal_value_sum_f64", decimal_f64);
            assert!(checked_decimal_sum(scaled, check).is_some(), "decimal_value_sum_f64 {check} makes {decimal} an overflow: {l:?}");
            line(
                parse("organization_id", org),
                code,
                parse("bucket_start_ms", bucket),
                parse("events", events),
                parse("value_sum", value),
                scaled,
            )
        })
        .collect()
}

fn parse<T: FromStr>(column: &str, text: &str) -> T
where
    T::Err: std::fmt::Display,
{
    text.parse().unwrap_or_else(|e| panic!("{column} {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_decimals_print_canonically() {
        for (scaled, text) in
            [(0, "0"), (1, "0.000000000001"), (-1_500_000_000_000, "-1.5"), (10i128.pow(38) - 1, "99999999999999999999999999.999999999999")]
        {
            assert_eq!(scaled_text(scaled), text);
        }
    }
}
