//! What a counter is, with no I/O: the CRDTs a cell holds (shard sets,
//! distinct-count sketches) and their merge, how a cell is
//! named in storage, namespaces and their retention, a read as key ranges,
//! and what one request may ask. Everything else in the node builds on
//! these; they import nothing from the node but its clock-free helpers.

pub mod cell_key;
pub mod cell_merge;
pub mod heavy_hitters;
pub mod hll;
pub mod limits;
pub mod namespace;
pub mod op_id;
pub mod read_plan;
pub mod shard_set;
