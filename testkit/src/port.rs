//! [`unused_local_port`]: a loopback port for a node that is about to be
//! started on this machine (the demo cluster, the test harnesses).
//!
//! Asking the kernel for port 0 and closing the socket is the usual trick,
//! and it races twice: the port comes from the ephemeral range, so any
//! outgoing connection made before the node binds may take it as its
//! source port (the node then fails to bind, or a client connecting to it
//! connects to itself); and two clusters started side by side in one
//! process (parallel tests) may be handed the same port. So the port is
//! drawn at random from below the kernel's ephemeral range, where outgoing
//! connections never take their source ports, and never handed out twice
//! by one process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

use rand::Rng;

/// Lowest port drawn: above the well-known and most registered services.
const LOWEST: u16 = 10_000;
/// Attempts before falling back to a kernel-chosen port.
const ATTEMPTS: usize = 1_000;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range (Linux's default if it
/// cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port on 127.0.0.1 that nothing is bound to now, outside the
/// ephemeral range where possible, and not returned before by this
/// process.
pub fn unused_local_port() -> std::io::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let top = ephemeral_start();
    if top > LOWEST {
        let mut rng = rand::rng();
        for _ in 0..ATTEMPTS {
            let port = rng.random_range(LOWEST..top);
            if handed_out.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return Ok(port);
            }
        }
    }
    // No room below the ephemeral range: let the kernel choose.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_outside_the_ephemeral_range_and_never_repeated() {
        let top = ephemeral_start();
        let ports: Vec<u16> = (0..200).map(|_| unused_local_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            if top > LOWEST {
                assert!(
                    (LOWEST..top).contains(&port),
                    "{port} is in the ephemeral range"
                );
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
