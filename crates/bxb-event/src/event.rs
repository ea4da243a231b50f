use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Decimal;

/// One usage event, as it travels through the pipeline.
///
/// Identity is `(organization_id, transaction_id)`: every store counts an identity once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The organization that owns the event; also the Kafka record key.
    pub organization_id: Uuid,
    /// The client's idempotency key.
    pub transaction_id: String,
    /// The organization's own id of the billed customer.
    pub external_customer_id: String,
    /// The metric code.
    pub code: String,
    /// When the usage happened, in milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// A JSON object, kept as its serialised text so it is carried byte for byte.
    pub properties: String,
    /// Optional finite number.
    pub value: Option<f64>,
    /// Optional exact decimal.
    pub decimal_value: Option<Decimal>,
}

impl Event {
    /// The Kafka record key: the organization UUID in canonical form.
    pub fn kafka_key(&self) -> String {
        self.organization_id.hyphenated().to_string()
    }
}
