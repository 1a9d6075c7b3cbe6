//! openraft's own storage test suite (`openraft::testing::log::Suite`), in full, over
//! walmdb-raft's log store and state machine, each test on a fresh node directory.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use walmdb_raft::{open_storage_with, LogStore, StateMachine, StorageConfig, TypeConfig};

struct FreshNode;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FreshNode {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let io = |e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(io)?;
        let (log, sm) = open_storage_with(dir.path(), &StorageConfig::small()).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_in_full() {
    Suite::test_all(FreshNode).await.unwrap();
}
