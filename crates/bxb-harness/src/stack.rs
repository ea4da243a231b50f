//! Where the shared services are: the same flags and variables as the binaries' own settings,
//! defaulting to the dev stack (`./dev/bench` and `./dev/chaos` fill them from `.dev/env`).

use bxb_consumer_clickhouse::DEFAULT_CLICKHOUSE_URL;
use bxb_consumer_postgres::DEFAULT_POSTGRES_URL;
use bxb_event::registry::DEFAULT_REGISTRY_URL;
use bxb_kafka::DEFAULT_BROKERS;

#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    #[arg(long = "kafka-brokers", env = "BXB_KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub kafka_brokers: String,
    #[arg(long = "schema-registry-url", env = "BXB_SCHEMA_REGISTRY_URL", default_value = DEFAULT_REGISTRY_URL)]
    pub registry_url: String,
    /// An existing database a run connects to in order to create and drop its own databases.
    #[arg(long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true, default_value = DEFAULT_POSTGRES_URL)]
    pub postgres_url: String,
    #[arg(long = "clickhouse-url", env = "BXB_CLICKHOUSE_URL", default_value = DEFAULT_CLICKHOUSE_URL)]
    pub clickhouse_url: String,
}

impl StackArgs {
    /// The URL of the run's own PostgreSQL `database` on the same server, with the same
    /// credentials and options.
    pub fn postgres_url_of(&self, database: &str) -> String {
        postgres_url_for(&self.postgres_url, database)
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

/// `StackArgs` from a command line (`arguments` after the program name), for unit tests.
#[cfg(test)]
pub(crate) fn parse(arguments: &[&str]) -> StackArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        stack: StackArgs,
    }
    <Cli as clap::Parser>::parse_from(std::iter::once("test").chain(arguments.iter().copied())).stack
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
    fn flags_override_the_dev_stack_defaults() {
        let stack = parse(&["--kafka-brokers", "127.0.0.1:1", "--postgres-url", "postgres://u@h:2/bxb"]);
        assert_eq!(stack.kafka_brokers, "127.0.0.1:1");
        assert_eq!(stack.postgres_url_of("run"), "postgres://u@h:2/run");
    }
}
