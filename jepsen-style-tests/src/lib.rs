//! A black-box fault-injection harness for tally: real node processes,
//! nemeses (partitions, kills, pauses, clock skew), a JSONL history and a
//! counter checker.
//!
//! Not built yet: the harness issue fills this crate.
