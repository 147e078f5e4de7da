//! Who may talk to a node, against real processes over real TCP and HTTP:
//! token roles on both ports and revocation by editing the tokens file;
//! frames refused before their bodies are decoded; peers without the
//! cluster secret kept out of replica writes, Raft and joins; a rotation
//! of the secret; and a node that refuses to listen beyond loopback
//! unprotected.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::auth::{new_token, token_hash, ClusterSecret, Credentials};
use tally_client::{
    CellState, Client, ClientConfig, ClientError, Connection, Consistency, ErrorCode, Outcome,
    Request, Response, Secret,
};

const SECRET: &str = "a cluster secret for the security tests";

/// A tokens file with one token per role; the tokens (read, write, admin).
struct Tokens {
    path: PathBuf,
    read: String,
    write: String,
    admin: String,
}

impl Tokens {
    fn new(dir: &Path) -> Tokens {
        let tokens = Tokens {
            path: dir.join("tokens"),
            read: new_token(),
            write: new_token(),
            admin: new_token(),
        };
        tokens.keep(&[&tokens.read, &tokens.write, &tokens.admin]);
        tokens
    }

    /// Rewrites the file with only `kept`, with a later modification time.
    fn keep(&self, kept: &[&String]) {
        let role = |t: &String| {
            if *t == self.read {
                "read"
            } else if *t == self.write {
                "write"
            } else {
                "admin"
            }
        };
        let text: String = kept
            .iter()
            .map(|t| format!("{} {} test\n", token_hash(t), role(t)))
            .collect();
        let before = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        std::fs::write(&self.path, text).unwrap();
        if let Some(before) = before {
            std::fs::File::options()
                .write(true)
                .open(&self.path)
                .unwrap()
                .set_modified(before + Duration::from_secs(2))
                .unwrap();
        }
    }
}

fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

async fn client_as(addr: &str, token: Option<&str>) -> Client {
    let mut config = ClientConfig::with_seeds([addr.to_owned()]);
    config.token = token.map(|t| Secret(t.to_owned()));
    config.max_retries = 0;
    Client::connect(config).await.unwrap()
}

/// A raw connection to `addr` that presented `token`.
async fn connection_as(addr: &str, token: &str) -> Connection {
    Connection::open_with(
        addr,
        Duration::from_secs(2),
        &Credentials::Token(token.to_owned()),
        None,
    )
    .await
    .unwrap()
}

fn refused_with(outcome: &Outcome<()>) -> Option<ErrorCode> {
    match outcome {
        Outcome::Failed(ClientError::Node { code, .. }) => Some(*code),
        _ => None,
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Node { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn http_as_async(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> HttpAnswer {
    let (addr, token, method, path) = (
        addr.to_owned(),
        token.map(str::to_owned),
        method.to_owned(),
        path.to_owned(),
    );
    let body = body.map(|b| b.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || {
        http_as(&addr, token.as_deref(), &method, &path, body.as_deref()).unwrap()
    })
    .await
    .unwrap()
}

/// Roles on the binary port and over HTTP, and a token revoked by
/// editing the file stops working on its open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_cover_what_they_imply_on_both_ports_and_revocation_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path());
    let secret = secret_file(dir.path(), "secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start_with(
        &dir.path().join("data"),
        &addr,
        &args(&[
            "--init",
            "--replication-factor",
            "1",
            "--tokens-file",
            &tokens.path.display().to_string(),
            "--cluster-secret-file",
            &secret,
            "--test-hooks",
        ]),
    );
    let h = node.http.clone().unwrap();

    // No token: every request refused, nothing changed.
    let anonymous = client_as(&addr, None).await;
    assert_eq!(
        code_of(anonymous.total("events", b"k").await),
        ErrorCode::Unauthenticated
    );
    let outcomes = anonymous.increment(vec![inc("k", 1)]).await;
    assert_eq!(refused_with(&outcomes[0]), Some(ErrorCode::Unauthenticated));
    // A made-up token: refused when the connection opens.
    let mut config = ClientConfig::with_seeds([addr.clone()]);
    config.token = Some(Secret(new_token()));
    assert_eq!(
        code_of(Client::connect(config).await),
        ErrorCode::Unauthenticated
    );

    let read = client_as(&addr, Some(&tokens.read)).await;
    let write = client_as(&addr, Some(&tokens.write)).await;
    let admin = client_as(&addr, Some(&tokens.admin)).await;
    let outcomes = read.increment(vec![inc("k", 1)]).await;
    assert_eq!(refused_with(&outcomes[0]), Some(ErrorCode::Forbidden));
    assert!(write.increment(vec![inc("k", 5)]).await[0].is_ok());
    assert_eq!(read.total("events", b"k").await.unwrap().sum, 5);
    let create = AdminRequest::CreateNamespace {
        name: "likes".into(),
        spec: "minute:1d,total".into(),
    };
    assert_eq!(code_of(write.admin(&create).await), ErrorCode::Forbidden);
    assert_eq!(code_of(write.repair().await), ErrorCode::Forbidden);
    assert_eq!(code_of(read.admin(&create).await), ErrorCode::Forbidden);
    assert!(matches!(
        admin.admin(&create).await.unwrap(),
        AdminReply::Done { .. }
    ));
    assert!(admin.repair().await.is_ok());
    // The test hook needs --test-hooks and an admin token.
    let hook = Request::AdjustClock { offset_ms: 0 };
    let w = connection_as(&addr, &tokens.write).await;
    assert!(matches!(
        w.call(&hook, Duration::from_secs(2)).await,
        Ok(Response::Error {
            code: ErrorCode::Forbidden,
            ..
        })
    ));
    let a = connection_as(&addr, &tokens.admin).await;
    assert_eq!(
        a.call(&hook, Duration::from_secs(2)).await.unwrap(),
        Response::Ack
    );

    // HTTP: the same tokens as bearer tokens.
    let body = r#"{"increments": [{"key": "k"}]}"#;
    let answer = http_as_async(&h, None, "POST", "/v1/increments", Some(body)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.headers.iter().any(|l| l
        .to_ascii_lowercase()
        .starts_with("www-authenticate: bearer")));
    assert!(answer.body.contains("Unauthenticated"), "{}", answer.body);
    let answer = http_as_async(&h, Some(&tokens.read), "POST", "/v1/increments", Some(body)).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = http_as_async(
        &h,
        Some(&tokens.write),
        "POST",
        "/v1/increments",
        Some(body),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ns = r#"{"name": "shares", "spec": "total"}"#;
    let answer = http_as_async(&h, Some(&tokens.write), "POST", "/v1/namespaces", Some(ns)).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = http_as_async(&h, Some(&tokens.admin), "POST", "/v1/namespaces", Some(ns)).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        http_as_async(&h, None, "GET", "/healthz", None)
            .await
            .status,
        200
    );
    assert_eq!(
        http_as_async(&h, None, "GET", "/readyz", None).await.status,
        200
    );
    assert_eq!(
        http_as_async(&h, None, "GET", "/metrics", None)
            .await
            .status,
        401
    );
    let metrics = http_as_async(&h, Some(&tokens.read), "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let refused: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("tally_access_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 8.0, "{refused}");
    assert_eq!(read.total("events", b"k").await.unwrap().sum, 6);

    // Revoked by editing the file: the open connection's next request is
    // refused (the node reads the file within a second of a change).
    let w = connection_as(&addr, &tokens.write).await;
    let increment = Request::Increment {
        consistency: Consistency::One,
        timeout_ms: 2000,
        items: vec![inc("k", 1)],
    };
    assert!(matches!(
        w.call(&increment, Duration::from_secs(2)).await,
        Ok(Response::Increment(_))
    ));
    tokens.keep(&[&tokens.read, &tokens.admin]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match w.call(&increment, Duration::from_secs(2)).await {
            Ok(Response::Error {
                code: ErrorCode::Unauthenticated,
                ..
            }) => break,
            Ok(Response::Increment(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = http_as_async(
        &h,
        Some(&tokens.write),
        "POST",
        "/v1/increments",
        Some(body),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let after = read.total("events", b"k").await.unwrap().sum;
    assert!(after >= 7, "{after}");
}

/// A frame from a connection that proved nothing is refused from its
/// header: its body is never decoded (a garbage body is answered
/// `Unauthenticated`, not `MalformedFrame`), and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_authentication_are_refused_without_decoding_their_bodies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start_with(
        &dir.path().join("data"),
        &addr,
        &args(&["--cluster-secret-file", &secret]),
    );
    for kind in [
        Request::ReplicaWrite {
            epoch: 0,
            cells: Default::default(),
        }
        .kind(),
        Request::Raft { payload: vec![] }.kind(),
        Request::Gossip {
            from: 9,
            payload: vec![],
        }
        .kind(),
    ] {
        let mut stream = node.raw_connection().await;
        let garbage = vec![0xEE; 64];
        let mut frame = bytes::BytesMut::new();
        let codec_frame = tally_client::frame::Frame {
            kind,
            request_id: 7,
            body: bytes::Bytes::from(garbage),
        };
        tokio_util::codec::Encoder::encode(
            &mut tally_client::frame::FrameCodec::default(),
            codec_frame,
            &mut frame,
        )
        .unwrap();
        // Twice: the connection stays open, each frame answered unread.
        for _ in 0..2 {
            stream.write_all(&frame).await.unwrap();
        }
        let mut buf = bytes::BytesMut::new();
        let mut answers = Vec::new();
        while answers.len() < 2 {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("no answer")
                .unwrap();
            assert!(n > 0, "the node closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(frame) = tokio_util::codec::Decoder::decode(
                &mut tally_client::frame::FrameCodec::default(),
                &mut buf,
            )
            .unwrap()
            {
                answers.push(frame.unwrap());
            }
        }
        for decoded in answers {
            match Response::decode(decoded.kind, &decoded.body).unwrap() {
                Response::Error { code, message } => {
                    assert_eq!(code, ErrorCode::Unauthenticated, "kind {kind}: {message}");
                    assert!(!message.contains(SECRET));
                }
                other => panic!("kind {kind}: {other:?}"),
            }
        }
    }
    // A failed handshake closes the connection.
    let wrong = std::sync::Arc::new(ClusterSecret::parse("not the secret at all").unwrap());
    let mut stream = node.raw_connection().await;
    let hello = Request::Auth(tally_client::AuthStep::PeerHello {
        key_id: wrong.key_id(),
        nonce: [1; 32],
    });
    let mut body = bytes::BytesMut::new();
    hello.encode_body(&mut body);
    let mut frame = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut tally_client::frame::FrameCodec::default(),
        tally_client::frame::Frame {
            kind: hello.kind(),
            request_id: 1,
            body: body.freeze(),
        },
        &mut frame,
    )
    .unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the node kept a connection whose handshake failed")
        .unwrap();
    assert!(!rest.is_empty());
    // Ping needs nothing; a status read needs a token only where tokens
    // are checked (not here: only the secret is set).
    let client = node.client().await;
    assert!(client.status().await.is_ok());
}

/// Nodes without the cluster secret cannot write replica states, vote in
/// Raft or join; the cluster's counts and term are unchanged, and its log
/// names the refused address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_cannot_write_replicas_vote_or_join() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path());
    let secret = secret_file(dir.path(), "secret", SECRET);
    let wrong = secret_file(dir.path(), "wrong", "a different secret, not the cluster's");
    let common = |extra: &[&str]| {
        let mut a = args(&[
            "--tokens-file",
            &tokens.path.display().to_string(),
            "--cluster-secret-file",
        ]);
        a.extend(args(extra));
        a
    };
    let a1 = format!("127.0.0.1:{}", free_port());
    let log1 = dir.path().join("n1.log");
    let mut n1 = NodeCommand::new(&node_bin(), &dir.path().join("n1"), &a1)
        .args(&common(&[&secret, "--init", "--replication-factor", "2"]))
        .log_to(&log1, "warn,openraft=off")
        .spawn()
        .unwrap();
    n1.wait_serving(Duration::from_secs(20)).unwrap();
    let a2 = format!("127.0.0.1:{}", free_port());
    let _n2 = NodeProcess::start_with(
        &dir.path().join("n2"),
        &a2,
        &common(&[&secret, "--seed", &a1]),
    );
    let admin = client_as(&a1, Some(&tokens.admin)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(AdminReply::Cluster(v)) = admin.admin(&AdminRequest::Cluster).await {
            if v.members.iter().filter(|m| m.state == "normal").count() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the second node never joined");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let writer = client_as(&a1, Some(&tokens.write)).await;
    let mut ok = 0;
    for _ in 0..20 {
        ok += i64::from(writer.increment(vec![inc("victim", 1)]).await[0].is_ok());
    }
    assert_eq!(ok, 20);
    let term = || async {
        let m = http_as_async(
            &n1.http.clone().unwrap(),
            Some(&tokens.read),
            "GET",
            "/metrics",
            None,
        )
        .await;
        m.body
            .lines()
            .find_map(|l| l.strip_prefix("tally_raft_term "))
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let term_before = term().await;

    // A process holding only the wrong secret.
    let wrong_secret = std::sync::Arc::new(ClusterSecret::load(Path::new(&wrong)).unwrap());
    let refused = Connection::open_with(
        &a1,
        Duration::from_secs(2),
        &Credentials::Peer(wrong_secret.clone()),
        None,
    )
    .await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Node {
                code: ErrorCode::Unauthenticated,
                ..
            })
        ),
        "{refused:?}"
    );
    // An admin token is not the secret: replica writes and Raft refused.
    let a = connection_as(&a1, &tokens.admin).await;
    let forged = Request::ReplicaWrite {
        epoch: 0,
        cells: vec![CellState {
            key: b"anything".to_vec(),
            value: vec![1, 2, 3],
        }]
        .into(),
    };
    for request in [
        forged,
        Request::Raft {
            payload: br#"{"Vote":{}}"#.to_vec(),
        },
    ] {
        assert!(matches!(
            a.call(&request, Duration::from_secs(2)).await,
            Ok(Response::Error {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
    }
    // A node with the wrong secret cannot join.
    let a3 = format!("127.0.0.1:{}", free_port());
    let mut n3 = NodeCommand::new(&node_bin(), &dir.path().join("n3"), &a3)
        .args(&common(&[&wrong, "--seed", &a1, "--no-http"]))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    n3.kill9();
    if let AdminReply::Cluster(v) = admin.admin(&AdminRequest::Cluster).await.unwrap() {
        assert_eq!(v.members.len(), 2, "{v:?}");
    }
    assert_eq!(
        client_as(&a2, Some(&tokens.read))
            .await
            .total("events", b"victim")
            .await
            .unwrap()
            .sum,
        20
    );
    assert_eq!(term().await, term_before);
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(
        log.contains("refused a request") && log.contains("peer=127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains(SECRET));
    drop(n1);
}

/// Mid-rotation, a node proving with the new secret and one proving with
/// the old, each accepting both, replicate to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_secret_rotation_old_and_new_nodes_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let old_first = secret_file(
        dir.path(),
        "a",
        "the old cluster secret\nthe new cluster secret\n",
    );
    let new_first = secret_file(
        dir.path(),
        "b",
        "the new cluster secret\nthe old cluster secret\n",
    );
    let (a1, a2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let members = format!("1={a1},2={a2}");
    let node = |i: u32, addr: &str, secret: &str| {
        NodeProcess::start_with(
            &dir.path().join(format!("n{i}")),
            addr,
            &args(&[
                "--host-id",
                &i.to_string(),
                "--members",
                &members,
                "--replication-factor",
                "2",
                "--cluster-secret-file",
                secret,
            ]),
        )
    };
    let _n1 = node(1, &a1, &old_first);
    let _n2 = node(2, &a2, &new_first);
    let mut config = ClientConfig::with_seeds([a1.clone(), a2.clone()]);
    config.consistency = Consistency::All;
    let client = Client::connect(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    while written < 10 {
        if client.increment(vec![inc("rotating", 1)]).await[0].is_ok() {
            written += 1;
        }
        assert!(Instant::now() < deadline, "writes at ALL never succeeded");
    }
    for addr in [&a1, &a2] {
        let mut config = ClientConfig::with_seeds([addr.clone()]);
        config.consistency = Consistency::One;
        config.token_aware = false;
        let c = Client::connect(config).await.unwrap();
        assert_eq!(c.total("events", b"rotating").await.unwrap().sum, 10);
    }
}

/// A node asked to listen beyond loopback without a secret and tokens
/// refuses to start and says how to make them; `--insecure` starts it,
/// with a warning.
#[test]
fn listening_beyond_loopback_needs_a_secret_and_tokens_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = std::process::Command::new(node_bin())
        .args([
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--no-http",
            "--data-dir",
        ])
        .arg(dir.path().join("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0")
            && stderr.contains("tally secret")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    let log = dir.path().join("insecure.log");
    let mut node = NodeCommand::new(
        &node_bin(),
        &dir.path().join("b"),
        &format!("0.0.0.0:{port}"),
    )
    .args(&args(&["--no-http", "--insecure"]))
    .log_to(&log, "warn")
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("INSECURE")
    {
        assert!(Instant::now() < deadline, "no warning");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.kill9();
}
