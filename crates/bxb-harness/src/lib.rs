//! The dev-only harness of `./dev/bench` (`bench/`) and `./dev/chaos` (`chaos/`): what both need
//! to run the pipeline's binaries as processes against the shared services, written once, so
//! that neither tool depends on the other. Never deployed.
//!
//! ```text
//! bench / chaos ──▶ bxb-harness ──starts, measures, stops──▶ gateway, consumer-clickhouse,
//!                        │                                   consumer-postgres, bxbctl
//!                        │        (own port, topic, group, database; no BXB_* of the caller)
//!                        └──creates, watches, removes──▶ the run's topics and groups (Kafka),
//!                                                        its databases (PostgreSQL, ClickHouse)
//! ```
//!
//! - [`stack`]: where the shared services are ([`StackArgs`], defaulting to the dev stack).
//! - [`names`]: the topic, group and database names a run owns ([`RunNames`]).
//! - [`process`], [`measure`]: a binary as a process ([`Running`]), its peak RSS, CPU time and
//!   metrics.
//! - [`consumer`], [`gateway`], [`http`]: the settings of each binary under test, its API keys,
//!   the HTTP client of the load.
//! - [`services`]: topics, group positions, databases, and the cleanup of what a run created.

pub mod consumer;
pub mod error;
pub mod gateway;
pub mod http;
pub mod measure;
pub mod names;
pub mod process;
pub mod services;
pub mod stack;

pub use consumer::{ConsumerKind, ConsumerSetup};
pub use error::{Error, Result};
pub use gateway::{ApiKey, GatewayClient};
pub use names::RunNames;
pub use process::Running;
pub use stack::StackArgs;
