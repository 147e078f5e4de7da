//! [`BrokenMode`]: deliberately wrong behaviour (`tally-node --broken`),
//! for the fault-injection harness's self-tests only, which must find each
//! of them invalid. Kept apart so that nothing else reads as if it were a
//! feature.

/// Deliberately wrong behaviour, for proving that the fault-injection
/// harness catches it. Never for production: the node logs an error at
/// start when one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
