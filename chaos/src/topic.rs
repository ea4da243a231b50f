//! The run's topic read back from the beginning of every partition, once the consumers have
//! drained it: the records the truth ([`crate::truth`]) is made of. A plain consumer assigned
//! to the partitions (no group membership, no commits) and the schema file decode every record
//! here, not the consumers' code: the truth must not come from the code under test.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;
use bxb_event::Decimal;
use bxb_harness::StackArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::truth::{TopicRead, TopicRecord, Version};

/// `schemas/avro/event.avsc`, the schema the gateway writes with.
static EVENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(bxb_schemas::avro::EVENT_SCHEMA_JSON).expect("schemas/avro/event.avsc is valid Avro"));

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole topic must be read within this (100 000 records take a few seconds).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Every record of `topic`, from the first offset each partition holds to its end now.
pub async fn read(stack: &StackArgs, topic: &str) -> anyhow::Result<TopicRead> {
    let config = bxb_harness::services::kafka_config(stack)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(config, &topic)).await?.context("reading the run's topic back")
}

fn read_blocking(mut config: ClientConfig, topic: &str) -> anyhow::Result<TopicRead> {
    // The group id is never joined nor committed to: the partitions are assigned.
    let consumer: BaseConsumer = config
        .set("group.id", format!("{topic}-truth"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let Some(topic_metadata) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        bail!("topic {topic} not found");
    };
    let mut assignment = TopicPartitionList::new();
    // Per partition, the end to read up to.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for partition in topic_metadata.partitions().iter().map(|p| p.id()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
        }
    }
    consumer.assign(&assignment)?;
    let decoder = GenericDatumReader::builder(&EVENT_SCHEMA).build()?;
    let mut read = TopicRead::default();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("partitions {:?} not read to their end within {READ_TIMEOUT:?}", ends.keys().collect::<Vec<_>>());
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message?;
        let (partition, offset) = (message.partition(), message.offset());
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&partition);
        }
        let timestamp_ms = match message.timestamp() {
            Timestamp::LogAppendTime(ms) => ms,
            other => {
                read.not_log_append_time += 1;
                other.to_millis().unwrap_or(i64::MAX)
            }
        };
        match decode(&decoder, message.payload().unwrap_or_default()) {
            Ok((identity, version)) => read.records.push(TopicRecord { identity, version, timestamp_ms, partition, offset }),
            Err(reason) => read.undecodable.push(format!("partition {partition} offset {offset}: {reason}")),
        }
    }
    Ok(read)
}

/// A record value in the Confluent wire format (magic byte 0, 4-byte schema id, the Avro datum)
/// as the identity and version it carries.
pub fn decode(decoder: &GenericDatumReader<'_>, payload: &[u8]) -> Result<((Uuid, String), Version), String> {
    let [0, _, _, _, _, datum @ ..] = payload else {
        return Err("not the Confluent wire format (magic byte 0, a 4-byte schema id)".into());
    };
    let mut rest = datum;
    let value = decoder.read_value(&mut rest).map_err(|e| format!("not an event of schemas/avro/event.avsc: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} byte(s) after the event", rest.len()));
    }
    let Value::Record(fields) = value else { return Err("not a record".into()) };
    let mut fields: HashMap<String, Value> = fields.into_iter().collect();
    let mut take = |name: &str| fields.remove(name).ok_or_else(|| format!("no {name}"));
    let organization = string(take("organization_id")?, "organization_id")?;
    let organization_id = Uuid::parse_str(&organization).map_err(|_| format!("organization_id {organization:?} is not a UUID"))?;
    let transaction_id = string(take("transaction_id")?, "transaction_id")?;
    let external_customer_id = string(take("external_customer_id")?, "external_customer_id")?;
    let code = string(take("code")?, "code")?;
    let timestamp_ms = match take("timestamp")? {
        Value::TimestampMillis(ms) | Value::Long(ms) => ms,
        other => return Err(format!("timestamp is {other:?}")),
    };
    let value = match optional(take("value")?) {
        None => None,
        Some(Value::Double(v)) => Some(v),
        Some(other) => return Err(format!("value is {other:?}")),
    };
    let decimal_value = match optional(take("decimal_value")?) {
        None => None,
        Some(Value::String(s)) => Some(s.parse::<Decimal>().map_err(|e| format!("decimal_value {s:?}: {e}"))?),
        Some(other) => return Err(format!("decimal_value is {other:?}")),
    };
    Ok(((organization_id, transaction_id), Version { external_customer_id, code, timestamp_ms, value, decimal_value }))
}

fn string(value: Value, name: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("{name} is {other:?}")),
    }
}

/// The value of a `["null", T]` union, `None` for null.
fn optional(value: Value) -> Option<Value> {
    match value {
        Value::Union(_, inner) => optional(*inner),
        Value::Null => None,
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use bxb_event::{test_support, Event};

    use super::*;

    fn framed(event: &Event) -> Vec<u8> {
        let mut payload = vec![0, 0, 0, 0, 7];
        payload.extend(bxb_event::avro::to_datum(event));
        payload
    }

    #[test]
    fn reads_what_the_producer_writes() {
        let decoder = GenericDatumReader::builder(&EVENT_SCHEMA).build().unwrap();
        let event = Event { value: Some(2.25), decimal_value: Some("-1.5".parse().unwrap()), ..test_support::event() };
        let (identity, version) = decode(&decoder, &framed(&event)).unwrap();
        assert_eq!(identity, (event.organization_id, event.transaction_id.clone()));
        let expected = Version {
            external_customer_id: event.external_customer_id.clone(),
            code: event.code.clone(),
            timestamp_ms: event.timestamp_ms,
            value: Some(2.25),
            decimal_value: Some("-1.5".parse().unwrap()),
        };
        assert_eq!(version, expected);
        let (_, bare) = decode(&decoder, &framed(&test_support::event())).unwrap();
        assert_eq!((bare.value, bare.decimal_value), (None, None));
    }

    #[test]
    fn anything_else_is_undecodable() {
        let decoder = GenericDatumReader::builder(&EVENT_SCHEMA).build().unwrap();
        let good = framed(&test_support::event());
        let mut no_magic = good.clone();
        no_magic[0] = 1;
        let mut trailing = good.clone();
        trailing.push(0);
        for (payload, reason) in [
            (&b""[..], "wire format"),
            (&no_magic[..], "wire format"),
            // Cut in the middle: apache-avro reads a union cut off at the very end as null.
            (&good[..good.len() / 2], "schemas/avro/event.avsc"),
            (&trailing[..], "after the event"),
        ] {
            let error = decode(&decoder, payload).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }
}
