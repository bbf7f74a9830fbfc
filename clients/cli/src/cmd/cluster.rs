//! `member`, `leader`, `endpoint`, `snapshot`: membership, leadership and
//! per-member status through the Cluster and Admin services.

use std::time::Instant;

use d_engine_client::{Alarm, Client, MemberInfo, MemberRole, NodeRole, NodeStatus};
use serde_json::json;

use crate::args::{EndpointCmd, Format, Global, LeaderCmd, MemberCmd, SnapshotCmd};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{print_json, Table};

fn role(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    }
}

fn print_members(format: Format, members: &[MemberInfo], leader: u64) {
    match format {
        Format::Json => print_json(&json!({
            "leader_id": leader,
            "members": members.iter().map(|m| json!({
                "id": m.id,
                "role": role(m.role),
                "peer_addr": m.peer_addr,
                "client_addr": m.client_addr,
                "leader": m.id == leader,
            })).collect::<Vec<_>>(),
        })),
        Format::Simple => {
            for m in members {
                println!(
                    "{} {} {} {}",
                    m.id,
                    role(m.role),
                    m.peer_addr,
                    m.client_addr
                );
            }
        }
        Format::Table => {
            let mut t = Table::new(&["ID", "ROLE", "LEADER", "PEER_ADDR", "CLIENT_ADDR"]);
            for m in members {
                t.row(vec![
                    m.id.to_string(),
                    role(m.role).into(),
                    if m.id == leader { "*" } else { "" }.into(),
                    m.peer_addr.clone(),
                    m.client_addr.clone(),
                ]);
            }
            t.print();
        }
    }
}

pub async fn member(g: &Global, c: MemberCmd) -> CliResult {
    let client = connect(g).await?;
    let admin = client.admin();
    let members = match c {
        MemberCmd::List => {
            let m = client.cluster().membership().await?;
            print_members(g.output, &m.members, m.leader_id);
            return Ok(exit::OK);
        }
        MemberCmd::AddLearner {
            id,
            peer_addr,
            client_addr,
        } => {
            admin
                .add_learner(id, peer_addr, client_addr.unwrap_or_default())
                .await?
        }
        MemberCmd::Promote { id, force } => admin.promote_with(id, force).await?,
        MemberCmd::Remove { id } => admin.remove_member(id).await?,
    };
    let leader = client.cluster().leader().await.map(|l| l.id).unwrap_or(0);
    print_members(g.output, &members, leader);
    Ok(exit::OK)
}

pub async fn leader(g: &Global, c: LeaderCmd) -> CliResult {
    let LeaderCmd::Transfer { id } = c;
    let client = connect(g).await?;
    client.admin().transfer_leader(id).await?;
    match g.output {
        Format::Json => print_json(&json!({"leader_id": id})),
        Format::Simple => println!("{id}"),
        Format::Table => println!("leadership transferred to {id}"),
    }
    Ok(exit::OK)
}

pub async fn snapshot(g: &Global, c: SnapshotCmd) -> CliResult {
    let client = connect(g).await?;
    let (file, overwrite, from) = match c {
        SnapshotCmd::Trigger => return snapshot_trigger(g, &client).await,
        SnapshotCmd::Save {
            file,
            overwrite,
            from,
        } => (file, overwrite, from),
    };
    let admin = client.admin();
    let s = match from {
        Some(addr) => admin.snapshot_save_from(&addr, &file, overwrite).await?,
        None => admin.snapshot_save(&file, overwrite).await?,
    };
    match g.output {
        Format::Json => print_json(&json!({
            "path": s.path.display().to_string(),
            "node_id": s.node_id,
            "revision": s.revision,
            "term": s.term,
            "bytes": s.bytes,
            "sha256": s.sha256,
        })),
        Format::Simple => println!("{}", s.sha256),
        Format::Table => println!(
            "saved {} from node {}: revision {}, term {}, {}, sha256 {}",
            s.path.display(),
            s.node_id,
            s.revision,
            s.term,
            human_bytes(s.bytes),
            s.sha256
        ),
    }
    Ok(exit::OK)
}

async fn snapshot_trigger(g: &Global, client: &Client) -> CliResult {
    let index = client.admin().trigger_snapshot().await?;
    match g.output {
        Format::Json => print_json(&json!({"snapshot_index": index})),
        Format::Simple => println!("{index}"),
        Format::Table => println!("snapshot taken at index {index}"),
    }
    Ok(exit::OK)
}

/// One member's answer to NodeStatus, asked of its own client address.
struct Probe {
    member: MemberInfo,
    took: std::time::Duration,
    status: Result<NodeStatus, String>,
}

/// Asks every member (concurrently) for its own status.
async fn probe_all(client: &Client) -> CliResult<(Vec<Probe>, u64)> {
    let m = client.cluster().membership().await?;
    let mut tasks = Vec::new();
    for member in m.members {
        let admin = client.admin();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let status = if member.client_addr.is_empty() {
                Err("the member has no client address".to_string())
            } else {
                admin
                    .node_status_at(&member.client_addr)
                    .await
                    .map_err(|e| e.to_string())
            };
            Probe {
                member,
                took: start.elapsed(),
                status,
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| CliError::new(exit::ERROR, format!("status task failed: {e}")))?,
        );
    }
    Ok((out, m.leader_id))
}

/// Bytes in KiB/MiB/GiB.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub async fn endpoint(g: &Global, c: EndpointCmd) -> CliResult {
    let client = connect(g).await?;
    let (probes, leader_id) = probe_all(&client).await?;
    // Lag is measured against the leader's commit index.
    let leader_commit = probes
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .find(|s| s.role == NodeRole::Leader)
        .map(|s| s.commit_index);
    let mut failed = 0;
    match c {
        EndpointCmd::Status => {
            let mut t = Table::new(&[
                "ENDPOINT", "ID", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "LAG", "DATA",
                "ALARMS",
            ]);
            let mut rows = Vec::new();
            for p in &probes {
                match &p.status {
                    Ok(s) => {
                        let lag = leader_commit.map(|c| c.saturating_sub(s.applied_index));
                        rows.push(json!({
                            "endpoint": p.member.client_addr,
                            "id": s.id,
                            "role": s.role.as_str(),
                            "leader": s.role == NodeRole::Leader,
                            "leader_id": s.leader_id,
                            "term": s.term,
                            "commit_index": s.commit_index,
                            "applied_index": s.applied_index,
                            "last_log_index": s.last_log_index,
                            "snapshot_index": s.snapshot_index,
                            "lag": lag,
                            "data_bytes": s.data_bytes,
                            "quota_bytes": s.quota_bytes,
                            "log_bytes": s.log_bytes,
                            "alarms": alarm_names(&s.alarms),
                        }));
                        t.row(vec![
                            p.member.client_addr.clone(),
                            s.id.to_string(),
                            s.role.to_string(),
                            if s.role == NodeRole::Leader { "*" } else { "" }.into(),
                            s.term.to_string(),
                            s.commit_index.to_string(),
                            s.applied_index.to_string(),
                            lag.map_or("?".into(), |l| l.to_string()),
                            human_bytes(s.data_bytes),
                            alarm_names(&s.alarms).join(","),
                        ]);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("member {} at {}: {e}", p.member.id, p.member.client_addr);
                        rows.push(json!({
                            "endpoint": p.member.client_addr, "id": p.member.id, "error": e,
                        }));
                    }
                }
            }
            match g.output {
                Format::Json => print_json(&json!({"leader_id": leader_id, "members": rows})),
                Format::Simple => {
                    for r in &rows {
                        println!("{r}");
                    }
                }
                Format::Table => t.print(),
            }
        }
        EndpointCmd::Health => {
            let mut t = Table::new(&["ENDPOINT", "ID", "HEALTHY", "TOOK", "ERROR"]);
            let mut rows = Vec::new();
            for p in &probes {
                let problem = match &p.status {
                    Err(e) => Some(e.clone()),
                    Ok(s) if s.leader_id == 0 => Some("knows no leader".into()),
                    Ok(s) if !s.alarms.is_empty() => Some(format!(
                        "alarms raised: {}",
                        alarm_names(&s.alarms).join(",")
                    )),
                    Ok(_) => None,
                };
                if problem.is_some() {
                    failed += 1;
                }
                let took = format!("{}ms", p.took.as_millis());
                rows.push(json!({
                    "endpoint": p.member.client_addr, "id": p.member.id,
                    "healthy": problem.is_none(), "took_ms": p.took.as_millis() as u64,
                    "error": problem,
                }));
                t.row(vec![
                    p.member.client_addr.clone(),
                    p.member.id.to_string(),
                    problem.is_none().to_string(),
                    took,
                    problem.unwrap_or_default(),
                ]);
            }
            match g.output {
                Format::Json => print_json(&json!({"members": rows})),
                Format::Simple => {
                    for r in &rows {
                        println!("{} {}", r["endpoint"], r["healthy"]);
                    }
                }
                Format::Table => t.print(),
            }
        }
    }
    if failed > 0 {
        return Err(CliError::new(
            exit::UNAVAILABLE,
            format!("{failed} of {} members failed the check", probes.len()),
        )
        .with_hint("see the rows above; `dengine member list` shows every member's address"));
    }
    Ok(exit::OK)
}

/// Alarm names as the admin API spells them (`NOSPACE`).
fn alarm_names(alarms: &[Alarm]) -> Vec<&str> {
    alarms.iter().map(Alarm::as_str).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_well() {
        assert_eq!(super::human_bytes(10), "10 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 20), "3.0 MiB");
    }
}
