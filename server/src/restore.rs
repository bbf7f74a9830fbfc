//! `d-engine-server restore`: builds the data directory of one node of a
//! NEW cluster from a backup file (`dengine snapshot save FILE`), before
//! that node's first start. Run it once per member, with the same
//! `--cluster-id` and `--peers` on every member and each member's own
//! `--node-id` and `--data-dir`; then start every member with the same
//! cluster id, members and data dir. The file-level work (verification,
//! refusal of a non-empty data dir, the layout) is
//! `d_engine_storage::rebuild`, reached through
//! `d_engine::runtime::restore_backup`.

use std::path::PathBuf;

use d_engine::config::Config;

use crate::cli::parse_peers;

/// `restore` flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs {
    /// The backup file (written by `dengine snapshot save` or the client's
    /// `snapshot_save`). Verified completely before anything is written.
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    /// The data directory to create for this node. Must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster; must be one of `--peers`.
    #[arg(long, value_name = "ID")]
    pub node_id: u64,
    /// The NEW cluster's id (the same on every member; choose one the old
    /// cluster did not use, so old and new nodes never talk to each other).
    #[arg(long, value_name = "NAME")]
    pub cluster_id: String,
    /// The new cluster's members, comma separated `ID=PEER_ADDR[/CLIENT_ADDR]`
    /// (same syntax as the server's `--peers`), e.g.
    /// `1=10.0.0.1:9081/10.0.0.1:9083,2=10.0.0.2:9081/10.0.0.2:9083,3=10.0.0.3:9081/10.0.0.3:9083`.
    #[arg(long, alias = "members", value_name = "LIST")]
    pub peers: String,
    /// A configuration file for the other settings (e.g. WAL segment
    /// size); the flags above override it.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs the restore; returns what to tell the operator.
pub fn main(args: &RestoreArgs) -> Result<String, String> {
    let mut config = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.data_dir = args.data_dir.clone();
    config.node_id = args.node_id;
    config.cluster_id = args.cluster_id.clone();
    config.members = parse_peers(&args.peers).map_err(|e| e.to_string())?;
    config.join = false;
    if let Some(me) = config.members.iter().find(|m| m.id == args.node_id) {
        // The node's own addresses are its entry in --peers.
        config.peer_addr = me.peer_addr.clone();
        if !me.client_addr.is_empty() {
            config.client_addr = me.client_addr.clone();
        }
    } else {
        let ids: Vec<u64> = config.members.iter().map(|m| m.id).collect();
        return Err(format!(
            "--node-id {} is not among the members of --peers {ids:?}; give one of those ids, \
             or add this node to --peers. Nothing was written",
            args.node_id
        ));
    }
    let meta =
        d_engine::runtime::restore_backup(&config, &args.snapshot).map_err(|e| e.to_string())?;
    Ok(format!(
        "restored {} into {} as node {} of the new cluster {:?} (members {:?}) at revision {} \
         (term {}).\nStart the node with --data-dir {} --node-id {} --cluster-id {} --peers {}",
        args.snapshot.display(),
        args.data_dir.display(),
        args.node_id,
        args.cluster_id,
        meta.membership.members.keys().collect::<Vec<_>>(),
        meta.last_index,
        meta.last_term,
        args.data_dir.display(),
        args.node_id,
        args.cluster_id,
        args.peers
    ))
}
