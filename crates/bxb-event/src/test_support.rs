//! Events for tests (feature `test-support`, and this crate's own tests): one valid event with
//! a plain value in every field, changed where a test cares with struct update syntax:
//!
//! ```
//! # use bxb_event::{test_support, Event};
//! let retry = Event { transaction_id: "tx-9".into(), value: Some(2.0), ..test_support::event() };
//! assert!(bxb_event::validate::validate(&retry).is_ok());
//! ```
//!
//! One builder instead of a hand-built `Event` per test: a field added to [`Event`] is then added
//! here once.

use uuid::Uuid;

use crate::Event;

/// The organization of [`event`].
pub const ORGANIZATION: Uuid = Uuid::from_u128(0x0b0b_0000_0000_4000_8000_0000_0000_0001);

/// 2023-11-14T22:13:20Z: a fixed time, so fixtures compare byte for byte.
pub const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// A valid event: organization [`ORGANIZATION`], transaction `tx-1`, customer `customer-1`, code
/// `api_calls`, at [`TIMESTAMP_MS`], empty properties, no value and no decimal value.
pub fn event() -> Event {
    Event {
        organization_id: ORGANIZATION,
        transaction_id: "tx-1".into(),
        external_customer_id: "customer-1".into(),
        code: "api_calls".into(),
        timestamp_ms: TIMESTAMP_MS,
        properties: "{}".into(),
        value: None,
        decimal_value: None,
    }
}

/// [`event`] of `organization_id` with `transaction_id`: the identity most tests vary.
pub fn event_of(organization_id: Uuid, transaction_id: impl Into<String>) -> Event {
    Event { organization_id, transaction_id: transaction_id.into(), ..event() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_event_is_valid() {
        crate::validate::validate(&super::event()).unwrap();
    }
}
