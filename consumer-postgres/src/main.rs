use anyhow::Context;
use bxb_consumer_postgres::{migrate, run, Config};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

/// Writes the billing-critical subset of bxb events to PostgreSQL.
#[derive(Parser)]
#[command(name = "consumer-postgres", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    telemetry: bxb_telemetry::TelemetryArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the PostgreSQL migrations and exit (for a deployment Job).
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = bxb_telemetry::init("consumer-postgres", &cli.telemetry)?;
    if let Some(Command::Migrate) = cli.command {
        migrate(&cli.config.postgres).await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let listener = TcpListener::bind(&cli.config.consumer.listen_addr)
        .await
        .with_context(|| format!("binding BXB_LISTEN_ADDR {}", cli.config.consumer.listen_addr))?;
    run(cli.config, listener, bxb_telemetry::shutdown::on_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Flattened argument groups (runtime, Kafka, registry, PostgreSQL, telemetry) must not
        // reuse an argument id.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["consumer-postgres", "migrate"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
    }
}
