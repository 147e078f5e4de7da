//! [`StateMachine`]: openraft's state machine over [`ClusterState`].
//!
//! The state lives in memory and is published on a `watch` channel after
//! every applied entry, so the data path reads metadata locally and never
//! waits on Raft. Snapshots are the state as JSON; the latest one is saved
//! in the log's engine (fsynced) so that a restart rebuilds the state from
//! it and the entries after it.

// openraft's traits return its (large) StorageError; the helpers here
// build and pass it on.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tally_storage::{Db, Durability, Options};
use tokio::sync::watch;

use crate::cluster_state::{ClusterState, CommandResult};
use crate::raft_types::{storage_error, Entry, NodeId, StorageError, TypeConfig};

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

const SNAPSHOT: &[u8] = b"s";

/// The metadata state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    applied: Arc<Mutex<Applied>>,
    snapshot: Arc<Mutex<Option<SavedSnapshot>>>,
    db: Arc<Db>,
    published: Arc<watch::Sender<Arc<ClusterState>>>,
    snapshots_built: Arc<Mutex<u64>>,
}

fn sm_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    /// Opens the state machine whose snapshots live in `dir`, restored
    /// from the latest snapshot. Returns it and the channel its state is
    /// published on.
    pub fn open(dir: &Path) -> Result<(StateMachine, watch::Receiver<Arc<ClusterState>>), String> {
        let opts = Options {
            durability: Durability::Sync,
            memtable_bytes: 4 << 20,
            ..Options::default()
        };
        let db = Db::open(dir, opts, Arc::new(tally_storage::AddI64))
            .map_err(|e| format!("raft snapshots {}: {e}", dir.display()))?;
        let saved: Option<SavedSnapshot> = match db.get(SNAPSHOT).map_err(|e| e.to_string())? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string())?),
            None => None,
        };
        let applied = match &saved {
            Some(s) => Applied {
                state: serde_json::from_slice(&s.data).map_err(|e| e.to_string())?,
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
            },
            None => Applied::default(),
        };
        let (tx, rx) = watch::channel(Arc::new(applied.state.clone()));
        Ok((
            StateMachine {
                applied: Arc::new(Mutex::new(applied)),
                snapshot: Arc::new(Mutex::new(saved)),
                db: Arc::new(db),
                published: Arc::new(tx),
                snapshots_built: Arc::new(Mutex::new(0)),
            },
            rx,
        ))
    }

    /// The current state.
    pub fn state(&self) -> ClusterState {
        self.applied.lock().state.clone()
    }

    fn save(&self, snapshot: &SavedSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(snapshot).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        self.db
            .put(SNAPSHOT, &bytes)
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        *self.snapshot.lock() = Some(snapshot.clone());
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_log_id, last_membership) = {
            let applied = self.applied.lock();
            (
                serde_json::to_vec(&applied.state).map_err(|e| sm_error(ErrorVerb::Read, e))?,
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        let n = {
            let mut built = self.snapshots_built.lock();
            *built += 1;
            *built
        };
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{n}", id.leader_id, id.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.save(&SavedSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let state = {
            let mut applied = self.applied.lock();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Normal(command) => applied.state.apply(&command),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult::Applied {
                            epoch: applied.state.epoch,
                            host_id: None,
                        }
                    }
                    EntryPayload::Blank => CommandResult::Applied {
                        epoch: applied.state.epoch,
                        host_id: None,
                    },
                };
                results.push(result);
            }
            Arc::new(applied.state.clone())
        };
        self.published.send_replace(state);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: ClusterState =
            serde_json::from_slice(&data).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        self.save(&SavedSnapshot {
            meta: meta.clone(),
            data,
        })?;
        {
            let mut applied = self.applied.lock();
            applied.state = state.clone();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        self.published.send_replace(Arc::new(state));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.snapshot.lock().clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
