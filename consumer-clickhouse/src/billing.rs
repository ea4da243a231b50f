//! The billing queries of `schemas/clickhouse/queries/`, run against `events_raw`.
//!
//! ClickHouse 18.16 has no server-side query parameters, so the `{name:Type}` placeholders of
//! the query files are replaced here by literals. Every value is a number or a UUID formatted
//! by Rust, so nothing user-supplied reaches the SQL text.
//!
//! ClickHouse adds `Decimal(38, 12)` in Int128 and wraps around without an error (18.16 and
//! current releases alike): three values of 9·10^25 sum to -7.03·10^25. So the query also sums
//! the same values in Float64, which cannot wrap, and a bucket whose exact sum is out of range
//! has no decimal sum here ([`checked_decimal_sum`]).

use bxb_event::validate::MAX_TIMESTAMP_MS;
use bxb_event::Decimal;
use bxb_schemas::clickhouse::{FIRST_RECORDS_QUERY, USAGE_QUERY};
use serde::Deserialize;
use uuid::Uuid;

use crate::row::{EventRow, DECIMAL_SCALE};

/// The width of a usage bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }
}

/// Which usage to compute: events whose timestamp is in `[from_ms, to_ms)`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub granularity: Granularity,
    /// Only this organization, or every organization.
    pub organization_id: Option<Uuid>,
}

/// Usage of one organization and code in one bucket; each (organization_id, transaction_id)
/// counts once, with its first record.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub organization_id: Uuid,
    pub code: String,
    /// Start of the bucket (UTC), milliseconds since the Unix epoch.
    pub bucket_start_ms: i64,
    pub events: u64,
    /// Sum of `value` over the events that have one (0 when none has).
    pub value_sum: f64,
    /// Exact sum of `decimal_value` over the events that have one (0 when none has); `None`
    /// when it is beyond Decimal(38, 12), where ClickHouse's own sum is wrong.
    pub decimal_value_sum: Option<Decimal>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct UsageRow {
    #[serde(with = "clickhouse::serde::uuid")]
    organization_id: Uuid,
    code: String,
    bucket_start_ms: i64,
    events: u64,
    value_sum: f64,
    decimal_value_sum: i128,
    decimal_value_sum_f64: f64,
}

/// Why usage could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The query failed.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// Runs the usage query.
pub async fn usage(client: &clickhouse::Client, query: &UsageQuery) -> Result<Vec<Usage>, BillingError> {
    let rows: Vec<UsageRow> = client.query_raw(&usage_sql(query)).fetch_all().await?;
    Ok(rows
        .into_iter()
        .map(|r| Usage {
            organization_id: r.organization_id,
            code: r.code,
            bucket_start_ms: r.bucket_start_ms,
            events: r.events,
            value_sum: r.value_sum,
            decimal_value_sum: checked_decimal_sum(r.decimal_value_sum, r.decimal_value_sum_f64),
        })
        .collect())
}

/// Half of what a wrap-around of the Int128 sum changes it by (2^128 / 10^12). A Float64 sum of
/// n values is off by at most about n · 2^-53 · (the sum of their magnitudes), far less than this
/// unless a bucket holds some 10^8 values near the limit of 10^26 that cancel out.
const HALF_WRAP: f64 = 1.701_411_834_604_692_3e26;

/// The exact decimal sum of a bucket from ClickHouse's `sum(decimal_value)` (`scaled`, the value
/// times 10^12, as it comes in RowBinary) and `sum(toFloat64(decimal_value))` (`approximate`),
/// or `None` when it does not fit Decimal(38, 12): `scaled` wrapped around (it is then at least
/// [`HALF_WRAP`] from `approximate`) or has more than 38 digits.
pub fn checked_decimal_sum(scaled: i128, approximate: f64) -> Option<Decimal> {
    let wrapped = (scaled as f64 / 1e12 - approximate).abs() >= HALF_WRAP;
    if wrapped {
        return None;
    }
    decimal_from_scaled(scaled, DECIMAL_SCALE)
}

/// The first record of every identity with a record in the query's range (the identity rule),
/// in (organization_id, transaction_id) order; the query's granularity is not used.
pub async fn first_records(client: &clickhouse::Client, query: &UsageQuery) -> Result<Vec<EventRow>, BillingError> {
    Ok(client.query_raw(&first_records_sql(query)).fetch_all().await?)
}

/// The first-records query with its parameters in place.
pub fn first_records_sql(query: &UsageQuery) -> String {
    with_parameters(FIRST_RECORDS_QUERY, query)
}

/// The usage query with its parameters in place.
pub fn usage_sql(query: &UsageQuery) -> String {
    with_parameters(USAGE_QUERY, query)
}

fn with_parameters(template: &str, query: &UsageQuery) -> String {
    // Clamped to what DateTime can hold, so the partition filter cannot wrap around.
    let clamp = |ms: i64| ms.clamp(0, MAX_TIMESTAMP_MS + 1);
    let organization = query.organization_id.unwrap_or_default();
    substitute(
        template,
        &[
            ("{bucket_ms:Int64}", query.granularity.millis().to_string()),
            ("{from_ms:Int64}", clamp(query.from_ms).to_string()),
            ("{to_ms:Int64}", clamp(query.to_ms).to_string()),
            ("{all_organizations:UInt8}", u8::from(query.organization_id.is_none()).to_string()),
            ("{organization_id:UUID}", format!("toUUID('{}')", organization.hyphenated())),
        ],
    )
}

fn substitute(template: &str, parameters: &[(&str, String)]) -> String {
    let mut sql = template.to_owned();
    for (placeholder, literal) in parameters {
        sql = sql.replace(placeholder, literal);
    }
    sql
}

/// `value / 10^scale` as an exact decimal, or `None` beyond 38 digits.
pub(crate) fn decimal_from_scaled(value: i128, scale: u32) -> Option<Decimal> {
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    let sign = if value < 0 { "-" } else { "" };
    let text = if scale == 0 { format!("{sign}{int_part}") } else { format!("{sign}{int_part}.{frac_part}") };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_placeholder_of_the_query_file_is_filled() {
        for organization_id in [None, Some(Uuid::from_u128(1))] {
            let sql = usage_sql(&UsageQuery { from_ms: 0, to_ms: 1, granularity: Granularity::Day, organization_id });
            assert!(!sql.contains('{') && !sql.contains('}'), "unfilled placeholder in {sql}");
            assert!(!sql.contains('?'), "the query must not contain '?'");
        }
    }

    #[test]
    fn every_placeholder_of_the_first_records_query_is_filled() {
        let sql = with_parameters(
            FIRST_RECORDS_QUERY,
            &UsageQuery { from_ms: 0, to_ms: 1, granularity: Granularity::Day, organization_id: None },
        );
        assert!(!sql.contains('{') && !sql.contains('}'), "unfilled placeholder in {sql}");
    }

    #[test]
    fn one_organization_or_all() {
        let org = Uuid::from_u128(0xabc);
        let one = usage_sql(&UsageQuery { from_ms: 5, to_ms: 9, granularity: Granularity::Hour, organization_id: Some(org) });
        assert!(one.contains(&format!("(0 OR organization_id = toUUID('{}'))", org.hyphenated())), "{one}");
        assert!(one.contains("timestamp_ms % 3600000"));
        let all = usage_sql(&UsageQuery { from_ms: 5, to_ms: 9, granularity: Granularity::Day, organization_id: None });
        assert!(all.contains("(1 OR organization_id"), "{all}");
    }

    #[test]
    fn ranges_are_clamped_to_datetime() {
        let sql = usage_sql(&UsageQuery { from_ms: -5, to_ms: i64::MAX, granularity: Granularity::Day, organization_id: None });
        assert!(sql.contains("timestamp_ms >= 0"));
        assert!(sql.contains(&format!("timestamp_ms < {}", MAX_TIMESTAMP_MS + 1)));
    }

    #[test]
    fn scaled_integers_become_exact_decimals() {
        for (scaled, text) in
            [(0, "0"), (1, "0.000000000001"), (-1_500_000_000_000, "-1.5"), (10i128.pow(38) - 1, "99999999999999999999999999.999999999999")]
        {
            assert_eq!(decimal_from_scaled(scaled, 12).unwrap().as_str(), text);
        }
        assert_eq!(decimal_from_scaled(i128::MAX, 12), None);
    }

    /// 10^25, the largest power of ten a decimal_value can be, times 10^12.
    const SCALED_1E25: i128 = 10i128.pow(37);

    /// What ClickHouse answers for `values` (scaled): the Int128 sum, wrapping, and the Float64 one.
    fn clickhouse_sums(values: &[i128]) -> (i128, f64) {
        (values.iter().fold(0i128, |sum, v| sum.wrapping_add(*v)), values.iter().map(|v| *v as f64 / 1e12).sum())
    }

    #[test]
    fn sums_in_range_are_exact() {
        for (values, text) in [
            (vec![1_500_000_000_000, 1], "1.500000000001"),
            (vec![-1_500_000_000_000, 1_500_000_000_000], "0"),
            (vec![9 * SCALED_1E25, 9 * SCALED_1E25, -9 * SCALED_1E25], "90000000000000000000000000"),
            (vec![10i128.pow(38) - 1], "99999999999999999999999999.999999999999"),
            // Values near the limit cancel out and the Float64 sum loses the rest (it says 0).
            (vec![-233_333_163_666_666_855_543, 10i128.pow(38) - 1, -(10i128.pow(38) - 2)], "-233333163.666666855542"),
        ] {
            let (scaled, approximate) = clickhouse_sums(&values);
            assert_eq!(checked_decimal_sum(scaled, approximate).map(|d| d.to_string()).as_deref(), Some(text), "{values:?}");
        }
    }

    #[test]
    fn sums_out_of_range_are_none_whether_they_wrapped_or_not() {
        // ClickHouse 18.16 answers -70282366920938463463374607.431768211456 for the first.
        assert_eq!(clickhouse_sums(&[9 * SCALED_1E25; 3]).0, -70_282_366_920_938_463_463_374_607_431_768_211_456);
        for values in [
            vec![9 * SCALED_1E25; 3],
            vec![-9 * SCALED_1E25; 3],
            vec![SCALED_1E25; 30],
            vec![SCALED_1E25; 10],
            vec![6 * SCALED_1E25, 6 * SCALED_1E25],
            vec![SCALED_1E25; 1_000],
        ] {
            let (scaled, approximate) = clickhouse_sums(&values);
            assert_eq!(checked_decimal_sum(scaled, approximate), None, "{} × {}", values.len(), values[0]);
        }
    }

    proptest! {
        #[test]
        fn a_sum_is_some_exactly_when_it_fits(
            // Any decimal_value, its size spread over every order of magnitude.
            magnitudes in proptest::collection::vec((0..10i128.pow(38), 0..39u32), 1..40),
            negative: bool,
        ) {
            let values: Vec<i128> =
                magnitudes.iter().map(|(m, e)| m / 10i128.pow(*e)).map(|m| if negative { -m } else { m }).collect();
            // One sign: the running sum only grows, so it fits i128 only if the total does.
            let exact = values.iter().try_fold(0i128, |sum, v| sum.checked_add(*v)).filter(|s| s.unsigned_abs() < 10u128.pow(38));
            let (scaled, approximate) = clickhouse_sums(&values);
            prop_assert_eq!(checked_decimal_sum(scaled, approximate).map(|d| d.to_scaled_i128(12).unwrap()), exact);
        }

        #[test]
        fn scaling_round_trips(scaled in -(10i128.pow(38) - 1)..10i128.pow(38)) {
            prop_assert_eq!(decimal_from_scaled(scaled, 12).unwrap().to_scaled_i128(12), Some(scaled));
        }
    }
}
