//! What one request may ask, and how a refusal is said: [`StoreLimits`]
//! and [`RequestError`], shared by the checks of increments (the store)
//! and of reads (`query`), so neither imports the other for them.

use std::time::Duration;

use tally_client::ErrorCode;

use crate::counter::op_id::OpWindowLimits;

/// A request the store refuses, with the code to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    /// The wire code.
    pub code: ErrorCode,
    /// Details.
    pub message: String,
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> RequestError {
    RequestError {
        code,
        message: message.into(),
    }
}

/// Limits on what one request may ask.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreLimits {
    /// Largest accepted key.
    pub max_key_bytes: usize,
    /// How far in the future a timestamp may lie.
    #[serde(rename = "max_future_skew_s", with = "crate::units::secs")]
    pub max_future_skew: Duration,
    /// Most buckets one range read may return.
    pub max_range_buckets: i64,
    /// How long op ids stay live, and how many this node keeps.
    pub op_window: OpWindowLimits,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_key_bytes: 1024,
            max_future_skew: Duration::from_secs(300),
            max_range_buckets: 100_000,
            op_window: OpWindowLimits::default(),
        }
    }
}
