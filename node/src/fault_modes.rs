//! [`BrokenMode`]: deliberately wrong behaviour (`tally-node --broken`),
//! for the fault-injection harness's self-tests only, which must find each
//! of them invalid. Kept apart so that nothing else reads as if it were a
//! feature.

/// Deliberately wrong behaviour, for proving that the fault-injection
/// harness catches it. Never for production: the node logs an error at
/// start when one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenMode {
    /// The leader applies every increment twice.
    DoubleApply,
    /// Writes are acknowledged after the leader's own write, whatever the
    /// consistency level asked.
    AckWithoutQuorum,
    /// Hints are never stored (nor recovered cells hinted).
    DropHints,
    /// Op ids are dropped on arrival: a retried increment counts again.
    IgnoreOpIds,
}

impl BrokenMode {
    /// Parses `double-apply`, `ack-without-quorum`, `drop-hints` or
    /// `ignore-op-ids`.
    pub fn parse(name: &str) -> Result<BrokenMode, String> {
        match name {
            "double-apply" => Ok(BrokenMode::DoubleApply),
            "ack-without-quorum" => Ok(BrokenMode::AckWithoutQuorum),
            "drop-hints" => Ok(BrokenMode::DropHints),
            "ignore-op-ids" => Ok(BrokenMode::IgnoreOpIds),
            other => Err(format!(
                "unknown broken mode {other:?} \
                 (double-apply, ack-without-quorum, drop-hints, ignore-op-ids)"
            )),
        }
    }
}
