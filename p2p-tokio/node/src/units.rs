//! Human-readable sizes and durations: parsed from configuration files (`"64 MiB"`, `"500ms"`,
//! or plain numbers) and formatted for people (`4.0 MiB`, `120 ms`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A size in bytes, written in a file as a plain number of bytes or as a string with a unit:
/// `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or `kB`, `KB`, `MB`, `GB`, `TB` (powers of
/// 1000), with an optional space and fraction (`"1.5 GiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

/// A duration, written in a file as a plain number of milliseconds or as a string with a unit:
/// `ns`, `us`, `ms`, `s`, `min` or `h`, with an optional space and fraction (`"1.5s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Duration);

/// Splits `"1.5 GiB"` into (1.5, "GiB"); the number must be finite and not negative.
fn split_number(s: &str) -> Result<(f64, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err(format!("`{s}` does not start with a number"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: `{num}` is not a number"))?;
    Ok((value, unit.trim()))
}

/// Parses a size such as `"64 MiB"`, `"4096"` or `"1.5GB"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (value, unit) = split_number(s)?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "`{s}`: unknown size unit `{other}` (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    let bytes = (value * factor as f64).round();
    if bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as u64)
}

/// Parses a duration such as `"500ms"`, `"2 s"`, `"1.5min"` or `"250"` (milliseconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (value, unit) = split_number(s)?;
    let secs_per_unit = match unit {
        "" | "ms" => 1e-3,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "`{s}`: unknown duration unit `{other}` (ns, us, ms, s, min, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * secs_per_unit).map_err(|_| format!("`{s}` is too large"))
}

/// `bytes` for people: `512 B`, `4.0 KiB`, `64.0 MiB`, `1.50 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 && unit >= 2 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A rate in bytes per second for people: `1.2 MiB/s`.
pub fn format_rate(bytes_per_sec: f64) -> String {
    format!("{}/s", format_size(bytes_per_sec.max(0.0).round() as u64))
}

/// `d` for people: `850 us`, `120 ms`, `2.50 s`, `3 min 20 s`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros} us")
    } else if micros < 10_000 {
        format!("{:.1} ms", micros as f64 / 1e3)
    } else if micros < 1_000_000 {
        format!("{} ms", micros / 1_000)
    } else if d.as_secs() < 60 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{} min {} s", s / 60, s % 60)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = Size;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of bytes or a size such as \"64 MiB\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
        u64::try_from(v)
            .map(Size)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
        Ok(Size(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
        parse_size(v).map(Size).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct MillisVisitor;

impl Visitor<'_> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of milliseconds or a duration such as \"500ms\" or \"2s\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
        u64::try_from(v)
            .map(|ms| Millis(Duration::from_millis(ms)))
            .map_err(|_| E::custom(format!("{v} is negative")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
        Ok(Millis(Duration::from_millis(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
        parse_duration(v).map(Millis).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MillisVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2 kB"), Ok(2000));
        assert_eq!(parse_size("1_000 B"), Ok(1000));
        assert!(
            parse_size("64 mb")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.2.3 MiB").is_err());
        assert!(parse_size("99999999999 TiB").is_err());
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2 s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn sizes_and_durations_format_for_people() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(4096), "4.0 KiB");
        assert_eq!(format_size(4 << 20), "4.0 MiB");
        assert_eq!(format_size(3 << 19), "1.5 MiB");
        assert_eq!(format_size(64 << 20), "64.0 MiB");
        assert_eq!(format_size(3 << 29), "1.50 GiB");
        assert_eq!(format_rate(1536.0), "1.5 KiB/s");
        assert_eq!(format_duration(Duration::from_micros(850)), "850 us");
        assert_eq!(format_duration(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(format_duration(Duration::from_millis(120)), "120 ms");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.50 s");
        assert_eq!(format_duration(Duration::from_secs(200)), "3 min 20 s");
    }

    #[derive(Deserialize, Debug)]
    struct T {
        size: Size,
        time: Millis,
    }

    #[test]
    fn toml_values_take_numbers_or_strings() {
        let t: T = toml::from_str("size = 1024\ntime = 20\n").unwrap();
        assert_eq!(
            (t.size, t.time),
            (Size(1024), Millis(Duration::from_millis(20)))
        );
        let t: T = toml::from_str("size = \"2 MiB\"\ntime = \"1.5s\"\n").unwrap();
        assert_eq!(
            (t.size, t.time),
            (Size(2 << 20), Millis(Duration::from_millis(1500)))
        );
        let e = toml::from_str::<T>("size = \"2 mib\"\ntime = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown size unit"), "{e}");
        assert!(e.span().is_some());
        assert!(toml::from_str::<T>("size = -1\ntime = 1\n").is_err());
    }
}
