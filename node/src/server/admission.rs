//! [`Admission`]: the node-wide bounds on what its connections may make it
//! hold, so that a few careless or hostile clients cannot stall it.
//!
//! Three counters, each with a limit from [`ServerLimits`]:
//!
//! - connections: past the limit a new connection is answered `Overloaded`
//!   and closed at once. The limit stays below the process's file
//!   descriptor limit, with room left for the storage engine's files (a
//!   flood of idle sockets once made the next WAL rotation fail);
//! - requests in flight, over all connections;
//! - bytes held for connections: request frames being read or executed,
//!   and responses waiting to be written. A request that would pass the
//!   limit is answered `Overloaded` before any work is queued for it; a
//!   response is always counted (its work is done), so the count can pass
//!   the limit by the responses in flight, which is what stops new work.
//!
//! Each admission is a guard that gives its share back when dropped, so
//! no path can leak one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The bounds on connections, for [`Admission`] and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// Open client and peer connections at most.
    pub max_connections: usize,
    /// Requests one connection may have in flight before the node stops
    /// reading from it.
    pub max_in_flight_per_connection: usize,
    /// Requests in flight over all connections.
    pub max_in_flight: usize,
    /// Bytes of requests and responses held for all connections.
    #[serde(rename = "max_buffered_mib", with = "crate::units::mib")]
    pub max_buffered_bytes: usize,
    /// A connection with no request for this long is closed.
    #[serde(rename = "idle_timeout_s", with = "crate::units::secs")]
    pub idle_timeout: Duration,
    /// A request frame must arrive whole within this long of its first
    /// byte (a slow sender holds a buffer and a connection).
    #[serde(rename = "frame_timeout_s", with = "crate::units::secs")]
    pub frame_timeout: Duration,
    /// A response that cannot be written for this long (the client does
    /// not read) closes the connection.
    #[serde(rename = "write_timeout_s", with = "crate::units::secs")]
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_in_flight_per_connection: 128,
            max_in_flight: 4_096,
            max_buffered_bytes: 256 << 20,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// File descriptors kept for everything but connections: the storage
/// engines' tables and WALs, the metadata log, peers' connections.
pub const RESERVED_FDS: u64 = 512;

impl ServerLimits {
    /// These limits with `max_connections` lowered, if needed, to fit a
    /// process allowed `fd_limit` open files with `RESERVED_FDS` (at most
    /// half of them) and a quarter of the rest kept for storage.
    pub fn fitted_to(mut self, fd_limit: u64) -> ServerLimits {
        let spare = fd_limit.saturating_sub(RESERVED_FDS.min(fd_limit / 2));
        let room = spare - spare / 4;
        self.max_connections = self.max_connections.min(room.max(1) as usize);
        self
    }
}

/// What was refused, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open connections.
    Connections,
    /// Too many requests in flight.
    Requests,
    /// Too many bytes held.
    Bytes,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Connections => "the node has as many connections as it takes",
            Refusal::Requests => "the node has as many requests in flight as it takes",
            Refusal::Bytes => "the node holds as many request and response bytes as it takes",
        })
    }
}

/// Node-wide counters of what connections hold.
#[derive(Debug)]
pub struct Admission {
    limits: ServerLimits,
    connections: AtomicUsize,
    requests: AtomicUsize,
    bytes: AtomicUsize,
    refused: AtomicU64,
}

/// One open connection (given back when dropped).
#[derive(Debug)]
pub struct ConnectionSlot(Arc<Admission>);

/// One request in flight and the bytes of its frame (given back when
/// dropped).
#[derive(Debug)]
pub struct RequestSlot {
    admission: Arc<Admission>,
    bytes: usize,
}

/// Bytes held for a connection, e.g. a response waiting to be written.
#[derive(Debug)]
pub struct HeldBytes {
    admission: Arc<Admission>,
    bytes: usize,
}

impl Admission {
    /// Counters with these limits.
    pub fn new(limits: ServerLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Takes one connection, if the limit allows.
    pub fn connection(self: &Arc<Self>) -> Result<ConnectionSlot, Refusal> {
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_connections).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(ConnectionSlot(self.clone())),
            Err(_) => Err(self.refuse(Refusal::Connections)),
        }
    }

    /// Takes one request of `bytes`, if both limits allow.
    pub fn request(self: &Arc<Self>, bytes: usize) -> Result<RequestSlot, Refusal> {
        let requests = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_in_flight).then_some(n + 1)
            });
        if requests.is_err() {
            return Err(self.refuse(Refusal::Requests));
        }
        let held = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n.saturating_add(bytes) <= self.limits.max_buffered_bytes).then_some(n + bytes)
            });
        if held.is_err() {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(Refusal::Bytes));
        }
        Ok(RequestSlot {
            admission: self.clone(),
            bytes,
        })
    }

    /// Counts `bytes` whatever the limit (work already done).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> HeldBytes {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        HeldBytes {
            admission: self.clone(),
            bytes,
        }
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.refused.fetch_add(1, Ordering::Relaxed);
        why
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Requests in flight now.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Connections and requests refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.admission.requests.fetch_sub(1, Ordering::AcqRel);
        self.admission.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.admission.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_refuses_past_its_limit_and_guards_give_back() {
        let admission = Admission::new(ServerLimits {
            max_connections: 2,
            max_in_flight: 3,
            max_buffered_bytes: 100,
            ..ServerLimits::default()
        });
        let a = admission.connection().unwrap();
        let _b = admission.connection().unwrap();
        assert_eq!(admission.connection().unwrap_err(), Refusal::Connections);
        drop(a);
        let _c = admission.connection().unwrap();

        let r1 = admission.request(60).unwrap();
        assert_eq!(admission.request(41).unwrap_err(), Refusal::Bytes);
        assert_eq!(admission.requests(), 1, "a byte refusal keeps no request");
        let r2 = admission.request(40).unwrap();
        let r3 = admission.request(0).unwrap();
        assert_eq!(admission.request(0).unwrap_err(), Refusal::Requests);
        drop((r1, r2, r3));
        assert_eq!((admission.requests(), admission.bytes()), (0, 0));

        // A response is counted past the limit, and then stops new work.
        let response = admission.hold(150);
        assert_eq!(admission.request(1).unwrap_err(), Refusal::Bytes);
        drop(response);
        assert!(admission.request(100).is_ok());
        assert_eq!(admission.refused(), 4);
    }

    #[test]
    fn connections_fit_below_the_descriptor_limit() {
        let limits = ServerLimits::default();
        assert_eq!(limits.fitted_to(1024).max_connections, 384);
        assert_eq!(limits.fitted_to(1 << 20).max_connections, 10_000);
        assert_eq!(limits.fitted_to(400).max_connections, 150);
        assert_eq!(limits.fitted_to(1).max_connections, 1);
    }
}
