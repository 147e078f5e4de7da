//! Times on the command line: `now`, `-90m` / `-3d` (relative to now), or
//! milliseconds since the epoch; and UTC formatting for tables.

/// The wall clock in ms (the CLI is a binary: it may read it).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses a time argument.
pub fn parse(s: &str, now: i64) -> Result<i64, String> {
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: i64 = num.parse().map_err(|_| format!("bad time {s:?}"))?;
        let ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("bad time unit in {s:?} (use s, m, h or d)")),
        };
        return n
            .checked_mul(ms)
            .and_then(|back| now.checked_sub(back))
            .filter(|t| *t >= 0)
            .ok_or_else(|| format!("time {s:?} is before 1970"));
    }
    s.parse()
        .map_err(|_| format!("bad time {s:?}: use now, -90m, -3d or milliseconds since the epoch"))
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn format(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A retention in milliseconds in the largest unit that divides it
/// (`7d`, `36h`, `90m`, `45s`), as a namespace spec writes it.
pub fn retention(ms: u64) -> String {
    let secs = ms / 1000;
    [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(n, _)| secs > 0 && secs.is_multiple_of(*n))
        .map_or(format!("{secs}s"), |(n, unit)| {
            format!("{}{unit}", secs / n)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_never_wrap() {
        let now = 1_800_000_000_000;
        assert_eq!(parse("-90m", now), Ok(now - 90 * 60_000));
        assert_eq!(parse("now", now), Ok(now));
        // Once -4611686018427387904s wrapped around to now.
        for s in ["-4611686018427387904s", "-9223372036854775807d", "-30000d"] {
            let e = parse(s, now).unwrap_err();
            assert!(e.contains("before 1970"), "{s}: {e}");
        }
        assert!(parse("-99999999999999999999s", now).is_err());
    }

    #[test]
    fn retention_reads_as_the_spec_wrote_it() {
        assert_eq!(retention(7 * 86_400_000), "7d");
        assert_eq!(retention(36 * 3_600_000), "36h");
        assert_eq!(retention(90 * 60_000), "90m");
        assert_eq!(retention(45_000), "45s");
    }
}
