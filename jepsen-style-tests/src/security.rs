//! `--secure`: a run with every protection on. The nodes get a cluster
//! secret, a tokens file holding one admin token (the harness's clients
//! increment, read, repair and move clocks), and TLS on both ports and
//! between nodes, with certificates `tally certs` makes; the clients use
//! the token over TLS. The proxies between nodes relay TLS bytes as they
//! relay plaintext.

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_client::auth::{new_secret, new_token, token_hash};

/// What a secure run's nodes and clients need.
#[derive(Debug, Clone)]
pub struct Secured {
    /// Flags for every node.
    pub node_args: Vec<String>,
    /// The clients' admin token.
    pub token: String,
    /// The cluster CA the clients trust.
    pub ca: PathBuf,
}

/// Makes the secret, the token and the certificates in `dir`, with the
/// `tally` binary `tally_bin`.
pub fn prepare(dir: &Path, tally_bin: &Path) -> Result<Secured, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, format!("{}\n", new_secret()))
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    let token = new_token();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{} admin harness\n", token_hash(&token)))
        .map_err(|e| format!("{}: {e}", tokens.display()))?;
    let certs = dir.join("certs");
    let out = Command::new(tally_bin)
        .arg("certs")
        .arg("--dir")
        .arg(&certs)
        .output()
        .map_err(|e| format!("{}: {e}", tally_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "tally certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = |p: PathBuf| p.display().to_string();
    Ok(Secured {
        node_args: vec![
            "--cluster-secret-file".into(),
            path(secret),
            "--tokens-file".into(),
            path(tokens),
            "--tls-cert".into(),
            path(certs.join("node.pem")),
            "--tls-key".into(),
            path(certs.join("node-key.pem")),
            "--tls-ca".into(),
            path(certs.join("ca.pem")),
        ],
        token,
        ca: certs.join("ca.pem"),
    })
}
