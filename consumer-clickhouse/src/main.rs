use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bxb_consumer_clickhouse::Config::parse();
    let _telemetry = bxb_telemetry::init("consumer-clickhouse", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(&config.consumer.listen_addr)
        .await
        .with_context(|| format!("binding BXB_LISTEN_ADDR {}", config.consumer.listen_addr))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    bxb_consumer_clickhouse::run(config, listener, shutdown).await?;
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C: finish the current batch, commit, leave the group.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
