//! Who may talk to a node, and how a connection proves it.
//!
//! Two kinds of callers authenticate, once per connection, with an `Auth`
//! frame before any other:
//!
//! - **Clients** present an API token. A node keeps only SHA-256 hashes of
//!   tokens ([`token_hash`]), each with a [`Role`]: `read`, `write`
//!   (implies read) or `admin` (implies both).
//! - **Peers** (other nodes) prove they hold the cluster secret without
//!   sending it: a mutual challenge-response, HMAC-SHA-256 over a nonce
//!   from each side. The connecting side names the secret it uses by its
//!   key id (a hash, so a node can hold two during a rotation); the
//!   accepting side answers with its own nonce and its proof, which the
//!   connecting side checks before it proves itself. Neither proof can be
//!   replayed: each covers both sides' fresh nonces.
//!
//! docs/security.md has the threat model and the rotation steps.

use std::path::Path;

use ring::{digest, hmac};

/// What a client token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Totals, series, stats, namespaces, status, the ring.
    Read,
    /// Read, and increments.
    Write,
    /// Write, and topology changes, namespaces, repair, cleanup, abort.
    Admin,
}

impl Role {
    /// The role's name (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// Parses `read`, `write` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who a connection proved to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A client token with this role.
    Client(Role),
    /// Another node of the cluster (holds the cluster secret).
    Peer,
}

impl Principal {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Principal::Client(Role::Read) => 0,
            Principal::Client(Role::Write) => 1,
            Principal::Client(Role::Admin) => 2,
            Principal::Peer => 3,
        }
    }

    /// From the wire code.
    pub fn from_code(code: u8) -> Option<Principal> {
        Some(match code {
            0 => Principal::Client(Role::Read),
            1 => Principal::Client(Role::Write),
            2 => Principal::Client(Role::Admin),
            3 => Principal::Peer,
            _ => return None,
        })
    }
}

/// Length of a nonce and of a proof.
pub const NONCE_BYTES: usize = 32;

/// A fresh random nonce.
pub fn new_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
    nonce
}

/// A new API token: `tally_` and 64 hex digits (256 random bits).
pub fn new_token() -> String {
    let bytes = new_nonce();
    format!("tally_{}", hex(&bytes))
}

/// The hash a node stores for `token`: SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cluster secret(s) of a node: the first one it proves with, every
/// one it accepts (during a rotation, the old and the new).
#[derive(Clone)]
pub struct ClusterSecret {
    keys: Vec<(u64, hmac::Key)>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: a secret never reaches a log.
        f.debug_struct("ClusterSecret")
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Fewest bytes a cluster secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

impl ClusterSecret {
    /// Secrets from text: one per line, the first the one this node
    /// proves with; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<ClusterSecret, String> {
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "a cluster secret needs at least {MIN_SECRET_BYTES} characters \
                     (`tally secret` makes one)"
                ));
            }
            keys.push((
                key_id(line.as_bytes()),
                hmac::Key::new(hmac::HMAC_SHA256, line.as_bytes()),
            ));
        }
        if keys.is_empty() {
            return Err("the cluster secret file holds no secret".into());
        }
        Ok(ClusterSecret { keys })
    }

    /// Reads a secret file (see [`ClusterSecret::parse`]).
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the cluster secret file {}: {e}",
                path.display()
            )
        })?;
        ClusterSecret::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key id of the secret this node proves with.
    pub fn key_id(&self) -> u64 {
        self.keys[0].0
    }

    fn key(&self, key_id: u64) -> Option<&hmac::Key> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
    }

    /// Whether this node accepts the secret named `key_id`.
    pub fn accepts(&self, key_id: u64) -> bool {
        self.key(key_id).is_some()
    }

    /// The accepting side's proof: HMAC over both nonces under the secret
    /// `key_id` (`None`: not a secret this node holds).
    pub fn server_proof(
        &self,
        key_id: u64,
        client_nonce: &[u8; NONCE_BYTES],
        server_nonce: &[u8; NONCE_BYTES],
    ) -> Option<[u8; NONCE_BYTES]> {
        Some(proof(
            self.key(key_id)?,
            b"tally server",
            client_nonce,
            server_nonce,
        ))
    }

    /// The connecting side's proof, under the secret it proves with.
    pub fn client_proof(
        &self,
        client_nonce: &[u8; NONCE_BYTES],
        server_nonce: &[u8; NONCE_BYTES],
    ) -> [u8; NONCE_BYTES] {
        proof(&self.keys[0].1, b"tally client", client_nonce, server_nonce)
    }

    /// Checks the accepting side's proof (constant time), under the secret
    /// this node proves with.
    pub fn verify_server(
        &self,
        client_nonce: &[u8; NONCE_BYTES],
        server_nonce: &[u8; NONCE_BYTES],
        proof: &[u8; NONCE_BYTES],
    ) -> bool {
        verify(
            &self.keys[0].1,
            b"tally server",
            client_nonce,
            server_nonce,
            proof,
        )
    }

    /// Checks the connecting side's proof (constant time) under `key_id`.
    pub fn verify_client(
        &self,
        key_id: u64,
        client_nonce: &[u8; NONCE_BYTES],
        server_nonce: &[u8; NONCE_BYTES],
        proof: &[u8; NONCE_BYTES],
    ) -> bool {
        self.key(key_id)
            .is_some_and(|key| verify(key, b"tally client", client_nonce, server_nonce, proof))
    }
}

/// A new cluster secret: 64 hex digits (256 random bits).
pub fn new_secret() -> String {
    hex(&new_nonce())
}

/// A secret's id: the first 8 bytes of SHA-256 over a label and the
/// secret. Tells secrets apart without revealing them.
fn key_id(secret: &[u8]) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tally key id\0");
    ctx.update(secret);
    let d = ctx.finish();
    let mut id = [0; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    u64::from_le_bytes(id)
}

fn message(label: &[u8], client: &[u8; NONCE_BYTES], server: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 2 * NONCE_BYTES);
    m.extend_from_slice(label);
    m.extend_from_slice(client);
    m.extend_from_slice(server);
    m
}

fn proof(
    key: &hmac::Key,
    label: &[u8],
    client: &[u8; NONCE_BYTES],
    server: &[u8; NONCE_BYTES],
) -> [u8; NONCE_BYTES] {
    let tag = hmac::sign(key, &message(label, client, server));
    let mut out = [0; NONCE_BYTES];
    out.copy_from_slice(tag.as_ref());
    out
}

fn verify(
    key: &hmac::Key,
    label: &[u8],
    client: &[u8; NONCE_BYTES],
    server: &[u8; NONCE_BYTES],
    proof: &[u8; NONCE_BYTES],
) -> bool {
    hmac::verify(key, &message(label, client, server), proof).is_ok()
}

/// What a connection presents when it opens.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    /// Nothing: a node with neither tokens nor a cluster secret.
    #[default]
    None,
    /// An API token.
    Token(String),
    /// The cluster secret (nodes only).
    Peer(std::sync::Arc<ClusterSecret>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_prove_the_secret_and_a_wrong_one_fails() {
        let a = ClusterSecret::parse("correct horse battery staple\n").unwrap();
        let b = ClusterSecret::parse("correct horse battery staple").unwrap();
        let wrong = ClusterSecret::parse("a different secret entirely").unwrap();
        let (c, s) = (new_nonce(), new_nonce());
        assert_eq!(a.key_id(), b.key_id());
        assert_ne!(a.key_id(), wrong.key_id());
        let server = b.server_proof(a.key_id(), &c, &s).unwrap();
        assert!(a.verify_server(&c, &s, &server));
        assert!(!wrong.verify_server(&c, &s, &server));
        let client = a.client_proof(&c, &s);
        assert!(b.verify_client(a.key_id(), &c, &s, &client));
        // A proof covers both nonces, and the two directions differ.
        assert!(!b.verify_client(a.key_id(), &c, &new_nonce(), &client));
        assert!(!b.verify_client(a.key_id(), &c, &s, &server));
        assert!(wrong.server_proof(a.key_id(), &c, &s).is_none());
    }

    #[test]
    fn during_a_rotation_a_node_accepts_the_old_and_the_new_secret() {
        let old = ClusterSecret::parse("the old cluster secret").unwrap();
        let new = ClusterSecret::parse("the new cluster secret").unwrap();
        let rotating =
            ClusterSecret::parse("the new cluster secret\nthe old cluster secret").unwrap();
        let (c, s) = (new_nonce(), new_nonce());
        for sender in [&old, &new] {
            assert!(rotating.accepts(sender.key_id()));
            let proof = sender.client_proof(&c, &s);
            assert!(rotating.verify_client(sender.key_id(), &c, &s, &proof));
            let server = rotating.server_proof(sender.key_id(), &c, &s).unwrap();
            assert!(sender.verify_server(&c, &s, &server));
        }
        assert_eq!(rotating.key_id(), new.key_id());
    }

    #[test]
    fn secrets_that_are_short_or_missing_are_refused() {
        assert!(ClusterSecret::parse("short").is_err());
        assert!(ClusterSecret::parse("# only a comment\n\n").is_err());
        assert!(format!(
            "{:?}",
            ClusterSecret::parse("a long enough secret here").unwrap()
        )
        .contains("key_ids"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("tally_") && a.len() == 6 + 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for role in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            let p = Principal::Client(role);
            assert_eq!(Principal::from_code(p.code()), Some(p));
        }
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }
}
