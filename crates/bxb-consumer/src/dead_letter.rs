//! Poison records go to the dead-letter topic with their original key, value and headers, plus
//! headers saying why and where from. The runtime commits a poison record's offset only after
//! the broker acknowledged its dead letter.

use bxb_event::clock::now_ms;
use bxb_event::registry::PoisonReason;
use bxb_kafka::headers;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::SinkError;

/// The longest `bxb-dlq-error` header; longer errors are cut at a character boundary.
const MAX_ERROR_HEADER_BYTES: usize = 4096;
/// How long the producer tries to deliver one dead letter before the flush retries it.
const DELIVERY_TIMEOUT_MS: &str = "30000";

/// A poison record waiting for its dead letter to be acknowledged.
pub(crate) struct DeadLetter {
    message: OwnedMessage,
    reason: PoisonReason,
    error: String,
    delivered: bool,
}

impl DeadLetter {
    pub fn new(message: OwnedMessage, reason: PoisonReason, error: String) -> Self {
        Self { message, reason, error, delivered: false }
    }

    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    pub fn reason(&self) -> PoisonReason {
        self.reason
    }
}

/// The original headers followed by the dead-letter headers.
pub(crate) fn dead_letter_headers(letter: &DeadLetter, group: &str, at_ms: i64) -> OwnedHeaders {
    let mut out = headers::copy(letter.message.headers());
    let error = truncate(&letter.error, MAX_ERROR_HEADER_BYTES);
    let partition = letter.message.partition().to_string();
    let offset = letter.message.offset().to_string();
    let at = at_ms.to_string();
    for (key, value) in [
        (headers::DLQ_REASON, letter.reason.as_str()),
        (headers::DLQ_ERROR, error),
        (headers::DLQ_SOURCE_TOPIC, letter.message.topic()),
        (headers::DLQ_SOURCE_PARTITION, &partition),
        (headers::DLQ_SOURCE_OFFSET, &offset),
        (headers::DLQ_CONSUMER_GROUP, group),
        (headers::DLQ_AT_MS, &at),
    ] {
        out = out.insert(Header { key, value: Some(value.as_bytes()) });
    }
    out
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Produces dead letters, idempotently and acknowledged by all in-sync replicas.
pub(crate) struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
    group: String,
}

impl DeadLetterProducer {
    pub fn new(kafka: &ClientConfig, topic: &str, group: &str) -> Result<Self, KafkaError> {
        let mut config = kafka.clone();
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5").set("message.timeout.ms", DELIVERY_TIMEOUT_MS);
        Ok(Self { producer: config.create()?, topic: topic.to_owned(), group: group.to_owned() })
    }

    /// Produces every letter not yet acknowledged and waits for all acknowledgements. Letters
    /// acknowledged before a failure are not produced again on the next call.
    pub async fn deliver(&self, letters: &mut [DeadLetter]) -> Result<(), SinkError> {
        let at_ms = now_ms();
        let pending: Vec<&mut DeadLetter> = letters.iter_mut().filter(|l| !l.delivered).collect();
        let results = join_all(pending.into_iter().map(|letter| async move {
            let headers = dead_letter_headers(letter, &self.group, at_ms);
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(key) = letter.message.key() {
                record = record.key(key);
            }
            if let Some(value) = letter.message.payload() {
                record = record.payload(value);
            }
            let result = self.producer.send(record, Timeout::Never).await.map(|_| ()).map_err(|(e, _)| e);
            if result.is_ok() {
                letter.delivered = true;
            }
            result
        }))
        .await;
        let mut outcome = Ok(());
        for error in results.into_iter().filter_map(Result::err) {
            let classified = classify(&self.topic, error);
            if matches!(classified, SinkError::Fatal(_)) {
                return Err(classified);
            }
            outcome = Err(classified);
        }
        outcome
    }
}

/// A dead letter the topic can never take is fatal (the operator must fix the topic); anything
/// else (broker down, timeouts, leader changes) is retried.
fn classify(topic: &str, error: KafkaError) -> SinkError {
    let code = match &error {
        KafkaError::MessageProduction(code) => Some(*code),
        _ => error.rdkafka_error_code(),
    };
    match code {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::MessageSizeTooLarge,
        ) => SinkError::Fatal(format!("producing to {topic}: {error}")),
        _ => SinkError::Retry(format!("producing to {topic}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Headers, Timestamp};

    #[test]
    fn a_dead_letter_keeps_the_original_headers_and_says_why_and_where_from() {
        let original = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(&b"00-abc"[..]) });
        let message =
            OwnedMessage::new(Some(vec![9]), Some(b"org".to_vec()), "events".into(), Timestamp::NotAvailable, 3, 42, Some(original));
        let letter = DeadLetter::new(message, PoisonReason::IncompatibleSchema, "schema id 7: not an event".into());
        let headers = dead_letter_headers(&letter, "bxb-clickhouse", 1_700_000_000_000);
        let get = |key: &str| headers::find(&headers, key).map(|v| std::str::from_utf8(v).unwrap().to_owned());
        assert_eq!(get("traceparent").as_deref(), Some("00-abc"));
        assert_eq!(get(headers::DLQ_REASON).as_deref(), Some("incompatible_schema"));
        assert_eq!(get(headers::DLQ_ERROR).as_deref(), Some("schema id 7: not an event"));
        assert_eq!(get(headers::DLQ_SOURCE_TOPIC).as_deref(), Some("events"));
        assert_eq!(get(headers::DLQ_SOURCE_PARTITION).as_deref(), Some("3"));
        assert_eq!(get(headers::DLQ_SOURCE_OFFSET).as_deref(), Some("42"));
        assert_eq!(get(headers::DLQ_CONSUMER_GROUP).as_deref(), Some("bxb-clickhouse"));
        assert_eq!(get(headers::DLQ_AT_MS).as_deref(), Some("1700000000000"));
        assert_eq!(headers.count(), 8);
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let text = "é".repeat(3000);
        let cut = truncate(&text, MAX_ERROR_HEADER_BYTES);
        assert!(cut.len() <= MAX_ERROR_HEADER_BYTES && cut.len() >= MAX_ERROR_HEADER_BYTES - 1);
        assert!(text.starts_with(cut));
    }

    #[test]
    fn a_missing_topic_is_fatal_and_a_timeout_is_retried() {
        let fatal = classify("dlq", KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition));
        assert!(matches!(fatal, SinkError::Fatal(_)));
        let retry = classify("dlq", KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
        assert!(matches!(retry, SinkError::Retry(_)));
    }
}
