//! The harness's one error type: every failure names the binary, service or object it concerns,
//! so a failed bench phase or chaos run says what to look at.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No port on 127.0.0.1 could be bound.
    #[error("finding a free port on 127.0.0.1")]
    FreePort(#[source] std::io::Error),
    /// A binary's log file (or another file of the run) could not be created.
    #[error("creating {}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    /// A binary under test could not be started (missing, not executable).
    #[error("starting {}", path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    /// A started binary exited before its `/readyz` answered 200.
    #[error("{name} exited during start-up ({status}); log: {}", log.display())]
    ExitedDuringStartUp { name: String, status: ExitStatus, log: PathBuf },
    /// A started binary's `/readyz` did not answer 200 in time.
    #[error("{name} not ready after {timeout:?}; log: {}", log.display())]
    NotReady { name: String, timeout: Duration, log: PathBuf },
    /// A running binary could not be signalled, waited for or killed.
    #[error("{what} {name}")]
    Signal { what: &'static str, name: String, source: std::io::Error },
    /// `kill` exited with an error (the process was already gone, or not ours).
    #[error("kill -{signal} {pid} exited with {status}")]
    KillFailed { signal: &'static str, pid: u32, status: ExitStatus },
    /// A binary run to completion (`gateway api-key create`, `bxbctl ...`) exited with an error.
    #[error("{binary} {args:?} failed: {stderr}")]
    CommandFailed { binary: String, args: Vec<String>, stderr: String },
    /// A binary run to completion printed something that is not UTF-8.
    #[error("{binary} printed something that is not UTF-8")]
    NotUtf8 { binary: String },
    /// A Kafka client could not be made or an operation on the broker failed.
    #[error("Kafka: {what}")]
    Kafka { what: String, source: rdkafka::error::KafkaError },
    /// The stack's Kafka settings cannot make a client.
    #[error("Kafka settings")]
    KafkaSettings(#[from] bxb_kafka::KafkaConfigError),
    /// A blocking Kafka query's task panicked or was cancelled.
    #[error("a blocking Kafka query did not finish")]
    Blocking(#[from] tokio::task::JoinError),
    /// A statement on the PostgreSQL server failed.
    #[error("PostgreSQL: {what}")]
    Postgres { what: String, source: sqlx::Error },
    /// An HTTP client could not be built.
    #[error("building an HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
