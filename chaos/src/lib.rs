//! The chaos run of the bxb pipeline (`./dev/chaos`, issue 9): does the pipeline lose or
//! double count anything when its processes die and its broker goes away?
//!
//! ```text
//! load generator ──HTTP, retries until 202──▶ gateway ──▶ Kafka (stopped and started once)
//!                                                            │
//!                  consumer-clickhouse (kill -9 ×3) ◀────────┼────────▶ consumer-postgres (kill -9 ×3)
//!                                                            │
//!   catch up → read the topic back (the truth) → count both stores → replay both groups from
//!   the earliest offset → count again
//! ```
//!
//! The load generator knows every identity the gateway accepted (a `202`) and every version it
//! sent of each; the topic, read back by a reader of this crate, says which version came first
//! (lowest broker append time, partition, offset). Per organization, code and hour ClickHouse's
//! billing query must count and sum exactly those first versions, PostgreSQL exactly the
//! billable ones, once each, and `bxbctl verify` must find the two stores in agreement.
//! Everything runs as processes on
//! the local stack with the run's own topic, groups and databases, started, killed and removed
//! through `bxb-harness` (shared with `./dev/bench`); this crate holds the plan, the load, the
//! faults and the counts.

pub mod consumers;
pub mod faults;
pub mod load;
pub mod plan;
pub mod report;
pub mod run;
pub mod settings;
pub mod stores;
pub mod tally;
pub mod topic;
pub mod truth;

pub use report::Report;
pub use settings::ChaosArgs;
