//! Times as people write them, for the CLI and the HTTP API alike: `now`,
//! a time relative to now (`-90m`, `-3d`), milliseconds since the Unix
//! epoch, or RFC 3339 (`2026-12-07T10:00:00Z`, with a fraction or an
//! offset); and UTC formatting back.

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// Parses a time; relative forms count back from `now_ms`.
pub fn parse(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: i64 = num.parse().map_err(|_| format!("bad time {s:?}"))?;
        let ms = match unit {
            "s" => 1_000,
            "m" => MINUTE,
            "h" => 60 * MINUTE,
            "d" => DAY,
            _ => return Err(format!("bad time unit in {s:?} (use s, m, h or d)")),
        };
        return n
            .checked_mul(ms)
            .and_then(|back| now_ms.checked_sub(back))
            .filter(|t| *t >= 0)
            .ok_or_else(|| format!("time {s:?} is before 1970"));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    rfc3339(s).ok_or_else(|| {
        format!(
            "bad time {s:?}: use now, -90m, -3d, milliseconds since the epoch or RFC 3339 \
             (2026-12-07T10:00:00Z)"
        )
    })
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn format_minute(ms: i64) -> String {
    let (y, m, d, hh, mm, _, _) = fields(ms);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// RFC 3339 in UTC with milliseconds: `2026-12-07T10:00:00.000Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let (y, m, d, hh, mm, ss, milli) = fields(ms);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{milli:03}Z")
}

/// Year, month, day, hour, minute, second, millisecond of `ms` in UTC.
fn fields(ms: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    (
        y,
        m,
        d,
        rem / 3_600_000,
        rem % 3_600_000 / MINUTE,
        rem % MINUTE / 1000,
        rem % 1000,
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, or a bare date
/// (midnight UTC); `None` when it is not one.
fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = s.get(from..from + len)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let date_ms = days_from_civil(y, m, d) * DAY;
    if b.len() == 10 {
        return Some(date_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut at = 19;
    let mut milli = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let frac = &s[at + 1..at + 1 + digits.min(3)];
        milli = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
        at += 1 + digits;
    }
    let offset_ms = match &s[at..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && tz.as_bytes()[3] == b':' => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om) * MINUTE
        }
        _ => return None,
    };
    Some(date_ms + ((hh * 60 + mm) * 60 + ss) * 1000 + milli - offset_ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01 (the inverse of
/// [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn rfc3339_reads_offsets_fractions_and_dates() {
        let at = 1_796_637_600_000; // 2026-12-07T10:00:00Z
        assert_eq!(parse("2026-12-07T10:00:00Z", 0), Ok(at));
        assert_eq!(parse("2026-12-07T11:30:00+01:30", 0), Ok(at));
        assert_eq!(parse("2026-12-07T05:00:00-05:00", 0), Ok(at));
        assert_eq!(parse("2026-12-07T10:00:00.25Z", 0), Ok(at + 250));
        assert_eq!(parse("2026-12-07", 0), Ok(at - 10 * 3_600_000));
        assert_eq!(format_rfc3339(at + 250), "2026-12-07T10:00:00.250Z");
        assert_eq!(format_minute(at), "2026-12-07 10:00");
        for bad in [
            "2026-13-07T10:00:00Z",
            "2026-02-30",
            "2026-12-07T24:00:00Z",
            "2026-12-07T10:00:00",
            "2026-12-07T10:00:00+0100",
            "yesterday",
            "",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ms in -62_135_596_800_000_i64..253_402_300_799_999) {
            prop_assert_eq!(parse(&format_rfc3339(ms), 0), Ok(ms));
        }

        #[test]
        fn no_input_panics(s in "\\PC{0,40}") {
            let _ = parse(&s, 1_800_000_000_000);
        }
    }
}
