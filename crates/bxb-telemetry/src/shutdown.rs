//! The shutdown signal every binary stops on: SIGTERM (Kubernetes, `docker stop`) or Ctrl-C.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or Ctrl-C; pass it to the library's `run`. Must be
/// called inside the Tokio runtime. The SIGTERM handler is in place when it returns, so a
/// signal that arrives right after start is not lost.
pub fn on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    #[cfg(unix)]
    let terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            // Without it a pod would only stop when killed at the end of its grace period.
            tracing::error!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            None
        }
    };
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        cancel.cancel();
    });
    shutdown
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let shutdown = super::on_signal();
        assert!(!shutdown.is_cancelled());
        let status = std::process::Command::new("kill").arg("-TERM").arg(std::process::id().to_string()).status().unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled()).await.expect("cancelled on SIGTERM");
    }
}
