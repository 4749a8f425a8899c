//! Parsing of human durations (`"500ms"`, `"10s"`, `"2m"`, `"1h30m"`, `"30d"`).

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, unit one
/// of `ms`, `s`, `m`, `h`, `d`. Returns a message saying what is expected on error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || format!("`{s}` is not a duration: expected e.g. \"500ms\", \"10s\", \"2m\"");
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    let mut rest = s_trim;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_docs_show() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        for bad in ["", "10", "s", "10 s", "1.5s", "-1s", "10sec"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
