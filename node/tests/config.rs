//! `tally-node`'s settings as an operator gives them: a TOML file in
//! sections, flags laid over it, `--set section.key=value` for the rest;
//! a bad setting stops the node before it opens anything, naming it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn node(args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn refused(args: &[&str], names: &str) {
    let out = node(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(names), "{names:?} not in: {stderr}");
}

#[test]
fn bad_settings_are_refused_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    refused(
        &["--data-dir", data, "--durability", "sometimes"],
        "sometimes",
    );
    refused(
        &["--data-dir", data, "--set", "connections.idle_timeout_s=0"],
        "idle_timeout_s",
    );
    refused(
        &["--data-dir", data, "--set", "storage.memtable"],
        "section.key=value",
    );
    refused(
        &["--data-dir", data, "--set", "storage.no_such_key=1"],
        "no_such_key",
    );
    let file = dir.path().join("node.toml");
    // A key outside its section (the flat file of earlier versions).
    std::fs::write(&file, "memtable_mib = 1\n").unwrap();
    refused(
        &["--data-dir", data, "--config", file.to_str().unwrap()],
        "memtable_mib",
    );
    assert!(!std::path::Path::new(data).join("storage").exists());
}

#[test]
fn set_reaches_any_setting_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    // The file asks for a port nothing can bind; the flag wins.
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\n[namespaces]\nshort = \"minute:1h, total\"\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeCommand::new(&node_bin(), &dir.path().join("data"), &addr)
        .args(&[
            "--config".into(),
            file.to_string_lossy().into_owned(),
            "--set".into(),
            "limits.max_key_bytes=8".into(),
        ])
        .spawn()
        .unwrap();
    node.wait_serving(Duration::from_secs(20)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = node.client().await;
        let names: Vec<String> = client
            .namespaces()
            .await
            .unwrap()
            .into_iter()
            .map(|ns| ns.name)
            .collect();
        assert!(names.contains(&"short".to_owned()), "{names:?}");
        let mut long = inc("a-key-longer-than-eight-bytes", 1);
        long.namespace = "short".into();
        let mut short = inc("eight-b", 1);
        short.namespace = "short".into();
        let outcomes = client.increment(vec![long, short]).await;
        assert!(!outcomes[0].is_ok(), "{outcomes:?}");
        assert!(outcomes[1].is_ok(), "{outcomes:?}");
    });
    node.stop().unwrap();
}
