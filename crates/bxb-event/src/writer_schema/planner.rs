//! Planning a writer schema: the encodings of the event fields, and how to skip every other
//! field, each named type planned once, recursion and deep nesting refused.

use std::collections::HashMap;

use apache_avro::schema::{InnerDecimalSchema, Name, NamesRef, RecordSchema, UuidSchema};
use apache_avro::Schema;

use super::{incompatible, IncompatibleSchema, Skip, SkipId, Source, Target, Wire, MAX_NESTING};

pub(super) struct Planner<'s> {
    pub names: &'s NamesRef<'s>,
    pub skips: Vec<Skip>,
    /// Named types already planned, with their nesting depth.
    pub compiled: HashMap<Name, (SkipId, usize)>,
    /// The named types being planned, outermost first: a reference to one of them is recursion.
    pub in_progress: Vec<Name>,
}

impl<'s> Planner<'s> {
    pub fn source(&self, target: Target, schema: &Schema, namespace: Option<&str>) -> Result<Source, IncompatibleSchema> {
        let refuse = |what: &str| incompatible(format!("field {} cannot be read from {what}", target.name()));
        let schema = self.dereference(schema, namespace).map_err(|e| refuse(&e.0))?;
        match schema {
            Schema::Union(union) => {
                let mut wires = Vec::with_capacity(union.variants().len());
                for branch in union.variants() {
                    let branch = self.dereference(branch, namespace).map_err(|e| refuse(&e.0))?;
                    match wire(target, branch) {
                        Some(wire) => wires.push(wire),
                        None => return Err(refuse(&format!("a union with {}", kind(branch)))),
                    }
                }
                Ok(Source::Union(wires))
            }
            other => wire(target, other).map(Source::One).ok_or_else(|| refuse(&kind(other))),
        }
    }

    fn dereference<'a>(&'a self, schema: &'a Schema, namespace: Option<&str>) -> Result<&'a Schema, IncompatibleSchema> {
        match schema {
            Schema::Ref { name } => {
                let name = name.fully_qualified_name(namespace);
                self.names.get(name.as_ref()).copied().ok_or_else(|| incompatible(format!("an unknown type {}", name.fullname(None))))
            }
            other => Ok(other),
        }
    }

    /// Plans skipping a value of `schema`, `depth` levels deep; returns its id and the nesting
    /// depth of its type.
    pub fn skip(&mut self, schema: &Schema, namespace: Option<&str>, depth: usize) -> Result<(SkipId, usize), IncompatibleSchema> {
        if depth > MAX_NESTING {
            return Err(incompatible(format!("its type nests records, arrays, maps and unions more than {MAX_NESTING} deep")));
        }
        let (skip, nesting) = match schema {
            Schema::Ref { name } => return self.named(name.fully_qualified_name(namespace).into_owned(), namespace, depth),
            Schema::Record(RecordSchema { name, .. }) => {
                return self.named(name.fully_qualified_name(namespace).into_owned(), namespace, depth)
            }
            Schema::Enum(e) => {
                let name = e.name.fully_qualified_name(namespace).into_owned();
                return self.leaf_named(name, Skip::Enum(e.symbols.len()));
            }
            Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
                let name = f.name.fully_qualified_name(namespace).into_owned();
                return self.leaf_named(name, Skip::Fixed(f.size));
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => (Skip::Bytes, 0),
                InnerDecimalSchema::Fixed(f) => {
                    let name = f.name.fully_qualified_name(namespace).into_owned();
                    return self.leaf_named(name, Skip::Fixed(f.size));
                }
            },
            Schema::Null => (Skip::Null, 0),
            Schema::Boolean => (Skip::Boolean, 0),
            Schema::Int | Schema::Date | Schema::TimeMillis => (Skip::Int, 0),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => (Skip::Long, 0),
            Schema::Float => (Skip::Float, 0),
            Schema::Double => (Skip::Double, 0),
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => (Skip::Bytes, 0),
            Schema::String | Schema::Uuid(UuidSchema::String) => (Skip::Str, 0),
            Schema::Array(array) => {
                let (items, nesting) = self.skip(&array.items, namespace, depth + 1)?;
                (Skip::Array(items), nesting + 1)
            }
            Schema::Map(map) => {
                let (values, nesting) = self.skip(&map.types, namespace, depth + 1)?;
                (Skip::Map(values), nesting + 1)
            }
            Schema::Union(union) => {
                let mut branches = Vec::with_capacity(union.variants().len());
                let mut deepest = 0;
                for branch in union.variants() {
                    let (id, nesting) = self.skip(branch, namespace, depth + 1)?;
                    branches.push(id);
                    deepest = deepest.max(nesting);
                }
                (Skip::Union(branches), deepest + 1)
            }
        };
        self.check_nesting(depth, nesting)?;
        Ok((self.push(skip), nesting))
    }

    /// A record, planned once however often it is referred to; a reference from inside itself
    /// is refused.
    fn named(&mut self, name: Name, namespace: Option<&str>, depth: usize) -> Result<(SkipId, usize), IncompatibleSchema> {
        if self.in_progress.contains(&name) {
            return Err(incompatible(format!("the type {} refers to itself: recursive types are not read", name.fullname(None))));
        }
        if let Some(&(id, nesting)) = self.compiled.get(&name) {
            self.check_nesting(depth, nesting)?;
            return Ok((id, nesting));
        }
        let definition = *self.names.get(&name).ok_or_else(|| incompatible(format!("an unknown type {}", name.fullname(None))))?;
        let Schema::Record(record) = definition else {
            // Enums and fixed types are leaves; their definition is planned where it appears.
            return self.skip(definition, namespace, depth);
        };
        let inner_namespace = name.namespace().map(str::to_owned);
        self.in_progress.push(name.clone());
        let mut fields = Vec::with_capacity(record.fields.len());
        let mut deepest = 0;
        for field in &record.fields {
            let (id, nesting) = self.skip(&field.schema, inner_namespace.as_deref(), depth + 1)?;
            fields.push(id);
            deepest = deepest.max(nesting);
        }
        self.in_progress.pop();
        let nesting = deepest + 1;
        self.check_nesting(depth, nesting)?;
        let id = self.push(Skip::Record(fields));
        self.compiled.insert(name, (id, nesting));
        Ok((id, nesting))
    }

    fn leaf_named(&mut self, name: Name, skip: Skip) -> Result<(SkipId, usize), IncompatibleSchema> {
        if let Some(&(id, nesting)) = self.compiled.get(&name) {
            return Ok((id, nesting));
        }
        let id = self.push(skip);
        self.compiled.insert(name, (id, 0));
        Ok((id, 0))
    }

    fn check_nesting(&self, depth: usize, nesting: usize) -> Result<(), IncompatibleSchema> {
        if depth + nesting > MAX_NESTING {
            return Err(incompatible(format!("its type nests records, arrays, maps and unions more than {MAX_NESTING} deep")));
        }
        Ok(())
    }

    fn push(&mut self, skip: Skip) -> SkipId {
        self.skips.push(skip);
        self.skips.len() - 1
    }
}

/// The encoding of an event field's value in `schema`, if the field can take it.
fn wire(target: Target, schema: &Schema) -> Option<Wire> {
    let wire = match (target, schema) {
        (_, Schema::Null) => Wire::Null,
        (_, Schema::String | Schema::Uuid(UuidSchema::String)) => Wire::Str,
        (_, Schema::Bytes) => Wire::Str,
        (Target::Timestamp, Schema::TimestampMillis) => Wire::Long,
        (_, Schema::Long) => Wire::Long,
        (_, Schema::Int) => Wire::Int,
        (_, Schema::Float) => Wire::Float,
        (_, Schema::Double) => Wire::Double,
        _ => return None,
    };
    target.takes(wire).then_some(wire)
}

/// How a schema is named in a refusal.
pub(super) fn kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("the record {}", r.name.fullname(None)),
        Schema::Ref { name } => format!("the type {}", name.fullname(None)),
        Schema::Union(_) => "a union".to_owned(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}
