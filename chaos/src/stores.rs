//! What the stores hold for the run: identities found and the count billing would use.

use std::collections::HashSet;

use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::tally::Identity;

/// What one store holds.
#[derive(Debug, Clone)]
pub struct Holding {
    pub identities: HashSet<Identity>,
    /// PostgreSQL: rows of `events`. ClickHouse: events counted by the billing query.
    pub counted: u64,
    /// Rows physically stored (ClickHouse keeps repeated records until merges remove them).
    pub rows: u64,
}

/// Every row of the run's `events` (its database holds nothing else).
pub async fn postgres(pool: &PgPool) -> anyhow::Result<Holding> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT organization_id, transaction_id FROM events").fetch_all(pool).await?;
    let counted = rows.len() as u64;
    Ok(Holding { identities: rows.into_iter().collect(), counted, rows: counted })
}

#[derive(clickhouse::Row, Deserialize)]
struct IdentityRow {
    organization_id: String,
    transaction_id: String,
}

/// The run's `events_raw`: distinct identities, and the billing query's count over `range_ms`.
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
    let counted = usage.iter().map(|u| u.events).sum();
    let stored: u64 = client.query("SELECT count() FROM events_raw").fetch_one().await?;
    Ok(Holding { identities, counted, rows: stored })
}
