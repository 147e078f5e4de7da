//! What one request may ask, and how a refusal is said: [`StoreLimits`]
//! with every check of a request (key, namespace, timestamp, op-id
//! liveness), and [`RequestError`]. Writes (the coordinator before
//! routing, the leader as it applies) and reads (`read_plan`) are checked
//! by the same functions, so a refusal reads the same whichever path
//! meets it.

use std::time::Duration;

use tally_client::{Add, ErrorCode, Increment};

use crate::counter::namespace::{Namespace, Namespaces};
use crate::counter::op_id::{made_ms, OpWindowLimits};

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

/// Longest member a distinct add may carry.
pub const MAX_MEMBER_BYTES: usize = 1024;

/// The namespace `name`, or the `UnknownNamespace` refusal.
pub fn lookup<'n>(namespaces: &'n Namespaces, name: &str) -> Result<&'n Namespace, RequestError> {
    namespaces.get(name).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownNamespace,
            format!("unknown namespace {name:?}"),
        )
    })
}

impl StoreLimits {
    /// Refuses an empty key or one over `max_key_bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<(), RequestError> {
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(refuse(
                ErrorCode::InvalidKey,
                format!(
                    "key of {} bytes; keys must be 1..={} bytes",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a timestamp before 1970 or past the allowed skew ahead of
    /// `now_ms`.
    fn check_timestamp(&self, timestamp_ms: i64, now_ms: i64) -> Result<(), RequestError> {
        let latest = now_ms.saturating_add(self.max_future_skew.as_millis() as i64);
        if timestamp_ms < 0 || timestamp_ms > latest {
            return Err(refuse(
                ErrorCode::TimestampOutOfRange,
                format!(
                    "timestamp {timestamp_ms} is before 1970 or more than {:?} ahead of this node's clock",
                    self.max_future_skew
                ),
            ));
        }
        Ok(())
    }

    /// Checks one add of a member as of `now_ms`: its namespace (one of
    /// distinct counts), key, timestamp and member; the namespace it
    /// names on success.
    pub fn check_add<'n>(
        &self,
        namespaces: &'n Namespaces,
        item: &Add,
        now_ms: i64,
    ) -> Result<&'n Namespace, RequestError> {
        let ns = lookup(namespaces, &item.namespace)?;
        if !ns.is_distinct() {
            return Err(refuse(
                ErrorCode::WrongKind,
                format!(
                    "namespace {} counts increments; members are added to distinct namespaces (spec `distinct, ...`)",
                    ns.name
                ),
            ));
        }
        self.check_key(&item.key)?;
        self.check_timestamp(item.timestamp_ms, now_ms)?;
        if item.member.is_empty() || item.member.len() > MAX_MEMBER_BYTES {
            return Err(refuse(
                ErrorCode::InvalidMember,
                format!(
                    "member of {} bytes; members must be 1..={MAX_MEMBER_BYTES} bytes",
                    item.member.len()
                ),
            ));
        }
        Ok(ns)
    }

    /// Checks one increment as of `now_ms`: its namespace, key,
    /// timestamp and op id; the namespace it names on success.
    pub fn check_increment<'n>(
        &self,
        namespaces: &'n Namespaces,
        item: &Increment,
        now_ms: i64,
    ) -> Result<&'n Namespace, RequestError> {
        let ns = lookup(namespaces, &item.namespace)?;
        if ns.is_distinct() {
            return Err(refuse(
                ErrorCode::WrongKind,
                format!(
                    "namespace {} counts distinct members: add members to it, do not increment it",
                    ns.name
                ),
            ));
        }
        self.check_key(&item.key)?;
        self.check_timestamp(item.timestamp_ms, now_ms)?;
        if let Some(id) = item.op_id {
            let skew = self.max_future_skew.as_millis() as i64;
            if !self.op_window.is_live(id, now_ms, skew) {
                return Err(refuse(
                    ErrorCode::OpIdExpired,
                    format!(
                        "op id {id:032x} was made at {} ms, not within {:?} before this node's clock \
                         nor {:?} after it (op ids carry their making time: see new_op_id)",
                        made_ms(id),
                        self.op_window.span,
                        self.max_future_skew
                    ),
                ));
            }
        }
        Ok(ns)
    }
}
