//! Serde forms of durations and sizes for the config file, where a
//! setting's unit is in its name (`idle_timeout_s`, `max_buffered_mib`)
//! and the field it fills is a [`Duration`] or a byte count. The runtime
//! settings types use these, so each is its own config section and the
//! only place its defaults are stated.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A [`Duration`] as whole seconds.
pub mod secs {
    use super::*;

    /// Writes whole seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Reads whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A [`Duration`] as whole milliseconds.
pub mod millis {
    use super::*;

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A byte count as whole MiB.
pub mod mib {
    use super::*;

    /// Writes whole MiB.
    pub fn serialize<S: Serializer>(bytes: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64((*bytes >> 20) as u64)
    }

    /// Reads whole MiB.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let mib = usize::deserialize(d)?;
        mib.checked_mul(1 << 20)
            .ok_or_else(|| serde::de::Error::custom(format!("{mib} MiB is too large")))
    }
}
