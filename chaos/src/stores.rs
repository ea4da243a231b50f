//! What the stores hold for the run: identities found, and billing per organization, code and
//! UTC hour (ClickHouse: the billing query; PostgreSQL: `events` grouped the same way).

use std::collections::HashSet;

use anyhow::Context;
use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use bxb_event::Decimal;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::tally::{Held, Identity};
use crate::truth::{Bucket, BucketKey, Buckets, DecimalSum};

/// What one store holds.
#[derive(Debug, Clone)]
pub struct Holding {
    pub held: Held,
    /// Rows physically stored (ClickHouse keeps repeated records until merges remove them).
    pub rows: u64,
}

/// Every row of the run's `events` (its database holds nothing else).
pub async fn postgres(pool: &PgPool) -> anyhow::Result<Holding> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT organization_id, transaction_id FROM events").fetch_all(pool).await?;
    let stored = rows.len() as u64;
    let identities = rows.into_iter().collect();
    let sums: Vec<(Uuid, String, i64, i64, f64, String)> = sqlx::query_as(
        r#"SELECT organization_id, code,
                  (extract(epoch FROM date_trunc('hour', "timestamp" AT TIME ZONE 'UTC')) * 1000)::bigint AS hour_start_ms,
                  count(*), coalesce(sum(value), 0), coalesce(sum(decimal_value), 0)::text
           FROM events
           GROUP BY 1, 2, 3"#,
    )
    .fetch_all(pool)
    .await?;
    let mut buckets = Buckets::new();
    for (organization_id, code, hour_start_ms, events, value_sum, decimal_sum) in sums {
        let decimal: Decimal = decimal_sum.parse().with_context(|| format!("sum(decimal_value) {decimal_sum:?}"))?;
        let bucket = Bucket { events: events as u64, value_sum, decimal_value_sum: DecimalSum::of(&decimal) };
        buckets.insert(BucketKey { organization_id, code, hour_start_ms }, bucket);
    }
    Ok(Holding { held: Held { identities, buckets }, rows: stored })
}

#[derive(clickhouse::Row, Deserialize)]
struct IdentityRow {
    organization_id: String,
    transaction_id: String,
}

/// The run's `events_raw`: distinct identities, and the billing query's hours over `range_ms`.
pub async fn clickhouse(client: &clickhouse::Client, range_ms: (i64, i64)) -> anyhow::Result<Holding> {
    let rows: Vec<IdentityRow> =
        client.query("SELECT DISTINCT toString(organization_id), transaction_id FROM events_raw").fetch_all().await?;
    let identities = rows
        .into_iter()
        .map(|r| Ok((r.organization_id.parse::<Uuid>()?, r.transaction_id)))
        .collect::<anyhow::Result<HashSet<Identity>>>()?;
    let usage = billing::usage(
        client,
        &UsageQuery { from_ms: range_ms.0, to_ms: range_ms.1, granularity: Granularity::Hour, organization_id: None },
    )
    .await?;
    let buckets = usage
        .into_iter()
        .map(|u| {
            let decimal = u.decimal_value_sum.as_ref().with_context(|| {
                format!("the decimal_value sum of {} {} {} overflows Decimal(38, 12)", u.organization_id, u.code, u.bucket_start_ms)
            })?;
            let bucket = Bucket { events: u.events, value_sum: u.value_sum, decimal_value_sum: DecimalSum::of(decimal) };
            let key = BucketKey { organization_id: u.organization_id, code: u.code, hour_start_ms: u.bucket_start_ms };
            Ok((key, bucket))
        })
        .collect::<anyhow::Result<_>>()?;
    let stored: u64 = client.query("SELECT count() FROM events_raw").fetch_one().await?;
    Ok(Holding { held: Held { identities, buckets }, rows: stored })
}
