//! openraft's own test suite for log stores and state machines, run on
//! tally's durable log and metadata state machine.

#![allow(clippy::unwrap_used)]

use tally_consensus::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("log")).unwrap();
        let (sm, _) = StateMachine::open(&dir.path().join("snapshots")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openrafts_suite() {
    openraft::testing::Suite::test_all(Builder).unwrap();
}
