//! The ClickHouse [`Sink`]: one RowBinary `INSERT` per batch into `events_raw`.

use std::time::Duration;

use bxb_consumer::{Record, Sink, SinkError, Written};
use bxb_event::clock::now_ms;
use bxb_schemas::clickhouse::EVENTS_RAW_TABLE;

use crate::error::{classify, SetupError};
use crate::row::EventRow;
use crate::schema;
use crate::ClickHouseArgs;

/// How long `/readyz`'s `SELECT 1` may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes every event of each batch to `events_raw`.
pub struct ClickHouseSink {
    client: clickhouse::Client,
    write_timeout: Duration,
}

impl ClickHouseSink {
    /// Checks the table (see [`schema::check`]; it must exist: [`schema::migrate`] or
    /// `bxbctl migrate` creates it) and returns the sink. Changes nothing in ClickHouse.
    pub async fn connect(args: &ClickHouseArgs) -> Result<Self, SetupError> {
        if args.write_timeout_ms == 0 {
            return Err(SetupError::Config { setting: "BXB_CLICKHOUSE_WRITE_TIMEOUT_MS", problem: "must be at least 1".into() });
        }
        let features = schema::check(args).await?;
        let mut client = args.client();
        if features.limits_partitions_per_insert {
            // A batch holds whatever times clients sent (a backfill can span years): a limit on
            // the months one insert touches would refuse the same batch forever.
            client = client.with_setting("max_partitions_per_insert_block", "0");
        }
        Ok(Self { client, write_timeout: Duration::from_millis(args.write_timeout_ms) })
    }

    async fn insert(&self, batch: &[Record]) -> Result<(), SinkError> {
        let written_at_ms = now_ms();
        let mut insert = self
            .client
            .insert::<EventRow>(EVENTS_RAW_TABLE)
            .await
            .map_err(classify)?
            .with_timeouts(Some(self.write_timeout), Some(self.write_timeout));
        for record in batch {
            insert.write(&EventRow::from_record(record, written_at_ms)?).await.map_err(classify)?;
        }
        insert.end().await.map_err(classify)
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    async fn write(&self, batch: &[Record]) -> Result<Written, SinkError> {
        self.insert(batch).await.map(|()| Written::default())
    }

    async fn is_ready(&self) -> bool {
        let ping = self.client.query("SELECT 1").fetch_one::<u8>();
        matches!(tokio::time::timeout(READY_TIMEOUT, ping).await, Ok(Ok(1)))
    }
}
