//! What brings replicas together after the write path left them apart:
//! hint replay (and hinting what a crash left unreplicated), Merkle
//! anti-entropy (on a schedule and on demand), and relearning the op ids
//! this node led after an unclean stop.

pub mod anti_entropy;
pub mod hint_replay;
pub mod merkle;
pub mod op_relearn;
pub mod repair_config;
pub mod repair_ledger;
pub mod repair_schedule;
