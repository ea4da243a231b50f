//! Benchmarks of the bxb pipeline (`./dev/bench`, issue 8).
//!
//! Every figure is measured next to the raw limit of the same service in the same run, so the
//! ratio stays meaningful on a shared, noisy machine:
//!
//! ```text
//! load generator ──HTTP──▶ gateway ──▶ Kafka       vs  raw rdkafka producer ──▶ Kafka
//! Kafka backlog ──▶ consumer-clickhouse ──▶ CH     vs  clickhouse crate inserts ──▶ CH
//! Kafka backlog ──▶ consumer-postgres ──▶ PG       vs  binary COPY ──▶ PG
//! gateway 202 ──▶ … ──▶ row visible in CH and PG   (probe events, polled)
//! hostile bodies of the body limit ──▶ gateway      (its peak RSS, its largest answer)
//! ```
//!
//! The binaries run as processes (`target/release/*`) with their own port, topic, group and
//! database, so peak RSS is read per binary from `/proc/<pid>/status`. Nothing of the dev stack
//! (topic `events`, databases `bxb`, groups `bxb-*`) is touched; a run removes what it created.
//! Starting, measuring and stopping those processes, the run's names and its topics, groups and
//! databases are `bxb-harness`'s, shared with `./dev/chaos`; this crate holds the load, the
//! baselines and the report.

pub mod drain;
pub mod e2e;
pub mod events;
pub mod gateway;
pub mod hostile;
pub mod raw;
pub mod report;
pub mod run;
pub mod settings;
pub mod stats;

pub use report::Report;
pub use run::run;
pub use settings::BenchArgs;
