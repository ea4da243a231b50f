//! The PostgreSQL [`Sink`]: one transaction per batch, durable before `write` returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bxb_consumer::{Record, Sink, SinkError};
use bxb_event::clock::now_ms;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::billable::BillableMetrics;
use crate::error::{classify, sqlstate, SetupError, NO_PARTITION_FOR_ROW, UNIQUE_VIOLATION};
use crate::partitions::Partitions;
use crate::rows::{self, COPY_EVENTS, COPY_KEYS};
use crate::select::{select, Skip};
use crate::{schema, PostgresArgs};

/// Identity is exact at write time through `event_keys`, a plain (non-partitioned) table whose
/// primary key is (organization_id, transaction_id). `events` cannot carry that key itself:
/// PostgreSQL requires every unique index of a partitioned table to contain the partition key,
/// and a key that includes `timestamp` would let a retry with a different timestamp (a client that
/// omitted it and retried) in as a second row. So each batch, in one transaction:
///
/// 1. its keys go into `event_keys`. First optimistically, as a binary `COPY` inside a savepoint:
///    live traffic and backlogs consist of new keys, and a `COPY` is the cheapest insert there
///    is. One key that is already taken (a replay, a retried batch, another consumer's write)
///    aborts it with a unique violation; then the savepoint is rolled back and this statement
///    inserts the keys from three arrays and returns the ones that were new;
/// 2. a binary `COPY` writes the events of exactly the new keys into `events`.
///
/// Each event is written once to each table and nothing else: no staging table (which cost a
/// catalog entry per batch and a third copy of every row) and no join. Both paths insert the keys
/// sorted by (organization_id, transaction_id) — byte order in the `COPY`, the database
/// collation's in this statement, the same under `C` or `C.UTF-8` — so concurrent batches
/// sharing keys wait on each other's row locks and do not deadlock (under another collation a
/// rare deadlock is detected by PostgreSQL and the batch retried). A transaction inserting a key
/// that a concurrent one holds waits, then finds it taken (or takes it if the other rolled
/// back), so two consumers never both write it.
///
/// The cost: the key table grows with `events` (a B-tree of ~50 bytes per event plus the key) and
/// every write pays one more index insert. Its retention follows the events retention: after
/// dropping expired partitions the maintenance job deletes the keys older than the oldest kept
/// partition, set-based in chunks (see `partitions::Partitions::drop_expired`). Hash-partitioning
/// the key table was considered and rejected: it splits the B-tree but neither avoids the deletes
/// (a key's partition is not its age) nor speeds them up.
const INSERT_NEW_KEYS: &str = r#"
INSERT INTO event_keys (organization_id, transaction_id, "timestamp")
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
-- One lock order for every writer: concurrent batches sharing keys wait, never deadlock.
ORDER BY 1, 2
ON CONFLICT (organization_id, transaction_id) DO NOTHING
RETURNING organization_id, transaction_id
"#;

/// Writes the billing-critical events of each batch to PostgreSQL.
#[derive(Clone)]
pub struct PostgresSink {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    billable: Arc<BillableMetrics>,
    partitions: Partitions,
    args: PostgresArgs,
}

/// What one batch write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows inserted into `events`.
    pub written: u64,
    /// Records whose identity was already stored by an earlier batch.
    pub already_stored: u64,
    /// Records skipped before reaching PostgreSQL, by reason.
    pub skipped: Vec<(Skip, u64)>,
}

impl PostgresSink {
    /// Connects, checks that the schema is current (see [`schema::check`]; [`schema::migrate`]
    /// or `bxbctl migrate` applies it), loads the billable metrics and creates the partitions
    /// ahead. Fails when any of it fails: the caller decides whether to retry.
    pub async fn connect(args: PostgresArgs) -> Result<Self, SetupError> {
        let pool = args.pool_or_config_error()?;
        schema::check(&pool).await?;
        let billable = Arc::new(BillableMetrics::new(args.billable_codes.clone()));
        billable.refresh(&pool).await?;
        let partitions = Partitions::new(&args);
        partitions.create_ahead(&pool, now_ms()).await?;
        Ok(Self { inner: Arc::new(Inner { pool, billable, partitions, args }) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn partitions(&self) -> &Partitions {
        &self.inner.partitions
    }

    /// Reloads `billable_metrics` now (the background task does it every refresh interval).
    pub async fn refresh_billable(&self) -> Result<usize, sqlx::Error> {
        self.inner.billable.refresh(&self.inner.pool).await
    }

    /// One maintenance pass at `now_ms`: partitions ahead, then retention. Returns the partitions
    /// created and dropped.
    pub async fn maintain(&self, now_ms: i64) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
        let created = self.inner.partitions.create_ahead(&self.inner.pool, now_ms).await?;
        let dropped = self.inner.partitions.drop_expired(&self.inner.pool, now_ms).await?;
        Ok((created, dropped))
    }

    /// Runs the billable-metrics refresh and the partition maintenance until `shutdown`.
    pub fn spawn_background(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let refresh = tokio::spawn(self.inner.billable.clone().refresh_every(
            self.inner.pool.clone(),
            Duration::from_millis(self.inner.args.billable_refresh_ms),
            shutdown.clone(),
        ));
        let sink = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(sink.inner.args.maintenance_interval_ms));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                match sink.maintain(now_ms()).await {
                    Ok((created, dropped)) => tracing::debug!(?created, ?dropped, "partition maintenance done"),
                    Err(error) => {
                        metrics::counter!("bxb_consumer_postgres_maintenance_errors_total").increment(1);
                        tracing::warn!(%error, "partition maintenance failed; trying again next interval");
                    }
                }
            }
            let _ = refresh.await;
        })
    }

    /// Writes `batch` and says what happened; [`Sink::write`] is this without the summary.
    #[tracing::instrument(name = "postgres_write", skip_all, fields(records = batch.len()))]
    pub async fn write_batch(&self, batch: &[Record]) -> Result<WriteSummary, SinkError> {
        let inner = &self.inner;
        let view = match inner.billable.view() {
            Some(view) => view,
            None => {
                // Not knowing what is billable must never mean skipping: load it or retry.
                inner.billable.refresh(&inner.pool).await.map_err(|e| classify("loading billable metrics", e))?;
                inner.billable.view().expect("just loaded")
            }
        };
        let selection = select(batch, &view, inner.partitions.window(now_ms()));
        let mut summary = WriteSummary { skipped: selection.skipped.into_iter().collect(), ..WriteSummary::default() };
        summary.skipped.sort_by_key(|(skip, _)| skip.as_str());
        if !selection.records.is_empty() {
            let started = Instant::now();
            let (written, staged) = self.insert(&selection.records).await?;
            metrics::histogram!("bxb_consumer_postgres_write_seconds").record(started.elapsed().as_secs_f64());
            summary.written = written;
            summary.already_stored = staged - written;
        }
        metrics::counter!("bxb_consumer_postgres_events_written_total").increment(summary.written);
        metrics::counter!("bxb_consumer_postgres_events_skipped_total", "reason" => "already_stored").increment(summary.already_stored);
        for (skip, count) in &summary.skipped {
            metrics::counter!("bxb_consumer_postgres_events_skipped_total", "reason" => skip.as_str()).increment(*count);
        }
        Ok(summary)
    }

    /// Inserts `records` (one per identity) in one transaction; returns (rows inserted, records).
    async fn insert(&self, records: &[&Record]) -> Result<(u64, u64), SinkError> {
        let inner = &self.inner;
        let keys = rows::Keys::of(records);
        inner.partitions.ensure_covering(&inner.pool, &keys.timestamps_ms).await.map_err(|e| classify("creating partitions", e))?;

        let result = async {
            let mut tx = inner.pool.begin().await?;
            // The runtime commits the Kafka offsets of this batch as soon as `write` returns, so
            // the commit below must be on disk by then: with synchronous_commit = off, a server
            // crash could lose a transaction whose offsets Kafka already holds, and the batch
            // would never be delivered again. SET LOCAL pins it for this transaction whatever the
            // server, database or role default is (synchronous_commit = off may be set server-wide
            // for other tables, as some tuning guides suggest).
            sqlx::query("SET LOCAL synchronous_commit = on").execute(&mut *tx).await?;
            let new_records = if copy_keys_if_all_new(&mut tx, &keys).await? {
                records.to_vec()
            } else {
                let new_keys: Vec<(Uuid, String)> = sqlx::query_as(INSERT_NEW_KEYS)
                    .bind(&keys.organization_ids)
                    .bind(&keys.transaction_ids)
                    .bind(keys.timestamps())
                    .fetch_all(&mut *tx)
                    .await?;
                rows::only_new(records, &new_keys)
            };
            let written = if new_records.is_empty() {
                0
            } else {
                let copy_data = rows::encode(&new_records).map_err(|e| sqlx::Error::Encode(e.into()))?;
                let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
                copy.send(copy_data).await?;
                copy.finish().await?
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>((written, records.len() as u64))
        }
        .await;
        result.map_err(|e| {
            if sqlstate(&e).as_deref() == Some(NO_PARTITION_FOR_ROW) {
                // Dropped by another consumer's retention after we looked: look again next time.
                inner.partitions.forget();
            }
            classify("writing batch", e)
        })
    }
}

/// The fast path of the key insert: `COPY` every key of the batch inside a savepoint. Returns
/// false, with the savepoint rolled back, when a key was already taken.
async fn copy_keys_if_all_new(conn: &mut PgConnection, keys: &rows::Keys<'_>) -> Result<bool, sqlx::Error> {
    let stream = keys.copy_stream().map_err(|e| sqlx::Error::Encode(e.into()))?;
    let mut savepoint = conn.begin().await?;
    let copied = async {
        let mut copy = savepoint.copy_in_raw(COPY_KEYS).await?;
        copy.send(stream).await?;
        copy.finish().await
    }
    .await;
    match copied {
        Ok(_) => {
            savepoint.commit().await?;
            Ok(true)
        }
        Err(error) if sqlstate(&error).as_deref() == Some(UNIQUE_VIOLATION) => {
            savepoint.rollback().await?;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, batch: &[Record]) -> Result<(), SinkError> {
        self.write_batch(batch).await.map(|_| ())
    }

    async fn is_ready(&self) -> bool {
        self.inner.billable.is_loaded()
            && tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.inner.pool))
                .await
                .is_ok_and(|r| r.is_ok())
    }
}
