//! Namespaces: which resolutions a family of counters keeps, and for how
//! long.
//!
//! Written like `minute:7d, hour:90d, day:forever, total`; a spec that
//! starts with `distinct` (or `distinct:<precision>`) makes a namespace of
//! distinct counts, whose cells are HyperLogLog sketches that members are
//! added to (see `hll`), with the same resolutions and retention. Namespaces come
//! from the cluster metadata (Raft) and from the node's config; the default
//! namespace `events` exists so nothing needs setup. A namespace is never
//! redefined once it exists: its cells were written under its resolutions.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_client::{NamespaceInfo, NamespaceKind, Resolution};

use crate::counter::hll::{DEFAULT_PRECISION, PRECISIONS};

/// A namespace's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `[a-z0-9_]{1,64}`.
    pub name: String,
    /// Counters or distinct counts; never changes once the namespace
    /// exists.
    pub kind: NamespaceKind,
    /// Kept resolutions, finest first, with retention (`None`: forever).
    pub resolutions: Vec<(Resolution, Option<Duration>)>,
}

/// The name of the namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "events";
/// The default namespace's spec.
pub const DEFAULT_SPEC: &str = "minute:7d, hour:90d, day:forever, total";

/// The longest retention a spec may give (longer is `forever`): keeps
/// every bucket arithmetic in milliseconds far from `i64::MAX`.
pub const MAX_RETENTION_YEARS: u64 = 10_000;

/// Whether `name` is a valid namespace name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    if s == "forever" {
        return Ok(None);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad retention {s:?} (at most {MAX_RETENTION_YEARS}y)"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err(format!(
                "bad retention unit in {s:?} (use s, m, h, d, w, y or forever)"
            ))
        }
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|secs| *secs <= MAX_RETENTION_YEARS * 365 * 86_400)
        .ok_or_else(|| {
            format!("retention {s:?} is longer than {MAX_RETENTION_YEARS}y (use forever)")
        })?;
    if secs == 0 {
        return Err(format!("retention {s:?} must be positive"));
    }
    Ok(Some(Duration::from_secs(secs)))
}

impl Namespace {
    /// Parses `name` with a spec such as `minute:7d, hour:90d, day:forever, total`.
    pub fn parse(name: &str, spec: &str) -> Result<Namespace, String> {
        if !valid_name(name) {
            return Err(format!(
                "namespace name {name:?} must match [a-z0-9_]{{1,64}}"
            ));
        }
        let mut resolutions = Vec::new();
        let mut kind = NamespaceKind::Counter;
        for (i, part) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            if let Some(precision) = part.strip_prefix("distinct") {
                if i != 0 {
                    return Err("`distinct` must come first in a namespace spec".into());
                }
                let precision = match precision.trim().strip_prefix(':') {
                    None if precision.trim().is_empty() => DEFAULT_PRECISION,
                    Some(p) => p
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| PRECISIONS.contains(p))
                        .ok_or_else(|| {
                            format!(
                                "distinct precision {p:?} must be {}..={}",
                                PRECISIONS.start(),
                                PRECISIONS.end()
                            )
                        })?,
                    None => return Err(format!("unknown resolution {part:?}")),
                };
                kind = NamespaceKind::Distinct { precision };
                continue;
            }
            let (res, retention) = match part.split_once(':') {
                Some((r, t)) => (r.trim(), parse_duration(t.trim())?),
                None => (part, None),
            };
            let res =
                Resolution::from_name(res).ok_or_else(|| format!("unknown resolution {res:?}"))?;
            if resolutions.iter().any(|(r, _)| *r == res) {
                return Err(format!("resolution {res} listed twice"));
            }
            resolutions.push((res, retention));
        }
        if resolutions.is_empty() {
            return Err("a namespace needs at least one resolution".into());
        }
        resolutions.sort_by_key(|(r, _)| *r);
        Ok(Namespace {
            name: name.to_owned(),
            kind,
            resolutions,
        })
    }

    /// Whether the namespace keeps `res`.
    pub fn keeps(&self, res: Resolution) -> bool {
        self.resolutions.iter().any(|(r, _)| *r == res)
    }

    /// The retention of `res` (`None`: forever or not kept).
    pub fn retention(&self, res: Resolution) -> Option<Duration> {
        self.resolutions
            .iter()
            .find(|(r, _)| *r == res)
            .and_then(|(_, t)| *t)
    }

    /// Whether the bucket of `res` starting at `bucket_start_ms` is past
    /// its retention at `now_ms` (whole buckets expire once their end is
    /// older than the retention).
    pub fn expired(&self, res: Resolution, bucket_start_ms: i64, now_ms: i64) -> bool {
        match (self.retention(res), res.width_ms()) {
            (Some(keep), Some(width)) => {
                bucket_start_ms
                    .saturating_add(width)
                    .saturating_add(keep.as_millis() as i64)
                    < now_ms
            }
            _ => false,
        }
    }

    /// Whether its cells are distinct-count sketches.
    pub fn is_distinct(&self) -> bool {
        matches!(self.kind, NamespaceKind::Distinct { .. })
    }

    /// The spec this namespace parses from, in its own words
    /// (`minute:7d, hour:90d, day:forever, total`; `distinct, day:400d`).
    pub fn spec(&self) -> String {
        let retention = |t: &Option<Duration>| match t {
            None => "forever".to_owned(),
            Some(t) => {
                let secs = t.as_secs();
                let unit = [(86_400, "d"), (3600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(n, _)| secs % n == 0);
                match unit {
                    Some((n, u)) => format!("{}{u}", secs / n),
                    None => format!("{secs}s"),
                }
            }
        };
        let kind = match self.kind {
            NamespaceKind::Counter => None,
            NamespaceKind::Distinct { precision } if precision == DEFAULT_PRECISION => {
                Some("distinct".to_owned())
            }
            NamespaceKind::Distinct { precision } => Some(format!("distinct:{precision}")),
        };
        kind.into_iter()
            .chain(self.resolutions.iter().map(|(r, t)| match (r, t) {
                (Resolution::Total, None) => r.to_string(),
                _ => format!("{r}:{}", retention(t)),
            }))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The wire description.
    pub fn info(&self) -> NamespaceInfo {
        NamespaceInfo {
            name: self.name.clone(),
            kind: self.kind,
            resolutions: self
                .resolutions
                .iter()
                .map(|(r, t)| (*r, t.map(|t| t.as_millis() as u64)))
                .collect(),
        }
    }
}

/// The namespaces a node knows, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    by_name: BTreeMap<String, Namespace>,
}

impl Namespaces {
    /// The default namespace plus `extra` (which may redefine it).
    pub fn with(extra: impl IntoIterator<Item = Namespace>) -> Namespaces {
        let mut by_name = BTreeMap::new();
        if let Ok(ns) = Namespace::parse(DEFAULT_NAMESPACE, DEFAULT_SPEC) {
            by_name.insert(ns.name.clone(), ns);
        }
        for ns in extra {
            by_name.insert(ns.name.clone(), ns);
        }
        Namespaces { by_name }
    }

    /// A namespace by name.
    pub fn get(&self, name: &str) -> Option<&Namespace> {
        self.by_name.get(name)
    }

    /// All namespaces, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Namespace> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_spec() {
        let ns = Namespace::parse("events", DEFAULT_SPEC).unwrap();
        assert_eq!(
            ns.retention(Resolution::Minute),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(ns.retention(Resolution::Day), None);
        assert!(ns.keeps(Resolution::Total));
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(Namespace::parse("Bad-Name", "minute").is_err());
        assert!(Namespace::parse("ok", "fortnight:3d").is_err());
        assert!(Namespace::parse("ok", "minute:0d").is_err());
        assert!(Namespace::parse("ok", "minute:7x").is_err());
        assert!(Namespace::parse("ok", "").is_err());
        assert!(Namespace::parse("ok", "hour,hour").is_err());
    }

    #[test]
    fn a_distinct_spec_names_its_precision() {
        let ns = Namespace::parse("viewers", "distinct, day:30d, total").unwrap();
        assert_eq!(ns.kind, NamespaceKind::Distinct { precision: 14 });
        assert!(ns.keeps(Resolution::Day));
        let ns = Namespace::parse("viewers", "distinct:12, day").unwrap();
        assert_eq!(ns.kind, NamespaceKind::Distinct { precision: 12 });
        assert_eq!(
            Namespace::parse("events", DEFAULT_SPEC).unwrap().kind,
            NamespaceKind::Counter
        );
        for bad in [
            "distinct:3, day",
            "distinct:19, day",
            "distinct:x, day",
            "day, distinct",
            "distinct",
            "distinctive, day",
        ] {
            assert!(Namespace::parse("viewers", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_never_wraps() {
        // Once 213503982334602d wrapped to 17 h, and 9223372036854776s
        // overflowed the millisecond arithmetic of expiry.
        for spec in [
            "minute:213503982334602d",
            "minute:9223372036854776s",
            "minute:18446744073709551615s",
            "minute:18446744073709551616s",
            "minute:10001y",
        ] {
            let e = Namespace::parse("ok", spec).unwrap_err();
            assert!(e.contains("retention"), "{spec}: {e}");
        }
        let ns = Namespace::parse("ok", "minute:10000y").unwrap();
        let a_thousand_years_ms = 1000 * 365 * 86_400 * 1000;
        assert!(!ns.expired(Resolution::Minute, 0, a_thousand_years_ms));
        assert!(ns.expired(Resolution::Minute, 0, i64::MAX));
    }

    #[test]
    fn a_spec_reads_back_as_itself() {
        for spec in [
            DEFAULT_SPEC,
            "minute:90m, hour:36h, total",
            "minute:45s",
            "distinct, day:400d, total",
            "distinct:10, hour:2d",
        ] {
            let ns = Namespace::parse("ok", spec).unwrap();
            assert_eq!(Namespace::parse("ok", &ns.spec()).unwrap(), ns, "{spec}");
        }
        assert_eq!(
            Namespace::parse("ok", DEFAULT_SPEC).unwrap().spec(),
            DEFAULT_SPEC
        );
    }
}
