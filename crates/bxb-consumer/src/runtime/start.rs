//! Before the loop: the consumer's librdkafka settings, the check that both topics exist
//! (retried while the brokers cannot be reached), the dead-letter producer and the subscription.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use bxb_event::registry::EventDecoder;
use bxb_retry::Backoff;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::config::Settings;
use crate::context::{RuntimeContext, Shared};
use crate::dead_letter::DeadLetterProducer;
use crate::{metrics, RuntimeError, Sink};

/// How long one metadata request at start may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: Sink> Pipeline<S> {
    /// Creates the consumer and the dead-letter producer, checks that both topics exist and
    /// subscribes. Returns `None` if `shutdown` came first.
    pub async fn start(
        settings: Settings,
        decoder: EventDecoder,
        sink: Arc<S>,
        (sink_ready, registry_ready): (Arc<AtomicBool>, Arc<AtomicBool>),
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, RuntimeError> {
        let topics = [settings.topic.clone(), settings.dlq_topic.clone()];
        if !wait_for_topics(&settings, &topics, shutdown).await? {
            return Ok(None);
        }
        match bxb_kafka::admin::timestamp_type(&settings.kafka, &settings.topic).await? {
            Some(found) if found != bxb_kafka::admin::APPEND_TIME.1 => {
                return Err(RuntimeError::NotAppendTime { topic: settings.topic.clone(), found });
            }
            _ => {}
        }
        let shared = Arc::new(Shared::new(settings.topic.clone(), sink.name()));
        let consumer: StreamConsumer<RuntimeContext> =
            consumer_config(&settings).create_with_context(RuntimeContext { shared: shared.clone() })?;
        let dead_letters = DeadLetterProducer::new(&settings.kafka, &settings.dlq_topic, &settings.group_id)?;
        consumer.subscribe(&[&settings.topic])?;
        tracing::info!(topic = %settings.topic, group = %settings.group_id, sink = sink.name(), "consuming");
        let (consumer, committer) = (Arc::new(consumer), Default::default());
        let consumed = ::metrics::counter!(metrics::CONSUMED, "sink" => sink.name());
        let records_waiting = ::metrics::gauge!(metrics::RECORDS_WAITING, "sink" => sink.name());
        Ok(Some(Self {
            settings,
            consumer,
            shared,
            committer,
            decoder,
            dead_letters,
            sink,
            sink_ready,
            registry_ready,
            pause_holds: AtomicUsize::new(0),
            consumed,
            records_waiting,
        }))
    }
}

fn consumer_config(settings: &Settings) -> ClientConfig {
    let mut config = settings.kafka.clone();
    config
        .set("group.id", &settings.group_id)
        // Offsets move only through the runtime's explicit commits.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Incremental rebalances revoke only the partitions that move, so the other
        // partitions' in-flight batches survive a member joining or leaving.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", settings.statistics_interval_ms.to_string())
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("enable.partition.eof", "false");
    crate::memory::bound_prefetch(&mut config);
    config
}

/// Checks that every topic exists, retrying while the brokers cannot be reached. Returns false
/// if `shutdown` came first.
async fn wait_for_topics(settings: &Settings, topics: &[String], shutdown: &CancellationToken) -> Result<bool, RuntimeError> {
    let mut backoff = Backoff::new(settings.retry_initial_backoff, settings.retry_max_backoff);
    loop {
        let config = settings.kafka.clone();
        let names = topics.to_vec();
        let checked = tokio::task::spawn_blocking(move || missing_topic(&config, &names))
            .await
            .unwrap_or_else(|e| Err(KafkaError::Canceled).inspect_err(|_| tracing::error!(%e, "metadata task failed")));
        match checked {
            Ok(None) => return Ok(true),
            Ok(Some(missing)) => return Err(RuntimeError::MissingTopic(missing)),
            Err(error) => {
                let pause = backoff.next();
                tracing::warn!(%error, ?pause, "cannot read topic metadata; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(false),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn missing_topic(config: &ClientConfig, topics: &[String]) -> KafkaResult<Option<String>> {
    let client: BaseConsumer = config.create()?;
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let found = metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !found {
            return Ok(Some(topic.clone()));
        }
    }
    Ok(None)
}
