//! A black-box fault-injection harness for tally, in the spirit of Jepsen:
//! real `tally-node` processes, a workload of concurrent clients through
//! the client library, a nemesis that injects faults on a seeded schedule,
//! a JSONL history of every operation, and a checker that decides whether
//! the history is possible under tally's promises (no acknowledged
//! increment lost, nothing counted twice, replicas converge, QUORUM reads
//! never go down).
//!
//! - [`cluster::Cluster`]: the nodes, in their own process groups, dying
//!   with the harness; [`proxy::LinkProxy`]: a TCP proxy per directed
//!   node-to-node link for partitions and delays without root.
//! - [`nemesis`]: partitions (halves, isolate one, majorities ring,
//!   bridge), kill -9 and restart, SIGSTOP/SIGCONT, link delays, clock
//!   skew.
//! - [`workload`], [`history::History`], [`checker::check`],
//!   [`report`]: the clients, the record, the verdict, the report
//!   directory with SVG plots.
//! - [`run::run`]: one run, end to end. The `jepsen-style-tests` binary is
//!   its command line (`run`, `analyze`).

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod run;
pub mod security;
pub mod workload;
