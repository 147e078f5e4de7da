//! Careless and hostile clients against one real `tally-node` process:
//! clients that never read their answers, frames that never finish, idle
//! sockets up to the file descriptor limit. The node stays responsive to
//! everyone else, its memory stays bounded, it closes what it should, and
//! its storage keeps working.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{free_port, inc, now_ms, NodeProcess};
use tally_client::frame::{Frame, FrameCodec};
use tally_client::{
    Client, ClientConfig, Connection, Consistency, ErrorCode, Outcome, Request, Resolution,
    Response,
};
use tokio_util::codec::{Decoder, Encoder};

const MIN: i64 = 60_000;

/// A node with small budgets, from a config file.
fn start(dir: &Path, addr: &str, extra: &str) -> NodeProcess {
    let config = dir.join("node.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &config,
        format!(
            "{extra}[connections]\nmax_in_flight_per_connection = 16\nmax_in_flight = 256\n\
             max_buffered_mib = 48\nwrite_timeout_s = 2\nframe_timeout_s = 2\nidle_timeout_s = 3\n"
        ),
    )
    .unwrap();
    NodeProcess::start_with(
        &dir.join("data"),
        addr,
        &["--config".into(), config.to_string_lossy().into_owned()],
    )
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

fn encoded(request: &Request, request_id: u64) -> Vec<u8> {
    let mut body = BytesMut::new();
    request.encode_body(&mut body);
    let mut out = BytesMut::new();
    FrameCodec::default()
        .encode(
            Frame {
                kind: request.kind(),
                request_id,
                body: body.freeze(),
            },
            &mut out,
        )
        .unwrap();
    out.to_vec()
}

/// How long a fresh connection waits for a `Total`.
async fn fresh_read_latency(addr: &str) -> Duration {
    let started = Instant::now();
    let c = Connection::open(addr, Duration::from_secs(5))
        .await
        .unwrap();
    let request = Request::Total {
        consistency: Consistency::One,
        namespace: "events".into(),
        key: b"wide".to_vec(),
    };
    match c.call(&request, Duration::from_secs(30)).await {
        Ok(Response::Total(_)) => started.elapsed(),
        other => panic!("a fresh client was not served: {other:?}"),
    }
}

/// Whether the node closed `socket`: its buffered answers, then EOF.
fn closed_by_node(socket: &mut TcpStream, within: Duration) -> bool {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_answers_are_bounded_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let node = start(dir.path(), &addr, "");
    // One key with 1,440 minute buckets: every range read answers ~35 KB.
    let client = node.client().await;
    let day_ago = now_ms() - 1440 * MIN;
    for chunk in (0..1440).collect::<Vec<i64>>().chunks(500) {
        let items = chunk
            .iter()
            .map(|m| {
                let mut i = inc("wide", 1);
                i.timestamp_ms = day_ago + m * MIN;
                i
            })
            .collect();
        for r in client.increment(items).await {
            assert!(matches!(r, Outcome::Ok(())), "{r:?}");
        }
    }
    let range = Request::Range {
        consistency: Consistency::One,
        namespace: "events".into(),
        key: b"wide".to_vec(),
        resolution: Resolution::Minute,
        start_ms: day_ago - MIN,
        end_ms: now_ms() + MIN,
    };
    let quiet = fresh_read_latency(&addr).await;
    let rss_before = rss_mib(node.child.id());

    // Eight clients pipeline 2,000 range reads each and read nothing.
    let mut stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut sent = 0;
            let frame = encoded(&range, 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while sent < 2_000 && Instant::now() < deadline {
                match s.write(&frame) {
                    Ok(n) if n == frame.len() => sent += 1,
                    Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            s.set_nonblocking(false).unwrap();
            s
        })
        .collect();
    let loaded = fresh_read_latency(&addr).await;
    let rss_loaded = rss_mib(node.child.id());
    eprintln!(
        "fresh read: {quiet:?} quiet, {loaded:?} beside 8 stalled clients; RSS {rss_before} -> {rss_loaded} MiB"
    );
    assert!(
        loaded < Duration::from_secs(1),
        "a fresh read took {loaded:?}"
    );
    assert!(
        rss_loaded < rss_before + 150,
        "RSS grew from {rss_before} to {rss_loaded} MiB"
    );

    // Their answers are not read for the write timeout (2 s): the node
    // closes them, and nothing of theirs keeps running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(
            closed_by_node(s, Duration::from_secs(5)),
            "stalled client {i} still open"
        );
    }
    drop(stalled);
    let after = fresh_read_latency(&addr).await;
    assert!(after < Duration::from_secs(1), "after: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_are_bounded_refused_and_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let node = start(dir.path(), &addr, "");
    let rss_before = rss_mib(node.child.id());
    // 40 connections each announce a 15 MiB frame and send 4 MiB of it.
    let chunk = vec![0u8; 1 << 20];
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&(15u32 << 20).to_be_bytes()).unwrap();
            s
        })
        .collect();
    for _ in 0..4 {
        for s in &mut slow {
            s.write_all(&chunk).unwrap();
        }
    }
    let rss = rss_mib(node.child.id());
    let latency = fresh_read_latency(&addr).await;
    eprintln!("RSS {rss_before} -> {rss} MiB with 40 partial frames; fresh read {latency:?}");
    assert!(
        rss < rss_before + 100,
        "40 partial frames took RSS from {rss_before} to {rss} MiB"
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    // A frame not finished within the frame timeout (2 s) closes its
    // connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            closed_by_node(s, Duration::from_secs(5)),
            "slow sender {i} still open"
        );
    }

    // A frame without room in the budget is answered Overloaded, and the
    // connection stays usable.
    let big = vec![b'x'; 1000];
    let items = (0..10_000).map(|_| {
        let mut i = inc("k", 1);
        i.key = big.clone();
        i
    });
    let request = Request::Increment {
        consistency: Consistency::One,
        timeout_ms: 5_000,
        items: items.collect(),
    };
    let frame = encoded(&request, 7);
    assert!(frame.len() > 10_000_000, "{}", frame.len());
    let mut hogs: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&frame[..frame.len() - 1]).unwrap();
            s
        })
        .collect();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&frame).unwrap();
    let answer = read_frame(&mut s);
    assert_eq!(answer.request_id, 7);
    match Response::decode(answer.kind, &answer.body).unwrap() {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Overloaded, "{message}")
        }
        other => panic!("a frame past the budget was served: {other:?}"),
    }
    s.write_all(&encoded(&Request::Ping, 8)).unwrap();
    assert_eq!(
        read_frame(&mut s).request_id,
        8,
        "the connection stays usable"
    );
    drop(hogs.drain(..));
}

fn read_frame(s: &mut TcpStream) -> Frame {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = codec.decode(&mut buf).unwrap() {
            return frame.unwrap();
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A node whose process may open 400 files: a flood of idle sockets is
/// capped below that (the rest answered `Overloaded`), WAL rotations and
/// flushes go on, and idle sockets are closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_never_starves_storage_of_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let config = dir.path().join("node.toml");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        &config,
        "[storage]\nmemtable_mib = 1\n[connections]\nidle_timeout_s = 4\n",
    )
    .unwrap();
    let script = format!(
        "ulimit -n 400 && exec {} --data-dir {} --listen {addr} --config {} --no-http",
        env!("CARGO_BIN_EXE_tally-node"),
        data.display(),
        config.display()
    );
    let child: Child = Command::new("bash")
        .args(["-c", &script])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let node = NodeProcess {
        child,
        addr: addr.clone(),
        http: None,
        dir: data.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let mut config = ClientConfig::with_seeds([addr.clone()]);
        config.connect_timeout = Duration::from_secs(1);
        if let Ok(c) = Client::connect(config).await {
            if c.status().await.is_ok() {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "the node never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..450 {
        match TcpStream::connect(&addr) {
            Ok(s) => flood.push(s),
            Err(_) => refused += 1,
        }
    }
    // Past the cap, a connection is answered Overloaded and closed.
    let mut overloaded = 0;
    for s in &mut flood {
        s.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 64];
        std::thread::sleep(Duration::from_millis(1));
        if let Ok(n) = s.read(&mut byte) {
            if n > 0 {
                overloaded += 1;
            }
        }
    }
    eprintln!(
        "{} connected, {overloaded} answered Overloaded, {refused} refused by the kernel",
        flood.len()
    );
    assert!(overloaded > 0, "no connection was refused at the cap");

    // 2,000 increments with long keys roll the 2 MiB WAL several times.
    let key = "k".repeat(600);
    for batch in 0..20 {
        let items = (0..100)
            .map(|i| inc(&format!("{key}{}", batch * 100 + i), 1))
            .collect();
        for r in client.increment(items).await {
            assert!(matches!(r, Outcome::Ok(())), "batch {batch}: {r:?}");
        }
    }
    let wals = std::fs::read_dir(data.join("storage"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    let status = client.status().await.unwrap();
    assert!(status.disk_bytes > 0, "no table was flushed ({wals} WALs)");

    // Idle sockets go after the idle timeout (4 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for s in &mut flood {
        s.set_nonblocking(false).unwrap();
        assert!(
            closed_by_node(s, Duration::from_secs(5)),
            "an idle socket stayed open"
        );
    }
    drop(node);
}
