//! Durations as written in the config: an integer and one unit, `"250ms"`, `"60s"`, `"15m"`,
//! `"1h"`, `"1d"`. Compound forms ("1h30m") and fractions are refused so that every value reads
//! one way; milliseconds are the finest unit because the store counts in milliseconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

const ACCEPTED: &str = "expected an integer followed by ms, s, m, h or d, \
                        such as \"250ms\", \"60s\", \"15m\", \"1h\" or \"1d\"";

/// Units from the longest suffix down, so that "ms" is tried before "m" and "s".
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    Empty,
    Negative,
    MissingUnit,
    UnknownUnit(String),
    NotInteger,
    Overflow,
    Zero,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "empty duration; {ACCEPTED}"),
            DurationError::Negative => write!(f, "a duration cannot be negative; {ACCEPTED}"),
            DurationError::MissingUnit => write!(f, "missing unit; {ACCEPTED}"),
            DurationError::UnknownUnit(unit) => write!(f, "unknown unit `{unit}`; {ACCEPTED}"),
            DurationError::NotInteger => write!(f, "not a whole number; {ACCEPTED}"),
            DurationError::Overflow => write!(f, "duration too large; {ACCEPTED}"),
            DurationError::Zero => write!(f, "must be greater than zero; {ACCEPTED}"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parse `"<integer><unit>"`. Zero is accepted here; [`Positive`] refuses it where a zero would
/// make no sense (a zero window or timeout).
pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::NotInteger);
    }
    let per_unit = unit_millis(unit)?;
    // All-ASCII-digit input only fails to parse when it does not fit in u64.
    let count: u64 = digits.parse().map_err(|_| DurationError::Overflow)?;
    let millis = count.checked_mul(per_unit).ok_or(DurationError::Overflow)?;
    Ok(Duration::from_millis(millis))
}

fn unit_millis(unit: &str) -> Result<u64, DurationError> {
    if unit.is_empty() {
        return Err(DurationError::MissingUnit);
    }
    if unit.starts_with('.') {
        return Err(DurationError::NotInteger);
    }
    UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, millis)| *millis)
        .ok_or_else(|| DurationError::UnknownUnit(unit.to_owned()))
}

/// The shortest exact spelling in the config's own syntax, so a summary can be pasted back.
pub(crate) fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    UNITS
        .iter()
        .rev()
        .find(|(_, per_unit)| millis.is_multiple_of(u128::from(*per_unit)))
        .map(|(name, per_unit)| format!("{}{name}", millis / u128::from(*per_unit)))
        .unwrap_or_else(|| format!("{millis}ms"))
}

/// A config duration that must be greater than zero (windows, timeouts, block times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Positive(pub(crate) Duration);

/// A config duration where zero means "none" (e.g. no shutdown grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Any(pub(crate) Duration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(DurationVisitor { allow_zero: false })
            .map(Positive)
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(DurationVisitor { allow_zero: true })
            .map(Any)
    }
}

/// Errors raised here go back through the TOML deserializer, which attaches the value's span.
struct DurationVisitor {
    allow_zero: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"250ms\", \"60s\", \"15m\", \"1h\" or \"1d\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let duration =
            parse(text).map_err(|e| E::custom(format!("invalid duration \"{text}\": {e}")))?;
        if duration.is_zero() && !self.allow_zero {
            return Err(E::custom(format!(
                "invalid duration \"{text}\": {}",
                DurationError::Zero
            )));
        }
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_malformed_values() {
        let cases = [
            ("", DurationError::Empty),
            ("-5s", DurationError::Negative),
            ("60", DurationError::MissingUnit),
            ("60x", DurationError::UnknownUnit("x".into())),
            ("60 s", DurationError::UnknownUnit(" s".into())),
            ("60S", DurationError::UnknownUnit("S".into())),
            ("1h30m", DurationError::UnknownUnit("h30m".into())),
            ("1.5s", DurationError::NotInteger),
            ("s", DurationError::NotInteger),
            ("+5s", DurationError::NotInteger),
            (" 5s", DurationError::NotInteger),
            ("99999999999999999999ms", DurationError::Overflow),
            ("999999999999999999d", DurationError::Overflow),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(172_800)), "2d");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(parse("60s").map(format).as_deref(), Ok("1m"));
        for text in ["250ms", "61s", "15m", "1h", "1d"] {
            assert_eq!(parse(text).map(format).as_deref(), Ok(text));
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        positive: Option<Positive>,
        any: Option<Any>,
    }

    #[test]
    fn deserializer_errors_carry_the_value_span() {
        let text = "positive = \"0s\"\n";
        let err = toml::from_str::<Holder>(text)
            .err()
            .map(|e| (e.span(), e.message().to_owned()));
        let (span, message) = err.unwrap_or_default();
        assert_eq!(span, Some(11..15));
        assert!(message.contains("greater than zero"), "{message}");

        let err = toml::from_str::<Holder>("any = 60\n").err();
        let message = err.map(|e| e.message().to_owned()).unwrap_or_default();
        assert!(message.contains("expected a duration string"), "{message}");

        let ok = toml::from_str::<Holder>("any = \"0s\"\npositive = \"1d\"\n").unwrap();
        assert_eq!(ok.any, Some(Any(Duration::ZERO)));
        assert_eq!(ok.positive, Some(Positive(Duration::from_secs(86_400))));
    }
}
