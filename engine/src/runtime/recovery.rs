//! Disaster recovery run before a node starts, on its configuration:
//! [`restore_backup`] builds a new node's data dir from a backup and
//! [`force_new_cluster`] makes a survivor the only voter of its cluster.
//! The file-level work is the storage crate's
//! (`d_engine_storage::rebuild`); this module turns the node's
//! configuration into its inputs (membership with the members' peer and
//! client addresses, WAL options) and logs what it did.

use d_engine_core::SnapshotMeta;
use d_engine_storage::rebuild::{self, ForcedSoleVoter, RebuildError, RestoreTarget};

use super::node::initial_membership;
use crate::config::{Config, ConfigError};

/// Why a restore or force-new-cluster was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Rebuild(#[from] RebuildError),
}

/// Builds the data dir `config.data_dir` of node `config.node_id` of the
/// new cluster `config.cluster_id` with members `config.members` from the
/// backup file `backup` (see `d_engine_storage::rebuild`). Starting the
/// node with the same configuration then serves every key of the backup at
/// the backup's revision. Returns the backup's meta with the new membership.
/// Refuses (changing nothing) an invalid configuration, a `join` node, a
/// node id not among the members, a backup that does not verify and a data
/// dir that is not empty.
pub fn restore_backup(
    config: &Config,
    backup: &std::path::Path,
) -> Result<SnapshotMeta, RecoveryError> {
    // A restore talks to no peer: peer authentication is the started
    // node's business, not a reason to refuse building its data dir.
    let mut checked = config.clone();
    checked.peer.allow_unauthenticated = true;
    checked.validate()?;
    if config.join {
        return Err(ConfigError::new(
            "join",
            "a restored node is a member of the new cluster from the start; restore every \
             member named in --peers, then start them without --join",
        )
        .into());
    }
    let target = RestoreTarget {
        data_dir: config.data_dir.clone(),
        node_id: config.node_id,
        cluster_id: config.cluster_id.clone(),
        membership: initial_membership(config),
        wal: config.durability.wal_options(),
    };
    let meta = rebuild::restore_backup(backup, &target)?;
    tracing::info!(
        backup = %backup.display(),
        data_dir = %config.data_dir.display(),
        node_id = config.node_id,
        cluster_id = %config.cluster_id,
        revision = meta.last_index,
        term = meta.last_term,
        members = ?meta.membership.members.keys().collect::<Vec<_>>(),
        "restored a backup into a new data dir"
    );
    Ok(meta)
}

/// Makes this node (its data dir, `config.node_id`) the only voter of its
/// cluster, durably, so that it elects itself and serves on its next start
/// (see `d_engine_storage::rebuild::force_sole_voter`). Logged at `warn`
/// with the members removed. Must run while no node uses the data dir.
pub fn force_new_cluster(config: &Config) -> Result<ForcedSoleVoter, RecoveryError> {
    config.validate()?;
    let forced = rebuild::force_sole_voter(
        &config.data_dir,
        config.node_id,
        &config.cluster_id,
        &initial_membership(config),
        config.durability.wal_options(),
    )?;
    let removed: Vec<u64> = forced
        .before
        .members
        .keys()
        .copied()
        .filter(|id| *id != config.node_id)
        .collect();
    if forced.appended.is_empty() {
        tracing::warn!(
            node_id = config.node_id,
            "FORCE-NEW-CLUSTER: this node already is the only member of its cluster; nothing \
             rewritten. Remove --force-new-cluster from the node's start command"
        );
    } else {
        tracing::warn!(
            node_id = config.node_id,
            removed = ?removed,
            last_index = forced.last_index_before,
            "FORCE-NEW-CLUSTER: rewrote the membership: this node is now the ONLY voter; \
             members {removed:?} were removed from its configuration. Never start those \
             members again with their old data dirs: wipe them and add them back as learners \
             (docs/operations.md). Remove --force-new-cluster from the start command now"
        );
    }
    Ok(forced)
}
