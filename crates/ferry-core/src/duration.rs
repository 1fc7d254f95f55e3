//! Durations as people write them in definitions: `500ms`, `30s`, `5m`, `1h30m`, `7d`, `2w`.

use std::time::Duration;

/// Parses a duration such as `30s`, `5m`, `1h30m`, `7d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. `30s`, `5m`, `7d`".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`; write e.g. `30s`, `5m`, `7d`"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in duration `{text}`"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => {
                return Err(format!(
                    "duration `{text}` needs a unit (ms, s, m, h, d, w)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit `{other}` in duration `{text}`; units are ms, s, m, h, d, w"
                ));
            }
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
        total += Duration::from_millis(millis);
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it, e.g. `1h30m`.
pub fn format(duration: Duration) -> String {
    let mut millis = duration.as_millis() as u64;
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * 86400)));
    }

    #[test]
    fn refuses_bad_input_clearly() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("30").unwrap_err().contains("needs a unit"));
        assert!(parse("5y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse("s").unwrap_err().contains("invalid duration"));
        assert!(
            parse("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["1h30m", "7d", "30s", "250ms", "1d2h3m4s5ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
