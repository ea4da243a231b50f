//! The partitions of `events`: created ahead of time and on demand, dropped whole by retention.
//!
//! Partition `k` covers `[k * interval, (k + 1) * interval)` milliseconds since the Unix epoch,
//! so with a one-day interval each partition is one UTC day, named `events_pYYYYMMDD`.
//!
//! Every DDL statement here runs under one transaction-scoped advisory lock, so consumers that
//! need the same new partition at the same moment do not race in the catalog (a bare
//! `CREATE TABLE IF NOT EXISTS` can still fail with a unique violation in `pg_type` when two
//! sessions create the same name concurrently). Under the lock the existing partitions are read
//! back from the catalog with their bounds and only the gaps are created, which also keeps
//! working when the interval setting changes while old partitions exist.

use std::sync::Mutex;

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

/// `pg_advisory_xact_lock` key of partition DDL on `events` ("bxb_part").
const PARTITION_DDL_LOCK: i64 = 0x6278_625f_7061_7274;
/// Key rows of dropped partitions are deleted in chunks this large, so the delete never holds
/// many row locks or one long transaction.
const KEY_DELETE_CHUNK: i64 = 10_000;

/// A half-open range `[lower, upper)` of milliseconds since the Unix epoch.
pub type Range = (i64, i64);

/// One partition of `events` as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    /// `i64::MIN` for `MINVALUE`.
    pub lower_ms: i64,
    /// `i64::MAX` for `MAXVALUE`.
    pub upper_ms: i64,
}

/// Which timestamps `events` accepts at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The lower bound of the oldest partition retention keeps; older events are not written.
    pub from_ms: i64,
    /// Events after this are too far in the future to be written.
    pub until_ms: i64,
}

impl Window {
    pub fn contains(&self, timestamp_ms: i64) -> bool {
        (self.from_ms..=self.until_ms).contains(&timestamp_ms)
    }
}

/// Partition bookkeeping with a cache of the ranges known to exist.
#[derive(Debug)]
pub struct Partitions {
    interval_ms: i64,
    retention_ms: Option<i64>,
    max_future_ms: i64,
    ahead: u32,
    lock_timeout_ms: u64,
    /// Sorted, non-overlapping ranges covered by existing partitions, as last seen.
    known: Mutex<Vec<Range>>,
}

impl Partitions {
    pub fn new(args: &crate::PostgresArgs) -> Self {
        Self {
            interval_ms: args.partition_interval_ms(),
            retention_ms: args.retention_ms(),
            max_future_ms: args.max_future_ms(),
            ahead: args.partitions_ahead,
            lock_timeout_ms: args.lock_timeout_ms,
            known: Mutex::new(Vec::new()),
        }
    }

    /// The start of the partition interval holding `timestamp_ms`.
    pub fn interval_start(&self, timestamp_ms: i64) -> i64 {
        timestamp_ms.div_euclid(self.interval_ms) * self.interval_ms
    }

    /// What may be written at `now_ms`. The lower bound is the start of the interval holding
    /// `now - retention`: exactly the oldest partition [`Self::drop_expired`] keeps.
    pub fn window(&self, now_ms: i64) -> Window {
        let from_ms = self.retention_ms.map_or(i64::MIN, |r| self.interval_start(now_ms.saturating_sub(r)));
        Window { from_ms, until_ms: now_ms.saturating_add(self.max_future_ms) }
    }

    /// Forgets the cached ranges, after an insert found no partition for a row (another
    /// consumer's retention dropped it).
    pub fn forget(&self) {
        self.known.lock().expect("partition cache").clear();
    }

    fn uncovered(&self, timestamps: &[i64]) -> Vec<Range> {
        let known = self.known.lock().expect("partition cache");
        let mut needed: Vec<Range> = timestamps
            .iter()
            .filter(|&&ts| !covers(&known, ts))
            .map(|&ts| {
                let start = self.interval_start(ts);
                (start, start + self.interval_ms)
            })
            .collect();
        needed.sort_unstable();
        needed.dedup();
        needed
    }

    /// Makes sure a partition exists for every timestamp; returns the partitions it created.
    pub async fn ensure_covering(&self, pool: &PgPool, timestamps: &[i64]) -> Result<Vec<String>, sqlx::Error> {
        if self.uncovered(timestamps).is_empty() {
            return Ok(Vec::new());
        }
        // Another consumer may have created them: look before taking the lock.
        self.reload(pool).await?;
        let needed = self.uncovered(timestamps);
        if needed.is_empty() {
            return Ok(Vec::new());
        }
        self.create(pool, &needed).await
    }

    /// Creates the current partition and the next `ahead`.
    pub async fn create_ahead(&self, pool: &PgPool, now_ms: i64) -> Result<Vec<String>, sqlx::Error> {
        let current = self.interval_start(now_ms);
        let ranges: Vec<Range> =
            (0..=i64::from(self.ahead)).map(|k| (current + k * self.interval_ms, current + (k + 1) * self.interval_ms)).collect();
        self.create(pool, &ranges).await
    }

    async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let partitions = list(&mut conn).await?;
        self.remember(&partitions);
        Ok(())
    }

    fn remember(&self, partitions: &[Partition]) {
        let mut ranges: Vec<Range> = partitions.iter().map(|p| (p.lower_ms, p.upper_ms)).collect();
        ranges.sort_unstable();
        *self.known.lock().expect("partition cache") = ranges;
    }

    async fn locked_ddl_transaction(&self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // A DDL statement waiting for its lock queues every later writer behind it: give up early
        // and let the caller retry instead.
        sqlx::query(&format!("SET LOCAL lock_timeout = {}", self.lock_timeout_ms)).execute(&mut *tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PARTITION_DDL_LOCK).execute(&mut *tx).await?;
        Ok(tx)
    }

    async fn create(&self, pool: &PgPool, ranges: &[Range]) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.locked_ddl_transaction(pool).await?;
        let mut existing = list(&mut tx).await?;
        let mut created = Vec::new();
        for &range in ranges {
            let mut taken: Vec<Range> = existing.iter().map(|p| (p.lower_ms, p.upper_ms)).collect();
            taken.sort_unstable();
            for (lower_ms, upper_ms) in gaps(&taken, range) {
                let name = partition_name(lower_ms);
                let ddl = format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ('{}') TO ('{}')",
                    quote_ident(&name),
                    rfc3339(lower_ms),
                    rfc3339(upper_ms)
                );
                sqlx::query(&ddl).execute(&mut *tx).await?;
                tracing::info!(partition = %name, from = %rfc3339(lower_ms), to = %rfc3339(upper_ms), "created partition");
                existing.push(Partition { name: name.clone(), lower_ms, upper_ms });
                created.push(name);
            }
        }
        tx.commit().await?;
        metrics::counter!("bxb_consumer_postgres_partitions_created_total").increment(created.len() as u64);
        self.remember(&existing);
        Ok(created)
    }

    /// Drops every partition whose whole range is older than the retention window at `now_ms`,
    /// then forgets the identity keys of those events. Returns the dropped partitions.
    pub async fn drop_expired(&self, pool: &PgPool, now_ms: i64) -> Result<Vec<String>, sqlx::Error> {
        if self.retention_ms.is_none() {
            return Ok(Vec::new());
        }
        let keep_from_ms = self.window(now_ms).from_ms;
        let mut tx = self.locked_ddl_transaction(pool).await?;
        let existing = list(&mut tx).await?;
        let (expired, kept): (Vec<Partition>, Vec<Partition>) = existing.into_iter().partition(|p| p.upper_ms <= keep_from_ms);
        for partition in &expired {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", quote_ident(&partition.name))).execute(&mut *tx).await?;
            tracing::info!(partition = %partition.name, "dropped expired partition");
        }
        tx.commit().await?;
        self.remember(&kept);
        metrics::counter!("bxb_consumer_postgres_partitions_dropped_total").increment(expired.len() as u64);

        // Writers never accept a timestamp before `keep_from_ms`, so these keys are never looked
        // at again; deleting them after the drop, in chunks and outside the lock, keeps writers
        // and partition creation from waiting on a large delete.
        let cutoff =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(keep_from_ms) * 1_000_000).map_err(|e| sqlx::Error::Encode(e.into()))?;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM event_keys k USING (
                     SELECT organization_id, transaction_id FROM event_keys WHERE \"timestamp\" < $1 LIMIT $2
                 ) doomed
                 WHERE k.organization_id = doomed.organization_id AND k.transaction_id = doomed.transaction_id",
            )
            .bind(cutoff)
            .bind(KEY_DELETE_CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
            metrics::counter!("bxb_consumer_postgres_event_keys_deleted_total").increment(deleted);
            if deleted < KEY_DELETE_CHUNK as u64 {
                break;
            }
        }
        Ok(expired.into_iter().map(|p| p.name).collect())
    }
}

/// The partitions of `events` and their bounds, read from the catalog.
pub async fn list(conn: &mut sqlx::PgConnection) -> Result<Vec<Partition>, sqlx::Error> {
    // pg_get_expr prints the bounds in the session's time zone with its offset, e.g.
    // FOR VALUES FROM ('2026-11-23 00:00:00+00') TO ('2026-11-24 00:00:00+00'); casting the
    // quoted text back to timestamptz is exact whatever that zone is. A DEFAULT partition has no
    // range and is left out (this table never gets one).
    let rows: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
        r#"SELECT c.relname::text,
                  CASE WHEN b[1] = 'MINVALUE' THEN NULL
                       ELSE (extract(epoch FROM btrim(b[1], '''')::timestamptz) * 1000)::int8 END,
                  CASE WHEN b[2] = 'MAXVALUE' THEN NULL
                       ELSE (extract(epoch FROM btrim(b[2], '''')::timestamptz) * 1000)::int8 END
           FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(([^)]*)\) TO \(([^)]*)\)') AS b
           WHERE i.inhparent = 'events'::regclass AND b IS NOT NULL
           ORDER BY 2 NULLS FIRST"#,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, lower, upper)| Partition { name, lower_ms: lower.unwrap_or(i64::MIN), upper_ms: upper.unwrap_or(i64::MAX) })
        .collect())
}

/// Whether `ts` lies in one of the sorted, non-overlapping `ranges`.
fn covers(ranges: &[Range], ts: i64) -> bool {
    let after = ranges.partition_point(|&(lower, _)| lower <= ts);
    after > 0 && ts < ranges[after - 1].1
}

/// The parts of `wanted` that no range of `taken` (sorted by lower bound) covers.
fn gaps(taken: &[Range], wanted: Range) -> Vec<Range> {
    let (mut cursor, end) = wanted;
    let mut out = Vec::new();
    for &(lower, upper) in taken {
        if upper <= cursor || lower >= end {
            continue;
        }
        if lower > cursor {
            out.push((cursor, lower));
        }
        cursor = cursor.max(upper);
        if cursor >= end {
            return out;
        }
    }
    if cursor < end {
        out.push((cursor, end));
    }
    out
}

pub fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn rfc3339(ms: i64) -> String {
    let t = datetime(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `events_p20261123` for a partition starting at midnight UTC, `events_p20261123_063000` otherwise.
pub fn partition_name(lower_ms: i64) -> String {
    let t = datetime(lower_ms);
    let mut name = format!("events_p{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
    if lower_ms.rem_euclid(86_400_000) != 0 {
        name.push_str(&format!("_{:02}{:02}{:02}", t.hour(), t.minute(), t.second()));
    }
    name
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn partitions(interval_days: u32, retention_days: u32) -> Partitions {
        let mut args = crate::PostgresArgs::with_url("postgres://unused");
        args.partition_interval_days = interval_days;
        args.retention_days = retention_days;
        args.max_future_days = 7;
        Partitions::new(&args)
    }

    #[test]
    fn intervals_align_on_utc_days() {
        let p = partitions(1, 10);
        let ts = 1_795_000_000_123; // 2026-11-18T11:06:40.123Z
        assert_eq!(p.interval_start(ts), ts - ts % DAY);
        assert_eq!(partition_name(p.interval_start(ts)), "events_p20261118");
        assert_eq!(partition_name(p.interval_start(ts) + 6 * 3_600_000), "events_p20261118_060000");
        assert_eq!(rfc3339(p.interval_start(ts)), "2026-11-18T00:00:00.000Z");
        assert_eq!(partitions(7, 0).interval_start(8 * DAY + 5), 7 * DAY);
    }

    #[test]
    fn the_window_starts_at_the_oldest_kept_partition() {
        let p = partitions(1, 10);
        let now = 100 * DAY + 5_000;
        let window = p.window(now);
        assert_eq!(window.from_ms, 90 * DAY);
        assert_eq!(window.until_ms, now + 7 * DAY);
        assert!(window.contains(90 * DAY) && !window.contains(90 * DAY - 1));
        assert!(window.contains(now + 7 * DAY) && !window.contains(now + 7 * DAY + 1));
        assert_eq!(partitions(1, 0).window(now).from_ms, i64::MIN);
    }

    #[test]
    fn coverage_is_half_open() {
        let ranges = [(0, 10), (10, 20), (30, 40)];
        assert!(covers(&ranges, 0) && covers(&ranges, 19) && covers(&ranges, 39));
        assert!(!covers(&ranges, 20) && !covers(&ranges, 29) && !covers(&ranges, 40) && !covers(&ranges, -1));
        assert!(!covers(&[], 0));
    }

    #[test]
    fn only_the_gaps_are_created() {
        assert_eq!(gaps(&[], (0, 10)), vec![(0, 10)]);
        assert_eq!(gaps(&[(0, 10)], (0, 10)), vec![]);
        // Weekly partitions after daily ones: fill around what exists.
        assert_eq!(gaps(&[(2, 3), (5, 6)], (0, 7)), vec![(0, 2), (3, 5), (6, 7)]);
        assert_eq!(gaps(&[(i64::MIN, 4)], (0, 7)), vec![(4, 7)]);
        assert_eq!(gaps(&[(-5, 1), (8, i64::MAX)], (0, 7)), vec![(1, 7)]);
    }
}
