//! One file per command group; each takes the parsed command line and
//! prints a table, or JSON with `--json`.

pub mod counter;
pub mod distinct;
pub mod ns;
pub mod repair;
pub mod repair_status;
pub mod ring;
pub mod security;
pub mod status;
pub mod top;
pub mod topology;
