//! Reading one datum with a [`WriterPlan`]: event fields into the event, other fields skipped,
//! every value paid for from the datum's budget.

use uuid::Uuid;

use super::{Skip, SkipId, Source, Step, Target, Wire, WriterPlan, BUDGET_BASE_STEPS, BUDGET_STEPS_PER_BYTE};
use crate::avro::{read_long, read_str, ReadError};
use crate::validate::FieldError;
use crate::{Decimal, Event};

/// Reads an event from `datum`, written with the writer schema `plan` was made of.
pub fn read(plan: &WriterPlan, datum: &[u8]) -> Result<Event, ReadError> {
    let budget = datum.len().saturating_mul(BUDGET_STEPS_PER_BYTE).saturating_add(BUDGET_BASE_STEPS);
    let mut input = Input { rest: datum, steps_left: budget, budget, datum_len: datum.len() };
    let mut fields = Fields::default();
    for step in &plan.steps {
        input.spend()?;
        match step {
            Step::Read(target, source) => {
                let value = input.value(source)?;
                fields.set(*target, value)?;
            }
            Step::Skip(id) => input.skip(plan, *id)?,
        }
    }
    if !input.rest.is_empty() {
        return Err(malformed(format!("{} bytes left after the datum", input.rest.len())));
    }
    fields.into_event()
}

fn malformed(message: impl Into<String>) -> ReadError {
    ReadError::Malformed(message.into())
}

struct Input<'a> {
    rest: &'a [u8],
    steps_left: usize,
    budget: usize,
    datum_len: usize,
}

/// A value of an event field, as read.
enum Scalar<'a> {
    Null,
    Str(&'a str),
    Long(i64),
    Double(f64),
}

impl<'a> Input<'a> {
    fn spend(&mut self) -> Result<(), ReadError> {
        match self.steps_left.checked_sub(1) {
            Some(left) => {
                self.steps_left = left;
                Ok(())
            }
            None => Err(ReadError::OverBudget(format!(
                "reading the datum takes more than {} steps, its budget ({BUDGET_STEPS_PER_BYTE} per byte of its {} bytes, plus {BUDGET_BASE_STEPS})",
                self.budget, self.datum_len
            ))),
        }
    }

    fn value(&mut self, source: &Source) -> Result<Scalar<'a>, ReadError> {
        let wire = match source {
            Source::One(wire) => *wire,
            Source::Union(branches) => branches[self.branch(branches.len())?],
        };
        Ok(match wire {
            Wire::Null => Scalar::Null,
            Wire::Str => Scalar::Str(read_str(&mut self.rest)?),
            Wire::Int => Scalar::Long(self.int()?),
            Wire::Long => Scalar::Long(read_long(&mut self.rest)?),
            Wire::Float => Scalar::Double(f64::from(f32::from_le_bytes(self.array()?))),
            Wire::Double => Scalar::Double(f64::from_le_bytes(self.array()?)),
        })
    }

    fn skip(&mut self, plan: &WriterPlan, id: SkipId) -> Result<(), ReadError> {
        self.spend()?;
        match &plan.skips[id] {
            Skip::Null => Ok(()),
            Skip::Boolean => match self.array::<1>()? {
                [0 | 1] => Ok(()),
                [other] => Err(malformed(format!("a boolean byte {other}"))),
            },
            Skip::Int => self.int().map(drop),
            Skip::Long => read_long(&mut self.rest).map(drop),
            Skip::Float => self.bytes(4),
            Skip::Double => self.bytes(8),
            Skip::Bytes => {
                let len = self.len()?;
                self.bytes(len)
            }
            Skip::Str => read_str(&mut self.rest).map(drop),
            Skip::Fixed(size) => self.bytes(*size),
            Skip::Enum(symbols) => {
                let index = read_long(&mut self.rest)?;
                if index < 0 || index as u64 >= *symbols as u64 {
                    return Err(malformed(format!("no enum symbol {index} of {symbols}")));
                }
                Ok(())
            }
            Skip::Array(items) => self.blocks(|input| input.skip(plan, *items)),
            Skip::Map(values) => self.blocks(|input| {
                read_str(&mut input.rest)?;
                input.skip(plan, *values)
            }),
            Skip::Union(branches) => {
                let branch = self.branch(branches.len())?;
                self.skip(plan, branches[branch])
            }
            Skip::Record(fields) => fields.iter().try_for_each(|field| self.skip(plan, *field)),
        }
    }

    /// The blocks of an array or a map: a count, that many items, until a count of 0. A
    /// negative count is followed by the block's size in bytes, so the block is skipped whole.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), ReadError>) -> Result<(), ReadError> {
        loop {
            self.spend()?;
            let count = read_long(&mut self.rest)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                if count == i64::MIN {
                    return Err(malformed("a block count of i64::MIN"));
                }
                let size = self.len()?;
                self.bytes(size)?;
                continue;
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn branch(&mut self, branches: usize) -> Result<usize, ReadError> {
        let index = read_long(&mut self.rest)?;
        usize::try_from(index).ok().filter(|i| *i < branches).ok_or_else(|| malformed(format!("no union branch {index} of {branches}")))
    }

    fn int(&mut self) -> Result<i64, ReadError> {
        let n = read_long(&mut self.rest)?;
        i32::try_from(n).map(i64::from).map_err(|_| malformed(format!("an int out of range: {n}")))
    }

    fn len(&mut self) -> Result<usize, ReadError> {
        let len = read_long(&mut self.rest)?;
        usize::try_from(len).map_err(|_| malformed(format!("a negative length {len}")))
    }

    fn bytes(&mut self, len: usize) -> Result<(), ReadError> {
        if len > self.rest.len() {
            return Err(malformed(format!("{len} bytes needed, {} left", self.rest.len())));
        }
        self.rest = &self.rest[len..];
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let (bytes, rest) =
            self.rest.split_first_chunk::<N>().ok_or_else(|| malformed(format!("{N} bytes needed, {} left", self.rest.len())))?;
        self.rest = rest;
        Ok(*bytes)
    }
}

/// The event fields read so far, borrowed from the datum.
#[derive(Default)]
struct Fields<'a> {
    organization_id: Option<&'a str>,
    transaction_id: Option<&'a str>,
    external_customer_id: Option<&'a str>,
    code: Option<&'a str>,
    timestamp_ms: Option<i64>,
    properties: Option<&'a str>,
    value: Option<f64>,
    decimal_value: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn set(&mut self, target: Target, value: Scalar<'a>) -> Result<(), ReadError> {
        // The plan only pairs a field with encodings it takes; anything else is a bug, reported
        // as a broken datum rather than a panic.
        let mismatch = || malformed(format!("{} read with an encoding it does not take", target.name()));
        match (target, value) {
            (Target::OrganizationId, Scalar::Str(s)) => self.organization_id = Some(s),
            (Target::TransactionId, Scalar::Str(s)) => self.transaction_id = Some(s),
            (Target::ExternalCustomerId, Scalar::Str(s)) => self.external_customer_id = Some(s),
            (Target::Code, Scalar::Str(s)) => self.code = Some(s),
            (Target::Timestamp, Scalar::Long(ms)) => self.timestamp_ms = Some(ms),
            (Target::Properties, Scalar::Str(s)) => self.properties = Some(s),
            (Target::Value, Scalar::Null) => self.value = None,
            // Promotion of an int or a long to a double, as Avro resolves it.
            (Target::Value, Scalar::Long(n)) => self.value = Some(n as f64),
            (Target::Value, Scalar::Double(v)) => self.value = Some(v),
            (Target::DecimalValue, Scalar::Null) => self.decimal_value = None,
            (Target::DecimalValue, Scalar::Str(s)) => self.decimal_value = Some(s),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    /// The event, once the whole datum is known to be well-formed; the values the event type
    /// cannot hold are judged here, in the direct reader's order.
    fn into_event(self) -> Result<Event, ReadError> {
        let missing = |field: &str| malformed(format!("{field} was not read"));
        let organization = self.organization_id.ok_or_else(|| missing("organization_id"))?;
        let organization_id = Uuid::parse_str(organization)
            .map_err(|_| ReadError::Field(FieldError::new("organization_id", "invalid_uuid", "organization_id is not a UUID")))?;
        let decimal_value = self
            .decimal_value
            .map(str::parse::<Decimal>)
            .transpose()
            .map_err(|e| ReadError::Field(FieldError::new("decimal_value", "invalid_decimal", e.to_string())))?;
        Ok(Event {
            organization_id,
            transaction_id: self.transaction_id.ok_or_else(|| missing("transaction_id"))?.to_owned(),
            external_customer_id: self.external_customer_id.ok_or_else(|| missing("external_customer_id"))?.to_owned(),
            code: self.code.ok_or_else(|| missing("code"))?.to_owned(),
            timestamp_ms: self.timestamp_ms.ok_or_else(|| missing("timestamp"))?,
            properties: self.properties.ok_or_else(|| missing("properties"))?.to_owned(),
            value: self.value,
            decimal_value,
        })
    }
}
