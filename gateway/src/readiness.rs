//! The background work `/readyz` reports on: registering the event schema (retried until it
//! succeeds) and checking that Kafka serves the events topic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bxb_event::registry::{value_subject, EventEncoder, RegistryError, SchemaRegistry};
use bxb_retry::Backoff;
use rdkafka::producer::{FutureProducer, Producer};
use tokio_util::sync::CancellationToken;

const REGISTRATION_BACKOFF_MIN: Duration = Duration::from_millis(250);
const REGISTRATION_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Registers the event schema under `<topic>-value` (BACKWARD), retrying with backoff, then sets
/// the encoder and flips `ready`.
pub async fn register_schema(
    registry: SchemaRegistry,
    topic: String,
    encoder: Arc<OnceLock<EventEncoder>>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let subject = value_subject(&topic);
    let mut backoff = Backoff::new(REGISTRATION_BACKOFF_MIN, REGISTRATION_BACKOFF_MAX);
    loop {
        match registry.register_event_schema(&subject).await {
            Ok(schema_id) => {
                let _ = encoder.set(EventEncoder::new(schema_id));
                ready.store(true, Ordering::Relaxed);
                tracing::info!(subject, schema_id, "event schema registered");
                return;
            }
            // Refusal (e.g. an incompatible schema under the subject) needs an operator; keep
            // trying so the gateway recovers once it is fixed, but say it loudly.
            Err(e @ RegistryError::Refused(_)) => tracing::error!(subject, error = %e, "event schema registration refused"),
            Err(e) => tracing::warn!(subject, error = %e, "event schema registration failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// Every `interval`: fetches the metadata of the events topic (ready when the topic has
/// partitions with leaders) and records the producer queue depth.
pub async fn watch_kafka(producer: FutureProducer, topic: String, interval: Duration, ready: Arc<AtomicBool>, shutdown: CancellationToken) {
    let mut first_probe = true;
    loop {
        let probe = producer.clone();
        let probe_topic = topic.clone();
        // fetch_metadata blocks; the timeout keeps one probe within one interval.
        let reachable = tokio::task::spawn_blocking(move || topic_is_served(&probe, &probe_topic, interval)).await.unwrap_or(false);
        let was_reachable = ready.swap(reachable, Ordering::Relaxed);
        if reachable != was_reachable || first_probe {
            first_probe = false;
            if reachable {
                tracing::info!(topic, "Kafka serves the events topic");
            } else {
                tracing::warn!(topic, "Kafka does not serve the events topic");
            }
        }
        bxb_publish::record_queue_depth(&producer);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn topic_is_served(producer: &FutureProducer, topic: &str, timeout: Duration) -> bool {
    match producer.client().fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata.topics().iter().any(|t| {
            t.name() == topic && t.error().is_none() && !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
        }),
        Err(e) => {
            tracing::debug!(error = %e, "Kafka metadata request failed");
            false
        }
    }
}
