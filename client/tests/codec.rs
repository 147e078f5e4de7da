//! Codec properties: every request and response round-trips through its
//! frame, and arbitrary bytes never make a decoder panic; they get a typed
//! error instead.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use proptest::prelude::*;
use tally_client::frame::{parse_frame, Frame, FrameCodec, HEADER_BYTES};
use tally_client::{
    Add, AuthStep, CellState, Consistency, Count, DistinctPoint, ErrorCode, Increment, ItemResult,
    KeyRange, NamespaceInfo, NamespaceKind, NodeStatus, PeerStatus, Point, ReplicaView, Request,
    Resolution, Response, RoutingNode, RoutingRange, RoutingTable, ShardView, StorageHealth,
    SummaryEntry, TopKey,
};
use tokio_util::codec::{Decoder, Encoder};

fn consistency() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::One),
        Just(Consistency::Quorum),
        Just(Consistency::All)
    ]
}

fn resolution() -> impl Strategy<Value = Resolution> {
    prop_oneof![
        Just(Resolution::Minute),
        Just(Resolution::Hour),
        Just(Resolution::Day),
        Just(Resolution::Total)
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,12}"
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn cell() -> impl Strategy<Value = CellState> {
    (key(), key()).prop_map(|(key, value)| CellState { key, value })
}

fn increment() -> impl Strategy<Value = Increment> {
    (
        name(),
        key(),
        any::<i64>(),
        any::<i64>(),
        prop_oneof![Just(1u32), 1..=u32::MAX],
        proptest::option::of(any::<u128>()),
    )
        .prop_map(
            |(namespace, key, timestamp_ms, delta, events, op_id)| Increment {
                namespace,
                key,
                timestamp_ms,
                delta,
                events,
                op_id,
            },
        )
}

/// The internal (node-to-node) requests and the routing/debug ones.
fn cluster_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u64>(),
            consistency(),
            any::<u32>(),
            proptest::collection::vec(increment(), 0..5)
        )
            .prop_map(|(epoch, consistency, timeout_ms, items)| {
                Request::ForwardedIncrement {
                    epoch,
                    consistency,
                    timeout_ms,
                    items,
                }
            }),
        (any::<u64>(), proptest::collection::vec(cell(), 0..5)).prop_map(|(epoch, cells)| {
            Request::ReplicaWrite {
                epoch,
                cells: cells.into(),
            }
        }),
        (
            any::<u64>(),
            proptest::collection::vec(
                (key(), key()).prop_map(|(start, end)| KeyRange { start, end }),
                0..4
            )
        )
            .prop_map(|(epoch, ranges)| Request::ReplicaRead { epoch, ranges }),
        Just(Request::Routing),
        (name(), key()).prop_map(|(namespace, key)| Request::InspectReplicas { namespace, key }),
        Just(Request::Ping),
        (any::<u64>(), key()).prop_map(|(from, payload)| Request::Gossip { from, payload }),
        any::<i64>().prop_map(|offset_ms| Request::AdjustClock { offset_ms }),
        key().prop_map(|payload| Request::Raft { payload }),
        key().prop_map(|payload| Request::Admin { payload }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u8>()).prop_map(
            |(epoch, start_token, end_token, depth)| Request::MerkleTree {
                epoch,
                start_token,
                end_token,
                depth
            }
        ),
        Just(Request::Repair),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![client_request(), cluster_request(), auth_request()]
}

fn auth_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(|token| Request::Auth(AuthStep::Token { token })),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(key_id, nonce)| Request::Auth(AuthStep::PeerHello { key_id, nonce })),
        any::<[u8; 32]>().prop_map(|proof| Request::Auth(AuthStep::PeerProof { proof })),
    ]
}

fn client_request() -> impl Strategy<Value = Request> {
    let increment = increment();
    prop_oneof![
        (
            consistency(),
            any::<u32>(),
            proptest::collection::vec(increment, 0..8)
        )
            .prop_map(|(consistency, timeout_ms, items)| Request::Increment {
                consistency,
                timeout_ms,
                items
            }),
        (consistency(), name(), key()).prop_map(|(consistency, namespace, key)| Request::Total {
            consistency,
            namespace,
            key
        }),
        (
            consistency(),
            name(),
            key(),
            resolution(),
            any::<i64>(),
            any::<i64>()
        )
            .prop_map(
                |(consistency, namespace, key, resolution, start_ms, end_ms)| Request::Range {
                    consistency,
                    namespace,
                    key,
                    resolution,
                    start_ms,
                    end_ms
                }
            ),
        (consistency(), name(), key(), any::<i64>(), any::<i64>()).prop_map(
            |(consistency, namespace, key, start_ms, end_ms)| Request::Stats {
                consistency,
                namespace,
                key,
                start_ms,
                end_ms
            }
        ),
        Just(Request::ListNamespaces),
        (
            consistency(),
            name(),
            resolution(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>()
        )
            .prop_map(
                |(consistency, namespace, resolution, start_ms, end_ms, k)| Request::Top {
                    consistency,
                    namespace,
                    resolution,
                    start_ms,
                    end_ms,
                    k
                }
            ),
        (name(), resolution(), any::<i64>(), any::<i64>()).prop_map(
            |(namespace, resolution, start_ms, end_ms)| Request::TopSummary {
                namespace,
                resolution,
                start_ms,
                end_ms
            }
        ),
        (
            consistency(),
            any::<u32>(),
            proptest::collection::vec(
                (name(), key(), any::<i64>(), key()).prop_map(
                    |(namespace, key, timestamp_ms, member)| Add {
                        namespace,
                        key,
                        timestamp_ms,
                        member,
                    }
                ),
                0..8
            )
        )
            .prop_map(|(consistency, timeout_ms, items)| Request::Add {
                consistency,
                timeout_ms,
                items
            }),
        (
            consistency(),
            name(),
            key(),
            resolution(),
            any::<i64>(),
            any::<i64>()
        )
            .prop_map(
                |(consistency, namespace, key, resolution, start_ms, end_ms)| Request::Distinct {
                    consistency,
                    namespace,
                    key,
                    resolution,
                    start_ms,
                    end_ms
                }
            ),
        name().prop_map(|name| Request::DescribeNamespace { name }),
        Just(Request::Status),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    (0u16..40).prop_map(ErrorCode::from_u16)
}

fn routing_table() -> impl Strategy<Value = RoutingTable> {
    (
        any::<u64>(),
        1u32..6,
        proptest::collection::vec(
            (any::<u64>(), ".{0,12}")
                .prop_map(|(host_id, address)| RoutingNode { host_id, address }),
            0..4,
        ),
        proptest::collection::btree_map(
            any::<u64>(),
            proptest::collection::vec(any::<u64>(), 0..4),
            0..6,
        ),
    )
        .prop_map(|(epoch, replication_factor, nodes, ranges)| RoutingTable {
            epoch,
            replication_factor,
            nodes,
            ranges: ranges
                .into_iter()
                .map(|(end_token, replicas)| RoutingRange {
                    end_token,
                    replicas,
                })
                .collect(),
        })
}

fn replica_view() -> impl Strategy<Value = ReplicaView> {
    (
        any::<u64>(),
        ".{0,12}",
        proptest::option::of(".{0,12}"),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>(), any::<i64>(), any::<u64>()).prop_map(
                |(id, clock, sum, count)| ShardView {
                    id,
                    clock,
                    sum,
                    count,
                },
            ),
            0..4,
        ),
        key(),
    )
        .prop_map(|(host_id, address, error, shards, value)| ReplicaView {
            host_id,
            address,
            error,
            shards,
            value,
        })
}

fn peer() -> impl Strategy<Value = PeerStatus> {
    (
        any::<u64>(),
        ".{0,12}",
        any::<bool>(),
        [
            proptest::option::of(0u64..u64::MAX),
            proptest::option::of(0u64..u64::MAX),
            proptest::option::of(0u64..u64::MAX),
        ],
    )
        .prop_map(|(host_id, address, up, [a, b, c])| PeerStatus {
            host_id,
            address,
            up,
            last_contact_ms_ago: a,
            generation: b,
            heartbeat_ms_ago: c,
        })
}

fn increment_result() -> impl Strategy<Value = ItemResult> {
    prop_oneof![
        Just(ItemResult::Ok),
        code().prop_map(ItemResult::Failed),
        code().prop_map(ItemResult::Indeterminate)
    ]
}

fn response() -> impl Strategy<Value = (u8, Response)> {
    let item = increment_result();
    let point = (any::<i64>(), any::<i64>(), any::<u64>()).prop_map(|(b, s, c)| Point {
        bucket_start_ms: b,
        sum: s,
        count: c,
    });
    let ns = (
        name(),
        prop_oneof![
            Just(NamespaceKind::Counter),
            (4u8..=18).prop_map(|precision| NamespaceKind::Distinct { precision })
        ],
        proptest::collection::vec((resolution(), proptest::option::of(1u64..u64::MAX)), 0..4),
    )
        .prop_map(|(name, kind, resolutions)| NamespaceInfo {
            name,
            kind,
            resolutions,
        });
    let distinct = (any::<i64>(), any::<u64>()).prop_map(|(b, e)| DistinctPoint {
        bucket_start_ms: b,
        estimate: e,
    });
    prop_oneof![
        proptest::collection::vec(item, 0..8).prop_map(|r| (1, Response::Increment(r))),
        (any::<i64>(), any::<u64>())
            .prop_map(|(sum, count)| (2, Response::Total(Count { sum, count }))),
        proptest::collection::vec(point, 0..8).prop_map(|p| (3, Response::Range(p))),
        (any::<i64>(), any::<u64>(), any::<u32>()).prop_map(|(sum, count, cells_read)| (
            4,
            Response::Stats {
                total: Count { sum, count },
                cells_read
            }
        )),
        proptest::collection::vec(ns, 0..3).prop_map(|l| (5, Response::Namespaces(l))),
        (proptest::collection::vec(distinct, 0..8), any::<u64>())
            .prop_map(|(points, union)| (0x17, Response::Distinct { points, union })),
        proptest::collection::vec(increment_result(), 0..8)
            .prop_map(|r| (0x16, Response::Increment(r))),
        (
            proptest::collection::vec(
                (key(), any::<i64>(), any::<u64>()).prop_map(|(key, sum, count)| TopKey {
                    key,
                    sum,
                    count
                }),
                0..5
            ),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(keys, certain_above, nodes_missing)| (
                0x18,
                Response::Top {
                    keys,
                    certain_above,
                    nodes_missing
                }
            )),
        (
            any::<u64>(),
            proptest::collection::vec(
                (key(), any::<u64>(), any::<u64>()).prop_map(|(key, count, error)| SummaryEntry {
                    key,
                    count,
                    error
                }),
                0..5
            )
        )
            .prop_map(|(floor, entries)| (0x19, Response::Summary { floor, entries })),
        (
            any::<u64>(),
            ".{0,10}",
            any::<u64>(),
            any::<u64>(),
            any::<[u64; 6]>(),
            proptest::collection::vec(peer(), 0..3)
        )
            .prop_map(|(node_id, version, uptime_ms, increments, h, peers)| (
                7,
                Response::Status(NodeStatus {
                    node_id,
                    version,
                    uptime_ms,
                    address: "127.0.0.1:1".into(),
                    increments,
                    disk_bytes: 7,
                    epoch: h[0],
                    hints_pending: h[1],
                    hints_written: h[2],
                    hints_replayed: h[3],
                    hints_dropped: h[4],
                    read_repairs: h[5],
                    repair_ranges_done: 1,
                    repair_ranges_total: 2,
                    storage: match h[0] % 3 {
                        0 => StorageHealth::Ok,
                        1 => StorageHealth::Poisoned,
                        _ => StorageHealth::DiskFull,
                    },
                    storage_error: "no space left on device".repeat((h[4] % 2) as usize),
                    wal_bytes: h[1],
                    connections: h[2] as u32,
                    overloaded: h[3],
                    peers,
                    reads: h[5],
                })
            )),
        proptest::collection::vec(increment_result(), 0..4)
            .prop_map(|r| (8, Response::Increment(r))),
        prop_oneof![Just(9u8), Just(13u8), Just(14u8), Just(15u8)].prop_map(|k| (k, Response::Ack)),
        key()
            .prop_filter("an empty reply is an Ack", |p| !p.is_empty())
            .prop_map(|p| (14, Response::Gossip(p))),
        proptest::collection::vec(cell(), 0..5).prop_map(|c| (10, Response::Cells(c))),
        key().prop_map(|p| (0x12, Response::Raft(p))),
        (0u8..4).prop_map(|c| (
            0x15,
            Response::Authenticated(tally_client::auth::Principal::from_code(c).unwrap())
        )),
        (any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(nonce, proof)| (0x15, Response::PeerChallenge { nonce, proof })),
        key().prop_map(|p| (0x13, Response::Admin(p))),
        routing_table().prop_map(|t| (11, Response::Routing(t))),
        proptest::collection::vec(any::<u64>(), 0..8).prop_map(|h| (16, Response::Hashes(h))),
        (any::<[u32; 2]>(), any::<[u64; 4]>()).prop_map(|(a, b)| (
            17,
            Response::RepairReport(tally_client::RepairReport {
                ranges: a[0],
                ranges_skipped: a[1],
                leaves: b[0],
                leaves_differing: b[1],
                cells_repaired: b[2],
                elapsed_ms: b[3],
            })
        )),
        proptest::collection::vec(replica_view(), 0..3).prop_map(|v| (12, Response::Replicas(v))),
        (code(), ".{0,20}").prop_map(|(code, message)| (2, Response::Error { code, message })),
    ]
}

/// Sends a frame through the encoder and decoder.
fn through_the_wire(frame: Frame) -> Frame {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    codec.decode(&mut buf).unwrap().unwrap().unwrap()
}

proptest! {
    #[test]
    fn requests_round_trip(request in request(), id in any::<u64>()) {
        let mut body = BytesMut::new();
        request.encode_body(&mut body);
        let frame = through_the_wire(Frame { kind: request.kind(), request_id: id, body: body.freeze() });
        prop_assert_eq!(frame.request_id, id);
        prop_assert_eq!(Request::decode(frame.kind, &frame.body).unwrap(), request);
    }

    #[test]
    fn responses_round_trip((request_kind, response) in response(), id in any::<u64>()) {
        let mut body = BytesMut::new();
        let kind = response.encode_body(request_kind, &mut body);
        let frame = through_the_wire(Frame { kind, request_id: id, body: body.freeze() });
        prop_assert_eq!(Response::decode(frame.kind, &frame.body).unwrap(), response);
    }

    #[test]
    fn a_coalesced_replica_write_is_the_concatenated_one(
        epoch in any::<u64>(),
        chunks in proptest::collection::vec(proptest::collection::vec(cell(), 0..4), 0..4),
    ) {
        let parts: Vec<&[CellState]> = chunks.iter().map(Vec::as_slice).collect();
        let mut coalesced = BytesMut::new();
        let kind = tally_client::message::request::encode_replica_write(epoch, &parts, &mut coalesced);
        let whole = Request::ReplicaWrite { epoch, cells: chunks.concat().into() };
        let mut body = BytesMut::new();
        whole.encode_body(&mut body);
        prop_assert_eq!(kind, whole.kind());
        prop_assert_eq!(coalesced, body);
    }

    #[test]
    fn arbitrary_bodies_never_panic(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Request::decode(kind, &body);
        let _ = Response::decode(kind, &body);
    }

    #[test]
    fn arbitrary_frames_get_typed_errors(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let raw = BytesMut::from(&raw[..]);
        if let Err(bad) = parse_frame(raw.clone()) {
            prop_assert!(matches!(bad.code, ErrorCode::MalformedFrame | ErrorCode::UnsupportedVersion | ErrorCode::ChecksumMismatch));
        } else {
            prop_assert!(raw.len() >= HEADER_BYTES);
        }
    }

    #[test]
    fn a_flipped_body_bit_is_a_checksum_error(request in request(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut body = BytesMut::new();
        request.encode_body(&mut body);
        prop_assume!(!body.is_empty());
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(Frame { kind: 2, request_id: 9, body: body.freeze() }, &mut buf).unwrap();
        let i = 4 + HEADER_BYTES + at.index(buf.len() - 4 - HEADER_BYTES);
        buf[i] ^= 1 << bit;
        let bad = codec.decode(&mut buf).unwrap().unwrap().unwrap_err();
        prop_assert_eq!(bad.code, ErrorCode::ChecksumMismatch);
        prop_assert_eq!(bad.request_id, 9);
    }
}

#[test]
fn oversized_batch_is_refused_before_allocating() {
    let mut body = BytesMut::new();
    Request::Increment {
        consistency: Consistency::One,
        timeout_ms: 1,
        items: vec![],
    }
    .encode_body(&mut body);
    // Claim a million items in a tiny body.
    body[5..9].copy_from_slice(&1_000_000u32.to_le_bytes());
    let err = Request::decode(1, &body).unwrap_err();
    assert_eq!(err.code, ErrorCode::MalformedFrame);
}
