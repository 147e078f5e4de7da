//! [`Resolution`]: the widths of a counter's buckets and the rule that
//! puts a timestamp in its bucket. The client's producer, the node's
//! store and its read plans all bucket by this one rule.

/// A bucket width.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// 60-second buckets.
    Minute,
    /// 3,600-second buckets.
    Hour,
    /// 86,400-second buckets (UTC days).
    Day,
    /// One bucket for all time.
    Total,
}

impl Resolution {
    /// All resolutions, finest first.
    pub const ALL: [Resolution; 4] = [
        Resolution::Minute,
        Resolution::Hour,
        Resolution::Day,
        Resolution::Total,
    ];

    /// Bucket width in milliseconds (`None` for `Total`).
    pub fn width_ms(self) -> Option<i64> {
        match self {
            Resolution::Minute => Some(60_000),
            Resolution::Hour => Some(3_600_000),
            Resolution::Day => Some(86_400_000),
            Resolution::Total => None,
        }
    }

    /// The start of the bucket holding `timestamp_ms`.
    pub fn bucket_start(self, timestamp_ms: i64) -> i64 {
        match self.width_ms() {
            Some(w) => timestamp_ms.div_euclid(w) * w,
            None => 0,
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Resolution::Minute => 1,
            Resolution::Hour => 2,
            Resolution::Day => 3,
            Resolution::Total => 4,
        }
    }

    /// From the wire code.
    pub fn from_code(code: u8) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The name used in configs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
            Resolution::Total => "total",
        }
    }

    /// Parses a name (`minute`, `hour`, `day`, `total`).
    pub fn from_name(name: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
