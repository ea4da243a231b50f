//! Limits applied before anything is published: per organization, and on the gateway as a whole.

pub mod in_flight;
pub mod rate;
