//! The protocol's vocabulary: what requests and answers carry (a
//! consistency level, an increment, counts and points, cell states, the
//! status of a node, per-item results). Plain data, no encoding.

use crate::error::ErrorCode;
use crate::resolution::Resolution;

/// Consistency level of one request (how many replicas must answer).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority of the replicas.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

/// One increment of a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    /// The namespace (`[a-z0-9_]{1,64}`).
    pub namespace: String,
    /// The partition key, 1..=1024 bytes.
    pub key: Vec<u8>,
    /// When the events happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// How much to add (may be negative).
    pub delta: i64,
    /// How many events the increment stands for, at least 1: 1 for one
    /// event; an aggregating producer that summed several events of one
    /// cell sends their number, so that counts and averages stay exact.
    pub events: u32,
    /// An operation id ([`crate::new_op_id`]): the cluster counts the
    /// increment at most once however often it is sent with this id, and
    /// exactly once if any attempt was acknowledged, while the id is live
    /// (10 minutes from its making by default; later, `OpIdExpired`).
    pub op_id: Option<u128>,
}

/// One member added to a distinct counter (a distinct namespace's key):
/// the cells of every resolution the namespace keeps count it once,
/// however often it is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// The namespace: one of kind `distinct`.
    pub namespace: String,
    /// The partition key, 1..=1024 bytes.
    pub key: Vec<u8>,
    /// When the member was seen, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The member (a viewer id, an IP address), 1..=1024 bytes.
    pub member: Vec<u8>,
}

/// One bucket of a distinct read: about how many different members were
/// added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DistinctPoint {
    /// Bucket start, in milliseconds since the Unix epoch.
    pub bucket_start_ms: i64,
    /// Estimated distinct members (HyperLogLog: about 0.8% standard
    /// error at the default precision, nearly exact below a few
    /// thousand).
    pub estimate: u64,
}

/// One key of a `Top` answer, with its exact sum and count over the
/// window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopKey {
    /// The key.
    #[serde(serialize_with = "key_text")]
    pub key: Vec<u8>,
    /// Sum of the deltas in the window.
    pub sum: i64,
    /// Number of increments in the window.
    pub count: u64,
}

fn byte_count<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(bytes.len() as u64)
}

fn key_text<S: serde::Serializer>(key: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(key))
}

/// One key of a node's heavy-hitter summary: its count lies in
/// `[count - error, count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Upper bound of its count.
    pub count: u64,
    /// How much of `count` may be overestimate.
    pub error: u64,
}

/// What a namespace's cells hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum NamespaceKind {
    /// Counters: increments add to sums and counts.
    #[default]
    Counter,
    /// Distinct counts: adds of members to HyperLogLog sketches.
    Distinct {
        /// The sketches' precision (2^precision registers).
        precision: u8,
    },
}

/// A sum and a count of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Count {
    /// Sum of the deltas.
    pub sum: i64,
    /// Number of increments.
    pub count: u64,
}

/// One bucket of a range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// Bucket start, in milliseconds since the Unix epoch.
    pub bucket_start_ms: i64,
    /// Sum of the deltas in the bucket.
    pub sum: i64,
    /// Number of increments in the bucket.
    pub count: u64,
}

/// A namespace's resolutions and how long each is kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceInfo {
    /// The namespace's name.
    pub name: String,
    /// Counters or distinct counts (in JSON: `"kind": "counter"`, or
    /// `"kind": "distinct", "precision": 14`).
    #[serde(flatten)]
    pub kind: NamespaceKind,
    /// Resolutions with their retention in milliseconds (`None`: forever).
    pub resolutions: Vec<(Resolution, Option<u64>)>,
}

/// What `Status` reports about a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// The node's host id.
    pub node_id: u64,
    /// The node's software version.
    pub version: String,
    /// Time since the node started, in milliseconds.
    pub uptime_ms: u64,
    /// The address clients use.
    pub address: String,
    /// Increments applied since start.
    pub increments: u64,
    /// Bytes of SSTables and write-ahead logs on disk (counters and hints).
    pub disk_bytes: u64,
    /// The cluster metadata epoch this node routes with.
    pub epoch: u64,
    /// Hinted cells waiting on this node for replicas that were down.
    pub hints_pending: u64,
    /// Cells hinted since start.
    pub hints_written: u64,
    /// Hinted cells delivered since start.
    pub hints_replayed: u64,
    /// Hinted cells dropped since start (past the hint window).
    pub hints_dropped: u64,
    /// Cells this node repaired on other replicas (or itself) during reads.
    pub read_repairs: u64,
    /// Token ranges done by the repair running on this node (0 of 0: none).
    pub repair_ranges_done: u32,
    /// Token ranges the running repair covers.
    pub repair_ranges_total: u32,
    /// Whether this node's storage takes writes.
    pub storage: StorageHealth,
    /// Why it does not (empty when it does): the failure and its file.
    pub storage_error: String,
    /// Bytes of write-ahead log on disk (counted in `disk_bytes` too): a
    /// restart needs about this much free space to recover.
    pub wal_bytes: u64,
    /// Open client and peer connections.
    pub connections: u32,
    /// Connections and requests answered `Overloaded` since start.
    pub overloaded: u64,
    /// The other nodes, as this node sees them.
    pub peers: Vec<PeerStatus>,
    /// Client reads (total, range, stats) this node answered as their
    /// coordinator since start. Last on the wire and optional there: a
    /// node from before it sends none (read as 0), and one from before
    /// it ignores the extra bytes.
    pub reads: u64,
}

/// Whether a node's storage takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageHealth {
    /// It does.
    Ok,
    /// A write or fsync failed: reads work, writes fail until the node
    /// restarts (`storage_error` says why).
    Poisoned,
    /// The disk filled: free space, then restart the node.
    DiskFull,
}

impl StorageHealth {
    pub(crate) fn code(self) -> u8 {
        match self {
            StorageHealth::Ok => 0,
            StorageHealth::Poisoned => 1,
            StorageHealth::DiskFull => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<StorageHealth> {
        match code {
            0 => Some(StorageHealth::Ok),
            1 => Some(StorageHealth::Poisoned),
            2 => Some(StorageHealth::DiskFull),
            _ => None,
        }
    }
}

/// How one node sees another (from its connections; gossip refines it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    /// The peer's host id.
    pub host_id: u64,
    /// The peer's address.
    pub address: String,
    /// Whether this node currently considers the peer up.
    pub up: bool,
    /// Milliseconds since this node last heard from the peer (`None`: never).
    pub last_contact_ms_ago: Option<u64>,
    /// The peer's gossip generation (raised on every restart; `None`: not
    /// heard through gossip yet).
    pub generation: Option<u64>,
    /// Milliseconds since the peer's last gossip heartbeat reached this
    /// node (`None`: never).
    pub heartbeat_ms_ago: Option<u64>,
}

/// One counter cell's stored state as nodes exchange it: the cell's
/// storage key and its encoded shard set. Both are opaque to clients
/// (`docs/protocol.md` describes them for the curious).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellState {
    /// The cell's storage key.
    pub key: Vec<u8>,
    /// The encoded shard set.
    pub value: Vec<u8>,
}

/// A half-open range `[start, end)` of cell keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End key (exclusive).
    pub end: Vec<u8>,
}

/// One shard of a counter cell, as the debug read shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardView {
    /// Shard id: `host_id << 32 | incarnation`.
    pub id: u64,
    /// The shard's version (raised by its owner on every update).
    pub clock: u64,
    /// Sum of the owner's deltas.
    pub sum: i64,
    /// Number of the owner's increments.
    pub count: u64,
}

/// One replica's raw copy of a cell (the debug read `tally get --replicas`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaView {
    /// The replica's host id.
    pub host_id: u64,
    /// The replica's address.
    pub address: String,
    /// Why the replica could not be read (`None`: it answered).
    pub error: Option<String>,
    /// The replica's shards of the cell (empty: it holds no copy, or the
    /// cell is a distinct count's sketch).
    pub shards: Vec<ShardView>,
    /// The cell's bytes as the replica stores them (empty: no copy), so
    /// that copies can be compared byte for byte whatever their kind (in
    /// JSON, their number: `"bytes"`, which reading JSON back ignores).
    #[serde(
        rename = "bytes",
        serialize_with = "byte_count",
        skip_deserializing,
        default
    )]
    pub value: Vec<u8>,
}

/// What a repair did (`tally repair`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Token ranges compared.
    pub ranges: u32,
    /// Ranges skipped (fewer than two replicas up, or one did not answer).
    pub ranges_skipped: u32,
    /// Merkle leaves compared.
    pub leaves: u64,
    /// Leaves whose hashes differed between replicas.
    pub leaves_differing: u64,
    /// Cells sent to replicas that lacked them.
    pub cells_repaired: u64,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// The outcome of one increment within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemResult {
    /// Applied as durably as the request asked.
    Ok,
    /// Not applied.
    Failed(ErrorCode),
    /// May have been applied.
    Indeterminate(ErrorCode),
}
