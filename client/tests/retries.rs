//! The client's retries never turn "maybe applied" into "failed": once an
//! attempt may have reached a node, the request's outcome is unknown,
//! whatever later attempts are told.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use tally_client::frame::FrameCodec;
use tally_client::{new_op_id, Client, ClientConfig, Increment, Outcome};
use tokio_util::codec::FramedRead;

/// A node that takes the first increment and dies before answering: the
/// listener is gone too, so every retry fails to connect.
#[tokio::test]
async fn an_op_id_increment_whose_first_attempt_was_lost_is_indeterminate_not_failed() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut frames = FramedRead::new(socket, FrameCodec::default());
        while let Some(Ok(Ok(frame))) = frames.next().await {
            if frame.kind == 0x01 {
                return; // dies with the request read, listener and all
            }
        }
    });
    let mut config = ClientConfig::with_seeds([addr]);
    config.token_aware = false;
    config.max_retries = 3;
    config.backoff_base = Duration::from_millis(1);
    config.backoff_max = Duration::from_millis(5);
    let client = Client::connect(config).await.unwrap();
    let item = Increment {
        namespace: "events".into(),
        key: b"k".to_vec(),
        timestamp_ms: 1,
        delta: 1,
        events: 1,
        op_id: Some(new_op_id()),
    };
    let outcome = client.increment(vec![item]).await.pop().unwrap();
    node.await.unwrap();
    assert!(
        matches!(outcome, Outcome::Indeterminate(_)),
        "the first attempt may have been applied: {outcome:?}"
    );
}
