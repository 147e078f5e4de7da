//! [`Response`]'s encoding: its body, its wire kind, and its decoding
//! (the routing table's codec included: only answers carry it).

use bytes::{BufMut, BytesMut};

use super::kind;
use super::types::{
    Count, DistinctPoint, ItemResult, NamespaceInfo, NamespaceKind, NodeStatus, PeerStatus, Point,
    RepairReport, ReplicaView, ShardView, StorageHealth, SummaryEntry, TopKey,
};
use super::wire::{
    get_cells, malformed, put_bytes16, put_bytes32, put_cells, put_item_result, put_string32,
    unknown_kind, DecodeError, Reader,
};
use super::Response;
use crate::routing::{RoutingNode, RoutingRange, RoutingTable};

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
            Response::Distinct { points, union } => {
                buf.put_u32_le(points.len() as u32);
                for p in points {
                    buf.put_i64_le(p.bucket_start_ms);
                    buf.put_u64_le(p.estimate);
                }
                buf.put_u64_le(*union);
            }
            Response::Top {
                keys,
                certain_above,
                nodes_missing,
            } => {
                buf.put_u32_le(keys.len() as u32);
                for k in keys {
                    put_bytes16(buf, &k.key);
                    buf.put_i64_le(k.sum);
                    buf.put_u64_le(k.count);
                }
                buf.put_u64_le(*certain_above);
                buf.put_u32_le(*nodes_missing);
            }
            Response::Summary { floor, entries } => {
                buf.put_u64_le(*floor);
                buf.put_u32_le(entries.len() as u32);
                for e in entries {
                    put_bytes16(buf, &e.key);
                    buf.put_u64_le(e.count);
                    buf.put_u64_le(e.error);
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
                    // The distinct sketches' precision; 0 for counters.
                    buf.put_u8(match ns.kind {
                        NamespaceKind::Counter => 0,
                        NamespaceKind::Distinct { precision } => precision,
                    });
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
                buf.put_u64_le(s.reads);
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
            Response::Authenticated(principal) => {
                buf.put_u8(0);
                buf.put_u8(principal.code());
            }
            Response::PeerChallenge { nonce, proof } => {
                buf.put_u8(1);
                buf.put_slice(nonce);
                buf.put_slice(proof);
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
                    put_bytes32(buf, &v.value);
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
        let mut r = Reader::new(body);
        if kind == kind::ERROR {
            let code = r.error_code()?;
            let message = r.string32()?;
            r.finish()?;
            return Ok(Response::Error { code, message });
        }
        let response = match kind & !kind::RESPONSE {
            kind::INCREMENT | kind::FORWARDED_INCREMENT | kind::ADD => {
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
            kind::DISTINCT => {
                let n = r.count(16)?;
                let mut points = Vec::with_capacity(n);
                for _ in 0..n {
                    points.push(DistinctPoint {
                        bucket_start_ms: r.i64()?,
                        estimate: r.u64()?,
                    });
                }
                Response::Distinct {
                    points,
                    union: r.u64()?,
                }
            }
            kind::TOP => {
                let n = r.count(18)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(TopKey {
                        key: r.bytes16()?.to_vec(),
                        sum: r.i64()?,
                        count: r.u64()?,
                    });
                }
                Response::Top {
                    keys,
                    certain_above: r.u64()?,
                    nodes_missing: r.u32()?,
                }
            }
            kind::TOP_SUMMARY => {
                let floor = r.u64()?;
                let n = r.count(18)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(SummaryEntry {
                        key: r.bytes16()?.to_vec(),
                        count: r.u64()?,
                        error: r.u64()?,
                    });
                }
                Response::Summary { floor, entries }
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
                    let kind = match r.u8()? {
                        0 => NamespaceKind::Counter,
                        precision => NamespaceKind::Distinct { precision },
                    };
                    let m = r.count(9)?;
                    let mut resolutions = Vec::with_capacity(m);
                    for _ in 0..m {
                        let res = r.resolution()?;
                        let retention = r.u64()?;
                        resolutions.push((res, (retention != 0).then_some(retention)));
                    }
                    list.push(NamespaceInfo {
                        name,
                        kind,
                        resolutions,
                    });
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
                reads: if r.is_empty() { 0 } else { r.u64()? },
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
            kind::AUTH => match r.u8()? {
                0 => {
                    let code = r.u8()?;
                    Response::Authenticated(
                        crate::auth::Principal::from_code(code)
                            .ok_or_else(|| malformed(format!("unknown principal {code}")))?,
                    )
                }
                1 => Response::PeerChallenge {
                    nonce: r.array()?,
                    proof: r.array()?,
                },
                tag => return Err(malformed(format!("unknown auth answer {tag}"))),
            },
            kind::GOSSIP if r.is_empty() => Response::Ack,
            kind::GOSSIP => Response::Gossip(r.bytes32()?.to_vec()),
            kind::RAFT => Response::Raft(r.bytes32()?.to_vec()),
            kind::ADMIN => Response::Admin(r.bytes32()?.to_vec()),
            kind::REPLICA_READ => Response::Cells(get_cells(&mut r)?),
            kind::ROUTING => Response::Routing(get_routing(&mut r)?),
            kind::INSPECT_REPLICAS => {
                let n = r.count(8 + 4 + 1 + 4 + 4)?;
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
                    let value = r.bytes32()?.to_vec();
                    views.push(ReplicaView {
                        host_id,
                        address,
                        error,
                        shards,
                        value,
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
