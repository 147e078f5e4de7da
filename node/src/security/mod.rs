//! Who may talk to this node ([`Access`]) and what one connection has
//! proved ([`Session`]). The protocol's side (roles, the handshake, what
//! each request needs) is `tally_client::auth`; this wing holds the
//! node's secrets and tokens and decides.
//!
//! - With a cluster secret, requests only nodes send (replica writes and
//!   reads, gossip, Raft, forwarded increments, Merkle trees, op-id
//!   relearning, join and leave steps) need a connection that proved the
//!   secret. Without one, anyone may send them: the node refuses to
//!   listen beyond loopback like that unless told `--insecure`.
//! - With a tokens file, every client request needs a token whose role
//!   covers it, checked again on every request so a revoked token stops
//!   working at once. Without one, every client may do everything.
//!
//! A refused request changes nothing and its body is never decoded; a
//! failed authentication step closes the connection.

pub mod tls;
pub mod tokens;

use std::sync::Arc;

use tally_client::auth::{new_nonce, token_hash, ClusterSecret, Principal, Role, NONCE_BYTES};
use tally_client::message::Need;
use tally_client::{AuthStep, ErrorCode, Response};

pub use tokens::TokenStore;

/// Who a connection or an HTTP request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Proved nothing.
    Anonymous,
    /// Presented the token with this hash (its role is looked up per
    /// request).
    Token(String),
    /// Proved the cluster secret.
    Peer,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, wrong ones, or revoked ones.
    Unauthenticated(String),
    /// Known, but not allowed.
    Forbidden(String),
}

impl Refusal {
    /// The error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
        }
    }

    /// Why, for the caller (names no secret).
    pub fn message(&self) -> &str {
        match self {
            Refusal::Unauthenticated(m) | Refusal::Forbidden(m) => m,
        }
    }

    /// The refusal as an error answer.
    pub fn response(&self) -> Response {
        Response::Error {
            code: self.code(),
            message: self.message().to_owned(),
        }
    }
}

/// The node's secrets and tokens.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The cluster secret(s) peers prove (`None`: peers are not checked).
    pub secret: Option<Arc<ClusterSecret>>,
    /// Client tokens (`None`: clients are not checked).
    pub tokens: Option<Arc<TokenStore>>,
}

impl Access {
    /// Whether a connection must authenticate before anything but `Ping`.
    pub fn is_enforced(&self) -> bool {
        self.secret.is_some() || self.tokens.is_some()
    }

    /// Whether `caller` may send a request that needs `need`.
    pub fn check(&self, caller: &Caller, need: Need) -> Result<(), Refusal> {
        match (need, caller) {
            (Need::Nothing, _) | (_, Caller::Peer) => Ok(()),
            (Need::Peer, _) if self.secret.is_none() => Ok(()),
            (Need::Peer, Caller::Anonymous) => Err(Refusal::Unauthenticated(
                "node-to-node requests need the cluster secret: authenticate first".into(),
            )),
            (Need::Peer, Caller::Token(_)) => Err(Refusal::Forbidden(
                "node-to-node requests need the cluster secret, not an API token".into(),
            )),
            (Need::Role(_), _) if self.tokens.is_none() => Ok(()),
            (Need::Role(_), Caller::Anonymous) => Err(Refusal::Unauthenticated(
                "this node requires an API token (`--token`, `Authorization: Bearer`)".into(),
            )),
            (Need::Role(need), Caller::Token(hash)) => match self.role_of(hash) {
                None => Err(Refusal::Unauthenticated(
                    "the API token is not known to this node (revoked?)".into(),
                )),
                Some(role) if role >= need => Ok(()),
                Some(role) => Err(Refusal::Forbidden(format!(
                    "a {} token may not do this: it needs a {} token",
                    role.as_str(),
                    need.as_str()
                ))),
            },
        }
    }

    fn role_of(&self, hash: &str) -> Option<Role> {
        self.tokens.as_ref().and_then(|t| t.role(hash))
    }

    /// The caller presenting `token` (an HTTP bearer token): `Token` when
    /// the node knows it, else refused.
    pub fn bearer(&self, token: &str) -> Result<Caller, Refusal> {
        let hash = token_hash(token);
        match &self.tokens {
            None => Ok(Caller::Token(hash)),
            Some(tokens) if tokens.role(&hash).is_some() => Ok(Caller::Token(hash)),
            Some(_) => Err(Refusal::Unauthenticated(
                "the API token is not known to this node".into(),
            )),
        }
    }
}

/// One binary-protocol connection's authentication.
#[derive(Debug)]
pub struct Session {
    caller: Caller,
    /// A peer handshake in progress: the secret named, both nonces.
    challenge: Option<(u64, [u8; NONCE_BYTES], [u8; NONCE_BYTES])>,
    /// The connection is TLS, and whether the other side presented a
    /// certificate the cluster CA signed: over TLS, only such a
    /// connection may prove itself a peer (mutual TLS between nodes).
    tls: Option<bool>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new(false, false)
    }
}

impl Session {
    /// A session of a connection that is TLS (`tls`) or not, whose other
    /// side presented a CA-signed certificate (`certified`) or not.
    pub fn new(tls: bool, certified: bool) -> Session {
        Session {
            caller: Caller::Anonymous,
            challenge: None,
            tls: tls.then_some(certified),
        }
    }

    /// Who the connection has proved to be.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Runs one authentication step: the answer to send, or the refusal
    /// after which the connection is closed.
    pub fn step(&mut self, access: &Access, step: AuthStep) -> Result<Response, Refusal> {
        match step {
            AuthStep::Token { token } => {
                let hash = token_hash(&token);
                let role = match &access.tokens {
                    // A node without tokens takes any: every client may
                    // do everything there.
                    None => Role::Admin,
                    Some(tokens) => tokens.role(&hash).ok_or_else(|| {
                        Refusal::Unauthenticated("the API token is not known to this node".into())
                    })?,
                };
                self.caller = Caller::Token(hash);
                Ok(Response::Authenticated(Principal::Client(role)))
            }
            AuthStep::PeerHello { key_id, nonce } => {
                if self.tls == Some(false) {
                    return Err(Refusal::Unauthenticated(
                        "over TLS, a node proves itself with a certificate the cluster CA signed"
                            .into(),
                    ));
                }
                let Some(secret) = &access.secret else {
                    return Err(Refusal::Unauthenticated(
                        "this node has no cluster secret: give every node the same one".into(),
                    ));
                };
                let server_nonce = new_nonce();
                let proof = secret
                    .server_proof(key_id, &nonce, &server_nonce)
                    .ok_or_else(|| {
                        Refusal::Unauthenticated(
                            "the cluster secret offered is not one this node holds".into(),
                        )
                    })?;
                self.challenge = Some((key_id, nonce, server_nonce));
                Ok(Response::PeerChallenge {
                    nonce: server_nonce,
                    proof,
                })
            }
            AuthStep::PeerProof { proof } => {
                let (Some(secret), Some((key_id, client, server))) =
                    (&access.secret, self.challenge.take())
                else {
                    return Err(Refusal::Unauthenticated(
                        "a peer proof without a challenge".into(),
                    ));
                };
                if !secret.verify_client(key_id, &client, &server, &proof) {
                    return Err(Refusal::Unauthenticated(
                        "the peer did not prove the cluster secret".into(),
                    ));
                }
                self.caller = Caller::Peer;
                Ok(Response::Authenticated(Principal::Peer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_client::auth::new_token;

    fn access(tokens: &[(&str, Role)], secret: Option<&str>) -> (Access, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let text: String = tokens
            .iter()
            .map(|(t, r)| format!("{} {}\n", token_hash(t), r.as_str()))
            .collect();
        std::fs::write(&path, text).unwrap();
        let access = Access {
            secret: secret.map(|s| Arc::new(ClusterSecret::parse(s).unwrap())),
            tokens: Some(TokenStore::load(&path).unwrap()),
        };
        (access, dir)
    }

    #[test]
    fn roles_cover_what_they_imply_and_nothing_more() {
        let (r, w, a) = (new_token(), new_token(), new_token());
        let (access, _dir) = access(
            &[(&r, Role::Read), (&w, Role::Write), (&a, Role::Admin)],
            Some("the cluster secret here"),
        );
        let caller = |t: &str| Caller::Token(token_hash(t));
        let read = Need::Role(Role::Read);
        let write = Need::Role(Role::Write);
        let admin = Need::Role(Role::Admin);
        assert!(access.check(&caller(&r), read).is_ok());
        assert!(matches!(
            access.check(&caller(&r), write),
            Err(Refusal::Forbidden(_))
        ));
        assert!(access.check(&caller(&w), write).is_ok());
        assert!(matches!(
            access.check(&caller(&w), admin),
            Err(Refusal::Forbidden(_))
        ));
        assert!(access.check(&caller(&a), admin).is_ok());
        assert!(matches!(
            access.check(&caller(&a), Need::Peer),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            access.check(&Caller::Anonymous, read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            access.check(&Caller::Anonymous, Need::Peer),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            access.check(&caller(&new_token()), read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(access.check(&Caller::Anonymous, Need::Nothing).is_ok());
        assert!(access.check(&Caller::Peer, admin).is_ok());
        // Nothing configured: everything is open.
        let open = Access::default();
        assert!(!open.is_enforced());
        assert!(open.check(&Caller::Anonymous, Need::Peer).is_ok());
        assert!(open.check(&Caller::Anonymous, admin).is_ok());
    }

    #[test]
    fn the_peer_handshake_admits_the_secret_and_nothing_else() {
        let (node, _dir) = access(&[], Some("the cluster secret here"));
        let good = ClusterSecret::parse("the cluster secret here").unwrap();
        let bad = ClusterSecret::parse("not the cluster secret").unwrap();

        let mut s = Session::default();
        let c = new_nonce();
        let Ok(Response::PeerChallenge { nonce, proof }) = s.step(
            &node,
            AuthStep::PeerHello {
                key_id: good.key_id(),
                nonce: c,
            },
        ) else {
            panic!("no challenge")
        };
        assert!(good.verify_server(&c, &nonce, &proof));
        let answer = s.step(
            &node,
            AuthStep::PeerProof {
                proof: good.client_proof(&c, &nonce),
            },
        );
        assert_eq!(answer, Ok(Response::Authenticated(Principal::Peer)));
        assert_eq!(s.caller(), &Caller::Peer);

        // A wrong secret is refused at the hello (unknown key id).
        let mut s = Session::default();
        let refused = s.step(
            &node,
            AuthStep::PeerHello {
                key_id: bad.key_id(),
                nonce: c,
            },
        );
        assert!(matches!(refused, Err(Refusal::Unauthenticated(_))));
        // A forged proof under a known key id is refused.
        let mut s = Session::default();
        let Ok(Response::PeerChallenge { nonce, .. }) = s.step(
            &node,
            AuthStep::PeerHello {
                key_id: good.key_id(),
                nonce: c,
            },
        ) else {
            panic!("no challenge")
        };
        let forged = s.step(
            &node,
            AuthStep::PeerProof {
                proof: bad.client_proof(&c, &nonce),
            },
        );
        assert!(matches!(forged, Err(Refusal::Unauthenticated(_))));
        assert_eq!(s.caller(), &Caller::Anonymous);
        // A proof with no challenge is refused.
        let replay = Session::default().step(&node, AuthStep::PeerProof { proof: [0; 32] });
        assert!(matches!(replay, Err(Refusal::Unauthenticated(_))));
    }
}
