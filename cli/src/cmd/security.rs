//! `tally token create` and `tally secret`: credentials for a cluster
//! (docs/security.md). Nothing here talks to a node: the operator adds
//! the printed line to every node's tokens file, or the secret to every
//! node's secret file.

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
