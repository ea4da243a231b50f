//! Which events are billing-critical: those whose code is a billable metric of their
//! organization (`billable_metrics`) at the time of the identity's first record, or one of the
//! codes configured as billable for everyone. This is the only definition of the rule: the sink
//! judges with it, and `bxbctl verify` and `bxbctl backfill` select the same subset of ClickHouse
//! with it.
//!
//! A row of `billable_metrics` is billable from `effective_from` (its insert, by default) until
//! `effective_until` (none: still billable). A record is judged at its append time (see
//! `bxb_event::identity`), never at the time a consumer reads it, so every consumer, a replay
//! and a backfill give the same answer. For that, the copy in memory must be current as of that
//! time: before judging a batch the sink asks [`BillableMetrics::covering`] for a view that holds
//! every change committed before the batch, and is current as of the batch's latest append time
//! plus the allowed clock skew between the brokers and PostgreSQL. One tiny read of
//! `billable_metrics_changes` (a counter the table's trigger bumps) per batch tells whether the
//! copy is current as of that read's statement time; the table is reloaded only when the
//! counter moved. A replay after a retroactive change is judged by the table as it is then. A metric added, its row committed, then events sent:
//! they are billable, whatever the refresh interval. Until the first load the sink refuses
//! batches (retry) rather than guessing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The periods in which one organization's code is billable: [from, until) in ms.
type Periods = Vec<(i64, i64)>;

/// Billable periods per organization and code, as in `billable_metrics`.
type PeriodsByMetric = HashMap<(Uuid, String), Periods>;

/// `billable_metrics` in milliseconds; `-infinity` and a missing end become the extremes.
const LOAD_QUERY: &str = r#"
SELECT organization_id, code,
       CASE WHEN isfinite(effective_from) THEN floor(extract(epoch FROM effective_from) * 1000)::int8 END,
       CASE WHEN isfinite(effective_until) THEN floor(extract(epoch FROM effective_until) * 1000)::int8 END
FROM billable_metrics
"#;

/// The counter and the moment it was read, in ms (PostgreSQL's clock).
const VERSION_QUERY: &str = "SELECT version, floor(extract(epoch FROM statement_timestamp()) * 1000)::int8 FROM billable_metrics_changes";

/// One loaded copy of the table and how current it is.
#[derive(Debug)]
struct Snapshot {
    periods: PeriodsByMetric,
    version: i64,
    /// Every change committed before this moment (PostgreSQL's clock, ms) is in `periods`.
    current_as_of_ms: i64,
    rows: usize,
}

/// The billable metrics as last loaded, plus the configured codes billable for every organization.
#[derive(Debug)]
pub struct BillableMetrics {
    everyone: HashSet<String>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
}

/// The view could not be made current.
#[derive(Debug, thiserror::Error)]
pub enum CoverError {
    #[error("reading billable_metrics: {0}")]
    Database(#[from] sqlx::Error),
    /// The batch's records were appended (by the brokers' clocks) later than PostgreSQL's clock
    /// says it is, beyond the allowed skew: judging them now could miss a change.
    #[error(
        "records appended at {appended_at_ms} ms are ahead of PostgreSQL's clock ({postgres_now_ms} ms) by more than the allowed skew"
    )]
    ClockAhead { appended_at_ms: i64, postgres_now_ms: i64 },
}

impl BillableMetrics {
    pub fn new(codes_for_everyone: impl IntoIterator<Item = String>) -> Self {
        let everyone = codes_for_everyone.into_iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
        Self { everyone, snapshot: RwLock::new(None) }
    }

    /// Whether `billable_metrics` has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.snapshot.read().expect("billable lock").is_some()
    }

    /// A view of the copy as it is, however old; `None` until the first load. For judging
    /// records use [`Self::covering`].
    pub fn view(&self) -> Option<BillableView<'_>> {
        let snapshot = self.snapshot.read().expect("billable lock").clone()?;
        Some(BillableView { everyone: &self.everyone, snapshot })
    }

    /// A view with every change of `billable_metrics` committed before this call, and current
    /// as of `appended_at_ms + skew_ms` (PostgreSQL's clock). Reads the change counter once (and
    /// the table if it moved); waits a little when the records are that recent, up to
    /// `max_wait`.
    pub async fn covering(
        &self,
        pool: &PgPool,
        appended_at_ms: i64,
        skew_ms: i64,
        max_wait: Duration,
    ) -> Result<BillableView<'_>, CoverError> {
        let needed = appended_at_ms.saturating_add(skew_ms);
        let started = tokio::time::Instant::now();
        loop {
            let (version, now_ms): (i64, i64) = sqlx::query_as(VERSION_QUERY).fetch_one(pool).await?;
            let current = self.snapshot.read().expect("billable lock").clone();
            match current {
                Some(snapshot) if snapshot.version == version => {
                    if snapshot.current_as_of_ms < now_ms {
                        let periods = snapshot.periods.clone();
                        self.install(Snapshot { periods, rows: snapshot.rows, version, current_as_of_ms: now_ms });
                    }
                }
                _ => {
                    self.refresh(pool).await?;
                }
            }
            let view = self.view().expect("loaded above");
            let as_of = view.snapshot.current_as_of_ms;
            if as_of >= needed {
                return Ok(view);
            }
            let behind = Duration::from_millis((needed - as_of).clamp(1, 1_000) as u64);
            if started.elapsed() + behind > max_wait {
                return Err(CoverError::ClockAhead { appended_at_ms, postgres_now_ms: as_of });
            }
            tokio::time::sleep(behind).await;
        }
    }

    fn install(&self, snapshot: Snapshot) {
        metrics::gauge!("bxb_consumer_postgres_billable_metrics").set(snapshot.rows as f64);
        *self.snapshot.write().expect("billable lock") = Some(Arc::new(snapshot));
    }

    /// Reloads the whole table, consistently with the change counter; on failure the previous
    /// copy stays in use.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // One snapshot for the counter and the rows; the counter's statement time precedes it.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let (version, current_as_of_ms): (i64, i64) = sqlx::query_as(VERSION_QUERY).fetch_one(&mut *tx).await?;
        let rows: Vec<(Uuid, String, Option<i64>, Option<i64>)> = sqlx::query_as(LOAD_QUERY).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let count = rows.len();
        let mut periods = PeriodsByMetric::new();
        for (organization_id, code, from, until) in rows {
            periods.entry((organization_id, code)).or_default().push((from.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX)));
        }
        self.install(Snapshot { periods, version, current_as_of_ms, rows: count });
        Ok(count)
    }

    #[cfg(test)]
    pub(crate) fn set_for_tests(&self, periods: PeriodsByMetric) {
        self.install(Snapshot { periods, version: 0, current_as_of_ms: i64::MAX, rows: 0 });
    }

    /// Refreshes every `interval` until `shutdown`, so that an idle consumer's copy (and the
    /// gauge) stay recent; writes do not depend on it.
    pub async fn refresh_every(self: Arc<Self>, pool: PgPool, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.refresh(&pool).await {
                Ok(count) => tracing::debug!(count, "billable metrics refreshed"),
                Err(error) => {
                    metrics::counter!("bxb_consumer_postgres_billable_refresh_errors_total").increment(1);
                    tracing::warn!(%error, "billable metrics refresh failed; keeping the previous list");
                }
            }
        }
    }
}

/// One consistent copy of what is billable.
pub struct BillableView<'a> {
    everyone: &'a HashSet<String>,
    snapshot: Arc<Snapshot>,
}

impl BillableView<'_> {
    /// Whether `code` is billable for the organization at `at_ms` (an append time).
    pub fn is_billable_at(&self, organization_id: &Uuid, code: &str, at_ms: i64) -> bool {
        self.everyone.contains(code)
            || self
                .snapshot
                .periods
                .get(&(*organization_id, code.to_owned()))
                .is_some_and(|periods| periods.iter().any(|&(from, until)| from <= at_ms && at_ms < until))
    }

    /// Whether `code` is billable for the organization at any time: the codes `bxbctl verify`
    /// compares.
    pub fn is_ever_billable(&self, organization_id: &Uuid, code: &str) -> bool {
        self.everyone.contains(code) || self.snapshot.periods.contains_key(&(*organization_id, code.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_decided_before_the_first_load() {
        let billable = BillableMetrics::new(["api_calls".to_owned()]);
        assert!(billable.view().is_none());
        assert!(!billable.is_loaded());
    }

    #[test]
    fn configured_codes_are_billable_for_everyone_and_table_codes_per_organization_and_period() {
        let billable = BillableMetrics::new(vec![" api_calls".to_owned(), String::new()]);
        let org = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let table = HashMap::from([
            ((org, "storage_gb".to_owned()), vec![(i64::MIN, i64::MAX)]),
            ((org, "seats".to_owned()), vec![(100, 200), (300, i64::MAX)]),
        ]);
        billable.set_for_tests(table);
        let view = billable.view().unwrap();
        assert!(view.is_billable_at(&org, "api_calls", 0));
        assert!(view.is_billable_at(&other, "api_calls", 0));
        assert!(view.is_billable_at(&org, "storage_gb", 0));
        assert!(!view.is_billable_at(&other, "storage_gb", 0));
        assert!(!view.is_billable_at(&org, "", 0));
        // [from, until): billable from its start, not at its end, again from the next period.
        let seats: Vec<bool> = [99, 100, 199, 200, 299, 300, i64::MAX - 1].iter().map(|&t| view.is_billable_at(&org, "seats", t)).collect();
        assert_eq!(seats, [false, true, true, false, false, true, true]);
        assert!(view.is_ever_billable(&org, "seats"));
        assert!(!view.is_ever_billable(&other, "seats"));
    }
}
