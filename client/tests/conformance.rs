//! docs/protocol.md against the code: every request and response is
//! written here byte by byte from the page alone (a small builder, no
//! library encoder), then decoded by the library and compared with the
//! value it must mean, and encoded back to the same bytes. A frame is
//! built with a crc32 written from the polynomial the page names. A third
//! party client written from the page is what this stands in for.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use tally_client::frame::FrameCodec;
use tally_client::{
    Add, AuthStep, CellState, Consistency, Count, DistinctPoint, ErrorCode, Increment, ItemResult,
    KeyRange, NamespaceInfo, NamespaceKind, NodeStatus, PeerStatus, Point, RepairReport,
    ReplicaView, Request, Resolution, Response, RoutingNode, RoutingRange, RoutingTable, ShardView,
    StorageHealth, SummaryEntry, TopKey,
};
use tokio_util::codec::Decoder;

/// Bytes as the page describes them.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn u8(mut self, v: u8) -> B {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> B {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> B {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> B {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> B {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u128(mut self, v: u128) -> B {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes16(self, v: &[u8]) -> B {
        let mut b = self.u16(v.len() as u16);
        b.0.extend_from_slice(v);
        b
    }
    fn str16(self, v: &str) -> B {
        self.bytes16(v.as_bytes())
    }
    fn bytes32(self, v: &[u8]) -> B {
        let mut b = self.u32(v.len() as u32);
        b.0.extend_from_slice(v);
        b
    }
    fn str32(self, v: &str) -> B {
        self.bytes32(v.as_bytes())
    }
    fn raw(mut self, v: &[u8]) -> B {
        self.0.extend_from_slice(v);
        self
    }
}

/// CRC-32/ISO-HDLC from its definition: reflected polynomial 0xEDB88320,
/// initial value and final XOR 0xFFFFFFFF.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn request(kind: u8, body: B, expected: Request) {
    let decoded = Request::decode(kind, &body.0)
        .unwrap_or_else(|e| panic!("kind {kind:#04x}: the page's bytes do not decode: {e}"));
    assert_eq!(decoded, expected, "kind {kind:#04x}");
    assert_eq!(expected.kind(), kind);
    let mut encoded = BytesMut::new();
    expected.encode_body(&mut encoded);
    assert_eq!(
        encoded.to_vec(),
        body.0,
        "kind {kind:#04x}: encoding differs"
    );
}

fn response(request_kind: u8, body: B, expected: Response) {
    let kind = 0x80 | request_kind;
    let decoded = Response::decode(kind, &body.0)
        .unwrap_or_else(|e| panic!("kind {kind:#04x}: the page's bytes do not decode: {e}"));
    assert_eq!(decoded, expected, "kind {kind:#04x}");
    let mut encoded = BytesMut::new();
    let wire_kind = expected.encode_body(request_kind, &mut encoded);
    assert_eq!(wire_kind, kind);
    assert_eq!(
        encoded.to_vec(),
        body.0,
        "kind {kind:#04x}: encoding differs"
    );
}

#[test]
fn the_crc_is_the_one_the_page_names_and_a_hand_built_frame_decodes() {
    assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
    let body = B::default().u8(2).str16("events").bytes16(b"video:1").0;
    // length (BE) | version | kind | request id (LE) | crc (LE) | body
    let mut wire = Vec::new();
    wire.extend_from_slice(&((14 + body.len()) as u32).to_be_bytes());
    wire.push(1);
    wire.push(0x02);
    wire.extend_from_slice(&77u64.to_le_bytes());
    wire.extend_from_slice(&crc32_ieee(&body).to_le_bytes());
    wire.extend_from_slice(&body);
    let mut buf = BytesMut::from(&wire[..]);
    let frame = FrameCodec::default()
        .decode(&mut buf)
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((frame.kind, frame.request_id), (0x02, 77));
    assert_eq!(frame.body.to_vec(), body);
    // One flipped body bit is a checksum mismatch with the request id.
    let mut bad = wire.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut buf = BytesMut::from(&bad[..]);
    let refused = FrameCodec::default()
        .decode(&mut buf)
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.code, refused.request_id),
        (ErrorCode::ChecksumMismatch, 77)
    );
}

#[test]
fn every_request_decodes_from_the_pages_bytes() {
    let op = (1_800_000_000_000u128 << 80) | 0xABCDEF;
    let item = |b: B| {
        b.str16("events")
            .bytes16(b"k")
            .i64(1_800_000_000_000)
            .i64(-5)
    };
    let items = vec![
        Increment {
            namespace: "events".into(),
            key: b"k".to_vec(),
            timestamp_ms: 1_800_000_000_000,
            delta: -5,
            events: 1,
            op_id: None,
        },
        Increment {
            namespace: "events".into(),
            key: b"k".to_vec(),
            timestamp_ms: 1_800_000_000_000,
            delta: -5,
            events: 3,
            op_id: Some(op),
        },
    ];
    let increment_body = |b: B| {
        let b = b.u8(2).u32(1500).u32(2);
        let b = item(b).u8(0);
        item(b).u8(0b11).u128(op).u32(3)
    };
    request(
        0x01,
        increment_body(B::default()),
        Request::Increment {
            consistency: Consistency::Quorum,
            timeout_ms: 1500,
            items: items.clone(),
        },
    );
    request(
        0x08,
        increment_body(B::default().u64(9)),
        Request::ForwardedIncrement {
            epoch: 9,
            consistency: Consistency::Quorum,
            timeout_ms: 1500,
            items,
        },
    );
    request(
        0x02,
        B::default().u8(1).str16("events").bytes16(b"k"),
        Request::Total {
            consistency: Consistency::One,
            namespace: "events".into(),
            key: b"k".to_vec(),
        },
    );
    request(
        0x03,
        B::default()
            .u8(3)
            .str16("events")
            .bytes16(b"k")
            .u8(2)
            .i64(0)
            .i64(3_600_000),
        Request::Range {
            consistency: Consistency::All,
            namespace: "events".into(),
            key: b"k".to_vec(),
            resolution: Resolution::Hour,
            start_ms: 0,
            end_ms: 3_600_000,
        },
    );
    request(
        0x16,
        B::default()
            .u8(2)
            .u32(500)
            .u32(1)
            .str16("viewers")
            .bytes16(b"video-7")
            .i64(60_000)
            .bytes16(b"user-42"),
        Request::Add {
            consistency: Consistency::Quorum,
            timeout_ms: 500,
            items: vec![Add {
                namespace: "viewers".into(),
                key: b"video-7".to_vec(),
                timestamp_ms: 60_000,
                member: b"user-42".to_vec(),
            }],
        },
    );
    request(
        0x17,
        B::default()
            .u8(1)
            .str16("viewers")
            .bytes16(b"video-7")
            .u8(3)
            .i64(0)
            .i64(604_800_000),
        Request::Distinct {
            consistency: Consistency::One,
            namespace: "viewers".into(),
            key: b"video-7".to_vec(),
            resolution: Resolution::Day,
            start_ms: 0,
            end_ms: 604_800_000,
        },
    );
    request(
        0x18,
        B::default()
            .u8(2)
            .str16("events")
            .u8(1)
            .i64(0)
            .i64(3_600_000)
            .u32(10),
        Request::Top {
            consistency: Consistency::Quorum,
            namespace: "events".into(),
            resolution: Resolution::Minute,
            start_ms: 0,
            end_ms: 3_600_000,
            k: 10,
        },
    );
    request(
        0x19,
        B::default().str16("events").u8(2).i64(0).i64(3_600_000),
        Request::TopSummary {
            namespace: "events".into(),
            resolution: Resolution::Hour,
            start_ms: 0,
            end_ms: 3_600_000,
        },
    );
    request(
        0x04,
        B::default()
            .u8(2)
            .str16("events")
            .bytes16(b"k")
            .i64(10)
            .i64(20),
        Request::Stats {
            consistency: Consistency::Quorum,
            namespace: "events".into(),
            key: b"k".to_vec(),
            start_ms: 10,
            end_ms: 20,
        },
    );
    request(0x05, B::default(), Request::ListNamespaces);
    request(
        0x06,
        B::default().str16("views"),
        Request::DescribeNamespace {
            name: "views".into(),
        },
    );
    request(0x07, B::default(), Request::Status);
    // A cell as the page's "Cell states" section writes it.
    let cell_key = B::default()
        .raw(&7u64.to_be_bytes())
        .u8(6)
        .raw(b"events")
        .raw(&1u16.to_be_bytes())
        .raw(b"k")
        .u8(4)
        .raw(&(1u64 << 63).to_be_bytes())
        .0;
    let cell_value = B::default().u16(1).u64(1 << 32 | 1).u64(3).i64(-2).u64(4).0;
    request(
        0x09,
        B::default()
            .u64(5)
            .u32(1)
            .bytes16(&cell_key)
            .bytes32(&cell_value),
        Request::ReplicaWrite {
            epoch: 5,
            cells: vec![CellState {
                key: cell_key.clone(),
                value: cell_value.clone(),
            }]
            .into(),
        },
    );
    request(
        0x0A,
        B::default().u64(5).u32(1).bytes16(b"a").bytes16(b"b"),
        Request::ReplicaRead {
            epoch: 5,
            ranges: vec![KeyRange {
                start: b"a".to_vec(),
                end: b"b".to_vec(),
            }],
        },
    );
    request(0x0B, B::default(), Request::Routing);
    request(
        0x0C,
        B::default().str16("events").bytes16(b"k"),
        Request::InspectReplicas {
            namespace: "events".into(),
            key: b"k".to_vec(),
        },
    );
    request(0x0D, B::default(), Request::Ping);
    request(
        0x0E,
        B::default().u64(3).bytes32(b"gossip"),
        Request::Gossip {
            from: 3,
            payload: b"gossip".to_vec(),
        },
    );
    request(
        0x0F,
        B::default().i64(-1000),
        Request::AdjustClock { offset_ms: -1000 },
    );
    request(
        0x10,
        B::default().u64(5).u64(10).u64(20).u8(4),
        Request::MerkleTree {
            epoch: 5,
            start_token: 10,
            end_token: 20,
            depth: 4,
        },
    );
    request(0x11, B::default(), Request::Repair);
    request(
        0x12,
        B::default().bytes32(b"{}"),
        Request::Raft {
            payload: b"{}".to_vec(),
        },
    );
    let admin = br#"{"Remove":{"host_id":2}}"#;
    request(
        0x13,
        B::default().bytes32(admin),
        Request::Admin {
            payload: admin.to_vec(),
        },
    );
    request(0x14, B::default().u64(2), Request::LedOpIds { leader: 2 });
    request(
        0x15,
        B::default().u8(0).str16("tally_ab"),
        Request::Auth(AuthStep::Token {
            token: "tally_ab".into(),
        }),
    );
    request(
        0x15,
        B::default().u8(1).u64(9).raw(&[7; 32]),
        Request::Auth(AuthStep::PeerHello {
            key_id: 9,
            nonce: [7; 32],
        }),
    );
    request(
        0x15,
        B::default().u8(2).raw(&[3; 32]),
        Request::Auth(AuthStep::PeerProof { proof: [3; 32] }),
    );
}

#[test]
fn every_response_decodes_from_the_pages_bytes() {
    response(
        0x01,
        B::default().u32(3).u8(0).u16(0).u8(1).u16(22).u8(2).u16(21),
        Response::Increment(vec![
            ItemResult::Ok,
            ItemResult::Failed(ErrorCode::Unavailable),
            ItemResult::Indeterminate(ErrorCode::Timeout),
        ]),
    );
    response(
        0x02,
        B::default().i64(-3).u64(9),
        Response::Total(Count { sum: -3, count: 9 }),
    );
    response(
        0x03,
        B::default().u32(1).i64(3_600_000).i64(5).u64(2),
        Response::Range(vec![Point {
            bucket_start_ms: 3_600_000,
            sum: 5,
            count: 2,
        }]),
    );
    response(
        0x04,
        B::default().i64(7).u64(3).u32(40),
        Response::Stats {
            total: Count { sum: 7, count: 3 },
            cells_read: 40,
        },
    );
    response(
        0x05,
        B::default()
            .u32(1)
            .str16("views")
            .u8(0)
            .u32(2)
            .u8(1)
            .u64(86_400_000)
            .u8(4)
            .u64(0),
        Response::Namespaces(vec![NamespaceInfo {
            name: "views".into(),
            kind: NamespaceKind::Counter,
            resolutions: vec![
                (Resolution::Minute, Some(86_400_000)),
                (Resolution::Total, None),
            ],
        }]),
    );
    response(
        0x17,
        B::default()
            .u32(2)
            .i64(0)
            .u64(120)
            .i64(86_400_000)
            .u64(95)
            .u64(170),
        Response::Distinct {
            points: vec![
                DistinctPoint {
                    bucket_start_ms: 0,
                    estimate: 120,
                },
                DistinctPoint {
                    bucket_start_ms: 86_400_000,
                    estimate: 95,
                },
            ],
            union: 170,
        },
    );
    response(
        0x18,
        B::default()
            .u32(1)
            .bytes16(b"video:1")
            .i64(120)
            .u64(118)
            .u64(41)
            .u32(0),
        Response::Top {
            keys: vec![TopKey {
                key: b"video:1".to_vec(),
                sum: 120,
                count: 118,
            }],
            certain_above: 41,
            nodes_missing: 0,
        },
    );
    response(
        0x19,
        B::default()
            .u64(3)
            .u32(1)
            .bytes16(b"video:1")
            .u64(60)
            .u64(3),
        Response::Summary {
            floor: 3,
            entries: vec![SummaryEntry {
                key: b"video:1".to_vec(),
                count: 60,
                error: 3,
            }],
        },
    );
    response(
        0x16,
        B::default().u32(1).u8(2).u16(21),
        Response::Increment(vec![ItemResult::Indeterminate(ErrorCode::Timeout)]),
    );
    response(
        0x05,
        B::default()
            .u32(1)
            .str16("viewers")
            .u8(14)
            .u32(1)
            .u8(3)
            .u64(0),
        Response::Namespaces(vec![NamespaceInfo {
            name: "viewers".into(),
            kind: NamespaceKind::Distinct { precision: 14 },
            resolutions: vec![(Resolution::Day, None)],
        }]),
    );
    response(
        0x07,
        status_page_body(),
        Response::Status(NodeStatus {
            node_id: 1,
            version: "0.1.0".into(),
            uptime_ms: 5000,
            address: "127.0.0.1:7400".into(),
            increments: 10,
            disk_bytes: 4096,
            epoch: 3,
            hints_pending: 0,
            hints_written: 1,
            hints_replayed: 1,
            hints_dropped: 0,
            read_repairs: 2,
            repair_ranges_done: 0,
            repair_ranges_total: 0,
            storage: StorageHealth::DiskFull,
            storage_error: "no space left on device".into(),
            wal_bytes: 1024,
            connections: 4,
            overloaded: 6,
            peers: vec![PeerStatus {
                host_id: 2,
                address: "127.0.0.1:7401".into(),
                up: true,
                last_contact_ms_ago: Some(15),
                generation: None,
                heartbeat_ms_ago: None,
            }],
            reads: 77,
        }),
    );
    response(0x09, B::default(), Response::Ack);
    response(0x0D, B::default(), Response::Ack);
    response(0x0F, B::default(), Response::Ack);
    response(
        0x0A,
        B::default().u32(1).bytes16(b"key").bytes32(&[0, 0]),
        Response::Cells(vec![CellState {
            key: b"key".to_vec(),
            value: vec![0, 0],
        }]),
    );
    // Routing: the node list, then the range list (not nested).
    response(
        0x0B,
        B::default()
            .u64(4)
            .u32(2)
            .u32(2)
            .u64(1)
            .str32("a:1")
            .u64(2)
            .str32("b:2")
            .u32(2)
            .u64(100)
            .u8(2)
            .u64(1)
            .u64(2)
            .u64(u64::MAX)
            .u8(2)
            .u64(2)
            .u64(1),
        Response::Routing(RoutingTable {
            epoch: 4,
            replication_factor: 2,
            nodes: vec![
                RoutingNode {
                    host_id: 1,
                    address: "a:1".into(),
                },
                RoutingNode {
                    host_id: 2,
                    address: "b:2".into(),
                },
            ],
            ranges: vec![
                RoutingRange {
                    end_token: 100,
                    replicas: vec![1, 2],
                },
                RoutingRange {
                    end_token: u64::MAX,
                    replicas: vec![2, 1],
                },
            ],
        }),
    );
    response(
        0x0C,
        B::default()
            .u32(2)
            .u64(1)
            .str32("a:1")
            .u8(0)
            .u32(1)
            .u64(1 << 32 | 1)
            .u64(3)
            .i64(5)
            .u64(2)
            .bytes32(b"cell")
            .u64(2)
            .str32("b:2")
            .u8(1)
            .str32("timed out")
            .u32(0)
            .bytes32(b""),
        Response::Replicas(vec![
            ReplicaView {
                host_id: 1,
                address: "a:1".into(),
                error: None,
                shards: vec![ShardView {
                    id: 1 << 32 | 1,
                    clock: 3,
                    sum: 5,
                    count: 2,
                }],
                value: b"cell".to_vec(),
            },
            ReplicaView {
                host_id: 2,
                address: "b:2".into(),
                error: Some("timed out".into()),
                shards: vec![],
                value: vec![],
            },
        ]),
    );
    response(
        0x0E,
        B::default().bytes32(b"reply"),
        Response::Gossip(b"reply".to_vec()),
    );
    response(0x0E, B::default(), Response::Ack);
    response(
        0x10,
        B::default().u32(2).u64(11).u64(22),
        Response::Hashes(vec![11, 22]),
    );
    response(
        0x11,
        B::default().u32(8).u32(1).u64(64).u64(2).u64(10).u64(1500),
        Response::RepairReport(RepairReport {
            ranges: 8,
            ranges_skipped: 1,
            leaves: 64,
            leaves_differing: 2,
            cells_repaired: 10,
            elapsed_ms: 1500,
        }),
    );
    response(
        0x12,
        B::default().bytes32(b"{}"),
        Response::Raft(b"{}".to_vec()),
    );
    let refused = br#"{"Refused":{"reason":"no"}}"#;
    response(
        0x13,
        B::default().bytes32(refused),
        Response::Admin(refused.to_vec()),
    );
    let op = (1_800_000_000_000u128 << 80) | 7;
    response(
        0x14,
        B::default().u32(1).u128(op),
        Response::OpIds(vec![op]),
    );
    response(
        0x15,
        B::default().u8(0).u8(1),
        Response::Authenticated(tally_client::auth::Principal::Client(
            tally_client::auth::Role::Write,
        )),
    );
    response(
        0x15,
        B::default().u8(1).raw(&[5; 32]).raw(&[6; 32]),
        Response::PeerChallenge {
            nonce: [5; 32],
            proof: [6; 32],
        },
    );
    // An error frame answers any request: kind 0xFF.
    let body = B::default().u16(20).str32("busy");
    let decoded = Response::decode(0xFF, &body.0).unwrap();
    assert_eq!(
        decoded,
        Response::Error {
            code: ErrorCode::Overloaded,
            message: "busy".into()
        }
    );
}

#[test]
fn admin_payloads_parse_as_the_page_writes_them() {
    use tally_client::admin::{AdminReply, AdminRequest};
    let page = [
        r#""Cluster""#,
        r#"{"Register": {"cluster_name": "tally", "address": "host:port", "rack": null}}"#,
        r#"{"AddToGroup": {"host_id": 4, "address": "host:port"}}"#,
        r#"{"FinishJoin": {"host_id": 4}}"#,
        r#"{"Decommission": {"host_id": 2}}"#,
        r#"{"RemoveNode": {"host_id": 2}}"#,
        r#"{"StartLeave": {"host_id": 2}}"#,
        r#"{"Remove": {"host_id": 2}}"#,
        r#"{"Abort": {"host_id": 4}}"#,
        r#"{"CreateNamespace": {"name": "views", "spec": "minute:7d, hour:90d, total"}}"#,
        r#"{"AlterNamespace": {"name": "views", "spec": "minute:14d, hour:90d, total"}}"#,
        r#""Cleanup""#,
    ];
    for json in page {
        AdminRequest::from_bytes(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
    let replies = [
        r#"{"Cluster": {"cluster_name": "tally", "epoch": 5, "replication_factor": 3, "leader": 1, "voters": [1, 2, 3], "members": [{"host_id": 1, "address": "host:port", "rack": null, "state": "normal", "tokens": [42], "ownership": 1.0}], "namespaces": [["views", "hour:30d, total"]]}}"#,
        r#"{"Done": {"epoch": 6, "host_id": 4}}"#,
        r#"{"Done": {"epoch": 6, "host_id": null}}"#,
        r#"{"Refused": {"reason": "no"}}"#,
        r#"{"Cleaned": {"cells": 1200}}"#,
        r#"{"Failed": {"reason": "no leader"}}"#,
    ];
    for json in replies {
        AdminReply::from_bytes(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
}

/// The Status body of the page's example (the `reads` count last).
fn status_page_body() -> B {
    B::default()
        .u64(1)
        .str32("0.1.0")
        .u64(5000)
        .str32("127.0.0.1:7400")
        .u64(10)
        .u64(4096)
        .u64(3)
        .u64(0)
        .u64(1)
        .u64(1)
        .u64(0)
        .u64(2)
        .u32(0)
        .u32(0)
        .u8(2)
        .str32("no space left on device")
        .u64(1024)
        .u32(4)
        .u64(6)
        .u32(1)
        .u64(2)
        .str32("127.0.0.1:7401")
        .u8(1)
        .u64(15)
        .u64(u64::MAX)
        .u64(u64::MAX)
        .u64(77)
}

#[test]
fn a_status_from_a_node_that_sends_no_read_count_decodes_with_zero_reads() {
    let whole = status_page_body().0;
    let Ok(Response::Status(full)) = Response::decode(0x87, &whole) else {
        panic!("the page's status does not decode")
    };
    // A node from before `reads` ends its body before it.
    match Response::decode(0x87, &whole[..whole.len() - 8]) {
        Ok(Response::Status(s)) => {
            assert_eq!(s.reads, 0);
            assert_eq!(s, NodeStatus { reads: 0, ..full });
        }
        other => panic!("decoded {other:?}"),
    }
}
