//! An event object split into its fields without interpreting them: each known field is kept as
//! the raw JSON text borrowed from the request body, so nothing is copied until it is checked.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The field names of an event object, in the order problems are reported.
pub const FIELDS: [&str; 8] =
    ["organization_id", "transaction_id", "external_customer_id", "code", "timestamp", "properties", "value", "decimal_value"];

/// Unknown field names are echoed in errors, cut to this many characters.
const MAX_ECHOED_NAME_CHARS: usize = 64;

#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// Indexed like [`FIELDS`].
    pub fields: [Option<&'a RawValue>; FIELDS.len()],
    /// Names that are not event fields (a typo would otherwise silently drop data).
    pub unknown: Vec<String>,
    /// Known names given more than once.
    pub duplicate: Vec<&'static str>,
}

impl<'a> RawEvent<'a> {
    /// The raw value of `name`, with JSON `null` read as absent.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        let i = FIELDS.iter().position(|f| *f == name).expect("a known field name");
        self.fields[i].filter(|raw| raw.get() != "null")
    }
}

enum Key {
    Known(usize),
    Unknown(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match FIELDS.iter().position(|f| *f == name) {
                    Some(i) => Key::Known(i),
                    None => Key::Unknown(name.chars().take(MAX_ECHOED_NAME_CHARS).collect()),
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = RawEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawEvent<'de>, M::Error> {
                let mut event = RawEvent::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Known(i) => {
                            let value = map.next_value::<&'de RawValue>()?;
                            if event.fields[i].replace(value).is_some() && !event.duplicate.contains(&FIELDS[i]) {
                                event.duplicate.push(FIELDS[i]);
                            }
                        }
                        Key::Unknown(name) => {
                            map.next_value::<IgnoredAny>()?;
                            event.unknown.push(name);
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_raw_text_and_notes_unknown_and_duplicate_fields() {
        let text = r#"{"code":"a","properties": {"x" : [1, 2]},"cod\u0065":"b","extra":1,"value":null}"#;
        let event: RawEvent<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(event.get("properties").unwrap().get(), r#"{"x" : [1, 2]}"#);
        assert_eq!(event.get("code").unwrap().get(), r#""b""#);
        assert_eq!(event.duplicate, ["code"]);
        assert_eq!(event.unknown, ["extra"]);
        assert!(event.get("value").is_none());
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for text in ["[]", "1", r#""x""#, "null"] {
            assert!(serde_json::from_str::<RawEvent<'_>>(text).is_err(), "{text}");
        }
    }
}
