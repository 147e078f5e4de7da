//! The harness can fail: run against nodes with deliberately broken
//! behaviour it must say `invalid` (exit 1), and against the real nodes
//! `valid` (exit 0). Each run starts real `tally-node` processes; the runs
//! take turns so that they do not slow each other down.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jepsen-style-tests"))
}

/// Runs the harness; returns its exit code and summary.
fn run(args: &[&str]) -> (i32, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(harness())
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .arg("--node-bin")
        .arg(tally_testkit::node_bin())
        .args(["--seed", "42"])
        .output()
        .unwrap();
    let summary = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = out.path().join("seed-42");
    for file in [
        "verdict.json",
        "history.jsonl",
        "latency.svg",
        "throughput.svg",
    ] {
        assert!(
            report.join(file).exists(),
            "{file} missing from the report:\n{summary}"
        );
    }
    // `analyze` re-checks the written report to the same verdict.
    let again = Command::new(harness())
        .arg("analyze")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        output.status.code(),
        "analyze agrees:\n{summary}"
    );
    (output.status.code().unwrap_or(-1), summary)
}

#[test]
fn the_real_nodes_are_valid_under_partitions_kills_and_pauses() {
    let (code, summary) = run(&["--time-limit", "10", "--nemesis", "partition,kill,pause"]);
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("faults injected: "), "{summary}");
}

#[test]
fn retried_op_ids_count_once_under_kills_and_pauses() {
    let (code, summary) = run(&["--time-limit", "10", "--nemesis", "kill,pause", "--op-ids"]);
    assert_eq!(code, 0, "{summary}");
}

#[test]
fn counting_a_retried_op_id_again_is_caught() {
    let (code, summary) = run(&[
        "--time-limit",
        "5",
        "--nemesis",
        "none",
        "--op-ids",
        "--broken",
        "ignore-op-ids",
    ]);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("read-above-possible"), "{summary}");
}

#[test]
fn producer_sums_resent_through_kills_and_pauses_total_exactly() {
    let (code, summary) = run(&[
        "--time-limit",
        "10",
        "--nemesis",
        "kill,pause",
        "--producer",
    ]);
    assert_eq!(code, 0, "{summary}");
}

#[test]
fn a_producer_resend_counted_again_is_caught() {
    // Pauses make the producers' sums time out and be resent; nodes that
    // ignore op ids count the resends, and the exact totals are off.
    let (code, summary) = run(&[
        "--time-limit",
        "10",
        "--nemesis",
        "pause",
        "--producer",
        "--broken",
        "ignore-op-ids",
    ]);
    assert_eq!(code, 1, "{summary}");
}

#[test]
fn a_node_losing_unsynced_writes_converges_after_repair() {
    // Power-loss-like kills over many keys with few reads: nothing but
    // anti-entropy would bring every replica back in line.
    let (code, summary) = run(&[
        "--time-limit",
        "10",
        "--nemesis",
        "kill",
        "--lose-unsynced-writes",
        "--keys",
        "300",
        "--read-fraction",
        "0.05",
        "--repair",
    ]);
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("repair on node 3"), "{summary}");
}

#[test]
fn counting_twice_is_caught() {
    let (code, summary) = run(&[
        "--time-limit",
        "5",
        "--nemesis",
        "none",
        "--broken",
        "double-apply",
    ]);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("read-above-possible"), "{summary}");
}

#[test]
fn acknowledging_without_a_quorum_is_caught_under_partitions() {
    let (code, summary) = run(&[
        "--time-limit",
        "12",
        "--nemesis",
        "partition",
        "--broken",
        "ack-without-quorum",
    ]);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("read-below-acknowledged"), "{summary}");
}

#[test]
fn dropping_hints_is_caught_after_kills() {
    // Many keys and few reads, so read repair cannot mend them all.
    let (code, summary) = run(&[
        "--time-limit",
        "10",
        "--nemesis",
        "kill",
        "--keys",
        "200",
        "--read-fraction",
        "0.05",
        "--broken",
        "drop-hints",
    ]);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("replicas-differ"), "{summary}");
}
