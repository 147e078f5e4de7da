//! The binary front's gate between a frame and its request:
//! authentication steps, and frames refused before their bodies are
//! decoded when the connection has not proved what they need
//! (`crate::security`). A failed authentication step
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

/// A frame turned away: the answer, and whether the connection closes.
pub(super) struct Turned {
    pub(super) response: Box<Response>,
    pub(super) close: bool,
}

impl Turned {
    fn answer(response: Response) -> Turned {
        Turned {
            response: Box::new(response),
            close: false,
        }
    }

    fn close(response: Response) -> Turned {
        Turned {
            response: Box::new(response),
            close: true,
        }
    }
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

    /// The request `frame` from `peer` carries, if the connection at
    /// `session` may send it: authentication steps are run here (and
    /// answered), a frame whose kind the caller may not send is refused
    /// before its body is decoded, a body that does not decode gets its
    /// typed error, and a decoded `Admin` payload is checked again.
    pub(super) fn screen(
        &self,
        session: &mut Session,
        frame: &Frame,
        peer: SocketAddr,
    ) -> Result<Request, Turned> {
        let enforced = self.access.is_enforced();
        if is_auth_kind(frame.kind) {
            return Err(self.authenticate(session, frame, peer));
        }
        if enforced {
            if let Err(refusal) = self
                .access
                .check(session.caller(), Need::of_kind(frame.kind))
            {
                self.refused(Some(peer), &format!("kind {:#04x}", frame.kind), &refusal);
                return Err(Turned::answer(refusal.response()));
            }
        }
        let request = Request::decode(frame.kind, &frame.body).map_err(|e| {
            Turned::answer(Response::Error {
                code: e.code,
                message: e.reason,
            })
        })?;
        if enforced {
            if let Err(refusal) = self.access.check(session.caller(), Need::of(&request)) {
                self.refused(Some(peer), request.name(), &refusal);
                return Err(Turned::answer(refusal.response()));
            }
        }
        Ok(request)
    }

    /// Runs an authentication step: its answer, or the refusal after
    /// which the connection closes.
    fn authenticate(&self, session: &mut Session, frame: &Frame, peer: SocketAddr) -> Turned {
        let step = match Request::decode(frame.kind, &frame.body) {
            Ok(Request::Auth(step)) => step,
            Ok(_) | Err(_) => {
                let refusal = Refusal::Unauthenticated("a malformed authentication step".into());
                self.refused(Some(peer), "auth", &refusal);
                return Turned::close(refusal.response());
            }
        };
        match session.step(&self.access, step) {
            Ok(answer) => Turned::answer(answer),
            Err(refusal) => {
                self.refused(Some(peer), "auth", &refusal);
                Turned::close(refusal.response())
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
