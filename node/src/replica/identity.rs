//! [`Identity`]: who this node is, and which incarnation of it is running.
//!
//! The shard a node writes in every counter cell is named
//! `host_id << 32 | incarnation`. The incarnation is raised, and fsynced,
//! before serving after every start that did not follow a clean shutdown.
//! That closes trap (b) of DESIGN.md §3: after a machine crash in
//! `periodic` mode the WAL may have lost updates of this node's shard that
//! other replicas already hold under higher clocks; writing the same shard
//! again would either lose the new increments or overwrite acknowledged
//! ones. A new incarnation writes a new shard instead, and the old one stays
//! frozen at whatever value the replicas converge to (Cassandra's counter-id
//! renewal).
//!
//! Files in the data directory: `IDENTITY` (`host_id incarnation\n`,
//! replaced atomically) and `CLEAN_SHUTDOWN` (present only between a clean
//! shutdown and the next start).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// This node's host id and incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Assigned once, never reused (from config until metadata assigns it).
    pub host_id: u32,
    /// Raised after every unclean stop.
    pub incarnation: u32,
}

impl Identity {
    /// The shard id counter cells use for this incarnation.
    pub fn shard_id(&self) -> u64 {
        (u64::from(self.host_id) << 32) | u64::from(self.incarnation)
    }

    /// The host id recorded in `dir`, if any (a node whose metadata comes
    /// from Raft learns its id at its first join and keeps it).
    pub fn stored_host_id(dir: &Path) -> std::io::Result<Option<u32>> {
        match fs::read_to_string(dir.join("IDENTITY")) {
            Ok(text) => text
                .split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .map(Some)
                .ok_or_else(|| std::io::Error::other("IDENTITY is malformed")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Loads the identity, raising the incarnation unless the last stop was
    /// clean, and makes the result durable before returning.
    pub fn load_or_create(dir: &Path, host_id: u32) -> std::io::Result<Identity> {
        let path = dir.join("IDENTITY");
        let marker = dir.join("CLEAN_SHUTDOWN");
        let identity = match fs::read_to_string(&path) {
            Ok(text) => {
                let mut parts = text.split_whitespace().map(str::parse::<u32>);
                let (Some(Ok(stored_host)), Some(Ok(incarnation))) = (parts.next(), parts.next())
                else {
                    return Err(std::io::Error::other(format!(
                        "{} is malformed",
                        path.display()
                    )));
                };
                if stored_host != host_id {
                    return Err(std::io::Error::other(format!(
                        "data directory belongs to host id {stored_host}, not {host_id}"
                    )));
                }
                let clean = marker.exists();
                Identity {
                    host_id,
                    incarnation: if clean { incarnation } else { incarnation + 1 },
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Identity {
                host_id,
                incarnation: 1,
            },
            Err(e) => return Err(e),
        };
        let tmp = dir.join("IDENTITY.tmp");
        let mut file = File::create(&tmp)?;
        writeln!(file, "{} {}", identity.host_id, identity.incarnation)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        if marker.exists() {
            fs::remove_file(&marker)?;
        }
        File::open(dir)?.sync_all()?;
        Ok(identity)
    }

    /// Whether a node already ran from `dir` and did not stop cleanly (a
    /// crash, a kill, a power loss): then its WAL may have lost records.
    pub fn stopped_uncleanly(dir: &Path) -> bool {
        dir.join("IDENTITY").exists() && !dir.join("CLEAN_SHUTDOWN").exists()
    }

    /// Forgets that the last stop was clean, so that the next
    /// [`Identity::load_or_create`] raises the incarnation.
    pub fn forget_clean_shutdown(dir: &Path) -> std::io::Result<()> {
        match fs::remove_file(dir.join("CLEAN_SHUTDOWN")) {
            Ok(()) => File::open(dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records a clean shutdown (after the storage engine closed).
    pub fn mark_clean_shutdown(dir: &Path) -> std::io::Result<()> {
        File::create(dir.join("CLEAN_SHUTDOWN"))?.sync_all()?;
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_rises_only_after_unclean_stops() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), 7).unwrap();
        assert_eq!(
            first,
            Identity {
                host_id: 7,
                incarnation: 1
            }
        );
        // Crash (no marker): a new incarnation.
        assert_eq!(
            Identity::load_or_create(dir.path(), 7).unwrap().incarnation,
            2
        );
        Identity::mark_clean_shutdown(dir.path()).unwrap();
        assert_eq!(
            Identity::load_or_create(dir.path(), 7).unwrap().incarnation,
            2
        );
        assert!(
            Identity::load_or_create(dir.path(), 8).is_err(),
            "another host's directory"
        );
    }
}
