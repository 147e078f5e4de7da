//! Bad input against a real node: each gets its typed error, changes
//! nothing, and leaves the connection usable wherever the frame boundary is
//! intact.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::{BufMut, BytesMut};
use common::{free_port, now_ms, NodeProcess};
use futures_util::{SinkExt, StreamExt};
use tally_client::frame::{Frame, FrameCodec, PROTOCOL_VERSION};
use tally_client::{ClientError, ErrorCode, Increment, Outcome, Request, Resolution, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

fn inc(ns: &str, key: &[u8], timestamp_ms: i64) -> Increment {
    Increment {
        namespace: ns.into(),
        key: key.to_vec(),
        timestamp_ms,
        delta: 1,
        events: 1,
        op_id: None,
    }
}

fn code_of(outcome: &Outcome<()>) -> Option<ErrorCode> {
    match outcome {
        Outcome::Failed(ClientError::Node { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_increments_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &format!("127.0.0.1:{}", free_port()), "sync");
    let client = node.client().await;
    let now = now_ms();
    let outcomes = client
        .increment(vec![
            inc("events", b"good", now),
            inc("nope", b"k", now),
            inc("events", b"", now),
            inc("events", &[b'x'; 1025], now),
            inc("events", b"future", now + 3_600_000),
            inc("events", b"ancient", -5),
            inc("events", b"good", now),
        ])
        .await;
    assert_eq!(outcomes[0], Outcome::Ok(()));
    assert_eq!(code_of(&outcomes[1]), Some(ErrorCode::UnknownNamespace));
    assert_eq!(code_of(&outcomes[2]), Some(ErrorCode::InvalidKey));
    assert_eq!(code_of(&outcomes[3]), Some(ErrorCode::InvalidKey));
    assert_eq!(code_of(&outcomes[4]), Some(ErrorCode::TimestampOutOfRange));
    assert_eq!(code_of(&outcomes[5]), Some(ErrorCode::TimestampOutOfRange));
    assert_eq!(outcomes[6], Outcome::Ok(()));
    assert_eq!(client.total("events", b"good").await.unwrap().sum, 2);
    assert_eq!(
        client.total("events", b"future").await.unwrap().count,
        0,
        "a refused item applies nothing"
    );

    // A batch over the limit is refused whole.
    let big: Vec<Increment> = (0..10_001)
        .map(|i| inc("events", format!("k{i}").as_bytes(), now))
        .collect();
    let outcomes = client.increment(big).await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Failed(_))));
    assert_eq!(client.total("events", b"k1").await.unwrap().count, 0);

    // Reads check their arguments too.
    let err = client
        .range("events", b"good", Resolution::Minute, now, now - 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Node {
                code: ErrorCode::InvalidRange,
                ..
            }
        ),
        "{err}"
    );
    let err = client
        .range("events", b"good", Resolution::Minute, 0, now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Node {
                code: ErrorCode::InvalidRange,
                ..
            }
        ),
        "too many buckets: {err}"
    );
    let err = client.total("nope", b"good").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Node {
                code: ErrorCode::UnknownNamespace,
                ..
            }
        ),
        "{err}"
    );
}

fn raw_frame(version: u8, kind: u8, request_id: u64, body: &[u8], crc: Option<u32>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u32(14 + body.len() as u32);
    buf.put_u8(version);
    buf.put_u8(kind);
    buf.put_u64_le(request_id);
    buf.put_u32_le(crc.unwrap_or_else(|| crc32fast::hash(body)));
    buf.put_slice(body);
    buf.to_vec()
}

async fn read_error(framed: &mut Framed<tokio::net::TcpStream, FrameCodec>) -> (u64, ErrorCode) {
    let frame = framed.next().await.unwrap().unwrap().unwrap();
    match Response::decode(frame.kind, &frame.body).unwrap() {
        Response::Error { code, .. } => (frame.request_id, code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_answered_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        "periodic",
    );
    let mut stream = node.raw_connection().await;
    stream
        .write_all(&raw_frame(PROTOCOL_VERSION, 7, 11, b"", Some(0xdead_beef)))
        .await
        .unwrap();
    stream
        .write_all(&raw_frame(99, 7, 12, b"", None))
        .await
        .unwrap();
    stream
        .write_all(&raw_frame(PROTOCOL_VERSION, 0x42, 13, b"", None))
        .await
        .unwrap();
    stream
        .write_all(&raw_frame(PROTOCOL_VERSION, 2, 14, b"\x02\xff", None))
        .await
        .unwrap();
    let mut framed = Framed::new(stream, FrameCodec::default());
    let mut errors = Vec::new();
    for _ in 0..4 {
        errors.push(read_error(&mut framed).await);
    }
    errors.sort_by_key(|(id, _)| *id);
    assert_eq!(
        errors,
        vec![
            (11, ErrorCode::ChecksumMismatch),
            (12, ErrorCode::UnsupportedVersion),
            (13, ErrorCode::UnknownMessage),
            (14, ErrorCode::MalformedFrame),
        ]
    );
    // The same connection still serves a good request.
    let mut body = BytesMut::new();
    Request::Status.encode_body(&mut body);
    framed
        .send(Frame {
            kind: 7,
            request_id: 15,
            body: body.freeze(),
        })
        .await
        .unwrap();
    let frame = framed.next().await.unwrap().unwrap().unwrap();
    assert_eq!(frame.request_id, 15);
    assert!(matches!(
        Response::decode(frame.kind, &frame.body).unwrap(),
        Response::Status(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        "periodic",
    );
    let mut stream = node.raw_connection().await;
    stream
        .write_all(&(64u32 << 20).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&[0u8; 1024]).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::default());
    let (_, code) = read_error(&mut framed).await;
    assert_eq!(code, ErrorCode::FrameTooLarge);
    let mut stream = framed.into_inner();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "the node must close the connection"
    );
    // The node itself is fine.
    let client = node.client().await;
    assert!(client.status().await.is_ok());
}
