//! Parsing of human durations (`"500ms"`, `"1.5s"`, `"2m"`, `"1h30m"`,
//! `"30d"`): exact (no floating point), and never overflowing: a value too
//! large for any setting is an error, not a wrap-around at run time.

use std::time::Duration;

/// The largest duration written anywhere (100 years): past it a value is
/// an error whatever the key. Keys have tighter bounds of their own.
const MAX: u128 = 100 * 365 * 24 * 3600 * 1_000_000_000;

/// Parses a duration made of one or more `<number><unit>` parts, the number
/// a whole or decimal one (`1.5`), the unit one of `ms`, `s`, `m`, `h`, `d`.
/// Returns a message saying what is expected on error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "`{s}` is not a duration: expected e.g. \"500ms\", \"1.5s\", \"10s\", \"2m\", \"1h30m\", \"30d\""
        )
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (whole, fraction) = match rest[..number_len].split_once('.') {
            Some((w, f)) => (w, f),
            None => (&rest[..number_len], ""),
        };
        if whole.is_empty() || fraction.contains('.') || fraction.len() > 9 {
            return Err(expected());
        }
        if rest[..number_len].ends_with('.') {
            return Err(expected());
        }
        let whole: u128 = whole.parse().map_err(|_| expected())?;
        let fraction_nanos: u128 = if fraction.is_empty() {
            0
        } else {
            let digits: u128 = fraction.parse().map_err(|_| expected())?;
            digits * 10u128.pow(9 - fraction.len() as u32)
        };
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "d" => 24 * 3600 * 1_000_000_000,
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        // whole × unit + fraction × unit / 10⁹, in nanoseconds.
        let part = whole
            .checked_mul(unit_nanos)
            .and_then(|w| w.checked_add(fraction_nanos * unit_nanos / 1_000_000_000))
            .ok_or_else(|| format!("`{s}` is far too long"))?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX)
            .ok_or_else(|| format!("`{s}` is far too long (at most 100 years)"))?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| expected())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `1.5s`, `10s`, `2m30s`, `1d` for messages.
pub fn describe(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_docs_show() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "-1s",
            "10sec",
            "1.s",
            ".5s",
            "1..5s",
            "1.2.3s",
            "0.0000000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_values_are_errors_not_wrap_arounds() {
        for huge in [
            "99999999999999999999999999999999999999h",
            "18446744073709551615s",
            "36501d",
            "100000000000000000d1s",
        ] {
            let e = parse_duration(huge).expect_err(huge);
            assert!(
                e.contains("too long") || e.contains("not a duration"),
                "{huge}: {e}"
            );
        }
        assert_eq!(
            parse_duration("36500d"),
            Ok(Duration::from_secs(36_500 * 86_400))
        );
    }

    #[test]
    fn descriptions_read_back() {
        for text in ["1500ms", "10s", "2m", "3h", "7d"] {
            let d = parse_duration(text).expect(text);
            assert_eq!(describe(d), text);
        }
    }
}
