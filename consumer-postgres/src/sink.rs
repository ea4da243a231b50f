//! The PostgreSQL [`Sink`]: one transaction per batch, durable before `write` returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use bxb_consumer::{Record, Sink, SinkError, Written};
use bxb_event::clock::now_ms;
use bxb_event::identity::Rank;
use bxb_event::registry::PoisonReason;
use bxb_event::Event;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::billable::{BillableMetrics, CoverError};
use crate::error::{classify, sqlstate, SetupError, NO_PARTITION_FOR_ROW, UNIQUE_VIOLATION};
use crate::partitions::Partitions;
use crate::rows::{self, COPY_EVENTS, COPY_KEYS};
use crate::select::{resolve, select, Action, Candidate, StoredKey};
use crate::{schema, PostgresArgs};

/// Identity is exact at write time through `event_keys`, a plain (non-partitioned) table whose
/// primary key is (organization_id, transaction_id). `events` cannot carry that key itself:
/// PostgreSQL requires every unique index of a partitioned table to contain the partition key,
/// and a key that includes `timestamp` would let a retry with a different timestamp in as a
/// second row. `event_keys` holds every identity seen, billable or not, with the rank of the
/// record that decides it (`docs/identity.md`). So each batch, in one transaction:
///
/// 1. the batch's candidates (one per identity, see [`select`]) go into `event_keys`. First
///    optimistically, as a binary `COPY` inside a savepoint: live traffic and backlogs consist
///    of new identities, and a `COPY` is the cheapest insert there is. One key that is already
///    there (a replay, a retried batch, a retry of the client, another consumer's write)
///    aborts it with a unique violation; then the savepoint is rolled back, the stored keys of
///    the batch are read and locked ([`LOCK_STORED_KEYS`]), and each candidate is resolved
///    against its stored key ([`resolve`]): new keys are inserted, a better-ranked record
///    replaces the stored one (its row goes), a re-judged record gains or loses its row;
///    otherwise the stored record stays;
/// 2. a binary `COPY` writes the rows of the billable records that took their key.
///
/// Both paths take row locks in (organization_id, transaction_id) order — byte order in the
/// `COPY`, the database collation's in the statements, the same under `C` or `C.UTF-8` — so
/// concurrent batches sharing keys wait on each other and do not deadlock (under another
/// collation a rare deadlock is detected by PostgreSQL and the batch retried). A key another
/// transaction inserted between the read and the insert makes the batch retry, and the next
/// attempt reads it.
///
/// The cost: the key table grows with every event (not only the billable ones; a B-tree entry
/// of ~60 bytes plus the key per identity) and every write pays one more index insert. Its
/// retention follows the events retention: after dropping expired partitions the maintenance
/// job deletes the keys older than the oldest kept partition, set-based in chunks (see
/// `partitions::Partitions::drop_expired`).
const LOCK_STORED_KEYS: &str = r#"
SELECT k.organization_id, k.transaction_id, (extract(epoch FROM k."timestamp") * 1000)::int8,
       k.appended_at_ms, k.kafka_partition, k.kafka_offset, k.billable
FROM event_keys k
JOIN unnest($1::uuid[], $2::text[]) AS b(organization_id, transaction_id)
  ON k.organization_id = b.organization_id AND k.transaction_id = b.transaction_id
ORDER BY 1, 2
FOR UPDATE OF k
"#;

const INSERT_KEYS: &str = r#"
INSERT INTO event_keys (organization_id, transaction_id, "timestamp", appended_at_ms, kafka_partition, kafka_offset, billable)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int8[], $5::int4[], $6::int8[], $7::bool[])
ORDER BY 1, 2
ON CONFLICT (organization_id, transaction_id) DO NOTHING
"#;

const UPDATE_KEYS: &str = r#"
UPDATE event_keys k
SET "timestamp" = u.ts, appended_at_ms = u.appended_at_ms, kafka_partition = u.kafka_partition,
    kafka_offset = u.kafka_offset, billable = u.billable
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int8[], $5::int4[], $6::int8[], $7::bool[])
    AS u(organization_id, transaction_id, ts, appended_at_ms, kafka_partition, kafka_offset, billable)
WHERE k.organization_id = u.organization_id AND k.transaction_id = u.transaction_id
"#;

/// The rows of replaced or no longer billable records; `timestamp` finds their partition.
const DELETE_ROWS: &str = r#"
DELETE FROM events e
USING unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS d(organization_id, transaction_id, ts)
WHERE e.organization_id = d.organization_id AND e.transaction_id = d.transaction_id AND e."timestamp" = d.ts
"#;

/// How long a batch waits for PostgreSQL's clock to pass its records' append time (plus the
/// skew) before it is retried.
const BILLABLE_MAX_WAIT: Duration = Duration::from_secs(5);

/// How far inside the partitions' time range an event must be not to be screened.
const SCREEN_MARGIN_MS: i64 = 3_600_000;

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
    /// Rows deleted from `events`: of records replaced by better-ranked ones, or judged no longer
    /// billable.
    pub removed: u64,
    /// Identities stored for the first time (billable or not).
    pub new_identities: u64,
    /// Stored identities whose record a better-ranked one replaced.
    pub replaced: u64,
    /// Stored records judged again with another answer.
    pub rejudged: u64,
    /// Candidates whose identity's stored record stays (it ranks first, or is this very record).
    pub already_stored: u64,
    /// Candidates that are not billable: their key is kept, with no row.
    pub not_billable: u64,
    /// Worse-ranked records of an identity of the same batch.
    pub duplicates_in_batch: u64,
    /// Records refused for good (dead-lettered by the runtime).
    pub refused: u64,
}

/// Sums the summaries of several writes (`bxbctl backfill` reports one for all its chunks).
impl std::ops::AddAssign<&WriteSummary> for WriteSummary {
    fn add_assign(&mut self, other: &WriteSummary) {
        self.written += other.written;
        self.removed += other.removed;
        self.new_identities += other.new_identities;
        self.replaced += other.replaced;
        self.rejudged += other.rejudged;
        self.already_stored += other.already_stored;
        self.not_billable += other.not_billable;
        self.duplicates_in_batch += other.duplicates_in_batch;
        self.refused += other.refused;
    }
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

    /// Writes `batch` and says what happened, with the records it refuses; [`Sink::write`] is
    /// this without the summary.
    #[tracing::instrument(name = "postgres_write", skip_all, fields(records = batch.len()))]
    pub async fn write_batch(&self, batch: &[Record]) -> Result<(WriteSummary, Written), SinkError> {
        let inner = &self.inner;
        let latest_appended_at_ms = batch.iter().map(|r| r.appended_at_ms).max().unwrap_or(i64::MIN);
        let view = inner
            .billable
            .covering(&inner.pool, latest_appended_at_ms, inner.args.billable_clock_skew_ms, BILLABLE_MAX_WAIT)
            .await
            .map_err(|error| match error {
                CoverError::Database(e) => classify("reading billable metrics", e),
                ahead => SinkError::Retry(ahead.to_string()),
            })?;
        let selection = select(batch, &view, inner.partitions.window(now_ms()));
        drop(view);
        let mut summary = WriteSummary {
            duplicates_in_batch: selection.duplicates_in_batch,
            refused: selection.refused.len() as u64,
            not_billable: selection.candidates.iter().filter(|c| !c.billable).count() as u64,
            ..WriteSummary::default()
        };
        if !selection.candidates.is_empty() {
            let started = Instant::now();
            self.store(&selection.candidates, &mut summary).await?;
            metrics::histogram!("bxb_consumer_postgres_write_seconds").record(started.elapsed().as_secs_f64());
        }
        metrics::counter!("bxb_consumer_postgres_events_written_total").increment(summary.written);
        metrics::counter!("bxb_consumer_postgres_events_removed_total").increment(summary.removed);
        for (outcome, count) in [
            ("new", summary.new_identities),
            ("replaced", summary.replaced),
            ("rejudged", summary.rejudged),
            ("already_stored", summary.already_stored),
        ] {
            metrics::counter!("bxb_consumer_postgres_identities_total", "outcome" => outcome).increment(count);
        }
        for (reason, count) in [("not_billable", summary.not_billable), ("duplicate_in_batch", summary.duplicates_in_batch)] {
            metrics::counter!("bxb_consumer_postgres_events_not_stored_total", "reason" => reason).increment(count);
        }
        Ok((summary, Written { refused: selection.refused }))
    }

    /// Stores the candidates' keys and the rows of the billable ones that take their key, in
    /// one transaction.
    async fn store(&self, candidates: &[Candidate<'_>], summary: &mut WriteSummary) -> Result<(), SinkError> {
        let inner = &self.inner;
        let keys = rows::Keys::of(candidates);
        let billable_timestamps: Vec<i64> = candidates.iter().filter(|c| c.billable).map(|c| c.record.event.timestamp_ms).collect();
        inner.partitions.ensure_covering(&inner.pool, &billable_timestamps).await.map_err(|e| classify("creating partitions", e))?;

        let result = async {
            let mut tx = inner.pool.begin().await?;
            // The runtime commits the Kafka offsets of this batch as soon as `write` returns, so
            // the commit below must be on disk by then: with synchronous_commit = off, a server
            // crash could lose a transaction whose offsets Kafka already holds, and the batch
            // would never be delivered again. SET LOCAL pins it for this transaction whatever the
            // server, database or role default is (synchronous_commit = off may be set server-wide
            // for other tables, as some tuning guides suggest).
            sqlx::query("SET LOCAL synchronous_commit = on").execute(&mut *tx).await?;
            let mut outcome = Outcome::default();
            if copy_keys_if_all_new(&mut tx, &keys).await? {
                outcome.new_identities = candidates.len() as u64;
                outcome.rows = candidates.iter().filter(|c| c.billable).map(|c| c.record).collect();
            } else {
                outcome = resolve_stored(&mut tx, candidates, &keys).await?;
                if outcome.raced {
                    return Ok(None);
                }
            }
            if !outcome.removed.is_empty() {
                let (organizations, transactions, timestamps) = outcome.removed_arrays();
                let removed = sqlx::query(DELETE_ROWS).bind(organizations).bind(transactions).bind(timestamps).execute(&mut *tx).await?;
                outcome.removed_rows = removed.rows_affected();
            }
            if !outcome.rows.is_empty() {
                let copy_data = rows::encode(&outcome.rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
                let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
                copy.send(copy_data).await?;
                outcome.written = copy.finish().await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(outcome))
        }
        .await;
        match result {
            Ok(Some(outcome)) => {
                summary.written = outcome.written;
                summary.removed = outcome.removed_rows;
                summary.new_identities = outcome.new_identities;
                summary.replaced = outcome.replaced;
                summary.rejudged = outcome.rejudged;
                summary.already_stored = outcome.kept;
                Ok(())
            }
            Ok(None) => Err(SinkError::Retry("another writer stored a key of this batch meanwhile; writing the batch again".into())),
            Err(e) => {
                if sqlstate(&e).as_deref() == Some(NO_PARTITION_FOR_ROW) {
                    // Dropped by another consumer's retention after we looked: look again next time.
                    inner.partitions.forget();
                }
                Err(classify("writing batch", e))
            }
        }
    }
}

/// What the transaction of a batch does, once its candidates are resolved.
#[derive(Default)]
struct Outcome<'a> {
    /// Records whose rows go into `events`.
    rows: Vec<&'a Record>,
    /// (organization, transaction, timestamp ms) of rows to delete.
    removed: Vec<(Uuid, String, i64)>,
    new_identities: u64,
    replaced: u64,
    rejudged: u64,
    kept: u64,
    written: u64,
    removed_rows: u64,
    /// A key was inserted by another transaction between the read and the insert.
    raced: bool,
}

impl Outcome<'_> {
    fn removed_arrays(&self) -> (Vec<Uuid>, Vec<&str>, Vec<time::OffsetDateTime>) {
        let organizations = self.removed.iter().map(|r| r.0).collect();
        let transactions = self.removed.iter().map(|r| r.1.as_str()).collect();
        let timestamps = self.removed.iter().map(|r| crate::partitions::datetime(r.2)).collect();
        (organizations, transactions, timestamps)
    }
}

/// The slow path: reads and locks the batch's stored keys, resolves every candidate against
/// its key, inserts the new keys and updates the replaced and re-judged ones.
async fn resolve_stored<'a>(
    conn: &mut PgConnection,
    candidates: &[Candidate<'a>],
    keys: &rows::Keys<'_>,
) -> Result<Outcome<'a>, sqlx::Error> {
    type StoredRow = (Uuid, String, i64, i64, i32, i64, bool);
    let stored_rows: Vec<StoredRow> =
        sqlx::query_as(LOCK_STORED_KEYS).bind(&keys.organization_ids).bind(&keys.transaction_ids).fetch_all(&mut *conn).await?;
    let stored: HashMap<(Uuid, String), StoredKey> = stored_rows
        .into_iter()
        .map(|(o, t, timestamp_ms, appended_at_ms, partition, offset, billable)| {
            ((o, t), StoredKey { rank: Rank::new(appended_at_ms, partition, offset), timestamp_ms, billable })
        })
        .collect();
    let mut outcome = Outcome::default();
    let mut inserted = Vec::new();
    let mut updated = Vec::new();
    for candidate in candidates {
        let event = &candidate.record.event;
        let key = stored.get(&(event.organization_id, event.transaction_id.clone()));
        match resolve(key, candidate) {
            Action::Insert => {
                outcome.new_identities += 1;
                inserted.push(*candidate);
                if candidate.billable {
                    outcome.rows.push(candidate.record);
                }
            }
            action @ (Action::Replace { old } | Action::Rejudge { old }) => {
                match action {
                    Action::Replace { .. } => outcome.replaced += 1,
                    _ => outcome.rejudged += 1,
                }
                updated.push(*candidate);
                if old.billable {
                    outcome.removed.push((event.organization_id, event.transaction_id.clone(), old.timestamp_ms));
                }
                if candidate.billable {
                    outcome.rows.push(candidate.record);
                }
            }
            Action::Keep => outcome.kept += 1,
        }
    }
    if !inserted.is_empty() {
        let new = rows::Keys::of(&inserted);
        let done = bind_keys(sqlx::query(INSERT_KEYS), &new).execute(&mut *conn).await?;
        if done.rows_affected() != new.len() as u64 {
            outcome.raced = true;
            return Ok(outcome);
        }
    }
    if !updated.is_empty() {
        bind_keys(sqlx::query(UPDATE_KEYS), &rows::Keys::of(&updated)).execute(&mut *conn).await?;
    }
    Ok(outcome)
}

fn bind_keys<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    keys: &'q rows::Keys<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&keys.organization_ids)
        .bind(&keys.transaction_ids)
        .bind(keys.timestamps())
        .bind(&keys.appended_at_ms)
        .bind(&keys.partitions)
        .bind(&keys.offsets)
        .bind(&keys.billable)
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

    async fn write(&self, batch: &[Record]) -> Result<Written, SinkError> {
        self.write_batch(batch).await.map(|(_, written)| written)
    }

    /// Outside the time range the partitions keep now, or within an hour of its ends (a batch
    /// may be written a little later, when the range has moved); `write` refuses those outside
    /// the range then, when billable.
    fn screen(&self, event: &Event) -> Option<PoisonReason> {
        let window = self.inner.partitions.window(now_ms());
        if event.timestamp_ms < window.from_ms.saturating_add(SCREEN_MARGIN_MS) {
            Some(PoisonReason::TooOld)
        } else if event.timestamp_ms > window.until_ms.saturating_sub(SCREEN_MARGIN_MS) {
            Some(PoisonReason::TooFarInFuture)
        } else {
            None
        }
    }

    async fn is_ready(&self) -> bool {
        self.inner.billable.is_loaded()
            && tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.inner.pool))
                .await
                .is_ok_and(|r| r.is_ok())
    }
}
