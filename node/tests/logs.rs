//! Node logs as an operator reads them: plain text without terminal colour
//! codes when standard error is a file, and one JSON object per line with
//! `--log-format json`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// Starts a node logging to `log`, sends it an increment, stops it
/// cleanly, and returns the log.
fn run_node(dir: &std::path::Path, extra: &[String]) -> String {
    let log = dir.join("node.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeCommand::new(&node_bin(), &dir.join("data"), &addr)
        .args(extra)
        .log_to(&log, "info")
        .spawn()
        .unwrap();
    node.wait_serving(Duration::from_secs(20)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = node.client().await;
        let outcome = client.increment(vec![inc("logged", 1)]).await;
        assert!(outcome.iter().all(|o| o.is_ok()), "{outcome:?}");
    });
    node.stop().unwrap();
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = run_node(dir.path(), &[]);
    assert!(log.contains("tally-node serving"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape in a log file:\n{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = run_node(dir.path(), &["--log-format".into(), "json".into()]);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    let mut messages = Vec::new();
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "tally-node serving"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "stopped cleanly"),
        "{messages:?}"
    );
}
