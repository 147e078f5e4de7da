//! TLS end to end with real processes: `tally certs` makes a CA and a
//! node certificate; three nodes with TLS, a cluster secret and tokens
//! replicate to each other over mutual TLS; the CLI reads and writes over
//! TLS on both ports; a client trusting another CA is refused, and
//! plaintext sent to a TLS port is refused promptly with a clear message.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tally_testkit::{http, local_members, node_bin, NodeCommand, NodeProcess};

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn certs(dir: &Path, name: &str) {
    let out = tally(&["certs", "--dir", dir.to_str().unwrap(), "--name", name]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_cluster_speaks_tls_on_both_ports_and_between_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("certs");
    certs(&ca_dir, "node");
    let other_ca = dir.path().join("other");
    certs(&other_ca, "node");
    let p = |name: &str| ca_dir.join(name).display().to_string();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the cluster secret of the tls test\n").unwrap();
    let make_token = |role: &str| {
        let out = tally(&["--json", "token", "create", "--role", role]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["line"].as_str().unwrap().to_owned(),
        )
    };
    let (write, write_line) = make_token("write");
    let (read, read_line) = make_token("read");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{write_line}\n{read_line}\n")).unwrap();

    let (addrs, members) = local_members(3);
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let args: Vec<String> = [
            "--host-id",
            &(i + 1).to_string(),
            "--members",
            &members,
            "--replication-factor",
            "3",
            "--tls-cert",
            &p("node.pem"),
            "--tls-key",
            &p("node-key.pem"),
            "--tls-ca",
            &p("ca.pem"),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "--tokens-file",
            tokens.to_str().unwrap(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut node = NodeCommand::new(&node_bin(), &dir.path().join(format!("n{i}")), addr)
            .args(&args)
            .spawn()
            .unwrap();
        node.wait_serving(Duration::from_secs(20)).unwrap();
        nodes.push(node);
    }
    let all = addrs.join(",");
    let ca = p("ca.pem");
    let over_tls = |token: &str, args: &[&str]| {
        let mut full = vec!["--addr", &all, "--tls-ca", &ca, "--token", token];
        full.extend_from_slice(args);
        tally(&full)
    };

    // Writes at QUORUM need the replicas: over mutual TLS between nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    while written < 10 {
        let out = over_tls(&write, &["--consistency", "all", "incr", "video:1/view"]);
        if out.status.success() {
            written += 1;
        } else {
            assert!(Instant::now() < deadline, "{}", text(&out));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for addr in &addrs {
        let out = tally(&[
            "--addr",
            addr,
            "--tls-ca",
            &ca,
            "--token",
            &read,
            "--consistency",
            "one",
            "get",
            "video:1/view",
        ]);
        assert!(text(&out).contains("10"), "{addr}: {}", text(&out));
    }

    // HTTPS: the cluster table over TLS; plain HTTP gets a clear 400.
    let h = nodes[0].http.clone().unwrap();
    let out = tally(&[
        "--tls-ca", &ca, "--token", &read, "--json", "status", "--http", &h,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let up = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["up"] == true)
        .count();
    assert_eq!(up, 3, "{v}");
    let started = Instant::now();
    let plain = http(&h, "GET", "/healthz", None).unwrap();
    assert_eq!(plain.status, 400, "{}", plain.body);
    assert!(plain.body.contains("TlsRequired"), "{}", plain.body);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Plaintext to the binary port: refused at once, saying why.
    let started = Instant::now();
    let out = tally(&["--addr", &addrs[0], "--token", &read, "get", "video:1/view"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("speaks TLS"), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A client trusting another CA does not get through.
    let other = other_ca.join("ca.pem").display().to_string();
    let out = tally(&[
        "--addr",
        &addrs[0],
        "--tls-ca",
        &other,
        "--token",
        &read,
        "get",
        "video:1/view",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    // Nor does a node whose certificate another CA signed: the handshake
    // fails on its client certificate, before any frame.
    let o = |name: &str| other_ca.join(name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outsider = tally_client::tls::TlsClient::from_files(
        Path::new(&ca),
        Some((&o("node.pem"), &o("node-key.pem"))),
    )
    .unwrap();
    let handshake = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addrs[0]).await.unwrap();
        let mut stream = outsider.connect(&addrs[0], tcp).await?;
        // TLS 1.3 reports a refused client certificate on the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(&[0, 0, 0, 0]).await?;
        let mut buf = [0u8; 16];
        stream.read(&mut buf).await
    });
    assert!(handshake.is_err(), "{handshake:?}");
    drop(nodes);
}
