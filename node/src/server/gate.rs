//! The binary front's gate: authentication steps, and frames refused
//! before their bodies are decoded when the connection has not proved
//! what they need (`crate::security`). A failed authentication step
//! closes the connection; a refused request is answered (every request
//! pipelined behind it learns why, not just that the connection broke),
//! and its body is dropped unread.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_client::frame::Frame;
use tally_client::message::{is_auth_kind, Need};
use tally_client::{Request, Response};

use super::Server;
use crate::log_limit::LogLimit;
use crate::security::tls::Tls;
use crate::security::{Access, Refusal, Session};

/// What the gate decided about a frame.
pub(super) enum Gate {
    /// Decode and serve it.
    Pass,
    /// Answer this and read on (an authentication step, or a request the
    /// caller's role does not cover).
    Answer(Response),
    /// Answer this and close the connection.
    Close(Response),
}

impl Server {
    /// Who may send what.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// TLS on both ports, if on.
    pub(crate) fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Decides about `frame` from `peer` on a connection at `session`.
    pub(super) fn gate(&self, session: &mut Session, frame: &Frame, peer: SocketAddr) -> Gate {
        if is_auth_kind(frame.kind) {
            let step = match Request::decode(frame.kind, &frame.body) {
                Ok(Request::Auth(step)) => step,
                Ok(_) | Err(_) => {
                    let refusal =
                        Refusal::Unauthenticated("a malformed authentication step".into());
                    self.refused(Some(peer), "auth", &refusal);
                    return Gate::Close(refusal.response());
                }
            };
            return match session.step(&self.access, step) {
                Ok(answer) => Gate::Answer(answer),
                Err(refusal) => {
                    self.refused(Some(peer), "auth", &refusal);
                    Gate::Close(refusal.response())
                }
            };
        }
        match self
            .access
            .check(session.caller(), Need::of_kind(frame.kind))
        {
            Ok(()) => Gate::Pass,
            Err(refusal) => {
                self.refused(Some(peer), &format!("kind {:#04x}", frame.kind), &refusal);
                Gate::Answer(refusal.response())
            }
        }
    }

    /// Counts a refusal and logs it with the address it came from (at most
    /// once a second, saying how many were held back).
    pub(crate) fn refused(&self, peer: Option<SocketAddr>, what: &str, refusal: &Refusal) {
        self.access_refused.fetch_add(1, Ordering::Relaxed);
        static REFUSALS: LogLimit = LogLimit::every(Duration::from_secs(1));
        if let Some(held_back) = REFUSALS.allow() {
            tracing::warn!(
                peer = %peer.map_or("(http)".to_owned(), |p| p.to_string()),
                request = what,
                code = ?refusal.code(),
                reason = refusal.message(),
                held_back,
                "refused a request"
            );
        }
    }
}
