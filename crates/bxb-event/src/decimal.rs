use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most this many digits in all.
pub const DECIMAL_MAX_PRECISION: u32 = 38;
/// At most this many digits after the point.
pub const DECIMAL_MAX_SCALE: u32 = 12;
const MAX_INTEGER_DIGITS: usize = (DECIMAL_MAX_PRECISION - DECIMAL_MAX_SCALE) as usize;

/// An exact decimal number that fits `Decimal(38, 12)` in ClickHouse and `NUMERIC` in PostgreSQL.
///
/// It is kept as its canonical text (no leading zeros, no trailing fractional zeros, no `-0`), so
/// two equal values always have the same text and nothing is lost to binary floating point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

/// Why a string is not an acceptable [`Decimal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not of the form `-?digits(.digits)?`.
    #[error("not a decimal number: expected an optional '-', digits, and an optional '.' with digits")]
    Syntax,
    /// More than [`DECIMAL_MAX_SCALE`] digits after the point.
    #[error("more than {DECIMAL_MAX_SCALE} digits after the decimal point")]
    Scale,
    /// More than 26 digits before the point.
    #[error("more than {MAX_INTEGER_DIGITS} digits before the decimal point")]
    Precision,
}

impl Decimal {
    /// The canonical text, e.g. `-12.5`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value times `10^scale` as an integer, the representation of ClickHouse `Decimal(P, scale)`.
    /// `scale` must be at least [`DECIMAL_MAX_SCALE`] so nothing is rounded; returns `None` otherwise
    /// or when the result does not fit.
    pub fn to_scaled_i128(&self, scale: u32) -> Option<i128> {
        if scale < DECIMAL_MAX_SCALE {
            return None;
        }
        let (negative, digits) = match self.0.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, self.0.as_str()),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        let mut scaled: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            scaled = scaled.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        let pad = scale - frac_part.len() as u32;
        scaled = scaled.checked_mul(10i128.checked_pow(pad)?)?;
        Some(if negative { -scaled } else { scaled })
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (negative, digits) = match input.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) if !f.is_empty() => (i, f),
            Some(_) => return Err(DecimalError::Syntax),
            None => (digits, ""),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecimalError::Syntax);
        }
        let int_part = int_part.trim_start_matches('0');
        let frac_part = frac_part.trim_end_matches('0');
        if frac_part.len() > DECIMAL_MAX_SCALE as usize {
            return Err(DecimalError::Scale);
        }
        if int_part.len() > MAX_INTEGER_DIGITS {
            return Err(DecimalError::Precision);
        }
        let is_zero = int_part.is_empty() && frac_part.is_empty();
        let mut canonical = String::with_capacity(input.len() + 1);
        if negative && !is_zero {
            canonical.push('-');
        }
        canonical.push_str(if int_part.is_empty() { "0" } else { int_part });
        if !frac_part.is_empty() {
            canonical.push('.');
            canonical.push_str(frac_part);
        }
        Ok(Decimal(canonical))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonicalises() {
        for (input, canonical) in [
            ("0", "0"),
            ("-0.000", "0"),
            ("007.50", "7.5"),
            ("-12.340", "-12.34"),
            ("0.000000000001", "0.000000000001"),
            ("12345678901234567890123456.123456789012", "12345678901234567890123456.123456789012"),
        ] {
            assert_eq!(input.parse::<Decimal>().unwrap().as_str(), canonical, "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_exact_or_too_large() {
        for (input, error) in [
            ("", DecimalError::Syntax),
            ("-", DecimalError::Syntax),
            ("1.", DecimalError::Syntax),
            (".5", DecimalError::Syntax),
            ("+1", DecimalError::Syntax),
            ("1e5", DecimalError::Syntax),
            ("NaN", DecimalError::Syntax),
            ("1 ", DecimalError::Syntax),
            ("0.0000000000001", DecimalError::Scale),
            ("123456789012345678901234567", DecimalError::Precision),
        ] {
            assert_eq!(input.parse::<Decimal>(), Err(error), "{input:?}");
        }
    }

    #[test]
    fn scales_exactly() {
        let d: Decimal = "-1.5".parse().unwrap();
        assert_eq!(d.to_scaled_i128(12), Some(-1_500_000_000_000));
        let max: Decimal = "99999999999999999999999999.999999999999".parse().unwrap();
        assert_eq!(max.to_scaled_i128(12), Some(10i128.pow(38) - 1));
        assert_eq!(d.to_scaled_i128(2), None);
    }

    proptest! {
        #[test]
        fn canonical_text_round_trips(int in 0u64..u64::MAX, frac in 0u64..1_000_000_000_000, neg: bool) {
            let text = format!("{}{}.{:012}", if neg { "-" } else { "" }, int, frac);
            let d: Decimal = text.parse().unwrap();
            let again: Decimal = d.as_str().parse().unwrap();
            prop_assert_eq!(&d, &again);
            let scaled = i128::from(int) * 1_000_000_000_000 + i128::from(frac);
            let expected = if neg { -scaled } else { scaled };
            prop_assert_eq!(d.to_scaled_i128(12), Some(expected));
        }
    }
}
