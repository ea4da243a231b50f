//! The command line of `bxb-chaos` (`./dev/chaos` fills the service addresses from `.dev/env`
//! and the broker commands with `./dev/stop kafka` / `./dev/start kafka`).

use std::path::PathBuf;
use std::time::Duration;

use bxb_harness::StackArgs;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bxb-chaos",
    about = "Load through the gateway while consumers are killed and the broker restarts; then exact counts in both stores"
)]
pub struct ChaosArgs {
    /// Distinct events offered through the gateway (retries come on top).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Share of extra requests' events that are client retries of an earlier transaction_id.
    #[arg(long, default_value_t = 0.05)]
    pub retry_fraction: f64,
    /// Organizations (one API key each).
    #[arg(long, default_value_t = 8)]
    pub organizations: usize,
    /// Events per `POST /v1/events/batch`.
    #[arg(long, default_value_t = 100)]
    pub batch_events: usize,
    /// Offered load, events per second (the load lasts events / rate seconds, so the faults land
    /// while it runs).
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// `kill -9` of each consumer during the load.
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Shell command that stops the Kafka broker (returns once it is stopped).
    #[arg(long = "broker-stop-command", env = "BXB_CHAOS_BROKER_STOP_COMMAND")]
    pub broker_stop_command: String,
    /// Shell command that starts the Kafka broker again (returns once it is ready).
    #[arg(long = "broker-start-command", env = "BXB_CHAOS_BROKER_START_COMMAND")]
    pub broker_start_command: String,
    /// The gateway must answer within this while the broker is down (issue 9: <= 15 s).
    #[arg(long = "outage-answer-limit-ms", default_value_t = 15_000)]
    pub outage_answer_limit_ms: u64,
    /// The whole run fails if it has not finished by then.
    #[arg(long = "deadline-s", default_value_t = 1_200)]
    pub deadline_s: u64,
    /// Seed of the plan and the fault moments (random when absent; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the run's topic, groups and databases for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Extra `KEY=VALUE` for the consumers, repeatable (e.g. `BXB_KAFKA_OPTIONS=...`).
    #[arg(long = "consumer-env")]
    pub consumer_env: Vec<String>,
    /// Where the JSON report goes.
    #[arg(long = "output", env = "BXB_CHAOS_OUTPUT", default_value = ".dev/chaos.json")]
    pub output: PathBuf,
    /// Directory of the binaries (gateway, consumer-clickhouse, consumer-postgres, bxbctl).
    #[arg(long = "bin-dir", env = "BXB_BIN", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Scratch directory: logs of every process incarnation, the API key file.
    #[arg(long = "work-dir", env = "BXB_CHAOS_DIR", default_value = ".dev/chaos")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub stack: StackArgs,
}

impl ChaosArgs {
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_s)
    }

    /// How long the offered load lasts.
    pub fn load_duration(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / f64::from(self.rate.max(1)))
    }
}
