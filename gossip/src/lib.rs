//! Gossip membership and phi-accrual failure detection. The core has no I/O:
//! clock, randomness and transport are injected, so the same code runs in a
//! deterministic simulation and in the node over real sockets.
//!
//! Not built yet: the gossip issue fills this crate.
