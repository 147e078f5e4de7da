//! The op-id liveness rule: an op id is 128 bits, made by the client and
//! time-ordered (its top 48 bits are the milliseconds since the Unix epoch
//! at which it was made, like a UUIDv7), and *live* from then until
//! `span` later. Pure arithmetic on the id and a time passed in; the
//! window of ids a node applied is `replica::op_window`.

use std::time::Duration;

/// When op id `id` was made, in ms since the Unix epoch.
pub fn made_ms(id: u128) -> i64 {
    (id >> 80) as i64
}

/// How long op ids stay live, and how many may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpWindowLimits {
    /// An op id is live for this long after it was made: its retries
    /// count once until then, and are refused after.
    #[serde(rename = "span_s", with = "crate::units::secs")]
    pub span: Duration,
    /// Live op ids a node keeps at most (about 50 bytes each); a new op
    /// id beyond that is refused with `Overloaded`.
    pub max_ids: usize,
}

impl Default for OpWindowLimits {
    fn default() -> Self {
        OpWindowLimits {
            span: Duration::from_secs(600),
            max_ids: 2_000_000,
        }
    }
}

impl OpWindowLimits {
    /// Whether op id `id` is live at `now_ms`, given that its time may
    /// run ahead of this node's clock by up to `max_skew_ms`.
    pub fn is_live(&self, id: u128, now_ms: i64, max_skew_ms: i64) -> bool {
        let made = made_ms(id);
        made.saturating_add(self.span.as_millis() as i64) >= now_ms
            && made <= now_ms.saturating_add(max_skew_ms)
    }
}
