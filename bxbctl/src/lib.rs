//! `bxbctl`, the operator's tool for the pipeline.
//!
//! - [`replay`]: move a consumer group's committed offsets (dry run by default), refusing while the
//!   group has live members. Because both consumers write idempotently, re-reading events never
//!   counts them twice: replay is just an offset reset.
//! - [`produce`]: publish events from JSON lines straight to Kafka through the schema registry,
//!   the way a direct producer does (an example of docs/producer-contract.md): parsed by the
//!   gateway's parser (`bxb_event::ingest`) and published by its publisher (`bxb_publish`).
//! - [`migrate`]: apply every store's schema (PostgreSQL migrations, ClickHouse DDL) from
//!   `bxb-schemas`: the one migration entry point, run as the schema owner before the
//!   components start.
//! - [`backfill`]: bring PostgreSQL to exactly the billable projection of ClickHouse over a time
//!   range, by the identity rule (after a metric was made billable retroactively, or the upgrade
//!   to the rule).
//! - [`verify`]: compare the billable events of PostgreSQL with the same subset of ClickHouse per
//!   organization, code and hour — the check to run after an incident.

pub mod backfill;
pub mod migrate;
pub mod produce;
pub mod replay;
pub mod verify;
