//! The PostgreSQL binary `COPY` format, written by hand so a batch reaches the server as one
//! stream of exact values: no text round trip for timestamps, numerics or floats.
//!
//! Layout (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>): an 11-byte
//! signature, a flags word and a header-extension length; per row a 16-bit field count, then per
//! field a 32-bit length (-1 for NULL) and the value in the type's `send` format, big-endian; a
//! 16-bit -1 ends the stream.

use uuid::Uuid;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Milliseconds from the Unix epoch to 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch.
const POSTGRES_EPOCH_UNIX_MS: i64 = 946_684_800_000;
/// Version byte of the binary `jsonb` format: the JSON text follows it.
const JSONB_VERSION: u8 = 1;
const NUMERIC_POSITIVE: u16 = 0x0000;
const NUMERIC_NEGATIVE: u16 = 0x4000;

/// A value that cannot be written in the binary format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyEncodeError {
    /// The decimal text is not `-?digits(.digits)?`.
    #[error("not a decimal number: {0:?}")]
    Decimal(String),
    /// A field or row is larger than the format's 32-bit length allows.
    #[error("value of {0} bytes is too large for COPY")]
    TooLarge(usize),
}

/// Builds one binary `COPY ... FROM STDIN (FORMAT BINARY)` stream in memory.
#[derive(Debug)]
pub struct BinaryCopyWriter {
    buf: Vec<u8>,
}

impl Default for BinaryCopyWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BinaryCopyWriter {
    /// A stream with its header written; `bytes` is a capacity hint.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 19);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { buf }
    }

    /// Starts a row of `fields` values; exactly that many field calls must follow.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> Result<&mut Self, CopyEncodeError> {
        let len = i32::try_from(bytes.len()).map_err(|_| CopyEncodeError::TooLarge(bytes.len()))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        Ok(self)
    }

    pub fn uuid(&mut self, value: &Uuid) -> &mut Self {
        self.buf.extend_from_slice(&16i32.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// `text` (and `varchar`): the UTF-8 bytes.
    pub fn text(&mut self, value: &str) -> Result<&mut Self, CopyEncodeError> {
        self.field(value.as_bytes())
    }

    pub fn int4(&mut self, value: i32) -> &mut Self {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(u8::from(value));
        self
    }

    pub fn int8(&mut self, value: i64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// `double precision`: the IEEE 754 bits, so the value is exact.
    pub fn float8(&mut self, value: f64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_bits().to_be_bytes());
        self
    }

    /// `timestamptz` from milliseconds since the Unix epoch.
    pub fn timestamptz_ms(&mut self, unix_ms: i64) -> &mut Self {
        self.int8(timestamp_micros(unix_ms))
    }

    /// `jsonb` from JSON text (the server parses and checks it).
    pub fn jsonb(&mut self, json: &str) -> Result<&mut Self, CopyEncodeError> {
        let len = json.len() + 1;
        let len32 = i32::try_from(len).map_err(|_| CopyEncodeError::TooLarge(len))?;
        self.buf.extend_from_slice(&len32.to_be_bytes());
        self.buf.push(JSONB_VERSION);
        self.buf.extend_from_slice(json.as_bytes());
        Ok(self)
    }

    /// `numeric` from decimal text such as `-12.50`; the scale written is the number of digits
    /// after the point, so the server keeps exactly the given digits.
    pub fn numeric(&mut self, decimal: &str) -> Result<&mut Self, CopyEncodeError> {
        let encoded = numeric_bytes(decimal)?;
        self.field(&encoded)
    }

    /// The finished stream, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() <= SIGNATURE.len() + 8
    }
}

/// Microseconds since 2000-01-01T00:00:00Z, the wire value of `timestamp` and `timestamptz`.
pub fn timestamp_micros(unix_ms: i64) -> i64 {
    (unix_ms - POSTGRES_EPOCH_UNIX_MS) * 1_000
}

/// The `numeric_send` format: `ndigits`, `weight`, `sign`, `dscale` (all 16-bit), then `ndigits`
/// base-10000 digits, most significant first. The value is `sum(digit[i] * 10000^(weight - i))`.
pub fn numeric_bytes(decimal: &str) -> Result<Vec<u8>, CopyEncodeError> {
    let invalid = || CopyEncodeError::Decimal(decimal.to_owned());
    let (negative, unsigned) = match decimal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, decimal),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return Err(invalid()),
        None => (unsigned, ""),
    };
    if int_part.is_empty() || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let dscale = u16::try_from(frac_part.len()).map_err(|_| invalid())?;
    let int_part = int_part.trim_start_matches('0');

    // Base-10000 groups are aligned on the decimal point: the integer part is padded with zeros
    // on the left, the fraction with zeros on the right.
    let mut groups: Vec<u16> = Vec::with_capacity(int_part.len() / 4 + frac_part.len() / 4 + 2);
    let int_pad = (4 - int_part.len() % 4) % 4;
    let padded_int: String = "0".repeat(int_pad) + int_part;
    for chunk in padded_int.as_bytes().chunks(4) {
        groups.push(group_value(chunk));
    }
    let int_groups = groups.len() as i32;
    for chunk in frac_part.as_bytes().chunks(4) {
        let mut digits = [b'0'; 4];
        digits[..chunk.len()].copy_from_slice(chunk);
        groups.push(group_value(&digits));
    }

    let mut weight = int_groups - 1;
    let leading_zeros = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading_zeros);
    weight -= leading_zeros as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let (weight, sign) = if groups.is_empty() {
        (0, NUMERIC_POSITIVE) // zero has no sign in PostgreSQL
    } else if negative {
        (weight, NUMERIC_NEGATIVE)
    } else {
        (weight, NUMERIC_POSITIVE)
    };
    let weight = i16::try_from(weight).map_err(|_| invalid())?;
    let ndigits = i16::try_from(groups.len()).map_err(|_| invalid())?;

    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

fn group_value(ascii_digits: &[u8]) -> u16 {
    ascii_digits.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `numeric_send` bytes back to (sign, weight, dscale, digits) for readable asserts.
    fn parts(bytes: &[u8]) -> (u16, i16, u16, Vec<u16>) {
        let word = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let ndigits = word(0) as usize;
        let digits = (0..ndigits).map(|k| word(8 + 2 * k)).collect();
        (word(4), word(2) as i16, word(6), digits)
    }

    #[test]
    fn numeric_groups_align_on_the_decimal_point() {
        assert_eq!(parts(&numeric_bytes("0").unwrap()), (0, 0, 0, vec![]));
        assert_eq!(parts(&numeric_bytes("-0.000").unwrap()), (0, 0, 3, vec![]));
        assert_eq!(parts(&numeric_bytes("1").unwrap()), (0, 0, 0, vec![1]));
        assert_eq!(parts(&numeric_bytes("12345.678").unwrap()), (0, 1, 3, vec![1, 2345, 6780]));
        assert_eq!(parts(&numeric_bytes("-12.5").unwrap()), (0x4000, 0, 1, vec![12, 5000]));
        assert_eq!(parts(&numeric_bytes("0.0001").unwrap()), (0, -1, 4, vec![1]));
        assert_eq!(parts(&numeric_bytes("0.000000000001").unwrap()), (0, -3, 12, vec![1]));
        assert_eq!(parts(&numeric_bytes("10000").unwrap()), (0, 1, 0, vec![1]));
        assert_eq!(parts(&numeric_bytes("007.50").unwrap()), (0, 0, 2, vec![7, 5000]));
        assert_eq!(
            parts(&numeric_bytes("99999999999999999999999999.999999999999").unwrap()),
            (0, 6, 12, vec![99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999])
        );
    }

    #[test]
    fn numeric_rejects_what_is_not_decimal_text() {
        for bad in ["", "-", "1.", ".5", "+1", "1e5", "NaN", "1 ", "1.2.3"] {
            assert!(numeric_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        assert_eq!(timestamp_micros(946_684_800_000), 0);
        assert_eq!(timestamp_micros(0), -946_684_800_000_000);
        assert_eq!(timestamp_micros(946_684_800_001), 1_000);
    }

    #[test]
    fn stream_has_header_rows_and_trailer() {
        let mut w = BinaryCopyWriter::default();
        assert!(w.is_empty());
        w.row(3).int4(7).null();
        w.jsonb("{}").unwrap();
        let bytes = w.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 3, 1, b'{', b'}']);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
