//! openraft's storage suite (`openraft::testing::log`) against the
//! controller's two Raft logs, in memory and in files, each with the
//! metadata state machine.

use std::future::Future;
use std::pin::Pin;

use openraft::storage::RaftLogStorage;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{AsyncRuntime, StorageError};
use replication::controller::file_log::FileLogStore;
use replication::controller::log_store::MemLogStore;
use replication::controller::{GlommioRuntime, MetadataStateMachine, TypeConfig};

fn run<F: Future<Output = ()>>(f: F) {
    GlommioRuntime::new(1).block_on(f);
}

struct MemStores;

impl StoreBuilder<TypeConfig, MemLogStore, MetadataStateMachine, ()> for MemStores {
    async fn build(
        &self,
    ) -> Result<((), MemLogStore, MetadataStateMachine), StorageError<TypeConfig>> {
        Ok(((), MemLogStore::new(), MetadataStateMachine::new().0))
    }
}

struct FileStores;

impl StoreBuilder<TypeConfig, FileLogStore, MetadataStateMachine, tempfile::TempDir>
    for FileStores
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, FileLogStore, MetadataStateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FileLogStore::open(dir.path().join("log")).expect("open log");
        let (sm, _) =
            MetadataStateMachine::open(dir.path().join("snapshots")).expect("open snapshots");
        Ok((dir, log, sm))
    }
}

/// openraft's storage suite (`Suite::test_store` of alpha.37, check for
/// check), each check on its own fresh store and all at once: eight of
/// them sleep a second, which run one after the other cost ten seconds.
async fn storage_suite<LS, B, G>(builder: B)
where
    LS: RaftLogStorage<TypeConfig>,
    B: StoreBuilder<TypeConfig, LS, MetadataStateMachine, G>,
    G: Send + Sync + 'static,
{
    type Check = Pin<Box<dyn Future<Output = (&'static str, Result<(), std::io::Error>)>>>;
    let mut checks: Vec<Check> = Vec::new();
    macro_rules! checks {
        ($($name:ident),* $(,)?) => {$(
            let (guard, store, sm) = builder.build().await.expect("build stores");
            checks.push(Box::pin(async move {
                let result = Suite::<TypeConfig, LS, MetadataStateMachine, B, G>::$name(store, sm).await;
                drop(guard);
                (stringify!($name), result)
            }));
        )*};
    }
    checks!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_membership_from_empty_log_and_sm,
        get_initial_state_membership_from_sm_inlog_is_smaller,
        get_initial_state_membership_from_log_insm_is_smaller,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_inverted_log_order,
        get_initial_state_conflict_at_same_index,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        leader_bounded_stream,
        entries_stream,
        try_get_log_entry,
        log_reader_reads_new_entries,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_after_11,
        delete_logs_after_5,
        delete_logs_after_0,
        delete_logs_after_none,
        append_to_log,
        snapshot_meta,
        snapshot_meta_optional,
        apply_single,
        apply_multiple,
    );
    let transfer = Suite::<TypeConfig, LS, MetadataStateMachine, B, G>::transfer_snapshot(&builder);
    let (results, transferred) =
        futures_util::future::join(futures_util::future::join_all(checks), transfer).await;
    for (name, result) in results {
        result.unwrap_or_else(|e| panic!("storage suite check {name}: {e}"));
    }
    transferred.expect("storage suite check transfer_snapshot");
}

#[test]
fn memory_log_passes_openraft_storage_suite() {
    run(storage_suite(MemStores));
}

#[test]
fn file_log_passes_openraft_storage_suite() {
    run(storage_suite(FileStores));
}
