//! Which events are billing-critical: those whose code is a billable metric of their
//! organization (`billable_metrics`), or one of the codes configured as billable for everyone.
//! This is the only definition of the rule: the sink filters with it, and `bxbctl verify`
//! selects the same subset of ClickHouse with it.
//!
//! The table is small (organizations × metrics) and read on every event, so it is held in memory
//! as one immutable snapshot, swapped whole on each refresh. Until the first load succeeds the
//! sink does not know what to skip, so it refuses batches (retry) rather than guessing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Billable codes per organization, as in `billable_metrics`.
type CodesByOrganization = HashMap<Uuid, HashSet<String>>;

/// The billable metrics as last loaded, plus the configured codes billable for every organization.
#[derive(Debug)]
pub struct BillableMetrics {
    everyone: HashSet<String>,
    snapshot: RwLock<Option<Arc<CodesByOrganization>>>,
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

    /// A view to test many events against; `None` until the first load.
    pub fn view(&self) -> Option<BillableView<'_>> {
        let snapshot = self.snapshot.read().expect("billable lock").clone()?;
        Some(BillableView { everyone: &self.everyone, by_organization: snapshot })
    }

    /// Reloads the whole table; on failure the previous snapshot stays in use.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT organization_id, code FROM billable_metrics").fetch_all(pool).await?;
        let count = rows.len();
        let mut by_organization = CodesByOrganization::new();
        for (organization_id, code) in rows {
            by_organization.entry(organization_id).or_default().insert(code);
        }
        *self.snapshot.write().expect("billable lock") = Some(Arc::new(by_organization));
        metrics::gauge!("bxb_consumer_postgres_billable_metrics").set(count as f64);
        Ok(count)
    }

    #[cfg(test)]
    pub(crate) fn set_for_tests(&self, table: CodesByOrganization) {
        *self.snapshot.write().expect("billable lock") = Some(Arc::new(table));
    }

    /// Refreshes every `interval` until `shutdown`.
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

/// One consistent snapshot of what is billable.
pub struct BillableView<'a> {
    everyone: &'a HashSet<String>,
    by_organization: Arc<CodesByOrganization>,
}

impl BillableView<'_> {
    pub fn is_billable(&self, organization_id: &Uuid, code: &str) -> bool {
        self.everyone.contains(code) || self.by_organization.get(organization_id).is_some_and(|codes| codes.contains(code))
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
    fn configured_codes_are_billable_for_everyone_and_table_codes_per_organization() {
        let billable = BillableMetrics::new(vec![" api_calls".to_owned(), String::new()]);
        let org = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let table = HashMap::from([(org, HashSet::from(["storage_gb".to_owned()]))]);
        billable.set_for_tests(table);
        let view = billable.view().unwrap();
        assert!(view.is_billable(&org, "api_calls"));
        assert!(view.is_billable(&other, "api_calls"));
        assert!(view.is_billable(&org, "storage_gb"));
        assert!(!view.is_billable(&other, "storage_gb"));
        assert!(!view.is_billable(&org, ""));
    }
}
