//! An event object split into its fields without interpreting them: each known field is kept as
//! the raw JSON text borrowed from the request body, so nothing is copied until it is checked.
//! What it keeps is bounded whatever the object holds: 8 fields, at most
//! [`MAX_LISTED_PROBLEMS`] unknown names (more could never be listed) and a count of the rest.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::problems::{MAX_FIELD_CHARS, MAX_LISTED_PROBLEMS};

/// The field names of an event object, in the order problems are reported.
pub const FIELDS: [&str; 8] =
    ["organization_id", "transaction_id", "external_customer_id", "code", "timestamp", "properties", "value", "decimal_value"];

#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// Indexed like [`FIELDS`].
    pub fields: [Option<&'a RawValue>; FIELDS.len()],
    /// The first names that are not event fields (a typo would otherwise silently drop data),
    /// cut to the characters a problem echoes; at most [`MAX_LISTED_PROBLEMS`].
    pub unknown: Vec<String>,
    /// Every name that is not an event field, kept or not.
    pub unknown_count: usize,
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
    /// The name, when it is still to be kept.
    Unknown(Option<String>),
}

/// Reads a member name; an unknown one is copied only while `keep_unknown`.
struct KeySeed {
    keep_unknown: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(match FIELDS.iter().position(|f| *f == name) {
            Some(i) => Key::Known(i),
            None => Key::Unknown(self.keep_unknown.then(|| name.chars().take(MAX_FIELD_CHARS).collect())),
        })
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
                while let Some(key) = map.next_key_seed(KeySeed { keep_unknown: event.unknown.len() < MAX_LISTED_PROBLEMS })? {
                    match key {
                        Key::Known(i) => {
                            let value = map.next_value::<&'de RawValue>()?;
                            if event.fields[i].replace(value).is_some() && !event.duplicate.contains(&FIELDS[i]) {
                                event.duplicate.push(FIELDS[i]);
                            }
                        }
                        Key::Unknown(name) => {
                            map.next_value::<IgnoredAny>()?;
                            event.unknown.extend(name);
                            event.unknown_count += 1;
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
        assert_eq!(event.unknown_count, 1);
        assert!(event.get("value").is_none());
    }

    #[test]
    fn unknown_names_are_kept_up_to_what_can_be_listed_and_all_counted() {
        let members: Vec<String> = (0..1_000).map(|i| format!("\"n{i}{}\":0", "x".repeat(100))).collect();
        let text = format!("{{{},\"code\":\"a\"}}", members.join(","));
        let event: RawEvent<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!((event.unknown.len(), event.unknown_count), (MAX_LISTED_PROBLEMS, 1_000));
        assert_eq!(event.unknown[0].chars().count(), MAX_FIELD_CHARS);
        assert_eq!(event.get("code").unwrap().get(), r#""a""#);
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for text in ["[]", "1", r#""x""#, "null"] {
            assert!(serde_json::from_str::<RawEvent<'_>>(text).is_err(), "{text}");
        }
    }
}
