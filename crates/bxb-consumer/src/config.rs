//! The settings every consumer binary shares. Each binary flattens [`ConsumerArgs`] into its own
//! configuration and supplies its default consumer group with [`ConsumerArgs::with_default_group`].

use std::time::Duration;

use bxb_event::registry::RegistryArgs;
use bxb_kafka::KafkaArgs;

use crate::breaker::{DEFAULT_POISON_BREAKER_MAX, DEFAULT_POISON_BREAKER_WINDOW};
use crate::RuntimeError;

/// The largest poison breaker window: a byte of memory per record and partition.
const MAX_POISON_BREAKER_WINDOW: usize = 100_000;

pub const DEFAULT_BATCH_MAX_EVENTS: usize = 10_000;
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 1_000;
pub const DEFAULT_RETRY_INITIAL_BACKOFF_MS: u64 = 200;
pub const DEFAULT_RETRY_MAX_BACKOFF_MS: u64 = 30_000;
pub const DEFAULT_STATISTICS_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_SINK_READY_INTERVAL_MS: u64 = 5_000;
/// librdkafka's default is 45 s. A consumer killed without leaving its group (OOM kill,
/// `kill -9`, a lost node) holds its partitions until its session expires: in the chaos run the
/// groups caught up 45 s after the faults with 45 s and 10 s with 10 s. Heartbeats come from
/// librdkafka's own thread, so a long write cannot expire a session (that is
/// `max.poll.interval.ms`'s job); 10 s is what Kafka used before 3.0 and what Vector uses.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

/// How a consumer reads `events`, batches, retries and where it serves its health endpoints.
#[derive(clap::Args, Clone, Debug)]
pub struct ConsumerArgs {
    /// Kafka consumer group. Each binary has its own default (e.g. `bxb-clickhouse`).
    #[arg(long = "group-id", env = "BXB_CONSUMER_GROUP")]
    pub group_id: Option<String>,
    /// The topic of events to consume.
    #[arg(long = "topic", env = "BXB_EVENTS_TOPIC", default_value = bxb_kafka::EVENTS_TOPIC)]
    pub topic: String,
    /// The dead-letter topic for records that can never be written. It must exist.
    #[arg(long = "dlq-topic", env = "BXB_DLQ_TOPIC", default_value = bxb_kafka::DLQ_TOPIC)]
    pub dlq_topic: String,
    /// A batch is written once it holds this many records (valid and dead-lettered).
    #[arg(long = "batch-max-events", env = "BXB_BATCH_MAX_EVENTS", default_value_t = DEFAULT_BATCH_MAX_EVENTS)]
    pub batch_max_events: usize,
    /// ... or once its first record has waited this long.
    #[arg(long = "batch-max-wait-ms", env = "BXB_BATCH_MAX_WAIT_MS", default_value_t = DEFAULT_BATCH_MAX_WAIT_MS)]
    pub batch_max_wait_ms: u64,
    /// First pause before writing a failed batch again; doubles per attempt, with jitter.
    #[arg(long = "retry-initial-backoff-ms", env = "BXB_RETRY_INITIAL_BACKOFF_MS", default_value_t = DEFAULT_RETRY_INITIAL_BACKOFF_MS)]
    pub retry_initial_backoff_ms: u64,
    /// Longest pause between two attempts to write the same batch.
    #[arg(long = "retry-max-backoff-ms", env = "BXB_RETRY_MAX_BACKOFF_MS", default_value_t = DEFAULT_RETRY_MAX_BACKOFF_MS)]
    pub retry_max_backoff_ms: u64,
    /// How often librdkafka reports statistics (consumer lag per partition).
    #[arg(long = "kafka-statistics-interval-ms", env = "BXB_KAFKA_STATISTICS_INTERVAL_MS", default_value_t = DEFAULT_STATISTICS_INTERVAL_MS)]
    pub statistics_interval_ms: u64,
    /// How long the group coordinator waits for a silent member before it reassigns its
    /// partitions (Kafka's `session.timeout.ms`; the broker accepts 6 s to 30 min by default).
    #[arg(long = "kafka-session-timeout-ms", env = "BXB_KAFKA_SESSION_TIMEOUT_MS", default_value_t = DEFAULT_SESSION_TIMEOUT_MS)]
    pub session_timeout_ms: u64,
    /// How often `/readyz` asks the sink whether its store is reachable.
    #[arg(long = "sink-ready-interval-ms", env = "BXB_SINK_READY_INTERVAL_MS", default_value_t = DEFAULT_SINK_READY_INTERVAL_MS)]
    pub sink_ready_interval_ms: u64,
    /// Apply the store's schema at start, as `bxbctl migrate` does (the local stack and the
    /// tests rely on it). `false` where the consumer's database user may not change the schema
    /// (production): it then only checks that the schema is current, and stops naming
    /// `bxbctl migrate` if it is not.
    #[arg(long = "migrate-on-start", env = "BXB_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate_on_start: bool,
    /// The consumer stops (fatal, nothing from that record on committed) when more than this
    /// many of the last `BXB_POISON_BREAKER_WINDOW` records of a partition are poison
    /// (undecodable or invalid). At least the window's size: never.
    #[arg(long = "poison-breaker-max", env = "BXB_POISON_BREAKER_MAX", default_value_t = DEFAULT_POISON_BREAKER_MAX)]
    pub poison_breaker_max: usize,
    /// How many of a partition's latest records the poison breaker counts over (1 to 100 000).
    #[arg(long = "poison-breaker-window", env = "BXB_POISON_BREAKER_WINDOW", default_value_t = DEFAULT_POISON_BREAKER_WINDOW)]
    pub poison_breaker_window: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `0.0.0.0:9091` in a container.
    #[arg(long = "listen-addr", env = "BXB_LISTEN_ADDR", default_value = "127.0.0.1:9091")]
    pub listen_addr: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl ConsumerArgs {
    /// The defaults, with explicit Kafka and registry settings (tests build their settings here).
    pub fn new(kafka: KafkaArgs, registry: RegistryArgs) -> Self {
        Self {
            group_id: None,
            topic: bxb_kafka::EVENTS_TOPIC.to_owned(),
            dlq_topic: bxb_kafka::DLQ_TOPIC.to_owned(),
            batch_max_events: DEFAULT_BATCH_MAX_EVENTS,
            batch_max_wait_ms: DEFAULT_BATCH_MAX_WAIT_MS,
            retry_initial_backoff_ms: DEFAULT_RETRY_INITIAL_BACKOFF_MS,
            retry_max_backoff_ms: DEFAULT_RETRY_MAX_BACKOFF_MS,
            statistics_interval_ms: DEFAULT_STATISTICS_INTERVAL_MS,
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            sink_ready_interval_ms: DEFAULT_SINK_READY_INTERVAL_MS,
            migrate_on_start: true,
            poison_breaker_max: DEFAULT_POISON_BREAKER_MAX,
            poison_breaker_window: DEFAULT_POISON_BREAKER_WINDOW,
            listen_addr: "127.0.0.1:9091".to_owned(),
            kafka,
            registry,
        }
    }

    /// Sets the consumer group unless one was configured.
    pub fn with_default_group(mut self, group: &str) -> Self {
        if self.group_id.is_none() {
            self.group_id = Some(group.to_owned());
        }
        self
    }

    /// Checks every setting without connecting to anything, so a binary can refuse bad
    /// settings before it prepares its store.
    pub fn check(&self) -> Result<(), RuntimeError> {
        self.validate().map(drop)
    }

    /// The settings checked once, named after the variable to fix when one is wrong.
    pub(crate) fn validate(&self) -> Result<Settings, RuntimeError> {
        let config = |setting: &'static str, problem: &str| RuntimeError::Config { setting, problem: problem.to_owned() };
        let group_id = match self.group_id.as_deref().map(str::trim) {
            Some(group) if !group.is_empty() => group.to_owned(),
            _ => return Err(config("BXB_CONSUMER_GROUP", "a consumer group is required")),
        };
        if self.topic.trim().is_empty() {
            return Err(config("BXB_EVENTS_TOPIC", "must not be empty"));
        }
        if self.dlq_topic.trim().is_empty() || self.dlq_topic == self.topic {
            return Err(config("BXB_DLQ_TOPIC", "must be a topic other than the events topic"));
        }
        if self.batch_max_events == 0 {
            return Err(config("BXB_BATCH_MAX_EVENTS", "must be at least 1"));
        }
        if self.batch_max_wait_ms == 0 {
            return Err(config("BXB_BATCH_MAX_WAIT_MS", "must be at least 1"));
        }
        if self.retry_initial_backoff_ms == 0 {
            return Err(config("BXB_RETRY_INITIAL_BACKOFF_MS", "must be at least 1"));
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            return Err(config("BXB_RETRY_MAX_BACKOFF_MS", "must not be below BXB_RETRY_INITIAL_BACKOFF_MS"));
        }
        // librdkafka's heartbeat.interval.ms (3 s) must stay below the session timeout.
        if self.session_timeout_ms <= 3_000 {
            return Err(config("BXB_KAFKA_SESSION_TIMEOUT_MS", "must be above 3000 (the heartbeat interval)"));
        }
        if self.sink_ready_interval_ms == 0 {
            return Err(config("BXB_SINK_READY_INTERVAL_MS", "must be at least 1"));
        }
        if self.poison_breaker_window == 0 || self.poison_breaker_window > MAX_POISON_BREAKER_WINDOW {
            return Err(config("BXB_POISON_BREAKER_WINDOW", "must be 1 to 100000"));
        }
        let kafka = self.kafka.client_config().map_err(|e| RuntimeError::Config { setting: e.setting, problem: e.problem })?;
        Ok(Settings {
            group_id,
            topic: self.topic.clone(),
            dlq_topic: self.dlq_topic.clone(),
            batch_max_events: self.batch_max_events,
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
            retry_initial_backoff: Duration::from_millis(self.retry_initial_backoff_ms),
            retry_max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            statistics_interval_ms: self.statistics_interval_ms,
            session_timeout_ms: self.session_timeout_ms,
            sink_ready_interval: Duration::from_millis(self.sink_ready_interval_ms),
            poison_breaker_max: self.poison_breaker_max,
            poison_breaker_window: self.poison_breaker_window,
            kafka,
        })
    }
}

/// [`ConsumerArgs`] once checked.
#[derive(Clone)]
pub(crate) struct Settings {
    pub group_id: String,
    pub topic: String,
    pub dlq_topic: String,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub statistics_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub sink_ready_interval: Duration,
    pub poison_breaker_max: usize,
    pub poison_breaker_window: usize,
    pub kafka: rdkafka::ClientConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        consumer: ConsumerArgs,
    }

    fn args() -> ConsumerArgs {
        ConsumerArgs::new(KafkaArgs::plaintext("127.0.0.1:1"), RegistryArgs::with_url("http://127.0.0.1:1"))
    }

    #[test]
    fn the_binary_default_group_applies_only_when_none_is_configured() {
        assert_eq!(args().with_default_group("bxb-clickhouse").group_id.as_deref(), Some("bxb-clickhouse"));
        let mut configured = args();
        configured.group_id = Some("mine".into());
        assert_eq!(configured.with_default_group("bxb-clickhouse").group_id.as_deref(), Some("mine"));
    }

    #[test]
    fn a_missing_group_names_the_setting() {
        match args().validate() {
            Err(RuntimeError::Config { setting, .. }) => assert_eq!(setting, "BXB_CONSUMER_GROUP"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a consumer without a group must not start"),
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        type Break = fn(&mut ConsumerArgs);
        let cases: [(Break, &str); 7] = [
            (|a| a.batch_max_events = 0, "BXB_BATCH_MAX_EVENTS"),
            (|a| a.session_timeout_ms = 3_000, "BXB_KAFKA_SESSION_TIMEOUT_MS"),
            (|a| a.dlq_topic = "events".into(), "BXB_DLQ_TOPIC"),
            (|a| a.retry_max_backoff_ms = 1, "BXB_RETRY_MAX_BACKOFF_MS"),
            (|a| a.batch_max_wait_ms = 0, "BXB_BATCH_MAX_WAIT_MS"),
            (|a| a.poison_breaker_window = 0, "BXB_POISON_BREAKER_WINDOW"),
            (|a| a.poison_breaker_window = 1_000_000, "BXB_POISON_BREAKER_WINDOW"),
        ];
        for (breaks, expected) in cases {
            let mut a = args().with_default_group("g");
            breaks(&mut a);
            match a.validate() {
                Err(RuntimeError::Config { setting, .. }) => assert_eq!(setting, expected),
                _ => panic!("expected a config error naming {expected}"),
            }
        }
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["x", "--group-id=g", "--batch-max-events=5", "--kafka-brokers=127.0.0.1:1"]).unwrap();
        assert_eq!(cli.consumer.batch_max_events, 5);
        let settings = cli.consumer.validate().unwrap();
        assert_eq!(settings.group_id, "g");
        assert_eq!(settings.batch_max_events, 5);
        assert_eq!(settings.session_timeout_ms, DEFAULT_SESSION_TIMEOUT_MS);
        assert!(cli.consumer.migrate_on_start, "the local stack and the tests rely on migrating at start");
        assert_eq!((settings.poison_breaker_max, settings.poison_breaker_window), (100, 1_000));
    }

    #[test]
    fn migrating_at_start_can_be_turned_off() {
        for (value, expected) in [("false", false), ("0", false), ("no", false), ("true", true)] {
            let cli = Cli::try_parse_from(["x", &format!("--migrate-on-start={value}")]).unwrap();
            assert_eq!(cli.consumer.migrate_on_start, expected, "{value}");
        }
        assert!(Cli::try_parse_from(["x", "--migrate-on-start=perhaps"]).is_err());
    }
}
