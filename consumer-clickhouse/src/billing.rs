//! The billing queries of `schemas/clickhouse/queries/`, run against `events_raw`.
//!
//! ClickHouse 18.16 has no server-side query parameters, so the `{name:Type}` placeholders of
//! the query files are replaced here by literals. Every value is a number or a UUID formatted
//! by Rust, so nothing user-supplied reaches the SQL text.

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
    /// Exact sum of `decimal_value` over the events that have one (0 when none has).
    pub decimal_value_sum: Decimal,
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
}

/// Why usage could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The query failed.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A sum of `decimal_value` left the range of Decimal(38, 12).
    #[error("the decimal_value sum of {organization_id} / {code} overflows Decimal(38, 12)")]
    DecimalOverflow { organization_id: Uuid, code: String },
}

/// Runs the usage query.
pub async fn usage(client: &clickhouse::Client, query: &UsageQuery) -> Result<Vec<Usage>, BillingError> {
    let rows: Vec<UsageRow> = client.query_raw(&usage_sql(query)).fetch_all().await?;
    rows.into_iter()
        .map(|r| {
            let Some(decimal_value_sum) = decimal_from_scaled(r.decimal_value_sum, DECIMAL_SCALE) else {
                return Err(BillingError::DecimalOverflow { organization_id: r.organization_id, code: r.code });
            };
            Ok(Usage {
                organization_id: r.organization_id,
                code: r.code,
                bucket_start_ms: r.bucket_start_ms,
                events: r.events,
                value_sum: r.value_sum,
                decimal_value_sum,
            })
        })
        .collect()
}

/// The first record of every identity with a record in the query's range (the identity rule),
/// in (organization_id, transaction_id) order; the query's granularity is not used.
pub async fn first_records(client: &clickhouse::Client, query: &UsageQuery) -> Result<Vec<EventRow>, BillingError> {
    Ok(client.query_raw(&with_parameters(FIRST_RECORDS_QUERY, query)).fetch_all().await?)
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

    proptest! {
        #[test]
        fn scaling_round_trips(scaled in -(10i128.pow(38) - 1)..10i128.pow(38)) {
            prop_assert_eq!(decimal_from_scaled(scaled, 12).unwrap().to_scaled_i128(12), Some(scaled));
        }
    }
}
