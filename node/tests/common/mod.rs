//! The node tests' launcher of real `tally-node` processes: the testkit's.

pub use tally_testkit::*;
