//! Durations written as strings: a positive whole number and a unit, `"500ms"`, `"60s"`,
//! `"5m"`, `"24h"`, `"2d"`. Bare numbers are refused: `timeout = 30` could mean seconds or
//! milliseconds, and a wrong guess in a timeout is a denial of service or a hole.

use std::time::Duration;

/// Parse `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`. No sign, no fraction, no
/// space, no overflow.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. \"60s\""
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large a duration"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{text:?} has no unit: write ms, s, m, h or d after the number, e.g. \"{text}s\""
            ));
        }
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit: use ms, s, m, h or d"
            ));
        }
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large a duration"))
}

/// Render a duration the way the configuration writes it (largest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let units: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, unit) in units {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let table: &[(&str, u64)] = &[
            ("500ms", 500),
            ("0s", 0),
            ("60s", 60_000),
            ("5m", 300_000),
            ("24h", 86_400_000),
            ("2d", 172_800_000),
        ];
        for (text, ms) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn refused() {
        let table: &[(&str, &str)] = &[
            ("30", "has no unit"),
            ("", "is not a duration"),
            ("-5s", "is not a duration"),
            ("+5s", "is not a duration"),
            ("1.5s", "unknown unit"),
            ("5 s", "unknown unit"),
            ("5S", "unknown unit"),
            ("5sec", "unknown unit"),
            ("s", "is not a duration"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too large"),
        ];
        for (text, want) in table {
            let err = parse_duration(text).err().unwrap_or_default();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["500ms", "60s", "5m", "24h", "2d", "90s", "1500ms"] {
            let d = parse_duration(text).unwrap_or_default();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    }
}
