//! The truth both stores are compared with, taken from the run's topic and not from the code
//! under test. Of the records of one identity the first is the one of lowest rank (broker
//! append time, partition, offset); it alone decides the identity's code, hour, value, decimal
//! value and whether it is billable. ClickHouse must bill every identity so; PostgreSQL the
//! identities whose first record is billable, once each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use bxb_event::{Decimal, DECIMAL_MAX_SCALE};
use uuid::Uuid;

use crate::tally::Identity;

/// The width of a billing bucket compared here.
pub const HOUR_MS: i64 = 3_600_000;
/// Examples kept of every kind of defect.
pub const EXAMPLES: usize = 20;

/// What an event says, as the plan sent it or as a record of the topic holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub external_customer_id: String,
    pub code: String,
    pub timestamp_ms: i64,
    pub value: Option<f64>,
    pub decimal_value: Option<Decimal>,
}

/// One record of the run's topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRecord {
    pub identity: Identity,
    pub version: Version,
    /// The record's timestamp: the broker's append time (`message.timestamp.type=LogAppendTime`).
    pub timestamp_ms: i64,
    pub partition: i32,
    pub offset: i64,
}

impl TopicRecord {
    /// Lower comes first.
    pub fn rank(&self) -> (i64, i32, i64) {
        (self.timestamp_ms, self.partition, self.offset)
    }

    fn describe(&self) -> String {
        let (organization, transaction) = &self.identity;
        format!(
            "{organization}/{transaction} at {} ms, partition {} offset {}: {:?}",
            self.timestamp_ms, self.partition, self.offset, self.version
        )
    }
}

/// The first record of every identity.
pub fn first_records(records: impl IntoIterator<Item = TopicRecord>) -> HashMap<Identity, TopicRecord> {
    let mut first: HashMap<Identity, TopicRecord> = HashMap::new();
    for record in records {
        match first.get_mut(&record.identity) {
            Some(held) if held.rank() <= record.rank() => {}
            Some(held) => *held = record,
            None => {
                first.insert(record.identity.clone(), record);
            }
        }
    }
    first
}

/// An exact sum of decimal values, kept as the value times 10^12 (no decimal has more digits
/// after the point).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecimalSum(pub i128);

impl DecimalSum {
    pub fn of(decimal: &Decimal) -> Self {
        Self(decimal.to_scaled_i128(DECIMAL_MAX_SCALE).expect("38 digits at scale 12 fit an i128"))
    }
}

impl std::ops::AddAssign for DecimalSum {
    fn add_assign(&mut self, other: Self) {
        self.0 += other.0;
    }
}

impl fmt::Display for DecimalSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10i128.pow(DECIMAL_MAX_SCALE);
        let (int_part, frac_part) = (self.0.unsigned_abs() / scale.unsigned_abs(), self.0.unsigned_abs() % scale.unsigned_abs());
        let sign = if self.0 < 0 { "-" } else { "" };
        let frac = format!("{frac_part:0width$}", width = DECIMAL_MAX_SCALE as usize);
        match frac.trim_end_matches('0') {
            "" => write!(f, "{sign}{int_part}"),
            frac => write!(f, "{sign}{int_part}.{frac}"),
        }
    }
}

impl serde::Serialize for DecimalSum {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One organization's code in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    pub organization_id: Uuid,
    pub code: String,
    pub hour_start_ms: i64,
}

impl BucketKey {
    pub fn of(organization_id: Uuid, version: &Version) -> Self {
        let hour_start_ms = version.timestamp_ms - version.timestamp_ms.rem_euclid(HOUR_MS);
        Self { organization_id, code: version.code.clone(), hour_start_ms }
    }
}

/// What billing says of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Bucket {
    pub events: u64,
    /// Absent values count as 0.
    pub value_sum: f64,
    pub decimal_value_sum: DecimalSum,
}

impl Bucket {
    fn add(&mut self, version: &Version) {
        self.events += 1;
        self.value_sum += version.value.unwrap_or(0.0);
        if let Some(decimal) = &version.decimal_value {
            self.decimal_value_sum += DecimalSum::of(decimal);
        }
    }
}

pub type Buckets = BTreeMap<BucketKey, Bucket>;

/// What the reader found in the topic besides the records it could decode.
#[derive(Debug, Clone, Default)]
pub struct TopicRead {
    pub records: Vec<TopicRecord>,
    /// Records that are not an event of `schemas/avro/event.avsc` in the Confluent wire format:
    /// the consumers dead-letter them, and dead letters never rank.
    pub undecodable: Vec<String>,
    /// Records whose timestamp is not the broker's append time (the topic is set up wrong).
    pub not_log_append_time: u64,
}

/// The topic's account of the run, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TopicTruth {
    pub records: u64,
    pub identities: usize,
    /// Identities whose first record is billable.
    pub billable_identities: usize,
    /// Identities whose first record is another version than the one first planned: a retry
    /// that changed something won the race.
    pub first_is_another_version: usize,
    /// Identities whose first record the plan never sent (a defect).
    pub first_not_planned: usize,
    /// Identities in the topic for which no `202` was given.
    pub not_accepted: usize,
    /// Accepted identities with no record in the topic (a defect: lost before any consumer).
    pub missing_from_topic: usize,
    pub undecodable: usize,
    pub not_log_append_time: u64,
    pub examples: Vec<String>,
}

impl TopicTruth {
    /// Whether the topic holds every accepted identity, each first with a version the plan sent,
    /// every record decodable and ranked by the broker's time.
    pub fn passed(&self) -> bool {
        self.first_not_planned == 0 && self.missing_from_topic == 0 && self.undecodable == 0 && self.not_log_append_time == 0
    }
}

/// The truth of a run.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Every identity of the topic (what ClickHouse must hold).
    pub identities: HashSet<Identity>,
    /// Those whose first record is billable (what PostgreSQL must hold).
    pub billable: HashSet<Identity>,
    pub clickhouse: Buckets,
    pub postgres: Buckets,
    /// Accepted identities the topic lacks.
    pub missing_from_topic: HashSet<Identity>,
    pub summary: TopicTruth,
}

impl Truth {
    /// `planned`: every version the plan sent of each identity, the first planned first;
    /// `accepted`: the identities a `202` covered; `billable`: whether a code is billable.
    pub fn build(
        read: TopicRead,
        planned: &HashMap<Identity, Vec<Version>>,
        accepted: &HashSet<Identity>,
        billable: impl Fn(&Identity, &str) -> bool,
    ) -> Self {
        let mut truth = Truth::default();
        let mut examples = Vec::new();
        let mut example = |text: String| {
            if examples.len() < EXAMPLES {
                examples.push(text);
            }
        };
        let summary = &mut truth.summary;
        summary.records = read.records.len() as u64;
        summary.undecodable = read.undecodable.len();
        summary.not_log_append_time = read.not_log_append_time;
        for undecodable in read.undecodable {
            example(format!("undecodable: {undecodable}"));
        }
        // In identity order, so that a seed's report lists the same examples.
        let mut first: Vec<(Identity, TopicRecord)> = first_records(read.records).into_iter().collect();
        first.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (identity, record) in &first {
            match planned.get(identity) {
                Some(versions) if versions.contains(&record.version) => {
                    if versions.first() != Some(&record.version) {
                        summary.first_is_another_version += 1;
                    }
                }
                _ => {
                    summary.first_not_planned += 1;
                    example(format!("first record not planned: {}", record.describe()));
                }
            }
            if !accepted.contains(identity) {
                summary.not_accepted += 1;
            }
            let key = BucketKey::of(identity.0, &record.version);
            truth.clickhouse.entry(key.clone()).or_default().add(&record.version);
            if billable(identity, &record.version.code) {
                truth.postgres.entry(key).or_default().add(&record.version);
                truth.billable.insert(identity.clone());
            }
        }
        truth.identities = first.into_iter().map(|(identity, _)| identity).collect();
        truth.missing_from_topic = accepted.difference(&truth.identities).cloned().collect();
        let mut missing: Vec<&Identity> = truth.missing_from_topic.iter().collect();
        missing.sort();
        for (organization, transaction) in missing.into_iter().take(EXAMPLES) {
            example(format!("accepted, not in the topic: {organization}/{transaction}"));
        }
        summary.identities = truth.identities.len();
        summary.billable_identities = truth.billable.len();
        summary.missing_from_topic = truth.missing_from_topic.len();
        summary.examples = examples;
        truth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: Uuid = Uuid::from_u128(1);
    /// 2026-01-01T00:00:00Z
    const H0: i64 = 1_767_225_600_000;

    fn version(code: &str, timestamp_ms: i64, value: Option<f64>, decimal: Option<&str>) -> Version {
        Version {
            external_customer_id: "customer-1".into(),
            code: code.into(),
            timestamp_ms,
            value,
            decimal_value: decimal.map(|d| d.parse().unwrap()),
        }
    }

    fn record(transaction: &str, version: Version, rank: (i64, i32, i64)) -> TopicRecord {
        TopicRecord { identity: (ORG, transaction.into()), version, timestamp_ms: rank.0, partition: rank.1, offset: rank.2 }
    }

    fn id(transaction: &str) -> Identity {
        (ORG, transaction.into())
    }

    #[test]
    fn the_first_record_is_the_lowest_append_time_then_partition_then_offset() {
        let v = |n: f64| version("api_calls", H0, Some(n), None);
        let records = vec![
            // A lower offset on a partition the broker appended to later does not come first.
            record("a", v(1.0), (20, 0, 0)),
            record("a", v(2.0), (10, 3, 900)),
            record("b", v(3.0), (10, 2, 5)),
            record("b", v(4.0), (10, 1, 7)),
            record("c", v(5.0), (10, 1, 8)),
            record("c", v(6.0), (10, 1, 6)),
        ];
        let first = first_records(records.clone());
        assert_eq!(first[&id("a")].version.value, Some(2.0));
        assert_eq!(first[&id("b")].version.value, Some(4.0));
        assert_eq!(first[&id("c")].version.value, Some(6.0));
        // Whatever order the reader meets them in.
        assert_eq!(first_records(records.into_iter().rev()), first);
    }

    #[test]
    fn decimal_sums_are_exact_and_print_canonically() {
        let mut sum = DecimalSum::default();
        for d in ["0.1", "0.2", "-0.000000000001", "1000"] {
            sum += DecimalSum::of(&d.parse().unwrap());
        }
        assert_eq!(sum.to_string(), "1000.299999999999");
        assert_eq!(DecimalSum::of(&"-12.500".parse().unwrap()).to_string(), "-12.5");
        assert_eq!(DecimalSum::default().to_string(), "0");
        assert_eq!(DecimalSum(-1).to_string(), "-0.000000000001");
    }

    #[test]
    fn the_first_record_decides_code_hour_values_and_billability() {
        let original = version("api_calls", H0 + 10, Some(1.0), Some("1.5"));
        let moved = version("page_views", H0 + HOUR_MS + 10, None, Some("2"));
        let planned: HashMap<Identity, Vec<Version>> = [
            (id("won-by-retry"), vec![original.clone(), moved.clone()]),
            (id("won-by-original"), vec![original.clone(), moved.clone()]),
            (id("never-sent-so"), vec![original.clone()]),
        ]
        .into();
        let read = TopicRead {
            records: vec![
                record("won-by-retry", original.clone(), (20, 0, 1)),
                record("won-by-retry", moved.clone(), (19, 1, 1)),
                record("won-by-original", original.clone(), (5, 0, 0)),
                record("won-by-original", moved.clone(), (6, 0, 1)),
                record("never-sent-so", version("api_calls", H0 + 10, Some(9.0), None), (1, 2, 0)),
                record("no-202", original.clone(), (1, 3, 0)),
            ],
            undecodable: vec!["partition 0 offset 7: no magic byte".into()],
            not_log_append_time: 0,
        };
        let accepted: HashSet<Identity> = [id("won-by-retry"), id("won-by-original"), id("never-sent-so"), id("lost-early")].into();
        let truth = Truth::build(read, &planned, &accepted, |_, code| code == "api_calls");
        let s = &truth.summary;
        assert_eq!((s.records, s.identities, s.billable_identities), (6, 4, 3));
        assert_eq!((s.first_is_another_version, s.first_not_planned, s.not_accepted), (1, 2, 1));
        assert_eq!((s.missing_from_topic, s.undecodable), (1, 1));
        assert!(!s.passed());
        assert_eq!(truth.missing_from_topic, HashSet::from([id("lost-early")]));
        assert!(!truth.billable.contains(&id("won-by-retry")));

        let hour0 = BucketKey { organization_id: ORG, code: "api_calls".into(), hour_start_ms: H0 };
        let hour1 = BucketKey { organization_id: ORG, code: "page_views".into(), hour_start_ms: H0 + HOUR_MS };
        // won-by-original, never-sent-so and no-202 in the first hour; won-by-retry moved out.
        let first_hour = Bucket { events: 3, value_sum: 11.0, decimal_value_sum: DecimalSum(3_000_000_000_000) };
        let moved_hour = Bucket { events: 1, value_sum: 0.0, decimal_value_sum: DecimalSum(2_000_000_000_000) };
        assert_eq!(truth.clickhouse, Buckets::from([(hour0.clone(), first_hour), (hour1, moved_hour)]));
        assert_eq!(truth.postgres, Buckets::from([(hour0, first_hour)]));
    }
}
