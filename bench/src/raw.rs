//! The baselines: each service driven directly, with nothing of the pipeline in between.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use bxb_consumer_clickhouse::EventRow;
use bxb_event::clock::now_ms;
use bxb_event::registry::{value_subject, EventEncoder, RegistryArgs, SchemaRegistry};
use bxb_harness::services::{self, kafka_config};
use indicatif::ProgressBar;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use uuid::Uuid;

use crate::events;
use crate::settings::BenchArgs;

/// Most records awaiting a delivery report at once: bounds memory like the gateway's queue.
const IN_FLIGHT_RECORDS: usize = 100_000;

/// The gateway's producer settings (gateway/src/publish.rs, defaults): acks=all, idempotence,
/// lz4, linger 5 ms.
pub fn gateway_like_producer(args: &BenchArgs) -> anyhow::Result<FutureProducer> {
    Ok(kafka_config(&args.stack)?
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "100000")
        .set("message.max.bytes", "1048576")
        .set("client.id", "bxb-bench-raw")
        .create()?)
}

/// Registers the event schema for `topic` like the gateway does and returns its encoder.
pub async fn encoder_for(args: &BenchArgs, topic: &str) -> anyhow::Result<EventEncoder> {
    let registry = SchemaRegistry::new(&RegistryArgs::with_url(args.stack.registry_url.clone()))?;
    let id = registry.register_event_schema(&value_subject(topic)).await.context("registering the event schema")?;
    Ok(EventEncoder::new(id))
}

/// Publishes `count` backlog events (the same Avro payloads and headers as the gateway's) and
/// returns the events/s of the whole run, every record acknowledged. Payloads are encoded
/// before the clock starts and the producer is connected first: the figure is the producer's
/// limit, not the benchmark's.
pub async fn produce(args: &BenchArgs, topic: &str, organization_ids: &[Uuid], count: u64, bar: &ProgressBar) -> anyhow::Result<f64> {
    let producer = gateway_like_producer(args)?;
    let encoder = encoder_for(args, topic).await?;
    let now = now_ms();
    let keys: Vec<String> = organization_ids.iter().map(|o| o.hyphenated().to_string()).collect();
    let mut payloads = Vec::with_capacity(count as usize * 160);
    let mut ends = Vec::with_capacity(count as usize);
    let mut scratch = Vec::with_capacity(256);
    for seq in 0..count {
        let organization_id = organization_ids[(seq % organization_ids.len() as u64) as usize];
        // `encode_into` replaces the buffer's contents.
        encoder.encode_into(&events::event(organization_id, format!("backlog-{seq}"), seq, now), &mut scratch);
        payloads.extend_from_slice(&scratch);
        ends.push(payloads.len());
    }
    // Connect and obtain the idempotent producer id outside the measurement.
    producer.client().fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut pending = VecDeque::with_capacity(IN_FLIGHT_RECORDS);
    let started = Instant::now();
    let mut headers = bxb_kafka::headers::event_headers(&tracing::Span::none(), now_ms());
    for seq in 0..count as usize {
        // The gateway builds headers once per request and clones them per record.
        if seq % 100 == 0 {
            headers = bxb_kafka::headers::event_headers(&tracing::Span::none(), now_ms());
        }
        let payload = &payloads[if seq == 0 { 0 } else { ends[seq - 1] }..ends[seq]];
        let key = &keys[seq % keys.len()];
        let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(headers.clone());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break pending.push_back(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    await_oldest(&mut pending, bar).await?;
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        if pending.len() >= IN_FLIGHT_RECORDS {
            await_oldest(&mut pending, bar).await?;
        }
    }
    while !pending.is_empty() {
        await_oldest(&mut pending, bar).await?;
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(10))?;
    Ok(crate::stats::per_second(count, elapsed))
}

async fn await_oldest(pending: &mut VecDeque<rdkafka::producer::DeliveryFuture>, bar: &ProgressBar) -> anyhow::Result<()> {
    if let Some(delivery) = pending.pop_front() {
        delivery.await.context("producer dropped")?.map_err(|(e, _)| e)?;
        bar.inc(1);
    }
    Ok(())
}

/// Inserts the backlog's rows into a fresh `events_raw` with the clickhouse crate, `batch`
/// rows per insert, one insert after the other like the consumer; events/s.
pub async fn clickhouse_insert(
    args: &BenchArgs,
    database: &str,
    organization_ids: &[Uuid],
    count: u64,
    batch: usize,
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    let server = services::clickhouse(&args.stack);
    server.query(&format!("CREATE DATABASE IF NOT EXISTS {database}")).execute().await?;
    let client = server.with_database(database);
    client.query(bxb_schemas::clickhouse::EVENTS_RAW_DDL).execute().await.context("creating events_raw")?;
    let now = now_ms();
    let mut elapsed = Duration::ZERO;
    for range in batches(count, batch) {
        // Rows are built outside the timed part: the consumer's decode and mapping are what the
        // ratio is meant to expose.
        let records = events::records(organization_ids, range.clone(), now);
        let started = Instant::now();
        let mut insert = client.insert::<EventRow>(bxb_schemas::clickhouse::EVENTS_RAW_TABLE).await?;
        for record in &records {
            insert.write(&EventRow::from_record(record, now).map_err(|e| anyhow::anyhow!("{e}"))?).await?;
        }
        insert.end().await?;
        elapsed += started.elapsed();
        bar.inc(range.end - range.start);
    }
    Ok(crate::stats::per_second(count, elapsed))
}

/// `0..count` in consecutive ranges of `batch` (the last one shorter): the raw writes' batches.
fn batches(count: u64, batch: usize) -> impl Iterator<Item = std::ops::Range<u64>> {
    let batch = batch.max(1) as u64;
    (0..count.div_ceil(batch)).map(move |i| i * batch..((i + 1) * batch).min(count))
}

/// `COPY ... (FORMAT BINARY)` of the backlog's rows straight into `events` of a freshly migrated
/// database, `batch` rows per statement; events/s. With `keyed`, each batch also COPYs its
/// identity keys into `event_keys`, both in one transaction: the same two tables consumer-postgres
/// writes, without its deduplication (the keys are known to be new).
pub async fn postgres_copy(
    url: &str,
    organization_ids: &[Uuid],
    count: u64,
    batch: usize,
    keyed: bool,
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    use bxb_consumer_postgres::rows::{encode, Keys, COPY_EVENTS, COPY_KEYS};
    use bxb_consumer_postgres::select::Candidate;
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    bxb_schemas::POSTGRES_MIGRATOR.run(&mut conn).await?;
    sqlx::query("CREATE TABLE events_bench_default PARTITION OF events DEFAULT").execute(&mut conn).await?;
    let now = now_ms();
    let mut elapsed = Duration::ZERO;
    for range in batches(count, batch) {
        let records = events::records(organization_ids, range.clone(), now);
        let started = Instant::now();
        // The rows consumer-postgres writes: the billable events; with `keyed`, the identities
        // of every event (the identity rule keeps the non-billable ones too).
        let refs: Vec<&bxb_consumer::Record> = records.iter().filter(|r| r.event.code == events::CODE).collect();
        let mut tx = conn.begin().await?;
        if keyed {
            let candidates: Vec<Candidate<'_>> =
                records.iter().map(|record| Candidate { record, billable: record.event.code == events::CODE }).collect();
            let mut copy = tx.copy_in_raw(COPY_KEYS).await?;
            copy.send(Keys::of(&candidates).copy_stream()?).await?;
            copy.finish().await?;
        }
        let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
        copy.send(encode(&refs)?).await?;
        copy.finish().await?;
        tx.commit().await?;
        elapsed += started.elapsed();
        bar.inc(range.end - range.start);
    }
    conn.close().await?;
    Ok(crate::stats::per_second(count, elapsed))
}

/// Per-event CPU cost of the consumers' in-process stages, measured in this process on the
/// backlog's payloads: what a drain spends besides fetching and writing.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageCosts {
    pub events: u64,
    /// `EventDecoder::decode`: wire format, Avro datum, schema resolution, validation.
    pub decode_us_per_event: f64,
    /// `EventRow::from_record` (consumer-clickhouse).
    pub clickhouse_row_us_per_event: f64,
    /// `rows::encode`, the binary COPY stream (consumer-postgres).
    pub postgres_copy_encode_us_per_event: f64,
}

pub async fn stage_costs(args: &BenchArgs, topic: &str, organization_ids: &[Uuid], count: u64) -> anyhow::Result<StageCosts> {
    let registry = SchemaRegistry::new(&RegistryArgs::with_url(args.stack.registry_url.clone()))?;
    let encoder = EventEncoder::new(registry.register_event_schema(&value_subject(topic)).await?);
    let decoder = registry.decoder();
    let now = now_ms();
    let records = events::records(organization_ids, 0..count, now);
    let payloads: Vec<Vec<u8>> = records.iter().map(|r| encoder.encode(&r.event)).collect();
    // The first decode fetches the schema from the registry: not part of the per-event cost.
    decoder.decode(Some(&payloads[0])).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let per_event_us = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / count as f64;
    let started = Instant::now();
    for payload in &payloads {
        std::hint::black_box(decoder.decode(Some(payload)).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let decode = per_event_us(started.elapsed());
    let started = Instant::now();
    for record in &records {
        std::hint::black_box(EventRow::from_record(record, now).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let row = per_event_us(started.elapsed());
    let started = Instant::now();
    for chunk in records.chunks(10_000) {
        let refs: Vec<&bxb_consumer::Record> = chunk.iter().collect();
        std::hint::black_box(bxb_consumer_postgres::rows::encode(&refs)?);
    }
    let copy = per_event_us(started.elapsed());
    Ok(StageCosts { events: count, decode_us_per_event: decode, clickhouse_row_us_per_event: row, postgres_copy_encode_us_per_event: copy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_backlog_once_in_order() {
        assert_eq!(batches(25, 10).collect::<Vec<_>>(), vec![0..10, 10..20, 20..25]);
        assert_eq!(batches(20, 10).collect::<Vec<_>>(), vec![0..10, 10..20]);
        assert_eq!(batches(0, 10).count(), 0);
    }
}
