//! Topic administration and consumer-group positions: what `./dev/up`, the Kubernetes topic
//! Job, the chaos run and the tests use.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The setting the identity rule needs on the events topic: the broker stamps each record with
/// the time it appended it, and consumers rank the records of an identity by it
/// (`bxb_event::identity`). Every topic [`ensure_topic`] creates gets it.
pub const APPEND_TIME: (&str, &str) = ("message.timestamp.type", "LogAppendTime");

/// Creates `topic` with `partitions` and `replication`, or does nothing if it exists.
pub async fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    topic_config: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if !topic_config.iter().any(|(key, _)| *key == APPEND_TIME.0) {
        new_topic = new_topic.set(APPEND_TIME.0, APPEND_TIME.1);
    }
    for (key, value) in topic_config {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new_topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(topic = %name, ?code, "topic creation failed"))
            }
        }
    }
    Ok(())
}

/// The topic's `message.timestamp.type` (`LogAppendTime` or `CreateTime`), as the brokers
/// report it.
pub async fn timestamp_type(config: &ClientConfig, topic: &str) -> Result<Option<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for resource in admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options).await? {
        let resource = resource.map_err(KafkaError::AdminOp)?;
        if let Some(entry) = resource.get(APPEND_TIME.0) {
            return Ok(entry.value.clone());
        }
    }
    Ok(None)
}

/// Deletes `topic` (tests clean up after themselves).
pub async fn delete_topic(config: &ClientConfig, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    admin.delete_topics(&[topic], &AdminOptions::new()).await?;
    Ok(())
}

/// Where a consumer group stands on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPosition {
    pub partition: i32,
    /// The group's committed offset, if it has committed one.
    pub committed: Option<i64>,
    /// The first offset the partition still holds.
    pub low: i64,
    /// One past the last record.
    pub high: i64,
}

impl PartitionPosition {
    /// Records the group has not committed yet. Without a commit the group starts from `low`
    /// (the consumers use `auto.offset.reset=earliest`).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).clamp(self.low, self.high)).max(0)
    }
}

/// The committed offset and watermarks of every partition of `topic` for `group`, read without
/// joining the group (safe while its consumers run). Blocking: call it from `spawn_blocking`.
pub fn group_positions(config: &ClientConfig, group: &str, topic: &str, timeout: Duration) -> Result<Vec<PartitionPosition>, KafkaError> {
    let consumer: BaseConsumer = config.clone().set("group.id", group).set("enable.auto.commit", "false").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            let committed = match committed.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            Ok(PartitionPosition { partition, committed, low, high })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_commit_or_the_first_held_offset() {
        let at = |committed, low, high| PartitionPosition { partition: 0, committed, low, high }.lag();
        assert_eq!(at(Some(7), 0, 10), 3);
        assert_eq!(at(Some(10), 0, 10), 0);
        assert_eq!(at(None, 4, 10), 6);
        // A commit below the retained range counts from what is still held.
        assert_eq!(at(Some(1), 4, 10), 6);
        assert_eq!(at(None, 0, 0), 0);
    }
}
