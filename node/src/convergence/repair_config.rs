//! [`RepairConfig`]: the `[repair]` section, read by the repairer (the
//! lease) and by the schedule (interval and throttle).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[repair]`: scheduled anti-entropy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    /// Every range is repaired within this (default 3 days; 0 turns the
    /// schedule off, leaving `tally repair` to operators).
    #[serde(rename = "interval_s", with = "crate::units::secs")]
    pub interval: Duration,
    /// Throttle of a scheduled repair: bytes of trees and cells moved per
    /// second (default 16 MiB/s).
    pub bytes_per_s: u64,
    /// How long a range's lease lasts unless renewed (a repairer that
    /// died mid-range holds it no longer than this).
    #[serde(rename = "lease_s", with = "crate::units::secs")]
    pub lease: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            interval: Duration::from_secs(3 * 24 * 3600),
            bytes_per_s: 16 << 20,
            lease: Duration::from_secs(120),
        }
    }
}
