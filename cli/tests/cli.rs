//! The `tally` CLI against a real `tally-node` process.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(dir: &std::path::Path) -> (Node, String) {
    let (node, addr, _) = start_node_with_http(dir, &[]);
    (node, addr)
}

/// A node with extra flags; its binary and its HTTP address.
fn start_node_with_http(dir: &std::path::Path, flags: &[&str]) -> (Node, String, String) {
    let addr = format!("127.0.0.1:{}", tally_testkit::unused_local_port().unwrap());
    let http = format!("127.0.0.1:{}", tally_testkit::unused_local_port().unwrap());
    let child = Command::new(tally_testkit::node_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &addr, "--http-listen", &http])
        .args(flags)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally(&addr, &["status"]).0 != Some(0) {
        assert!(Instant::now() < deadline, "the node never answered status");
        std::thread::sleep(Duration::from_millis(50));
    }
    (node, addr, http)
}

/// Runs the CLI; its exit code, stdout and stderr.
fn tally(addr: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg(format!("--addr={addr}"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr) = start_node(dir.path());
    for args in [&["status"][..], &["status", "--json"], &["ns", "list"]] {
        // Stdout is a pipe whose reader is gone before the CLI writes
        // (`tally status | head -0`).
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg(format!("--addr={addr}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn status_reads_the_same_table_from_the_http_port() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, http) = start_node_with_http(dir.path(), &[]);
    let (code, _, stderr) = tally(&addr, &["incr", "k", "--delta", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, table, stderr) = tally(&addr, &["status", "--http", &http]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(table.contains("replication factor 1"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("no row for {addr}: {table}"));
    assert!(row.starts_with("UN"), "{row}");
    assert!(row.contains("100.0%") && row.contains(" ok "), "{row}");

    let (code, json, stderr) = tally(&addr, &["status", "--http", &http, "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    assert_eq!(v["members"][0]["up"], true);
    assert_eq!(v["members"][0]["reported"]["increments"], 1);

    // Not an HTTP port: a clear error, not a hang.
    let (code, _, stderr) = tally(&addr, &["status", "--http", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_created_token_works_once_its_line_is_in_the_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "--json", "token", "create", "--role", "write", "--name", "ingest",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = made["token"].as_str().unwrap();
    let line = made["line"].as_str().unwrap();
    assert!(
        line.ends_with(" write ingest") && !line.contains(token),
        "{line}"
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["token", "create", "--role", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));

    let addr = format!("127.0.0.1:{}", tally_testkit::unused_local_port().unwrap());
    let mut node = tally_testkit::NodeCommand::new(
        &tally_testkit::node_bin(),
        &dir.path().join("data"),
        &addr,
    )
    .args(&["--tokens-file".into(), tokens.display().to_string()])
    .spawn()
    .unwrap();
    node.wait_serving(Duration::from_secs(20)).unwrap();
    let (code, _, stderr) = tally(&addr, &["incr", "k"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let with_token = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg(format!("--addr={addr}"))
            .args(args)
            .env("TALLY_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = with_token(&["incr", "k", "--delta", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_token(&["get", "k"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains('4'));
    let out = with_token(&["ns", "create", "x", "total"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));

    let secret = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("secret")
        .output()
        .unwrap();
    let secret = String::from_utf8_lossy(&secret.stdout);
    assert_eq!(secret.trim().len(), 64);
    node.kill9();
}

#[test]
fn add_distinct_and_top_print_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, _) = start_node_with_http(
        dir.path(),
        &["--set", "namespaces.viewers=distinct, day:30d, total"],
    );
    let (code, out, err) = tally(
        &addr,
        &["add", "video:7", "ann", "bob", "cy", "--ns", "viewers"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 added"), "{out}");
    tally(
        &addr,
        &["add", "video:7", "ann", "--ns", "viewers", "--at", "-1d"],
    );
    let (code, out, err) = tally(
        &addr,
        &["distinct", "video:7", "--ns", "viewers", "--from", "-3d"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 distinct over 2 buckets"), "{out}");
    let (_, out, _) = tally(
        &addr,
        &[
            "--json", "distinct", "video:7", "--ns", "viewers", "--from", "-3d",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["distinct"], 3, "{v}");
    assert_eq!(v["buckets"].as_array().unwrap().len(), 2, "{v}");
    // The kinds refuse each other, with the reason.
    let (code, _, err) = tally(&addr, &["add", "video:7", "ann", "--ns", "events"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("WrongKind"), "{err}");

    for (key, n) in [("video:1", 5), ("video:2", 9), ("video:3", 2)] {
        for _ in 0..n {
            tally(&addr, &["incr", key]);
        }
    }
    let (code, out, err) = tally(&addr, &["top", "--k", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains("video:2") && lines[1].contains('9'),
        "{out}"
    );
    assert!(lines[2].contains("video:1"), "{out}");
    let (_, out, _) = tally(&addr, &["--json", "top", "--k", "5"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["video:2", "video:1", "video:3"], "{v}");
    assert_eq!(v["keys"][0]["sum"], 9, "{v}");
}
