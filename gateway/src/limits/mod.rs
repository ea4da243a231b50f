//! Per-organization limits applied before anything is published.

pub mod rate;
