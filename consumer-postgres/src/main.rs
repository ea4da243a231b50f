use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bxb_consumer_postgres::Config::parse();
    let _telemetry = bxb_telemetry::init("consumer-postgres", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(&config.consumer.listen_addr)
        .await
        .with_context(|| format!("binding BXB_LISTEN_ADDR {}", config.consumer.listen_addr))?;
    bxb_consumer_postgres::run(config, listener, bxb_telemetry::shutdown::on_signal()).await?;
    Ok(())
}
