//! `tally token create`, `tally secret` and `tally certs`: credentials
//! for a cluster (docs/security.md). Nothing here talks to a node: the
//! operator adds the printed line to every node's tokens file, the secret
//! to every node's secret file, the certificates to the nodes' flags.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tally_client::auth::{new_secret, new_token, token_hash, Role};

use crate::output::print_json;

/// `tally token create`: a new token and its tokens-file line.
pub fn create_token(role: &str, name: &str, json: bool) -> Result<(), String> {
    let role = Role::parse(role)
        .ok_or_else(|| format!("role must be read, write or admin, not {role:?}"))?;
    let token = new_token();
    let hash = token_hash(&token);
    let line = format!("{hash} {} {name}", role.as_str());
    let line = line.trim_end();
    if json {
        print_json(&serde_json::json!({
            "token": token, "hash": hash, "role": role.as_str(), "name": name, "line": line,
        }));
        return Ok(());
    }
    println!("token (give it to the client; it is not stored anywhere):");
    println!("  {token}");
    println!("line for every node's tokens file (read again within a second of a change):");
    println!("  {line}");
    Ok(())
}

/// `tally secret`: a new random cluster secret, on one line.
pub fn secret() {
    println!("{}", new_secret());
}

/// The cluster CA's subject and constraints. A CA made by an earlier run
/// is used again from its key and these (they sign the same issuer name
/// and key identifier as its certificate).
fn ca_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tally cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Writes `text` to `path`, readable by its owner only when `secret`.
fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `tally certs`: makes the cluster CA in `dir` unless it is there
/// (`ca.pem`, `ca-key.pem`), then issues `NAME.pem` and `NAME-key.pem`
/// for `hosts` (IP addresses or DNS names), good for serving and for
/// connecting (nodes use one certificate for both).
pub fn certs(dir: &Path, name: &str, hosts: &[String], json: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ca_cert, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let made_ca = !ca_key_path.exists();
    let ca_key = if made_ca {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = ca_params()?.self_signed(&key).map_err(|e| e.to_string())?;
        write_file(&ca_key_path, &key.serialize_pem(), true)?;
        write_file(&ca_cert, &cert.pem(), false)?;
        key
    } else {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", ca_key_path.display()))?
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| format!("not a host name or address: {e}"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    write_file(&cert_path, &cert.pem(), false)?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    if json {
        print_json(&serde_json::json!({
            "ca": ca_cert, "ca_key": ca_key_path, "made_ca": made_ca,
            "cert": cert_path, "key": key_path, "hosts": hosts,
        }));
        return Ok(());
    }
    if made_ca {
        println!(
            "made a cluster CA: {} (its key {} signs certificates: keep it off the nodes)",
            ca_cert.display(),
            ca_key_path.display()
        );
    }
    println!(
        "issued {} and {} for {}",
        cert_path.display(),
        key_path.display(),
        hosts.join(", ")
    );
    println!(
        "a node: tally-node --tls-cert {} --tls-key {} --tls-ca {} ...",
        cert_path.display(),
        key_path.display(),
        ca_cert.display()
    );
    println!("a client: tally --tls-ca {} ...", ca_cert.display());
    Ok(())
}
