//! `gateway`: serves the ingestion API, or manages the API key file (`gateway api-key ...`).

use clap::Parser;

use bxb_gateway::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ApiKey(command)) => cli::run_api_key_command(command, &mut std::io::stdout().lock()),
        None => {
            let config = cli.serve;
            let _telemetry = bxb_telemetry::init("bxb-gateway", &config.telemetry)?;
            let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
            bxb_gateway::run(config, listener, bxb_telemetry::shutdown::on_signal()).await
        }
    }
}
