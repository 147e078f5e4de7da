//! Times on the command line: the wall clock, the forms of
//! [`tally_client::timespec`] (`now`, `-90m`, epoch ms, RFC 3339), UTC
//! formatting for tables, and retentions as a namespace spec writes them.

pub use tally_client::timespec::{format_minute as format, parse};

/// The wall clock in ms (the CLI is a binary: it may read it).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    fn retention_reads_as_the_spec_wrote_it() {
        assert_eq!(retention(7 * 86_400_000), "7d");
        assert_eq!(retention(36 * 3_600_000), "36h");
        assert_eq!(retention(90 * 60_000), "90m");
        assert_eq!(retention(45_000), "45s");
    }
}
