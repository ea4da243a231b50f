//! The batch object `{"events": [ ... ]}` split into its events without interpreting them, with
//! memory bounded by the event limit: the first `keep` elements are kept (as raw JSON text
//! borrowed from the body), the rest only counted, so a body of millions of tiny elements costs
//! no more than one at the limit. Member names are never echoed in errors.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The elements of `events`: at most the `keep` first, and how many there are in all.
pub struct Batch<'a> {
    pub events: Vec<&'a RawValue>,
    pub count: usize,
}

/// Reads `body` as `{"events": [ ... ]}`, keeping at most `keep` elements.
pub fn read(body: &[u8], keep: usize) -> Result<Batch<'_>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let batch = BatchSeed { keep }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(batch)
}

struct BatchSeed {
    keep: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Batch<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Batch<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Batch<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"events": [ ... ]}"#)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Batch<'de>, M::Error> {
        let mut batch = None;
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Events if batch.is_none() => batch = Some(map.next_value_seed(EventsSeed { keep: self.keep })?),
                Member::Events => return Err(de::Error::duplicate_field("events")),
                Member::Other => return Err(de::Error::custom(r#"the batch object may only hold "events""#)),
            }
        }
        batch.ok_or_else(|| de::Error::missing_field("events"))
    }
}

/// A member name of the batch object, compared and forgotten.
enum Member {
    Events,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(if name == "events" { Member::Events } else { Member::Other })
            }
        }
        deserializer.deserialize_str(MemberVisitor)
    }
}

struct EventsSeed {
    keep: usize,
}

impl<'de> DeserializeSeed<'de> for EventsSeed {
    type Value = Batch<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Batch<'de>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed {
    type Value = Batch<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Batch<'de>, S::Error> {
        let mut events = Vec::new();
        while events.len() < self.keep {
            match seq.next_element::<&'de RawValue>()? {
                Some(event) => events.push(event),
                None => return Ok(Batch { count: events.len(), events }),
            }
        }
        // Read as raw values all the same, only not kept: unlike `IgnoredAny`, that checks
        // their strings are UTF-8, so whether a body is JSON does not depend on the limit.
        let mut count = events.len();
        while seq.next_element::<&'de RawValue>()?.is_some() {
            count += 1;
        }
        Ok(Batch { events, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_past_the_limit_are_counted_not_kept() {
        let body = format!("{{\"events\":[{}0]}}", "{\"a\":[1]},".repeat(10_000));
        let batch = read(body.as_bytes(), 3).unwrap();
        assert_eq!((batch.events.len(), batch.count), (3, 10_001));
        assert_eq!(batch.events[0].get(), r#"{"a":[1]}"#);
        let batch = read(br#" {"events": [1, "x"]} "#, 3).unwrap();
        assert_eq!((batch.events.len(), batch.count), (2, 2));
        // Found by the property tests: past the limit too, a string that is not UTF-8 is no JSON.
        assert!(read(b"{\"events\":[1,1,\"\xff\"]}", 1).is_err());
    }

    #[test]
    fn anything_else_is_refused_without_echoing_the_body() {
        let long = "k".repeat(10_000);
        for body in
            [format!("{{\"{long}\":[]}}"), r#"{"events":[],"events":[]}"#.into(), "{}".into(), "[]".into(), r#"{"events":[1]} x"#.into()]
        {
            let error = read(body.as_bytes(), 3).err().unwrap_or_else(|| panic!("{body:.40} was read"));
            assert!(error.to_string().len() < 200, "{error}");
        }
    }
}
