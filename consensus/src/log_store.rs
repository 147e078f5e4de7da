//! [`LogStore`]: openraft's log and vote, durable in a tally storage
//! engine opened in `sync` mode: `save_vote` and `append` return (and call
//! openraft's flush callback) only after the engine's write, which fsyncs
//! the WAL (group commit shared with concurrent writers), so a vote or an
//! entry is on disk before Raft relies on it.
//!
//! Keys: `l` + index (8 bytes, big-endian) -> the entry (JSON); `v` -> the
//! vote; `p` -> the last purged log id; `c` -> the last committed log id.
//! The last log id is also kept in memory (loaded at open), since the
//! engine has no reverse scan.

// openraft's traits return its (large) StorageError; the helpers here
// build and pass it on.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, Vote};
use parking_lot::Mutex;
use tally_storage::{Db, Durability, Options, WriteBatch};

use crate::raft_types::{storage_error, Entry, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"v";
const PURGED: &[u8] = b"p";
const COMMITTED: &[u8] = b"c";

fn log_key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'l');
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The metadata group's log.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Db>,
    last: Arc<Mutex<Option<LogId<NodeId>>>>,
}

fn logs_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::Logs, verb, e)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, String> {
        let opts = Options {
            durability: Durability::Sync,
            memtable_bytes: 4 << 20,
            ..Options::default()
        };
        let db = Db::open(dir, opts, Arc::new(tally_storage::AddI64))
            .map_err(|e| format!("raft log {}: {e}", dir.display()))?;
        let store = LogStore {
            db: Arc::new(db),
            last: Arc::new(Mutex::new(None)),
        };
        let mut last = None;
        store
            .db
            .scan_with(&log_key(0), Some(b"m"), |_, v| {
                if let Ok(entry) = serde_json::from_slice::<Entry>(v) {
                    last = Some(entry.log_id);
                }
                true
            })
            .map_err(|e| e.to_string())?;
        *store.last.lock() = last;
        Ok(store)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self
            .db
            .get(key)
            .map_err(|e| logs_error(ErrorVerb::Read, e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| logs_error(ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    fn put_json<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        self.db
            .put(key, &bytes)
            .map_err(|e| storage_error(subject, ErrorVerb::Write, e))
    }

    /// Log keys in `[from, to)` (by index).
    fn keys(&self, from: u64, to: Option<u64>) -> Result<Vec<Vec<u8>>, StorageError> {
        let end = to.map_or_else(|| vec![b'm'], log_key);
        let mut keys = Vec::new();
        self.db
            .scan_with(&log_key(from), Some(&end), |k, _| {
                keys.push(k.to_vec());
                true
            })
            .map_err(|e| logs_error(ErrorVerb::Read, e))?;
        Ok(keys)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let end = to.map_or_else(|| vec![b'm'], log_key);
        let mut entries = Vec::new();
        let mut bad = None;
        self.db
            .scan_with(
                &log_key(from),
                Some(&end),
                |_, v| match serde_json::from_slice(v) {
                    Ok(entry) => {
                        entries.push(entry);
                        true
                    }
                    Err(e) => {
                        bad = Some(e.to_string());
                        false
                    }
                },
            )
            .map_err(|e| logs_error(ErrorVerb::Read, e))?;
        match bad {
            Some(e) => Err(logs_error(ErrorVerb::Read, e)),
            None => Ok(entries),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_json(PURGED)?;
        let last = *self.last.lock();
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_json(VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_json(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.put_json(COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.get_json::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut last = None;
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| logs_error(ErrorVerb::Write, e))?;
            batch.put(log_key(entry.log_id.index), bytes);
            last = Some(entry.log_id);
        }
        let written = self.db.write(batch);
        if written.is_ok() {
            if let Some(last) = last {
                *self.last.lock() = Some(last);
            }
        }
        callback.log_io_completed(
            written
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        written.map_err(|e| logs_error(ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        for key in self.keys(log_id.index, None)? {
            batch.delete(key);
        }
        self.db
            .write(batch)
            .map_err(|e| logs_error(ErrorVerb::Delete, e))?;
        let before = if log_id.index == 0 {
            Vec::new()
        } else {
            self.try_get_log_entries(log_id.index - 1..log_id.index)
                .await?
        };
        *self.last.lock() = before.last().map(|e| e.log_id);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.put_json(PURGED, &log_id, ErrorSubject::Logs)?;
        let mut batch = WriteBatch::new();
        for key in self.keys(0, log_id.index.checked_add(1))? {
            batch.delete(key);
        }
        self.db
            .write(batch)
            .map_err(|e| logs_error(ErrorVerb::Delete, e))?;
        // Purging past the last entry leaves none: the purged id is last.
        let mut last = self.last.lock();
        if last.is_some_and(|l| l.index <= log_id.index) {
            *last = None;
        }
        Ok(())
    }
}
