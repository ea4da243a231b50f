//! The record values of one publish call in one buffer.

use bxb_event::registry::EventEncoder;
use bxb_event::Event;

/// The record values of a request in one buffer: one allocation per request, not per event.
/// librdkafka copies each value when it is enqueued, so the buffer lives only until then.
pub struct EncodedBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedBatch {
    /// Every event in the Confluent wire format of `encoder`, in order.
    pub fn encode(encoder: &EventEncoder, events: &[Event]) -> Self {
        let mut scratch = Vec::with_capacity(256);
        let mut bytes = Vec::with_capacity(events.len() * 256);
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            encoder.encode_into(event, &mut scratch);
            bytes.extend_from_slice(&scratch);
            ends.push(bytes.len());
        }
        Self { bytes, ends }
    }

    /// The values, in the order of the events.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.bytes[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bxb_event::test_support;

    #[test]
    fn a_batch_holds_exactly_the_encoded_events() {
        let event =
            |tx: &str, properties: &str| Event { transaction_id: tx.into(), properties: properties.into(), ..test_support::event() };
        let events = [event("a", "{}"), event("bb", &format!(r#"{{"x":"{}"}}"#, "y".repeat(1_000))), event("c", "{}")];
        let encoder = EventEncoder::new(3);
        let batch = EncodedBatch::encode(&encoder, &events);
        let encoded: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(encoded.len(), 3);
        for (bytes, event) in encoded.iter().zip(&events) {
            assert_eq!(*bytes, encoder.encode(event).as_slice());
        }
    }
}
