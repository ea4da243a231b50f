//! Where the services are, how big a run is, and the unique names of one run.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

/// The command line of `bxb-bench` (`./dev/bench` fills the service addresses from `.dev/env`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "bxb-bench", about = "Benchmarks of the bxb pipeline against the raw limits of its services")]
pub struct BenchArgs {
    /// A few minutes instead of the full run: smaller backlog, shorter phases.
    #[arg(long)]
    pub quick: bool,
    /// Phases to run, comma-separated: gateway, drain, e2e.
    #[arg(long, value_delimiter = ',', default_value = "gateway,drain,e2e")]
    pub phases: Vec<Phase>,
    /// Where the JSON report goes.
    #[arg(long = "output", env = "BXB_BENCH_OUTPUT", default_value = ".dev/bench.json")]
    pub output: PathBuf,
    /// Directory of the release binaries under test (gateway, consumer-clickhouse, consumer-postgres).
    #[arg(long = "bin-dir", env = "BXB_BIN", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Scratch directory of a run: logs of the binaries, the API key file.
    #[arg(long = "work-dir", env = "BXB_BENCH_DIR", default_value = ".dev/bench")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub stack: StackArgs,
    /// Reported as the Kafka version (the broker does not say over the protocol).
    #[arg(long = "kafka-version", env = "BXB_KAFKA_VERSION", default_value = "unknown")]
    pub kafka_version: String,
    /// Extra librdkafka settings for the consumers under test, `key=value,...` (passed to them as
    /// `BXB_KAFKA_OPTIONS`), to compare a setting before changing its default.
    #[arg(long = "consumer-kafka-options", env = "BXB_BENCH_CONSUMER_KAFKA_OPTIONS")]
    pub consumer_kafka_options: Option<String>,
    /// Extra environment of the consumers under test, `KEY=VALUE`, repeatable (e.g. an allocator
    /// setting to compare).
    #[arg(long = "consumer-env")]
    pub consumer_env: Vec<String>,
    /// Overrides the backlog size of the drain phase.
    #[arg(long = "backlog-events")]
    pub backlog_events: Option<u64>,
}

/// Where the shared services are (`./dev/bench` and `./dev/chaos` fill them from `.dev/env`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    #[arg(long = "kafka-brokers", env = "BXB_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub kafka_brokers: String,
    #[arg(long = "schema-registry-url", env = "BXB_SCHEMA_REGISTRY_URL", default_value = "http://127.0.0.1:18081/apis/ccompat/v7")]
    pub registry_url: String,
    /// An existing database a run connects to in order to create and drop its own databases.
    #[arg(long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true, default_value = "postgres://bxb:bxb@127.0.0.1:15432/bxb")]
    pub postgres_url: String,
    #[arg(long = "clickhouse-url", env = "BXB_CLICKHOUSE_URL", default_value = "http://127.0.0.1:18123")]
    pub clickhouse_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Gateway,
    Drain,
    E2e,
}

/// The size of a run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub backlog_events: u64,
    pub gateway_load: Duration,
    pub rate_step: Duration,
    pub e2e: Duration,
    /// The consumers' `BXB_BATCH_MAX_EVENTS`, also the batch size of the raw inserts.
    pub batch_events: usize,
}

impl Sizes {
    pub fn of(args: &BenchArgs) -> Self {
        let mut sizes = if args.quick {
            Self { backlog_events: 100_000, gateway_load: Duration::from_secs(8), rate_step: Duration::from_secs(5), e2e: Duration::from_secs(15), batch_events: 10_000 }
        } else {
            Self { backlog_events: 1_000_000, gateway_load: Duration::from_secs(30), rate_step: Duration::from_secs(20), e2e: Duration::from_secs(60), batch_events: 10_000 }
        };
        if let Some(n) = args.backlog_events {
            sizes.backlog_events = n;
        }
        sizes
    }
}

/// Names owned by one run: never the dev stack's `events` topic, `bxb` databases or groups.
#[derive(Debug, Clone)]
pub struct RunNames {
    pub id: String,
}

impl RunNames {
    pub fn new() -> Self {
        Self { id: Uuid::new_v4().simple().to_string()[..10].to_owned() }
    }

    pub fn topic(&self, what: &str) -> String {
        format!("bench-{}-{what}", self.id)
    }

    pub fn group(&self, what: &str) -> String {
        format!("bench-{}-{what}", self.id)
    }

    /// A database name valid in both PostgreSQL and ClickHouse.
    pub fn database(&self, what: &str) -> String {
        format!("bxb_bench_{}_{what}", self.id)
    }
}

impl Default for RunNames {
    fn default() -> Self {
        Self::new()
    }
}

/// `url` with its database path replaced by `database`.
pub fn postgres_url_for(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_credentials_and_options() {
        assert_eq!(postgres_url_for("postgres://u:p@127.0.0.1:5432/bxb", "x"), "postgres://u:p@127.0.0.1:5432/x");
        assert_eq!(postgres_url_for("postgres://u@h/bxb?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(postgres_url_for("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn run_names_are_unique_and_never_the_dev_stacks() {
        let (a, b) = (RunNames::new(), RunNames::new());
        assert_ne!(a.topic("gw"), b.topic("gw"));
        assert!(a.database("ch").starts_with("bxb_bench_"));
        assert_ne!(a.topic("x"), "events");
    }
}
