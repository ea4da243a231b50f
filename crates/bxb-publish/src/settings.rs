//! The producer settings of a publisher, as flags and `BXB_KAFKA_*` / `BXB_MAX_RECORD_BYTES`
//! variables, on top of the connection settings of `bxb_kafka::KafkaArgs`. Durability is fixed:
//! `acks=all` and idempotence, whatever the flags say; so is placement (`PARTITIONER`).

use rdkafka::ClientConfig;

/// The largest record a default broker accepts is `message.max.bytes` = 1 048 588 bytes; the
/// producer's own default cap is 1 000 000. A record limit above this would let a publisher
/// accept events that Kafka then refuses.
pub const RECORD_BYTES_CEILING: usize = 1_000_000;
/// The producer's request size cap: above any record the limit allows (at most 1 000 000 bytes
/// of key and value, plus small headers) and below the broker's default `message.max.bytes`.
const PRODUCER_MESSAGE_MAX_BYTES: &str = "1048576";
/// Java's default for keyed records, murmur2 of the key, so an organization lands in the
/// partition a Java producer would put it in; librdkafka's default, `consistent_random`, hashes
/// with CRC32 instead (docs/producer-contract.md).
const PARTITIONER: &str = "murmur2_random";

pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_ENQUEUE_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_LINGER_MS: u64 = 5;
pub const DEFAULT_QUEUE_MAX_MESSAGES: u32 = 100_000;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 512 * 1024;

/// Kafka producer behaviour. Durability settings (`acks=all`, idempotence) and the partitioner
/// are fixed.
#[derive(Debug, Clone, clap::Args)]
pub struct ProducerArgs {
    /// Longest wait for a delivery report (librdkafka `message.timeout.ms`): past it publishing
    /// fails (the gateway answers 503). Must leave room inside the gateway's request timeout.
    #[arg(long = "kafka-delivery-timeout-ms", env = "BXB_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = DEFAULT_DELIVERY_TIMEOUT_MS)]
    pub delivery_timeout_ms: u64,
    /// Longest wait for room in a full producer queue before publishing fails (the gateway
    /// answers 503).
    #[arg(long = "kafka-enqueue-timeout-ms", env = "BXB_KAFKA_ENQUEUE_TIMEOUT_MS", default_value_t = DEFAULT_ENQUEUE_TIMEOUT_MS)]
    pub enqueue_timeout_ms: u64,
    /// Batching delay (librdkafka `linger.ms`).
    #[arg(long = "kafka-linger-ms", env = "BXB_KAFKA_LINGER_MS", default_value_t = DEFAULT_LINGER_MS)]
    pub linger_ms: u64,
    /// Compression codec: `lz4`, `zstd`, `gzip`, `snappy` or `none`.
    #[arg(long = "kafka-compression", env = "BXB_KAFKA_COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub compression: Compression,
    /// Most messages waiting in the producer queue (librdkafka `queue.buffering.max.messages`).
    #[arg(long = "kafka-queue-max-messages", env = "BXB_KAFKA_QUEUE_MAX_MESSAGES", default_value_t = DEFAULT_QUEUE_MAX_MESSAGES)]
    pub queue_max_messages: u32,
    /// Largest Kafka record of one event (value, key and headers); at most 1 000 000, under the
    /// broker's default `message.max.bytes`.
    #[arg(long = "max-record-bytes", env = "BXB_MAX_RECORD_BYTES", default_value_t = DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,
}

/// The defaults of the flags, for callers that take no flags (tests, tools).
impl Default for ProducerArgs {
    fn default() -> Self {
        Self {
            delivery_timeout_ms: DEFAULT_DELIVERY_TIMEOUT_MS,
            enqueue_timeout_ms: DEFAULT_ENQUEUE_TIMEOUT_MS,
            linger_ms: DEFAULT_LINGER_MS,
            compression: Compression::Lz4,
            queue_max_messages: DEFAULT_QUEUE_MAX_MESSAGES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Lz4,
    Zstd,
    Gzip,
    Snappy,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::None => "none",
        }
    }
}

/// A producer setting that cannot work, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("setting {setting}: {problem}")]
pub struct SettingError {
    pub setting: &'static str,
    pub problem: String,
}

impl ProducerArgs {
    /// The producer configuration: `connection` (brokers, TLS, SASL) plus these settings, with
    /// `client_id` naming the producer in the broker's logs and metrics.
    pub fn client_config(&self, connection: &ClientConfig, client_id: &str) -> ClientConfig {
        let mut client = connection.clone();
        client
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.messages", self.queue_max_messages.to_string())
            .set("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES)
            .set("partitioner", PARTITIONER)
            .set("client.id", client_id);
        client
    }

    /// Checks the settings on their own; a caller checks how they fit its own timeouts.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(256..=RECORD_BYTES_CEILING).contains(&self.max_record_bytes) {
            return Err(SettingError {
                setting: "BXB_MAX_RECORD_BYTES",
                problem: format!("must be between 256 and {RECORD_BYTES_CEILING}"),
            });
        }
        if self.delivery_timeout_ms == 0 {
            return Err(SettingError { setting: "BXB_KAFKA_DELIVERY_TIMEOUT_MS", problem: "must be positive".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        producer: ProducerArgs,
    }

    fn parse(args: &[&str]) -> ProducerArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().producer
    }

    #[test]
    fn the_flag_defaults_are_the_default() {
        let (flags, default) = (parse(&[]), ProducerArgs::default());
        assert_eq!(format!("{flags:?}"), format!("{default:?}"));
        default.validate().unwrap();
    }

    #[test]
    fn durability_and_placement_are_fixed_and_the_rest_comes_from_the_settings() {
        let connection = bxb_kafka::KafkaArgs::plaintext("127.0.0.1:1").client_config().unwrap();
        let config = parse(&["--kafka-compression=zstd", "--kafka-linger-ms=7"]).client_config(&connection, "bxb-test");
        for (key, value) in [
            ("bootstrap.servers", "127.0.0.1:1"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("linger.ms", "7"),
            ("message.timeout.ms", "10000"),
            ("queue.buffering.max.messages", "100000"),
            ("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES),
            ("partitioner", "murmur2_random"),
            ("client.id", "bxb-test"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn a_record_limit_above_the_broker_default_is_refused() {
        assert_eq!(parse(&["--max-record-bytes=2000000"]).validate().unwrap_err().setting, "BXB_MAX_RECORD_BYTES");
        assert_eq!(parse(&["--kafka-delivery-timeout-ms=0"]).validate().unwrap_err().setting, "BXB_KAFKA_DELIVERY_TIMEOUT_MS");
    }
}
