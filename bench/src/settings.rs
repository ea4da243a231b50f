//! The command line of `bxb-bench` and how big a run is.

use std::path::PathBuf;
use std::time::Duration;

use bxb_harness::StackArgs;

/// The command line of `bxb-bench` (`./dev/bench` fills the service addresses from `.dev/env`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "bxb-bench", about = "Benchmarks of the bxb pipeline against the raw limits of its services")]
pub struct BenchArgs {
    /// A few minutes instead of the full run: smaller backlog, shorter phases.
    #[arg(long)]
    pub quick: bool,
    /// Phases to run, comma-separated: gateway, drain, e2e, hostile.
    #[arg(long, value_delimiter = ',', default_value = "gateway,drain,e2e,hostile")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Gateway,
    Drain,
    E2e,
    /// The gateway's memory under bodies made to cost the most (`hostile`).
    Hostile,
}

/// The size of a run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub backlog_events: u64,
    pub gateway_load: Duration,
    pub rate_step: Duration,
    pub e2e: Duration,
    /// How long the hostile clients send.
    pub hostile: Duration,
    /// The consumers' `BXB_BATCH_MAX_EVENTS`, also the batch size of the raw inserts.
    pub batch_events: usize,
}

impl Sizes {
    pub fn of(args: &BenchArgs) -> Self {
        let mut sizes = if args.quick {
            Self {
                backlog_events: 100_000,
                gateway_load: Duration::from_secs(8),
                rate_step: Duration::from_secs(5),
                e2e: Duration::from_secs(15),
                hostile: Duration::from_secs(10),
                batch_events: 10_000,
            }
        } else {
            Self {
                backlog_events: 1_000_000,
                gateway_load: Duration::from_secs(30),
                rate_step: Duration::from_secs(20),
                e2e: Duration::from_secs(60),
                hostile: Duration::from_secs(30),
                batch_events: 10_000,
            }
        };
        if let Some(n) = args.backlog_events {
            sizes.backlog_events = n;
        }
        sizes
    }
}
