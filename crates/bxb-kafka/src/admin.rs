//! Topic administration: what `./dev/up`, the Kubernetes topic Job and the tests use.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

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
    for (key, value) in topic_config {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new_topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(topic = %name, ?code, "topic creation failed")),
        }
    }
    Ok(())
}

/// Deletes `topic` (tests clean up after themselves).
pub async fn delete_topic(config: &ClientConfig, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    admin.delete_topics(&[topic], &AdminOptions::new()).await?;
    Ok(())
}
