//! The record key must be the event's organization. The key is part of the producer contract: it
//! places an organization's events in one partition (their order), and it is what a Kafka ACL,
//! an audit or a compaction sees. A record whose key says one organization and whose payload
//! another is poison (`key_mismatch`), whichever of the two is wrong.

use bxb_event::Event;

/// How much of a wrong key the dead-letter error quotes.
const MAX_QUOTED_KEY_BYTES: usize = 64;

/// Why the key of a record carrying `event` is not the one the contract requires: the
/// organization's UUID in canonical form (lowercase, hyphenated), as `Event::kafka_key` writes.
pub(crate) fn key_mismatch(key: Option<&[u8]>, event: &Event) -> Option<String> {
    let mut expected = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let expected = event.organization_id.hyphenated().encode_lower(&mut expected);
    match key {
        Some(key) if key == expected.as_bytes() => None,
        Some(key) => {
            let quoted = String::from_utf8_lossy(&key[..key.len().min(MAX_QUOTED_KEY_BYTES)]);
            let cut = if key.len() > MAX_QUOTED_KEY_BYTES { "..." } else { "" };
            Some(format!("the record key {quoted:?}{cut} is not the event's organization_id {expected}"))
        }
        None => Some(format!("the record has no key; it must be the event's organization_id {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            organization_id: uuid::Uuid::from_u128(0x0b9a_0000_0000_4000_8000_0000_0000_00ff),
            transaction_id: "t".into(),
            external_customer_id: "c".into(),
            code: "x".into(),
            timestamp_ms: 0,
            properties: "{}".into(),
            value: None,
            decimal_value: None,
        }
    }

    #[test]
    fn only_the_canonical_organization_is_the_key() {
        let event = event();
        assert_eq!(key_mismatch(Some(event.kafka_key().as_bytes()), &event), None);
        for wrong in [
            event.kafka_key().to_uppercase(),
            event.organization_id.simple().to_string(),
            format!("{{{}}}", event.kafka_key()),
            uuid::Uuid::nil().to_string(),
        ] {
            let problem = key_mismatch(Some(wrong.as_bytes()), &event).expect("a mismatch");
            assert!(problem.contains(&event.kafka_key()), "{problem}");
        }
        assert!(key_mismatch(Some(event.organization_id.as_bytes()), &event).is_some(), "the 16 raw bytes are not the key");
        assert!(key_mismatch(None, &event).unwrap().contains("no key"));
    }

    #[test]
    fn a_long_key_is_quoted_in_part() {
        let problem = key_mismatch(Some(&[b'k'; 10_000]), &event()).unwrap();
        assert!(problem.len() < 200, "{problem}");
    }
}
