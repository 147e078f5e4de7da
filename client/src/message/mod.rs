//! Protocol messages: what clients and nodes say to each other, and their
//! byte encoding. See `docs/protocol.md` for the tables.
//!
//! Encoding is hand-written over `bytes`: little-endian fixed-width
//! integers, strings and byte strings with a `u16` length (`u32` for long
//! texts), lists with a `u32` count. Decoding never panics: every read is
//! bounds-checked and every count is checked against what is left, so a
//! hostile length cannot make the decoder allocate.

use crate::error::ErrorCode;
use crate::routing::RoutingTable;

mod access;
mod cell_batch;
pub mod request;
mod response;
mod types;
mod wire;

pub use crate::resolution::Resolution;
pub use access::{is_auth_kind, Need};
pub use cell_batch::CellBatch;
pub use types::{
    Add, CellState, Consistency, Count, DistinctPoint, Increment, ItemResult, KeyRange,
    NamespaceInfo, NamespaceKind, NodeStatus, PeerStatus, Point, RepairReport, ReplicaView,
    ShardView, StorageHealth, SummaryEntry, TopKey,
};
pub use wire::{DecodeError, MAX_BATCH_ITEMS, MAX_CELLS, MAX_RANGES};

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
    /// Add members to distinct counters (namespaces of kind `distinct`).
    /// Answered with `Increment` (one result per item). Adding a member
    /// again changes nothing, so a retry is always safe.
    Add {
        /// Replicas that must acknowledge.
        consistency: Consistency,
        /// The client's deadline for the whole request, in milliseconds.
        timeout_ms: u32,
        /// The members.
        items: Vec<Add>,
    },
    /// Distinct members per bucket over `[start_ms, end_ms)`, and over
    /// the whole range (the union, not a sum). Answered with `Distinct`.
    Distinct {
        /// Replicas that must answer.
        consistency: Consistency,
        /// Namespace (of kind `distinct`).
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
    /// The `k` keys of a counter namespace with the largest sums over the
    /// buckets at `resolution` starting in `[start_ms, end_ms)`, each with
    /// its exact sum and count read at `consistency`. Answered with `Top`.
    Top {
        /// Replicas that must answer each exact read.
        consistency: Consistency,
        /// Namespace (a counter namespace).
        namespace: String,
        /// Bucket width.
        resolution: Resolution,
        /// Start (inclusive), ms.
        start_ms: i64,
        /// End (exclusive), ms.
        end_ms: i64,
        /// How many keys (1..=1,000).
        k: u32,
    },
    /// Internal: the node's heavy-hitter summary of the increments it led
    /// in a namespace's buckets at `resolution` starting in
    /// `[start_ms, end_ms)`. Answered with `Summary`.
    TopSummary {
        /// Namespace.
        namespace: String,
        /// Bucket width.
        resolution: Resolution,
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
        cells: CellBatch,
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
    /// A step of the connection's authentication (`crate::auth`): the
    /// first frame on a connection to a node that asks for it.
    Auth(AuthStep),
}

/// A step of a connection's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// A client's API token. Answered with `Authenticated`.
    Token {
        /// The token, as `tally token create` printed it.
        token: String,
    },
    /// A node opens the peer handshake: the id of the cluster secret it
    /// proves with, and its nonce. Answered with `PeerChallenge`.
    PeerHello {
        /// [`crate::auth::ClusterSecret::key_id`].
        key_id: u64,
        /// The connecting node's nonce.
        nonce: [u8; crate::auth::NONCE_BYTES],
    },
    /// The connecting node's proof over both nonces. Answered with
    /// `Authenticated`.
    PeerProof {
        /// HMAC-SHA-256 under the cluster secret.
        proof: [u8; crate::auth::NONCE_BYTES],
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
    /// Distinct members per non-empty bucket, and over the range.
    Distinct {
        /// One estimate per non-empty bucket, in time order.
        points: Vec<DistinctPoint>,
        /// Estimated distinct members over the whole range.
        union: u64,
    },
    /// The largest keys of a window, largest first (`Top`).
    Top {
        /// At most `k` keys with their exact sums and counts.
        keys: Vec<TopKey>,
        /// Every key whose positive deltas in the window sum above this
        /// was a candidate, so is in `keys` if its sum ranks in the top
        /// `k` (the sum of the merged summaries' floors).
        certain_above: u64,
        /// Nodes whose summaries could not be read (their keys may be
        /// missing).
        nodes_missing: u32,
    },
    /// A node's heavy-hitter summary (`TopSummary`).
    Summary {
        /// The most a key not listed counted.
        floor: u64,
        /// The keys listed.
        entries: Vec<SummaryEntry>,
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
    /// The connection is authenticated as this principal.
    Authenticated(crate::auth::Principal),
    /// The accepting node's nonce and its proof over both nonces: the
    /// connecting node checks the proof before it proves itself.
    PeerChallenge {
        /// The accepting node's nonce.
        nonce: [u8; crate::auth::NONCE_BYTES],
        /// HMAC-SHA-256 under the cluster secret.
        proof: [u8; crate::auth::NONCE_BYTES],
    },
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
    pub const AUTH: u8 = 0x15;
    pub const ADD: u8 = 0x16;
    pub const DISTINCT: u8 = 0x17;
    pub const TOP: u8 = 0x18;
    pub const TOP_SUMMARY: u8 = 0x19;
    pub const RESPONSE: u8 = 0x80;
    pub const ERROR: u8 = 0xFF;
}
