//! `bxbctl verify`: does PostgreSQL hold exactly the billable events ClickHouse holds?
//!
//! For every organization, code and hour of a time range it compares PostgreSQL's `events`
//! (the billable subset, one row per identity) with the same subset of ClickHouse's
//! `events_raw` counted by the billing query (each identity once, its first record). The
//! billable subset is decided by consumer-postgres' own rule ([`BillableMetrics`]) as it stands
//! now: `billable_metrics` plus the codes billable for every organization. A code made billable
//! later shows up as a difference for the hours before that; verify from the time of the change.
//! Hours are UTC in both stores, whatever the time zone of the PostgreSQL session. A bucket
//! whose decimal sum is beyond Decimal(38, 12) is always a difference: ClickHouse's sum of it
//! wraps around (`billing::checked_decimal_sum`), so no billing query can give it.

use std::collections::BTreeMap;
use std::fmt;

use bxb_consumer_clickhouse::billing::{self, Granularity, Usage, UsageQuery};
use bxb_consumer_clickhouse::ClickHouseArgs;
use bxb_consumer_postgres::billable::BillableMetrics;
use bxb_event::{Decimal, DecimalError};
use sqlx::PgPool;
use uuid::Uuid;

/// The usage of one organization, code and hour in one store.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub events: u64,
    pub value_sum: f64,
    /// `None` when beyond Decimal(38, 12): PostgreSQL's numeric sum is exact at any size, but
    /// ClickHouse's wraps around.
    pub decimal_value_sum: Option<Decimal>,
}

/// (organization, code, hour start in ms).
pub type BucketKey = (Uuid, String, i64);

/// One bucket where the stores disagree; `None` where a store has no events in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub key: BucketKey,
    pub postgres: Option<Bucket>,
    pub clickhouse: Option<Bucket>,
}

impl Difference {
    /// Whether a store's decimal sum of the bucket is beyond Decimal(38, 12).
    pub fn decimal_overflow(&self) -> bool {
        [&self.postgres, &self.clickhouse].into_iter().flatten().any(|b| b.decimal_value_sum.is_none())
    }
}

/// `<organization> <code> <hour, RFC 3339>: [the overflow, ]postgres [...] clickhouse [...]`.
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (organization_id, code, hour_ms) = &self.key;
        let hour = time::OffsetDateTime::from_unix_timestamp(hour_ms.div_euclid(1000))
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| format!("{hour_ms} ms"));
        write!(f, "{organization_id} {code} {hour}: ")?;
        if self.decimal_overflow() {
            write!(f, "the decimal_value sum overflows Decimal(38, 12); ")?;
        }
        write!(f, "postgres [{}] clickhouse [{}]", BucketText(&self.postgres), BucketText(&self.clickhouse))
    }
}

struct BucketText<'a>(&'a Option<Bucket>);

impl fmt::Display for BucketText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(b) = self.0 else { return write!(f, "-") };
        write!(f, "{} events, value {}, decimal ", b.events, b.value_sum)?;
        match &b.decimal_value_sum {
            Some(decimal) => write!(f, "{decimal}"),
            None => write!(f, "overflow"),
        }
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct VerifyScope {
    pub from_ms: i64,
    pub to_ms: i64,
    pub organization_id: Option<Uuid>,
    /// Codes billable for every organization (consumer-postgres' BXB_BILLABLE_CODES).
    pub billable_codes: Vec<String>,
}

/// The outcome: how many buckets were compared and where they differ.
#[derive(Debug, Clone)]
pub struct Report {
    pub buckets: usize,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// PostgreSQL could not be queried.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    /// ClickHouse could not be queried.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] billing::BillingError),
    /// A stored decimal sum is not a decimal of the event rules.
    #[error("PostgreSQL decimal sum {0:?}: {1}")]
    Decimal(String, DecimalError),
}

/// Compares the two stores over `scope`.
pub async fn verify(pool: &PgPool, clickhouse: &ClickHouseArgs, scope: &VerifyScope) -> Result<Report, VerifyError> {
    let metrics = BillableMetrics::new(scope.billable_codes.iter().cloned());
    metrics.refresh(pool).await?;
    let billable = metrics.view().expect("loaded just before");
    let postgres = postgres_buckets(pool, scope).await?;
    let usage = billing::usage(
        &clickhouse.client(),
        &UsageQuery { from_ms: scope.from_ms, to_ms: scope.to_ms, granularity: Granularity::Hour, organization_id: scope.organization_id },
    )
    .await?;
    let clickhouse: BTreeMap<BucketKey, Bucket> = usage
        .into_iter()
        .filter(|u| billable.is_ever_billable(&u.organization_id, &u.code))
        .map(|u: Usage| {
            let key = (u.organization_id, u.code, u.bucket_start_ms);
            (key, Bucket { events: u.events, value_sum: u.value_sum, decimal_value_sum: u.decimal_value_sum })
        })
        .collect();
    Ok(compare(postgres, clickhouse))
}

/// Pairs buckets by key; equal when counts and decimal sums are equal (and within
/// Decimal(38, 12)) and the float sums agree to 1e-9 relative (they are added in a different
/// order by each store).
pub fn compare(postgres: BTreeMap<BucketKey, Bucket>, clickhouse: BTreeMap<BucketKey, Bucket>) -> Report {
    let keys: std::collections::BTreeSet<&BucketKey> = postgres.keys().chain(clickhouse.keys()).collect();
    let mut differences = Vec::new();
    for key in &keys {
        let (p, c) = (postgres.get(*key), clickhouse.get(*key));
        let same = match (p, c) {
            (Some(p), Some(c)) => {
                p.events == c.events
                    && p.decimal_value_sum.is_some()
                    && p.decimal_value_sum == c.decimal_value_sum
                    && (p.value_sum - c.value_sum).abs() <= 1e-9 * p.value_sum.abs().max(c.value_sum.abs()).max(1.0)
            }
            _ => false,
        };
        if !same {
            differences.push(Difference { key: (*key).clone(), postgres: p.cloned(), clickhouse: c.cloned() });
        }
    }
    Report { buckets: keys.len(), differences }
}

async fn postgres_buckets(pool: &PgPool, scope: &VerifyScope) -> Result<BTreeMap<BucketKey, Bucket>, VerifyError> {
    let rows: Vec<(Uuid, String, i64, i64, f64, String)> = sqlx::query_as(
        // The hour from epoch milliseconds, as usage.sql does: date_trunc would cut hours in the
        // session's time zone, at half past the UTC hour in Asia/Kolkata.
        "SELECT organization_id, code,
                (floor(extract(epoch FROM \"timestamp\") * 1000 / 3600000) * 3600000)::bigint AS bucket_start_ms,
                count(*)::bigint,
                coalesce(sum(value), 0)::double precision,
                coalesce(sum(decimal_value), 0)::text
         FROM events
         WHERE \"timestamp\" >= to_timestamp($1::double precision / 1000)
           AND \"timestamp\" < to_timestamp($2::double precision / 1000)
           AND ($3::uuid IS NULL OR organization_id = $3)
         GROUP BY 1, 2, 3",
    )
    .bind(scope.from_ms)
    .bind(scope.to_ms)
    .bind(scope.organization_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(org, code, bucket, events, value_sum, decimal)| {
            let decimal_value_sum = match decimal.parse() {
                Ok(sum) => Some(sum),
                Err(DecimalError::Precision) => None,
                Err(e) => return Err(VerifyError::Decimal(decimal, e)),
            };
            Ok(((org, code, bucket), Bucket { events: events as u64, value_sum, decimal_value_sum }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(events: u64, value_sum: f64, decimal: &str) -> Bucket {
        Bucket { events, value_sum, decimal_value_sum: Some(decimal.parse().unwrap()) }
    }

    fn key(code: &str, hour: i64) -> BucketKey {
        (Uuid::from_u128(1), code.to_owned(), hour * 3_600_000)
    }

    #[test]
    fn equal_stores_have_no_differences() {
        let p = BTreeMap::from([(key("a", 0), bucket(3, 0.1 + 0.2, "1.5"))]);
        let c = BTreeMap::from([(key("a", 0), bucket(3, 0.3, "1.50"))]);
        let report = compare(p, c);
        assert_eq!((report.buckets, report.differences.len()), (1, 0));
    }

    #[test]
    fn counts_sums_and_missing_buckets_are_differences() {
        let p =
            BTreeMap::from([(key("a", 0), bucket(3, 1.0, "0")), (key("b", 0), bucket(1, 1.0, "0")), (key("c", 0), bucket(1, 1.0, "2"))]);
        let c = BTreeMap::from([
            (key("a", 0), bucket(4, 1.0, "0")),
            (key("c", 0), bucket(1, 1.0, "2.000000000001")),
            (key("d", 1), bucket(1, 1.0, "0")),
        ]);
        let report = compare(p, c);
        let codes: Vec<_> = report.differences.iter().map(|d| d.key.1.as_str()).collect();
        assert_eq!(codes, ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_bucket_beyond_decimal_38_12_is_an_overflow_even_when_both_stores_have_it() {
        let overflowed = Bucket { decimal_value_sum: None, ..bucket(30, 30.0, "0") };
        let p = BTreeMap::from([(key("a", 2), overflowed.clone()), (key("b", 2), bucket(1, 1.0, "1"))]);
        let c = BTreeMap::from([(key("a", 2), overflowed.clone()), (key("b", 2), overflowed)]);
        let report = compare(p, c);
        assert_eq!(report.differences.len(), 2);
        assert!(report.differences.iter().all(Difference::decimal_overflow));
        assert_eq!(
            report.differences[1].to_string(),
            "00000000-0000-0000-0000-000000000001 b 1970-01-01T02:00:00Z: the decimal_value sum overflows Decimal(38, 12); \
             postgres [1 events, value 1, decimal 1] clickhouse [30 events, value 30, decimal overflow]"
        );
    }
}
