//! Protocol messages: what clients and nodes say to each other, and their
//! byte encoding. See `docs/protocol.md` for the tables.
//!
//! Encoding is hand-written over `bytes`: little-endian fixed-width
//! integers, strings and byte strings with a `u16` length (`u32` for long
//! texts), lists with a `u32` count. Decoding never panics: every read is
//! bounds-checked and every count is checked against what is left, so a
//! hostile length cannot make the decoder allocate.

use bytes::{BufMut, BytesMut};

use crate::error::ErrorCode;
use crate::routing::{RoutingNode, RoutingRange, RoutingTable};

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

/// A bucket width.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// 60-second buckets.
    Minute,
    /// 3,600-second buckets.
    Hour,
    /// 86,400-second buckets (UTC days).
    Day,
    /// One bucket for all time.
    Total,
}

impl Resolution {
    /// All resolutions, finest first.
    pub const ALL: [Resolution; 4] = [
        Resolution::Minute,
        Resolution::Hour,
        Resolution::Day,
        Resolution::Total,
    ];

    /// Bucket width in milliseconds (`None` for `Total`).
    pub fn width_ms(self) -> Option<i64> {
        match self {
            Resolution::Minute => Some(60_000),
            Resolution::Hour => Some(3_600_000),
            Resolution::Day => Some(86_400_000),
            Resolution::Total => None,
        }
    }

    /// The start of the bucket holding `timestamp_ms`.
    pub fn bucket_start(self, timestamp_ms: i64) -> i64 {
        match self.width_ms() {
            Some(w) => timestamp_ms.div_euclid(w) * w,
            None => 0,
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Resolution::Minute => 1,
            Resolution::Hour => 2,
            Resolution::Day => 3,
            Resolution::Total => 4,
        }
    }

    /// From the wire code.
    pub fn from_code(code: u8) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The name used in configs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
            Resolution::Total => "total",
        }
    }

    /// Parses a name (`minute`, `hour`, `day`, `total`).
    pub fn from_name(name: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
}

/// Whether a node's storage takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
    fn code(self) -> u8 {
        match self {
            StorageHealth::Ok => 0,
            StorageHealth::Poisoned => 1,
            StorageHealth::DiskFull => 2,
        }
    }

    fn from_code(code: u8) -> Option<StorageHealth> {
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
    /// The replica's shards of the cell (empty: it holds no copy).
    pub shards: Vec<ShardView>,
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

/// A request from a client (or a coordinator) to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Apply a batch of increments.
    Increment {
        /// Replicas that must acknowledge.
        consistency: Consistency,
        /// The client's deadline for the whole request, in milliseconds.
        timeout_ms: u32,
        /// The increments.
        items: Vec<Increment>,
    },
    /// All-time total of a key.
    Total {
        /// Replicas that must answer.
        consistency: Consistency,
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
    },
    /// Per-bucket series over `[start_ms, end_ms)`.
    Range {
        /// Replicas that must answer.
        consistency: Consistency,
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
        /// Bucket width.
        resolution: Resolution,
        /// Start (inclusive), ms.
        start_ms: i64,
        /// End (exclusive), ms.
        end_ms: i64,
    },
    /// Sum, count and average over `[start_ms, end_ms)` from the fewest cells.
    Stats {
        /// Replicas that must answer.
        consistency: Consistency,
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
        /// Start (inclusive), ms.
        start_ms: i64,
        /// End (exclusive), ms.
        end_ms: i64,
    },
    /// Every namespace.
    ListNamespaces,
    /// One namespace.
    DescribeNamespace {
        /// Its name.
        name: String,
    },
    /// The node's status.
    Status,
    /// Internal: an increment batch forwarded by a coordinator that is not a
    /// replica of these keys to one that is, which leads it (applies it to
    /// its own shard and replicates). Never forwarded again.
    ForwardedIncrement {
        /// The coordinator's metadata epoch.
        epoch: u64,
        /// Replicas that must acknowledge.
        consistency: Consistency,
        /// Time left of the client's deadline, in milliseconds.
        timeout_ms: u32,
        /// The increments.
        items: Vec<Increment>,
    },
    /// Internal: merge these cell states into the replica's storage
    /// (replication, hint replay, read repair). Answered with `Ack`.
    ReplicaWrite {
        /// The sender's metadata epoch.
        epoch: u64,
        /// Cell states, merged by the CRDT rule.
        cells: Vec<CellState>,
    },
    /// Internal: the replica's cells in these key ranges. Answered with
    /// `Cells`.
    ReplicaRead {
        /// The sender's metadata epoch.
        epoch: u64,
        /// Key ranges to scan.
        ranges: Vec<KeyRange>,
    },
    /// The routing table (token ranges and their replicas).
    Routing,
    /// Debug read: every replica's raw copy of a key's total cell.
    InspectReplicas {
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
    },
    /// Liveness probe. Answered with `Ack`.
    Ping,
    /// Internal: the live op ids this replica holds as applied by host
    /// `leader` (they travel with the states that leader replicates). A
    /// leader restarted after an unclean stop learns its window back with
    /// it. Answered with `OpIds`.
    LedOpIds {
        /// The op leader's host id.
        leader: u64,
    },
    /// Internal: the Merkle leaves of the replica's cells with tokens in
    /// `(start_token, end_token]` (wrapping): `2^depth` hashes. Answered
    /// with `Hashes`.
    MerkleTree {
        /// The sender's metadata epoch.
        epoch: u64,
        /// Exclusive start of the token range.
        start_token: u64,
        /// Inclusive end of the token range.
        end_token: u64,
        /// The tree's depth (at most 16).
        depth: u8,
    },
    /// Anti-entropy: compare and converge every token range this node
    /// replicates with the other replicas. Answered with `RepairReport`
    /// when done.
    Repair,
    /// Test hook: shift the node's wall clock by `offset_ms` from the
    /// machine's (the fault-injection harness's clock nemesis). Refused
    /// with `Forbidden` unless the node runs with `--test-hooks`.
    AdjustClock {
        /// Milliseconds added to the machine's clock (0: none).
        offset_ms: i64,
    },
    /// Internal: a gossip message (encoded by the gossip crate). Answered
    /// with `Gossip` (the reply) or `Ack` (none).
    Gossip {
        /// The sender's host id.
        from: u64,
        /// The encoded gossip message.
        payload: Vec<u8>,
    },
    /// Internal: a metadata Raft RPC (encoded by the consensus crate).
    /// Answered with `Raft`.
    Raft {
        /// The encoded RPC.
        payload: Vec<u8>,
    },
    /// An operator request ([`crate::admin::AdminRequest`] as JSON).
    /// Answered with `Admin`.
    Admin {
        /// The encoded request.
        payload: Vec<u8>,
    },
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Per-item results of an increment batch, in request order.
    Increment(Vec<ItemResult>),
    /// A total.
    Total(Count),
    /// A series; buckets with no increments are omitted.
    Range(Vec<Point>),
    /// Stats over a range and how many cells were read.
    Stats {
        /// Sum and count.
        total: Count,
        /// Cells read to answer.
        cells_read: u32,
    },
    /// Namespaces.
    Namespaces(Vec<NamespaceInfo>),
    /// Node status.
    Status(NodeStatus),
    /// The request was carried out (`ReplicaWrite`, `Ping`).
    Ack,
    /// Cells in key order (`ReplicaRead`).
    Cells(Vec<CellState>),
    /// The routing table.
    Routing(RoutingTable),
    /// Each replica's copy of a cell (`InspectReplicas`).
    Replicas(Vec<ReplicaView>),
    /// A gossip reply (encoded by the gossip crate).
    Gossip(Vec<u8>),
    /// A Raft RPC's reply (encoded by the consensus crate).
    Raft(Vec<u8>),
    /// An operator request's reply ([`crate::admin::AdminReply`] as JSON).
    Admin(Vec<u8>),
    /// Merkle leaf hashes (`MerkleTree`).
    Hashes(Vec<u64>),
    /// Op ids (`LedOpIds`).
    OpIds(Vec<u128>),
    /// What a repair did.
    RepairReport(RepairReport),
    /// The request failed as a whole.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Details for people.
        message: String,
    },
}

/// Message kinds on the wire.
pub(crate) mod kind {
    pub const INCREMENT: u8 = 0x01;
    pub const TOTAL: u8 = 0x02;
    pub const RANGE: u8 = 0x03;
    pub const STATS: u8 = 0x04;
    pub const LIST_NAMESPACES: u8 = 0x05;
    pub const DESCRIBE_NAMESPACE: u8 = 0x06;
    pub const STATUS: u8 = 0x07;
    pub const FORWARDED_INCREMENT: u8 = 0x08;
    pub const REPLICA_WRITE: u8 = 0x09;
    pub const REPLICA_READ: u8 = 0x0A;
    pub const ROUTING: u8 = 0x0B;
    pub const INSPECT_REPLICAS: u8 = 0x0C;
    pub const PING: u8 = 0x0D;
    pub const GOSSIP: u8 = 0x0E;
    pub const ADJUST_CLOCK: u8 = 0x0F;
    pub const MERKLE_TREE: u8 = 0x10;
    pub const REPAIR: u8 = 0x11;
    pub const RAFT: u8 = 0x12;
    pub const ADMIN: u8 = 0x13;
    pub const LED_OP_IDS: u8 = 0x14;
    pub const RESPONSE: u8 = 0x80;
    pub const ERROR: u8 = 0xFF;
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct DecodeError {
    /// The error code to answer with.
    pub code: ErrorCode,
    /// What was wrong.
    pub reason: String,
}

fn unknown_kind(what: &str, kind: u8) -> DecodeError {
    DecodeError {
        code: ErrorCode::UnknownMessage,
        reason: format!("unknown {what} kind {kind:#04x}"),
    }
}

fn malformed(reason: impl Into<String>) -> DecodeError {
    DecodeError {
        code: ErrorCode::MalformedFrame,
        reason: reason.into(),
    }
}

/// Largest number of increments in one batch.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Largest number of cells in one `ReplicaWrite` or `Cells` answer (a full
/// batch touches four cells per increment).
pub const MAX_CELLS: usize = 200_000;
/// Largest number of key ranges in one `ReplicaRead`.
pub const MAX_RANGES: usize = 64;

/// A bounds-checked reader.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(malformed(format!(
                "needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        let mut w = [0u8; 16];
        w.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(w))
    }
    fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string16(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }
    pub(crate) fn string32(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }
    /// A list count, checked against the bytes left (each item takes at
    /// least `min_item_bytes`).
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.buf.len() {
            return Err(malformed(format!(
                "list of {n} items does not fit in {} bytes",
                self.buf.len()
            )));
        }
        Ok(n)
    }
    fn consistency(&mut self) -> Result<Consistency, DecodeError> {
        match self.u8()? {
            1 => Ok(Consistency::One),
            2 => Ok(Consistency::Quorum),
            3 => Ok(Consistency::All),
            c => Err(malformed(format!("unknown consistency {c}"))),
        }
    }
    fn resolution(&mut self) -> Result<Resolution, DecodeError> {
        let c = self.u8()?;
        Resolution::from_code(c).ok_or_else(|| malformed(format!("unknown resolution {c}")))
    }
    fn error_code(&mut self) -> Result<ErrorCode, DecodeError> {
        Ok(ErrorCode::from_u16(self.u16()?))
    }
    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

fn put_bytes16(buf: &mut BytesMut, b: &[u8]) {
    // Lengths are bounded by validation (keys <= 1024, names <= 64); a
    // longer value is cut to what the field can say and fails validation.
    let n = b.len().min(u16::MAX as usize);
    buf.put_u16_le(n as u16);
    buf.put_slice(&b[..n]);
}

fn put_bytes32(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(b.len() as u32);
    buf.put_slice(b);
}

fn put_increments(buf: &mut BytesMut, items: &[Increment]) {
    buf.put_u32_le(items.len() as u32);
    for item in items {
        put_bytes16(buf, item.namespace.as_bytes());
        put_bytes16(buf, &item.key);
        buf.put_i64_le(item.timestamp_ms);
        buf.put_i64_le(item.delta);
        // Flags: bit 0 an op id follows, bit 1 an event count (omitted
        // when 1, the common case).
        let flags = u8::from(item.op_id.is_some()) | (u8::from(item.events != 1) << 1);
        buf.put_u8(flags);
        if let Some(id) = item.op_id {
            buf.put_u128_le(id);
        }
        if item.events != 1 {
            buf.put_u32_le(item.events);
        }
    }
}

fn get_increments(r: &mut Reader<'_>) -> Result<Vec<Increment>, DecodeError> {
    let n = r.count(2 + 2 + 8 + 8 + 1)?;
    if n > MAX_BATCH_ITEMS {
        return Err(DecodeError {
            code: ErrorCode::BatchTooLarge,
            reason: format!("batch of {n} increments exceeds {MAX_BATCH_ITEMS}"),
        });
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let namespace = r.string16()?;
        let key = r.bytes16()?.to_vec();
        let timestamp_ms = r.i64()?;
        let delta = r.i64()?;
        let flags = r.u8()?;
        if flags & !0b11 != 0 {
            return Err(malformed(format!("bad increment flags {flags:#04x}")));
        }
        let op_id = if flags & 1 != 0 {
            Some(r.u128()?)
        } else {
            None
        };
        let events = if flags & 2 != 0 { r.u32()? } else { 1 };
        if events == 0 {
            return Err(malformed("an increment stands for at least one event"));
        }
        items.push(Increment {
            namespace,
            key,
            timestamp_ms,
            delta,
            events,
            op_id,
        });
    }
    Ok(items)
}

fn put_cells(buf: &mut BytesMut, cells: &[CellState]) {
    put_cell_chunks(buf, &[cells]);
}

fn put_cell_chunks(buf: &mut BytesMut, chunks: &[&[CellState]]) {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    let bytes: usize = chunks
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| 6 + c.key.len() + c.value.len())
        .sum();
    buf.reserve(4 + bytes);
    buf.put_u32_le(n as u32);
    for cell in chunks.iter().flat_map(|c| c.iter()) {
        put_bytes16(buf, &cell.key);
        put_bytes32(buf, &cell.value);
    }
}

/// Encodes the body of a `ReplicaWrite` of the concatenation of `chunks`
/// (the same bytes as `Request::ReplicaWrite` with those cells), for
/// senders that coalesce several writers' cells into one message.
pub fn encode_replica_write(epoch: u64, chunks: &[&[CellState]], buf: &mut BytesMut) -> u8 {
    buf.put_u64_le(epoch);
    put_cell_chunks(buf, chunks);
    kind::REPLICA_WRITE
}

fn get_cells(r: &mut Reader<'_>) -> Result<Vec<CellState>, DecodeError> {
    let n = r.count(2 + 4)?;
    if n > MAX_CELLS {
        return Err(malformed(format!("{n} cells exceed {MAX_CELLS}")));
    }
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        cells.push(CellState {
            key: r.bytes16()?.to_vec(),
            value: r.bytes32()?.to_vec(),
        });
    }
    Ok(cells)
}

/// A [`RoutingTable`] on the wire (docs/protocol.md, Routing).
fn put_routing(buf: &mut BytesMut, table: &RoutingTable) {
    buf.put_u64_le(table.epoch);
    buf.put_u32_le(table.replication_factor);
    buf.put_u32_le(table.nodes.len() as u32);
    for n in &table.nodes {
        buf.put_u64_le(n.host_id);
        put_string32(buf, &n.address);
    }
    buf.put_u32_le(table.ranges.len() as u32);
    for r in &table.ranges {
        buf.put_u64_le(r.end_token);
        buf.put_u8(r.replicas.len() as u8);
        for h in &r.replicas {
            buf.put_u64_le(*h);
        }
    }
}

fn get_routing(r: &mut Reader<'_>) -> Result<RoutingTable, DecodeError> {
    let epoch = r.u64()?;
    let replication_factor = r.u32()?;
    let n = r.count(12)?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(RoutingNode {
            host_id: r.u64()?,
            address: r.string32()?,
        });
    }
    let m = r.count(9)?;
    let mut ranges: Vec<RoutingRange> = Vec::with_capacity(m);
    for _ in 0..m {
        let end_token = r.u64()?;
        if ranges
            .last()
            .is_some_and(|last| last.end_token >= end_token)
        {
            return Err(malformed("routing ranges are not sorted by token"));
        }
        let k = r.u8()? as usize;
        if k > crate::routing::MAX_REPLICAS {
            return Err(malformed(format!("{k} replicas in one range")));
        }
        let mut replicas = Vec::with_capacity(k);
        for _ in 0..k {
            replicas.push(r.u64()?);
        }
        ranges.push(RoutingRange {
            end_token,
            replicas,
        });
    }
    Ok(RoutingTable {
        epoch,
        replication_factor,
        nodes,
        ranges,
    })
}

fn put_string32(buf: &mut BytesMut, s: &str) {
    buf.put_u32_le(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn consistency_code(c: Consistency) -> u8 {
    match c {
        Consistency::One => 1,
        Consistency::Quorum => 2,
        Consistency::All => 3,
    }
}

impl Request {
    /// The wire kind of this request.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Increment { .. } => kind::INCREMENT,
            Request::Total { .. } => kind::TOTAL,
            Request::Range { .. } => kind::RANGE,
            Request::Stats { .. } => kind::STATS,
            Request::ListNamespaces => kind::LIST_NAMESPACES,
            Request::DescribeNamespace { .. } => kind::DESCRIBE_NAMESPACE,
            Request::Status => kind::STATUS,
            Request::ForwardedIncrement { .. } => kind::FORWARDED_INCREMENT,
            Request::ReplicaWrite { .. } => kind::REPLICA_WRITE,
            Request::ReplicaRead { .. } => kind::REPLICA_READ,
            Request::Routing => kind::ROUTING,
            Request::InspectReplicas { .. } => kind::INSPECT_REPLICAS,
            Request::Ping => kind::PING,
            Request::Gossip { .. } => kind::GOSSIP,
            Request::AdjustClock { .. } => kind::ADJUST_CLOCK,
            Request::MerkleTree { .. } => kind::MERKLE_TREE,
            Request::Repair => kind::REPAIR,
            Request::Raft { .. } => kind::RAFT,
            Request::Admin { .. } => kind::ADMIN,
            Request::LedOpIds { .. } => kind::LED_OP_IDS,
        }
    }

    /// Whether retrying this request after an unknown outcome is harmless.
    pub fn is_read(&self) -> bool {
        !matches!(
            self,
            Request::Increment { .. } | Request::ForwardedIncrement { .. }
        )
    }

    /// Whether sending this request again cannot count anything twice: a
    /// read, or increments that all carry op ids (the nodes count each op
    /// id once).
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::Increment { items, .. } | Request::ForwardedIncrement { items, .. } => {
                !items.is_empty() && items.iter().all(|i| i.op_id.is_some())
            }
            _ => self.is_read(),
        }
    }

    /// Encodes the body (without the frame header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            Request::Increment {
                consistency,
                timeout_ms,
                items,
            } => {
                buf.put_u8(consistency_code(*consistency));
                buf.put_u32_le(*timeout_ms);
                put_increments(buf, items);
            }
            Request::Total {
                consistency,
                namespace,
                key,
            } => {
                buf.put_u8(consistency_code(*consistency));
                put_bytes16(buf, namespace.as_bytes());
                put_bytes16(buf, key);
            }
            Request::Range {
                consistency,
                namespace,
                key,
                resolution,
                start_ms,
                end_ms,
            } => {
                buf.put_u8(consistency_code(*consistency));
                put_bytes16(buf, namespace.as_bytes());
                put_bytes16(buf, key);
                buf.put_u8(resolution.code());
                buf.put_i64_le(*start_ms);
                buf.put_i64_le(*end_ms);
            }
            Request::Stats {
                consistency,
                namespace,
                key,
                start_ms,
                end_ms,
            } => {
                buf.put_u8(consistency_code(*consistency));
                put_bytes16(buf, namespace.as_bytes());
                put_bytes16(buf, key);
                buf.put_i64_le(*start_ms);
                buf.put_i64_le(*end_ms);
            }
            Request::ListNamespaces
            | Request::Status
            | Request::Routing
            | Request::Ping
            | Request::Repair => {}
            Request::MerkleTree {
                epoch,
                start_token,
                end_token,
                depth,
            } => {
                buf.put_u64_le(*epoch);
                buf.put_u64_le(*start_token);
                buf.put_u64_le(*end_token);
                buf.put_u8(*depth);
            }
            Request::DescribeNamespace { name } => put_bytes16(buf, name.as_bytes()),
            Request::ForwardedIncrement {
                epoch,
                consistency,
                timeout_ms,
                items,
            } => {
                buf.put_u64_le(*epoch);
                buf.put_u8(consistency_code(*consistency));
                buf.put_u32_le(*timeout_ms);
                put_increments(buf, items);
            }
            Request::ReplicaWrite { epoch, cells } => {
                buf.put_u64_le(*epoch);
                put_cells(buf, cells);
            }
            Request::ReplicaRead { epoch, ranges } => {
                buf.put_u64_le(*epoch);
                buf.put_u32_le(ranges.len() as u32);
                for range in ranges {
                    put_bytes16(buf, &range.start);
                    put_bytes16(buf, &range.end);
                }
            }
            Request::InspectReplicas { namespace, key } => {
                put_bytes16(buf, namespace.as_bytes());
                put_bytes16(buf, key);
            }
            Request::Gossip { from, payload } => {
                buf.put_u64_le(*from);
                put_bytes32(buf, payload);
            }
            Request::AdjustClock { offset_ms } => buf.put_i64_le(*offset_ms),
            Request::LedOpIds { leader } => buf.put_u64_le(*leader),
            Request::Raft { payload } | Request::Admin { payload } => put_bytes32(buf, payload),
        }
    }

    /// Decodes a request body of the given kind.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader { buf: body };
        let request = match kind {
            kind::INCREMENT => Request::Increment {
                consistency: r.consistency()?,
                timeout_ms: r.u32()?,
                items: get_increments(&mut r)?,
            },
            kind::TOTAL => Request::Total {
                consistency: r.consistency()?,
                namespace: r.string16()?,
                key: r.bytes16()?.to_vec(),
            },
            kind::RANGE => Request::Range {
                consistency: r.consistency()?,
                namespace: r.string16()?,
                key: r.bytes16()?.to_vec(),
                resolution: r.resolution()?,
                start_ms: r.i64()?,
                end_ms: r.i64()?,
            },
            kind::STATS => Request::Stats {
                consistency: r.consistency()?,
                namespace: r.string16()?,
                key: r.bytes16()?.to_vec(),
                start_ms: r.i64()?,
                end_ms: r.i64()?,
            },
            kind::LIST_NAMESPACES => Request::ListNamespaces,
            kind::DESCRIBE_NAMESPACE => Request::DescribeNamespace {
                name: r.string16()?,
            },
            kind::STATUS => Request::Status,
            kind::FORWARDED_INCREMENT => Request::ForwardedIncrement {
                epoch: r.u64()?,
                consistency: r.consistency()?,
                timeout_ms: r.u32()?,
                items: get_increments(&mut r)?,
            },
            kind::REPLICA_WRITE => Request::ReplicaWrite {
                epoch: r.u64()?,
                cells: get_cells(&mut r)?,
            },
            kind::REPLICA_READ => {
                let epoch = r.u64()?;
                let n = r.count(4)?;
                if n > MAX_RANGES {
                    return Err(malformed(format!("{n} key ranges exceed {MAX_RANGES}")));
                }
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    ranges.push(KeyRange {
                        start: r.bytes16()?.to_vec(),
                        end: r.bytes16()?.to_vec(),
                    });
                }
                Request::ReplicaRead { epoch, ranges }
            }
            kind::ROUTING => Request::Routing,
            kind::INSPECT_REPLICAS => Request::InspectReplicas {
                namespace: r.string16()?,
                key: r.bytes16()?.to_vec(),
            },
            kind::PING => Request::Ping,
            kind::LED_OP_IDS => Request::LedOpIds { leader: r.u64()? },
            kind::GOSSIP => Request::Gossip {
                from: r.u64()?,
                payload: r.bytes32()?.to_vec(),
            },
            kind::ADJUST_CLOCK => Request::AdjustClock {
                offset_ms: r.i64()?,
            },
            kind::RAFT => Request::Raft {
                payload: r.bytes32()?.to_vec(),
            },
            kind::ADMIN => Request::Admin {
                payload: r.bytes32()?.to_vec(),
            },
            kind::MERKLE_TREE => Request::MerkleTree {
                epoch: r.u64()?,
                start_token: r.u64()?,
                end_token: r.u64()?,
                depth: r.u8()?,
            },
            kind::REPAIR => Request::Repair,
            other => return Err(unknown_kind("request", other)),
        };
        r.finish()?;
        Ok(request)
    }
}

fn put_item_result(buf: &mut BytesMut, result: &ItemResult) {
    let (tag, code) = match result {
        ItemResult::Ok => (0, 0),
        ItemResult::Failed(c) => (1, c.as_u16()),
        ItemResult::Indeterminate(c) => (2, c.as_u16()),
    };
    buf.put_u8(tag);
    buf.put_u16_le(code);
}

impl Response {
    /// Encodes the body; returns the wire kind for a response to `request_kind`.
    pub fn encode_body(&self, request_kind: u8, buf: &mut BytesMut) -> u8 {
        match self {
            Response::Increment(results) => {
                buf.put_u32_le(results.len() as u32);
                for r in results {
                    put_item_result(buf, r);
                }
            }
            Response::Total(c) => {
                buf.put_i64_le(c.sum);
                buf.put_u64_le(c.count);
            }
            Response::Range(points) => {
                buf.put_u32_le(points.len() as u32);
                for p in points {
                    buf.put_i64_le(p.bucket_start_ms);
                    buf.put_i64_le(p.sum);
                    buf.put_u64_le(p.count);
                }
            }
            Response::Stats { total, cells_read } => {
                buf.put_i64_le(total.sum);
                buf.put_u64_le(total.count);
                buf.put_u32_le(*cells_read);
            }
            Response::Namespaces(list) => {
                buf.put_u32_le(list.len() as u32);
                for ns in list {
                    put_bytes16(buf, ns.name.as_bytes());
                    buf.put_u32_le(ns.resolutions.len() as u32);
                    for (res, retention) in &ns.resolutions {
                        buf.put_u8(res.code());
                        buf.put_u64_le(retention.unwrap_or(0));
                    }
                }
            }
            Response::Status(s) => {
                buf.put_u64_le(s.node_id);
                put_string32(buf, &s.version);
                buf.put_u64_le(s.uptime_ms);
                put_string32(buf, &s.address);
                buf.put_u64_le(s.increments);
                buf.put_u64_le(s.disk_bytes);
                buf.put_u64_le(s.epoch);
                buf.put_u64_le(s.hints_pending);
                buf.put_u64_le(s.hints_written);
                buf.put_u64_le(s.hints_replayed);
                buf.put_u64_le(s.hints_dropped);
                buf.put_u64_le(s.read_repairs);
                buf.put_u32_le(s.repair_ranges_done);
                buf.put_u32_le(s.repair_ranges_total);
                buf.put_u8(s.storage.code());
                put_string32(buf, &s.storage_error);
                buf.put_u64_le(s.wal_bytes);
                buf.put_u32_le(s.connections);
                buf.put_u64_le(s.overloaded);
                buf.put_u32_le(s.peers.len() as u32);
                for p in &s.peers {
                    buf.put_u64_le(p.host_id);
                    put_string32(buf, &p.address);
                    buf.put_u8(u8::from(p.up));
                    buf.put_u64_le(p.last_contact_ms_ago.unwrap_or(u64::MAX));
                    buf.put_u64_le(p.generation.unwrap_or(u64::MAX));
                    buf.put_u64_le(p.heartbeat_ms_ago.unwrap_or(u64::MAX));
                }
            }
            Response::Ack => {}
            Response::Gossip(payload) | Response::Raft(payload) | Response::Admin(payload) => {
                put_bytes32(buf, payload)
            }
            Response::Hashes(hashes) => {
                buf.put_u32_le(hashes.len() as u32);
                for h in hashes {
                    buf.put_u64_le(*h);
                }
            }
            Response::OpIds(ids) => {
                buf.put_u32_le(ids.len() as u32);
                for id in ids {
                    buf.put_u128_le(*id);
                }
            }
            Response::RepairReport(r) => {
                buf.put_u32_le(r.ranges);
                buf.put_u32_le(r.ranges_skipped);
                buf.put_u64_le(r.leaves);
                buf.put_u64_le(r.leaves_differing);
                buf.put_u64_le(r.cells_repaired);
                buf.put_u64_le(r.elapsed_ms);
            }
            Response::Cells(cells) => put_cells(buf, cells),
            Response::Routing(table) => put_routing(buf, table),
            Response::Replicas(views) => {
                buf.put_u32_le(views.len() as u32);
                for v in views {
                    buf.put_u64_le(v.host_id);
                    put_string32(buf, &v.address);
                    match &v.error {
                        Some(e) => {
                            buf.put_u8(1);
                            put_string32(buf, e);
                        }
                        None => buf.put_u8(0),
                    }
                    buf.put_u32_le(v.shards.len() as u32);
                    for s in &v.shards {
                        buf.put_u64_le(s.id);
                        buf.put_u64_le(s.clock);
                        buf.put_i64_le(s.sum);
                        buf.put_u64_le(s.count);
                    }
                }
            }
            Response::Error { code, message } => {
                buf.put_u16_le(code.as_u16());
                put_string32(buf, message);
                return kind::ERROR;
            }
        }
        request_kind | kind::RESPONSE
    }

    /// Decodes a response body of wire kind `kind` answering `request_kind`.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader { buf: body };
        if kind == kind::ERROR {
            let code = r.error_code()?;
            let message = r.string32()?;
            r.finish()?;
            return Ok(Response::Error { code, message });
        }
        let response = match kind & !kind::RESPONSE {
            kind::INCREMENT | kind::FORWARDED_INCREMENT => {
                let n = r.count(3)?;
                let mut results = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = r.u8()?;
                    let code = r.error_code()?;
                    results.push(match tag {
                        0 => ItemResult::Ok,
                        1 => ItemResult::Failed(code),
                        2 => ItemResult::Indeterminate(code),
                        t => return Err(malformed(format!("bad item result {t}"))),
                    });
                }
                Response::Increment(results)
            }
            kind::TOTAL => Response::Total(Count {
                sum: r.i64()?,
                count: r.u64()?,
            }),
            kind::RANGE => {
                let n = r.count(24)?;
                let mut points = Vec::with_capacity(n);
                for _ in 0..n {
                    points.push(Point {
                        bucket_start_ms: r.i64()?,
                        sum: r.i64()?,
                        count: r.u64()?,
                    });
                }
                Response::Range(points)
            }
            kind::STATS => Response::Stats {
                total: Count {
                    sum: r.i64()?,
                    count: r.u64()?,
                },
                cells_read: r.u32()?,
            },
            kind::LIST_NAMESPACES | kind::DESCRIBE_NAMESPACE => {
                let n = r.count(6)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.string16()?;
                    let m = r.count(9)?;
                    let mut resolutions = Vec::with_capacity(m);
                    for _ in 0..m {
                        let res = r.resolution()?;
                        let retention = r.u64()?;
                        resolutions.push((res, (retention != 0).then_some(retention)));
                    }
                    list.push(NamespaceInfo { name, resolutions });
                }
                Response::Namespaces(list)
            }
            kind::STATUS => Response::Status(NodeStatus {
                node_id: r.u64()?,
                version: r.string32()?,
                uptime_ms: r.u64()?,
                address: r.string32()?,
                increments: r.u64()?,
                disk_bytes: r.u64()?,
                epoch: r.u64()?,
                hints_pending: r.u64()?,
                hints_written: r.u64()?,
                hints_replayed: r.u64()?,
                hints_dropped: r.u64()?,
                read_repairs: r.u64()?,
                repair_ranges_done: r.u32()?,
                repair_ranges_total: r.u32()?,
                storage: {
                    let code = r.u8()?;
                    StorageHealth::from_code(code)
                        .ok_or_else(|| malformed(format!("unknown storage health {code}")))?
                },
                storage_error: r.string32()?,
                wal_bytes: r.u64()?,
                connections: r.u32()?,
                overloaded: r.u64()?,
                peers: {
                    let n = r.count(8 + 4 + 1 + 24)?;
                    let mut peers = Vec::with_capacity(n);
                    let known = |v: u64| Some(v).filter(|&v| v != u64::MAX);
                    for _ in 0..n {
                        peers.push(PeerStatus {
                            host_id: r.u64()?,
                            address: r.string32()?,
                            up: r.u8()? != 0,
                            last_contact_ms_ago: known(r.u64()?),
                            generation: known(r.u64()?),
                            heartbeat_ms_ago: known(r.u64()?),
                        });
                    }
                    peers
                },
            }),
            kind::REPLICA_WRITE | kind::PING | kind::ADJUST_CLOCK => Response::Ack,
            kind::MERKLE_TREE => {
                let n = r.count(8)?;
                let mut hashes = Vec::with_capacity(n);
                for _ in 0..n {
                    hashes.push(r.u64()?);
                }
                Response::Hashes(hashes)
            }
            kind::LED_OP_IDS => {
                let n = r.count(16)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(r.u128()?);
                }
                Response::OpIds(ids)
            }
            kind::REPAIR => Response::RepairReport(RepairReport {
                ranges: r.u32()?,
                ranges_skipped: r.u32()?,
                leaves: r.u64()?,
                leaves_differing: r.u64()?,
                cells_repaired: r.u64()?,
                elapsed_ms: r.u64()?,
            }),
            kind::GOSSIP if r.buf.is_empty() => Response::Ack,
            kind::GOSSIP => Response::Gossip(r.bytes32()?.to_vec()),
            kind::RAFT => Response::Raft(r.bytes32()?.to_vec()),
            kind::ADMIN => Response::Admin(r.bytes32()?.to_vec()),
            kind::REPLICA_READ => Response::Cells(get_cells(&mut r)?),
            kind::ROUTING => Response::Routing(get_routing(&mut r)?),
            kind::INSPECT_REPLICAS => {
                let n = r.count(8 + 4 + 1 + 4)?;
                let mut views = Vec::with_capacity(n);
                for _ in 0..n {
                    let host_id = r.u64()?;
                    let address = r.string32()?;
                    let error = match r.u8()? {
                        0 => None,
                        1 => Some(r.string32()?),
                        f => return Err(malformed(format!("bad error flag {f}"))),
                    };
                    let m = r.count(32)?;
                    let mut shards = Vec::with_capacity(m);
                    for _ in 0..m {
                        shards.push(ShardView {
                            id: r.u64()?,
                            clock: r.u64()?,
                            sum: r.i64()?,
                            count: r.u64()?,
                        });
                    }
                    views.push(ReplicaView {
                        host_id,
                        address,
                        error,
                        shards,
                    });
                }
                Response::Replicas(views)
            }
            other => return Err(unknown_kind("response", other)),
        };
        r.finish()?;
        Ok(response)
    }
}
