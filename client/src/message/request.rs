//! [`Request`]'s encoding: its wire kind, its body, and its decoding.

use bytes::{BufMut, BytesMut};

use super::kind;
use super::types::{CellState, KeyRange};
use super::wire::{
    consistency_code, get_adds, get_cell_batch, get_increments, malformed, put_adds, put_bytes16,
    put_bytes32, put_cell_batch, put_cell_chunks, put_increments, unknown_kind, DecodeError,
    Reader, MAX_RANGES,
};
use super::{AuthStep, Request};

/// Encodes the body of a `ReplicaWrite` of the concatenation of `chunks`
/// (the same bytes as `Request::ReplicaWrite` with those cells), for
/// senders that coalesce several writers' cells into one message.
pub fn encode_replica_write(epoch: u64, chunks: &[&[CellState]], buf: &mut BytesMut) -> u8 {
    buf.put_u64_le(epoch);
    put_cell_chunks(buf, chunks);
    kind::REPLICA_WRITE
}

impl Request {
    /// The wire kind of this request.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Increment { .. } => kind::INCREMENT,
            Request::Total { .. } => kind::TOTAL,
            Request::Range { .. } => kind::RANGE,
            Request::Add { .. } => kind::ADD,
            Request::Distinct { .. } => kind::DISTINCT,
            Request::Top { .. } => kind::TOP,
            Request::TopSummary { .. } => kind::TOP_SUMMARY,
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
            Request::Auth(_) => kind::AUTH,
        }
    }

    /// The request's name in snake case (`increment`, `replica_write`, ...),
    /// as logs and metrics label it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Increment { .. } => "increment",
            Request::Total { .. } => "total",
            Request::Range { .. } => "range",
            Request::Add { .. } => "add",
            Request::Distinct { .. } => "distinct",
            Request::Top { .. } => "top",
            Request::TopSummary { .. } => "top_summary",
            Request::Stats { .. } => "stats",
            Request::ListNamespaces => "list_namespaces",
            Request::DescribeNamespace { .. } => "describe_namespace",
            Request::Status => "status",
            Request::ForwardedIncrement { .. } => "forwarded_increment",
            Request::ReplicaWrite { .. } => "replica_write",
            Request::ReplicaRead { .. } => "replica_read",
            Request::Routing => "routing",
            Request::InspectReplicas { .. } => "inspect_replicas",
            Request::Ping => "ping",
            Request::Gossip { .. } => "gossip",
            Request::AdjustClock { .. } => "adjust_clock",
            Request::MerkleTree { .. } => "merkle_tree",
            Request::Repair => "repair",
            Request::Raft { .. } => "raft",
            Request::Admin { .. } => "admin",
            Request::LedOpIds { .. } => "led_op_ids",
            Request::Auth(_) => "auth",
        }
    }

    /// Whether retrying this request after an unknown outcome is harmless.
    pub fn is_read(&self) -> bool {
        !matches!(
            self,
            Request::Increment { .. } | Request::ForwardedIncrement { .. } | Request::Add { .. }
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
            // A member added twice is counted once.
            Request::Add { .. } => true,
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
            Request::Add {
                consistency,
                timeout_ms,
                items,
            } => {
                buf.put_u8(consistency_code(*consistency));
                buf.put_u32_le(*timeout_ms);
                put_adds(buf, items);
            }
            Request::Top {
                consistency,
                namespace,
                resolution,
                start_ms,
                end_ms,
                k,
            } => {
                buf.put_u8(consistency_code(*consistency));
                put_bytes16(buf, namespace.as_bytes());
                buf.put_u8(resolution.code());
                buf.put_i64_le(*start_ms);
                buf.put_i64_le(*end_ms);
                buf.put_u32_le(*k);
            }
            Request::TopSummary {
                namespace,
                resolution,
                start_ms,
                end_ms,
            } => {
                put_bytes16(buf, namespace.as_bytes());
                buf.put_u8(resolution.code());
                buf.put_i64_le(*start_ms);
                buf.put_i64_le(*end_ms);
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
            }
            | Request::Distinct {
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
                put_cell_batch(buf, cells);
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
            Request::Auth(AuthStep::Token { token }) => {
                buf.put_u8(0);
                put_bytes16(buf, token.as_bytes());
            }
            Request::Auth(AuthStep::PeerHello { key_id, nonce }) => {
                buf.put_u8(1);
                buf.put_u64_le(*key_id);
                buf.put_slice(nonce);
            }
            Request::Auth(AuthStep::PeerProof { proof }) => {
                buf.put_u8(2);
                buf.put_slice(proof);
            }
        }
    }

    /// Decodes a request body of the given kind.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(body);
        let request = match kind {
            kind::INCREMENT => Request::Increment {
                consistency: r.consistency()?,
                timeout_ms: r.u32()?,
                items: get_increments(&mut r)?,
            },
            kind::ADD => Request::Add {
                consistency: r.consistency()?,
                timeout_ms: r.u32()?,
                items: get_adds(&mut r)?,
            },
            kind::DISTINCT => Request::Distinct {
                consistency: r.consistency()?,
                namespace: r.string16()?,
                key: r.bytes16()?.to_vec(),
                resolution: r.resolution()?,
                start_ms: r.i64()?,
                end_ms: r.i64()?,
            },
            kind::TOP => Request::Top {
                consistency: r.consistency()?,
                namespace: r.string16()?,
                resolution: r.resolution()?,
                start_ms: r.i64()?,
                end_ms: r.i64()?,
                k: r.u32()?,
            },
            kind::TOP_SUMMARY => Request::TopSummary {
                namespace: r.string16()?,
                resolution: r.resolution()?,
                start_ms: r.i64()?,
                end_ms: r.i64()?,
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
                cells: get_cell_batch(&mut r)?,
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
            kind::AUTH => Request::Auth(match r.u8()? {
                0 => AuthStep::Token {
                    token: r.string16()?,
                },
                1 => AuthStep::PeerHello {
                    key_id: r.u64()?,
                    nonce: r.array()?,
                },
                2 => AuthStep::PeerProof { proof: r.array()? },
                step => return Err(malformed(format!("unknown auth step {step}"))),
            }),
            other => return Err(unknown_kind("request", other)),
        };
        r.finish()?;
        Ok(request)
    }
}
