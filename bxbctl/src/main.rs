use std::process::ExitCode;

use bxb_consumer_clickhouse::ClickHouseArgs;
use bxb_consumer_postgres::PostgresSink;
use bxb_ctl::backfill;
use bxb_ctl::replay::{self, Target};
use bxb_ctl::verify::{self, VerifyScope};
use bxb_ctl::{migrate, produce};
use bxb_event::ingest::TimestampWindow;
use bxb_event::registry::{RegistryArgs, SchemaRegistry};
use bxb_kafka::KafkaArgs;
use bxb_publish::ProducerArgs;
use clap::{ArgGroup, Parser, Subcommand};

/// Operate the bxb event pipeline.
#[derive(Parser)]
#[command(name = "bxbctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Move a consumer group's offsets to replay (or skip) events. Dry run unless --execute.
    #[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_datetime", "to_offset"])))]
    Replay {
        /// The consumer group, e.g. bxb-clickhouse or bxb-postgres.
        #[arg(long)]
        group: String,
        /// The topic whose offsets move.
        #[arg(long, default_value = "events")]
        topic: String,
        /// Resume from the first offset still held.
        #[arg(long)]
        to_earliest: bool,
        /// Resume from the end (skip everything unread).
        #[arg(long)]
        to_latest: bool,
        /// Resume from the first record at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_datetime)]
        to_datetime: Option<i64>,
        /// Resume from these offsets, PARTITION:OFFSET, repeatable or comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        to_offset: Vec<String>,
        /// Only these partitions (default: all).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// Commit the new offsets (without it nothing changes).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Publish events from JSON lines (the JSON of POST /v1/events plus organization_id) straight
    /// to Kafka. Exits 1 when a line is not a valid event (the valid ones are still sent).
    Produce {
        /// File of JSON lines; standard input when absent or `-`.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "events")]
        topic: String,
        /// Oldest accepted timestamp, relative to now.
        #[arg(long, default_value_t = 30 * 86_400_000)]
        max_event_age_ms: u64,
        /// Furthest accepted timestamp into the future.
        #[arg(long, default_value_t = 300_000)]
        max_future_skew_ms: u64,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The gateway's producer settings (`BXB_KAFKA_DELIVERY_TIMEOUT_MS`, ...).
        #[command(flatten)]
        producer: ProducerArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Apply every schema (PostgreSQL migrations, ClickHouse tables) and exit. Run it as the
    /// schema owner before the components start; safe to repeat.
    Migrate {
        /// PostgreSQL, as the role that owns the schema.
        #[arg(long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true)]
        postgres_url: String,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
    /// Bring PostgreSQL to exactly the billable first records ClickHouse holds for a time range
    /// (after a metric was made billable, or stopped, retroactively; after the upgrade to the
    /// identity rule). Safe to repeat and to run beside consumer-postgres.
    Backfill {
        /// Start of the range of event timestamps (RFC 3339), included.
        #[arg(long, value_parser = parse_datetime)]
        from: i64,
        /// End of the range (RFC 3339), excluded.
        #[arg(long, value_parser = parse_datetime)]
        to: i64,
        /// Only this organization.
        #[arg(long)]
        organization: Option<uuid::Uuid>,
        /// consumer-postgres' settings (BXB_POSTGRES_URL, BXB_BILLABLE_CODES, retention, ...).
        #[command(flatten)]
        postgres: bxb_consumer_postgres::PostgresArgs,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
    /// Compare PostgreSQL's billable events with ClickHouse per organization, code and hour.
    /// Exits 1 when they differ.
    Verify {
        /// Start of the range (RFC 3339), included.
        #[arg(long, value_parser = parse_datetime)]
        from: i64,
        /// End of the range (RFC 3339), excluded.
        #[arg(long, value_parser = parse_datetime)]
        to: i64,
        /// Only this organization.
        #[arg(long)]
        organization: Option<uuid::Uuid>,
        /// PostgreSQL of consumer-postgres.
        #[arg(long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true)]
        postgres_url: String,
        /// Codes billable for every organization, as consumer-postgres is configured.
        #[arg(long = "billable-codes", env = "BXB_BILLABLE_CODES", value_delimiter = ',')]
        billable_codes: Vec<String>,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
}

fn parse_datetime(s: &str) -> Result<i64, String> {
    let t =
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bxbctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay { group, topic, to_earliest, to_latest, to_datetime, to_offset, partitions, execute, kafka } => {
            let target = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(ms) = to_datetime {
                Target::Timestamp(ms)
            } else {
                Target::Offsets(replay::parse_offsets(&to_offset).map_err(anyhow::Error::msg)?)
            };
            let config = kafka.client_config()?;
            let plans = replay::plan(&config, &group, &topic, &partitions, &target)?;
            println!("{:<10} {:>12} {:>12} {:>10} {:>10}", "PARTITION", "COMMITTED", "TARGET", "RE-READ", "SKIPPED");
            for p in &plans {
                let committed = p.committed.map_or("-".to_owned(), |o| o.to_string());
                println!("{:<10} {:>12} {:>12} {:>10} {:>10}", p.partition, committed, p.target, p.reread, p.skipped);
            }
            let reread: i64 = plans.iter().map(|p| p.reread).sum();
            if execute {
                replay::execute(&config, &group, &topic, &plans)?;
                println!("group {group}: offsets of {topic} reset; {reread} record(s) will be read again");
            } else {
                println!("dry run: {reread} record(s) would be read again; add --execute to commit these offsets");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce { file, topic, max_event_age_ms, max_future_skew_ms, kafka, producer, registry } => {
            producer.validate()?;
            let window = TimestampWindow { max_age_ms: max_event_age_ms, max_future_skew_ms };
            let (events, errors) = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => produce::parse_lines(std::io::BufReader::new(std::fs::File::open(path)?), window),
                None => produce::parse_lines(std::io::stdin().lock(), window),
            };
            for e in &errors {
                eprintln!("line {}: {}", e.line, e.message);
            }
            let registry = SchemaRegistry::new(&registry)?;
            produce::publish(&kafka.client_config()?, &producer, &registry, &topic, &events).await?;
            println!("produced {} event(s) to {topic}; {} line(s) refused", events.len(), errors.len());
            Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Migrate { postgres_url, clickhouse } => {
            let migrated = migrate::run(&postgres_url, &clickhouse).await?;
            for applied in &migrated.postgres_applied {
                println!("PostgreSQL: applied {applied}");
            }
            for created in &migrated.clickhouse_created {
                println!("ClickHouse: created {created}");
            }
            println!("migrate: every schema is current");
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { from, to, organization, postgres, clickhouse } => {
            let sink = PostgresSink::connect(postgres).await?;
            let scope = backfill::BackfillScope { from_ms: from, to_ms: to, organization_id: organization };
            let report = backfill::backfill(&sink, &clickhouse, &scope).await?;
            let s = &report.summary;
            println!(
                "backfill: {} first record(s) read; identities new {}, replaced {}, re-judged {}, unchanged {}; rows written {}, removed {}; refused (outside PostgreSQL's time range) {}",
                report.read, s.new_identities, s.replaced, s.rejudged, s.already_stored, s.written, s.removed, s.refused
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { from, to, organization, postgres_url, billable_codes, clickhouse } => {
            let pool = sqlx::PgPool::connect(&postgres_url).await?;
            let scope = VerifyScope { from_ms: from, to_ms: to, organization_id: organization, billable_codes };
            let report = verify::verify(&pool, &clickhouse, &scope).await?;
            for difference in &report.differences {
                println!("{difference}");
            }
            println!("verify: {} bucket(s) compared, {} difference(s)", report.buckets, report.differences.len());
            Ok(if report.differences.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Catches two flattened settings structs claiming the same argument id.
        Cli::command().debug_assert();
    }
}
