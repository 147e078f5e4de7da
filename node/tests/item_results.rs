//! A per-item result's tag and code agree: `failed` carries a code that
//! says "nothing applied", `indeterminate` one that says "unknown". A
//! client that trusts either must never resend a maybe-applied increment
//! as if it were safe.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{free_port, inc, NodeProcess};
use futures_util::{SinkExt, StreamExt};
use tally_client::frame::{Frame, FrameCodec};
use tally_client::{Connection, Consistency, ItemResult, Request, Response};
use tokio_util::codec::Framed;

const FORWARDED_INCREMENT: u8 = 0x08;

/// A leader that takes the forwarded request and dies before answering:
/// the coordinator cannot know whether it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_lost_mid_request_gives_indeterminate_with_an_unknown_code() {
    let dir = tempfile::tempdir().unwrap();
    let a1 = format!("127.0.0.1:{}", free_port());
    // Host 2 answers pings and gossip (so the coordinator holds it up) but
    // hangs up on a forwarded increment once it has read it.
    let lost = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let a2 = lost.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = lost.accept().await {
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, FrameCodec::default());
                while let Some(Ok(Ok(frame))) = framed.next().await {
                    if frame.kind == FORWARDED_INCREMENT {
                        return;
                    }
                    let answer = Frame {
                        kind: 0x80 | frame.kind,
                        request_id: frame.request_id,
                        body: Bytes::new(),
                    };
                    if framed.send(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let members = format!("1={a1},2={a2}");
    let _n1 = NodeProcess::start_with(
        dir.path(),
        &a1,
        &[
            "--host-id".into(),
            "1".into(),
            "--members".into(),
            members,
            "--replication-factor".into(),
            "1".into(),
        ],
    );
    let c = Connection::open(&a1, Duration::from_secs(5)).await.unwrap();
    let items: Vec<_> = (0..32).map(|i| inc(&format!("k{i}"), 1)).collect();
    let request = Request::Increment {
        consistency: Consistency::One,
        timeout_ms: 5_000,
        items,
    };
    let results = match c.call(&request, Duration::from_secs(10)).await.unwrap() {
        Response::Increment(results) => results,
        other => panic!("{other:?}"),
    };
    let mut indeterminate = 0;
    for r in &results {
        match r {
            ItemResult::Ok => {}
            ItemResult::Failed(code) => assert!(code.nothing_applied(), "{r:?}"),
            ItemResult::Indeterminate(code) => {
                indeterminate += 1;
                assert!(!code.nothing_applied(), "{r:?} says nothing was applied");
            }
        }
    }
    assert!(
        indeterminate > 0,
        "no item went through the lost leader: {results:?}"
    );
}
