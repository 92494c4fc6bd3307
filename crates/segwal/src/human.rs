//! Sizes and durations in the form people write them in configuration
//! files: `"64MiB"`, `"10ms"`, `"1h30m"`.
//!
//! Shared by every backend's configuration: [`ByteSize`] and
//! [`HumanDuration`] deserialize from such text (or a plain integer, taken
//! as bytes or milliseconds) and serialize back to it.
//!
//! Sizes: a whole number and a unit, `B` (or none), `KiB`, `MiB`, `GiB`,
//! `TiB`, `PiB`; `K`/`KB`, `M`/`MB`, ... mean the same binary multiples,
//! as in HoraeDB's and TiKV's configuration files (so a HoraeDB
//! `segment_size = "64MB"` keeps its meaning); units are case-insensitive.
//! Durations: one or more whole numbers each with a unit, `ns`, `us` (or
//! `µs`), `ms`, `s`, `m`, `h`, `d`, such as `"1m30s"`.
//!
//! ```
//! use std::time::Duration;
//! use segwal::human::{parse_duration, parse_size};
//!
//! assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
//! assert_eq!(parse_size("4096").unwrap(), 4096);
//! assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
//! assert!(parse_size("64XB").unwrap_err().to_string().contains("\"64XB\""));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::{Error, InvalidHumanValueSnafu, Result};

/// The size units, largest first, with their names when printed.
const SIZE_UNITS: [(&str, u64); 5] = [
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// The duration units in nanoseconds, largest first, with their names.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

fn invalid(kind: &'static str, input: &str, reason: impl Into<String>) -> Error {
    InvalidHumanValueSnafu {
        kind,
        input,
        reason: reason.into(),
    }
    .build()
}

/// Splits `text` into its leading whole number and the rest, or says why
/// there is none.
fn leading_number<'a>(kind: &'static str, input: &str, text: &'a str) -> Result<(u64, &'a str)> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(invalid(kind, input, "expected a whole number"));
    }
    let number = text[..digits]
        .parse()
        .map_err(|_| invalid(kind, input, "the number is too large"))?;
    Ok((number, &text[digits..]))
}

/// Parses a size such as `"64MiB"`, `"64MB"`, `"512 KiB"` or `"4096"`
/// into bytes.
pub fn parse_size(input: &str) -> Result<u64> {
    let (number, unit) = leading_number("size", input, input.trim())?;
    let multiple = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => {
            return Err(invalid(
                "size",
                input,
                format!(
                    "unknown unit {:?} (use B, KiB, MiB, GiB, TiB or PiB)",
                    unit.trim()
                ),
            ));
        }
    };
    number
        .checked_mul(multiple)
        .ok_or_else(|| invalid("size", input, "more than 2^64 bytes"))
}

/// Parses a duration such as `"10ms"`, `"5s"` or `"1m30s"`.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(invalid("duration", input, "expected a number and a unit"));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = leading_number("duration", input, rest)?;
        let after = after.trim_start();
        let unit_len = after.len() - after.trim_start_matches(char::is_alphabetic).len();
        let (unit, after) = after.split_at(unit_len);
        let unit = if unit == "µs" { "us" } else { unit };
        let Some(&(_, multiple)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            let reason = if unit.is_empty() {
                "every number needs a unit (ns, us, ms, s, m, h, d)".to_string()
            } else {
                format!("unknown unit {unit:?} (use ns, us, ms, s, m, h or d)")
            };
            return Err(invalid("duration", input, reason));
        };
        nanos = nanos
            .checked_add(u128::from(number) * multiple)
            .ok_or_else(|| invalid("duration", input, "too long"))?;
        rest = after.trim_start();
    }
    let secs =
        u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid("duration", input, "too long"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// `bytes` in the largest unit that divides it exactly (`"64MiB"`), or
/// as a plain number of bytes.
pub fn format_size(bytes: u64) -> String {
    SIZE_UNITS
        .iter()
        .find(|(_, multiple)| bytes != 0 && bytes.is_multiple_of(*multiple))
        .map_or_else(
            || bytes.to_string(),
            |(name, multiple)| format!("{}{name}", bytes / multiple),
        )
}

/// `duration` in the largest unit that divides it exactly (`"10ms"`).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let (name, multiple) = DURATION_UNITS
        .iter()
        .find(|(_, multiple)| nanos != 0 && nanos.is_multiple_of(*multiple))
        .copied()
        .unwrap_or(("s", 1_000_000_000));
    format!("{}{name}", nanos / multiple)
}

/// A size in bytes, read from `"64MiB"` or a plain integer (bytes) and
/// written back as `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(text: &str) -> Result<ByteSize> {
        parse_size(text).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_size(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(HumanVisitor::<ByteSize>::new("a size such as \"64MiB\""))
    }
}

/// A duration, read from `"10ms"` or a plain integer (milliseconds) and
/// written back as `"10ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = Error;

    fn from_str(text: &str) -> Result<HumanDuration> {
        parse_duration(text).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(HumanVisitor::<HumanDuration>::new(
            "a duration such as \"10ms\"",
        ))
    }
}

/// What [`HumanVisitor`] builds: from text, or from a plain integer.
trait FromHuman: FromStr<Err = Error> {
    fn from_integer(value: u64) -> Self;
}

impl FromHuman for ByteSize {
    fn from_integer(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

impl FromHuman for HumanDuration {
    fn from_integer(millis: u64) -> Self {
        HumanDuration(Duration::from_millis(millis))
    }
}

/// Reads a [`ByteSize`] or [`HumanDuration`] from a string or an integer.
struct HumanVisitor<T> {
    expecting: &'static str,
    _target: std::marker::PhantomData<T>,
}

impl<T> HumanVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        HumanVisitor {
            expecting,
            _target: std::marker::PhantomData,
        }
    }
}

impl<T: FromHuman> de::Visitor<'_> for HumanVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<T, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> std::result::Result<T, E> {
        Ok(T::from_integer(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> std::result::Result<T, E> {
        u64::try_from(value)
            .map(T::from_integer)
            .map_err(|_| E::custom(format!("{value} is negative; expected {}", self.expecting)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit parses to its binary multiple, with or without a space
    /// and in any case, and formatting gives back the largest exact unit.
    #[test]
    fn sizes_parse_and_format() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("1KiB", 1024),
            ("1kb", 1024),
            ("64MiB", 64 << 20),
            ("64MB", 64 << 20),
            ("64 M", 64 << 20),
            ("2GiB", 2 << 30),
            ("3TiB", 3 << 40),
            ("1PiB", 1 << 50),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }

    /// Malformed sizes are refused with a message quoting the input and
    /// saying what is wrong.
    #[test]
    fn bad_sizes_are_named() {
        for (text, reason) in [
            ("", "whole number"),
            ("MiB", "whole number"),
            ("1.5GiB", "unknown unit \".5GiB\""),
            ("64XB", "unknown unit \"XB\""),
            ("-1", "whole number"),
            ("99999999999999999999", "too large"),
            ("20000PiB", "2^64"),
        ] {
            let message = parse_size(text).unwrap_err().to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains(reason), "{message}");
        }
    }

    /// Durations in every unit and in compound form parse exactly, and
    /// format back in the largest exact unit.
    #[test]
    fn durations_parse_and_format() {
        for (text, duration) in [
            ("10ms", Duration::from_millis(10)),
            ("1s", Duration::from_secs(1)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("1s 500ms", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), duration, "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    /// Malformed durations are refused with a message quoting the input.
    #[test]
    fn bad_durations_are_named() {
        for (text, reason) in [
            ("", "a number and a unit"),
            ("10", "needs a unit"),
            ("10 parsecs", "unknown unit \"parsecs\""),
            ("ms", "whole number"),
            ("1.5s", "needs a unit"),
            ("18446744073709551615d", "too long"),
        ] {
            let message = parse_duration(text).unwrap_err().to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains(reason), "{message}");
        }
    }

    /// Every value survives formatting and parsing again.
    #[test]
    fn formatting_round_trips() {
        for bytes in [0, 1, 1023, 1024, 4096, 64 << 20, (64 << 20) + 1, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
        for nanos in [0, 1, 999, 1_000_000, 1_500_000_000, 90_000_000_000] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(
                parse_duration(&format_duration(duration)).unwrap(),
                duration
            );
        }
    }
}
