//! [`RepairLedger`]: what this node knows of the repairs of the ranges it
//! replicates: when each was last repaired (kept on disk, so a restart
//! resumes the schedule where it was) and who is repairing it now (a
//! lease, so only one repair of a range runs at a time in the cluster).
//!
//! Every replica of a range keeps both: the node that repairs a range
//! takes the lease on every live replica first and, when it is done, tells
//! each of them the time it finished. So whichever replica takes over the
//! range's schedule (its first replica is down) knows when it was last
//! repaired, and two nodes that both think it is theirs cannot repair it
//! at once: each takes the leases in ascending host order and gives up on
//! the first refusal, so one of them wins and neither waits.
//!
//! The history file (`REPAIR_HISTORY` in the data directory) is written
//! whole (temporary file, fsync, rename, directory fsync): one line per
//! range, `start end last_ms`, then a line `crc <crc32 of the lines>`. It
//! is advice, not data: a damaged or unreadable file is logged and
//! treated as empty, which costs repairs sooner than needed, never counts.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token range `(start, end]`, as the ledger keys it.
pub type RangeKey = (u64, u64);

const FILE: &str = "REPAIR_HISTORY";

/// The last repair of each range, and the leases held now.
#[derive(Debug)]
pub struct RepairLedger {
    path: PathBuf,
    history: Mutex<BTreeMap<RangeKey, i64>>,
    leases: Mutex<HashMap<RangeKey, (u64, Instant)>>,
}

/// Why a history file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged(pub String);

impl RepairLedger {
    /// The ledger of the node whose data directory is `dir`: its history
    /// as last written (empty, with a warning, if the file is damaged).
    pub fn open(dir: &Path) -> RepairLedger {
        let path = dir.join(FILE);
        let history = match fs::read_to_string(&path) {
            Ok(text) => decode(&text).unwrap_or_else(|Damaged(reason)| {
                tracing::warn!(path = %path.display(), %reason, "repair history unreadable; every range counts as never repaired");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "repair history unreadable; every range counts as never repaired");
                BTreeMap::new()
            }
        };
        RepairLedger {
            path,
            history: Mutex::new(history),
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// When `range` was last repaired (ms since the epoch), if ever.
    pub fn last(&self, range: RangeKey) -> Option<i64> {
        self.history.lock().get(&range).copied()
    }

    /// Every range's last repair.
    pub fn history(&self) -> BTreeMap<RangeKey, i64> {
        self.history.lock().clone()
    }

    /// Records that `range` was repaired at `at_ms` (an older time than
    /// the one recorded is ignored) and writes the history to disk.
    pub fn record(&self, range: RangeKey, at_ms: i64) -> std::io::Result<()> {
        let text = {
            let mut history = self.history.lock();
            let entry = history.entry(range).or_insert(at_ms);
            if *entry > at_ms {
                return Ok(());
            }
            *entry = at_ms;
            encode(&history)
        };
        write_whole(&self.path, &text)
    }

    /// Takes (or renews) the lease of `range` for `holder` until `ttl`
    /// from now. `Err(other)` when another holder's lease is live.
    pub fn acquire(&self, range: RangeKey, holder: u64, ttl: Duration) -> Result<(), u64> {
        let now = Instant::now();
        let mut leases = self.leases.lock();
        leases.retain(|_, (_, until)| *until > now);
        match leases.get(&range) {
            Some(&(other, _)) if other != holder => Err(other),
            _ => {
                leases.insert(range, (holder, now + ttl));
                Ok(())
            }
        }
    }

    /// Gives up `holder`'s lease of `range` (nothing if it holds none).
    pub fn release(&self, range: RangeKey, holder: u64) {
        let mut leases = self.leases.lock();
        if leases.get(&range).is_some_and(|&(h, _)| h == holder) {
            leases.remove(&range);
        }
    }

    /// Who holds the lease of `range` now, if anyone.
    pub fn holder(&self, range: RangeKey) -> Option<u64> {
        let now = Instant::now();
        self.leases
            .lock()
            .get(&range)
            .filter(|(_, until)| *until > now)
            .map(|&(h, _)| h)
    }
}

fn encode(history: &BTreeMap<RangeKey, i64>) -> String {
    let mut text = String::with_capacity(history.len() * 48 + 16);
    for ((start, end), at) in history {
        text.push_str(&format!("{start} {end} {at}\n"));
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc {crc:08x}\n"));
    text
}

/// Parses a history file; any damage is an error.
pub fn decode(text: &str) -> Result<BTreeMap<RangeKey, i64>, Damaged> {
    let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
    let (body, last) = text.split_at(body_end);
    let stored = last
        .trim_end()
        .strip_prefix("crc ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| Damaged("no checksum line at its end (a torn write?)".into()))?;
    if crc32fast::hash(body.as_bytes()) != stored {
        return Err(Damaged("checksum mismatch".into()));
    }
    let mut history = BTreeMap::new();
    for (n, line) in body.lines().enumerate() {
        let parts: Vec<&str> = line.split(' ').collect();
        let parsed = match parts.as_slice() {
            [start, end, at] => start
                .parse::<u64>()
                .ok()
                .zip(end.parse::<u64>().ok())
                .zip(at.parse::<i64>().ok()),
            _ => None,
        };
        match parsed {
            Some((range, at)) => {
                history.insert(range, at);
            }
            _ => return Err(Damaged(format!("line {} is malformed", n + 1))),
        }
    }
    Ok(history)
}

fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_history_round_trips(entries in proptest::collection::btree_map((any::<u64>(), any::<u64>()), any::<i64>(), 0..50)) {
            prop_assert_eq!(decode(&encode(&entries)), Ok(entries));
        }

        #[test]
        fn a_damaged_history_is_refused(entries in proptest::collection::btree_map((any::<u64>(), any::<u64>()), 0i64..1 << 50, 1..20), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let text = encode(&entries);
            let mut bytes = text.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let damaged = String::from_utf8_lossy(&bytes).into_owned();
            prop_assume!(damaged != text);
            prop_assert!(decode(&damaged).is_err(), "{:?}", damaged);
        }
    }

    #[test]
    fn the_history_survives_a_reopen_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RepairLedger::open(dir.path());
        assert_eq!(ledger.last((1, 2)), None);
        ledger.record((1, 2), 500).unwrap();
        ledger.record((1, 2), 400).unwrap();
        ledger.record((7, 3), 900).unwrap();
        let reopened = RepairLedger::open(dir.path());
        assert_eq!(reopened.last((1, 2)), Some(500));
        assert_eq!(reopened.last((7, 3)), Some(900));
    }

    #[test]
    fn a_torn_or_garbled_file_counts_as_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RepairLedger::open(dir.path());
        ledger.record((1, 2), 500).unwrap();
        let path = dir.path().join(FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, &text[..text.len() - 4]).unwrap();
        assert_eq!(RepairLedger::open(dir.path()).last((1, 2)), None);
        fs::write(&path, "garbage").unwrap();
        assert_eq!(RepairLedger::open(dir.path()).last((1, 2)), None);
        assert!(decode("1 2 x\ncrc 00000000\n").is_err());
        assert_eq!(decode(&encode(&BTreeMap::new())), Ok(BTreeMap::new()));
    }

    #[test]
    fn one_holder_at_a_time_until_release_or_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RepairLedger::open(dir.path());
        let ttl = Duration::from_secs(60);
        assert_eq!(ledger.acquire((1, 2), 7, ttl), Ok(()));
        assert_eq!(ledger.acquire((1, 2), 7, ttl), Ok(()), "renewal");
        assert_eq!(ledger.acquire((1, 2), 8, ttl), Err(7));
        assert_eq!(ledger.acquire((2, 3), 8, ttl), Ok(()), "another range");
        ledger.release((1, 2), 8);
        assert_eq!(ledger.holder((1, 2)), Some(7), "only the holder releases");
        ledger.release((1, 2), 7);
        assert_eq!(ledger.acquire((1, 2), 8, ttl), Ok(()));
        assert_eq!(ledger.acquire((5, 6), 1, Duration::ZERO), Ok(()));
        assert_eq!(ledger.acquire((5, 6), 2, ttl), Ok(()), "expired");
    }
}
