//! One-line descriptions of messages and `Ready`s for the trace.

use super::*;

pub(super) fn describe(m: &Message) -> String {
    match &m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        } => format!(
            "{} last ({last_log_index}, t{last_log_term}){}",
            if *pre_vote { "PreVote" } else { "RequestVote" },
            if *leader_transfer { " transfer" } else { "" }
        ),
        MessageBody::RequestVoteResponse { pre_vote, granted } => format!(
            "{} {}",
            if *pre_vote { "PreVoteResp" } else { "VoteResp" },
            if *granted { "GRANTED" } else { "refused" }
        ),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            heartbeat_seq,
        } => format!(
            "AppendEntries prev ({prev_log_index}, t{prev_log_term}) {} entries{} commit \
             {leader_commit} hb {heartbeat_seq}",
            entries.len(),
            match (entries.first(), entries.last()) {
                (Some(a), Some(b)) => format!(" [{}..={}]", a.index, b.index),
                _ => String::new(),
            }
        ),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict_index,
            conflict_term,
            heartbeat_seq,
        } => format!(
            "AppendResp {} match {match_index} conflict ({conflict_index}, {conflict_term:?}) hb \
             {heartbeat_seq}",
            if *success { "ok" } else { "REJECT" }
        ),
        MessageBody::InstallSnapshot { meta } => {
            format!("InstallSnapshot ({}, t{})", meta.last_index, meta.last_term)
        }
        other => body_name(other).to_string(),
    }
}

pub(super) fn summarize(rd: &Ready) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &rd.snapshot_to_install {
        parts.push(format!("install ({}, t{})", m.last_index, m.last_term));
    }
    if let Some(hs) = &rd.hard_state {
        parts.push(format!(
            "hs(t{} vote {:?} commit {})",
            hs.term, hs.voted_for, hs.commit
        ));
    }
    if let (Some(a), Some(b)) = (rd.entries.first(), rd.entries.last()) {
        parts.push(format!("entries [{}..={}] t{}", a.index, b.index, b.term));
    }
    if !rd.messages.is_empty() {
        parts.push(format!("{} msgs", rd.messages.len()));
    }
    if let (Some(a), Some(b)) = (rd.committed.first(), rd.committed.last()) {
        parts.push(format!("apply [{}..={}]", a.index, b.index));
    }
    if !rd.reads.is_empty() || !rd.refused_reads.is_empty() {
        parts.push(format!(
            "reads {:?} refused {:?}",
            rd.reads
                .iter()
                .map(|r| (r.id, r.read_index))
                .collect::<Vec<_>>(),
            rd.refused_reads.iter().map(|r| r.id).collect::<Vec<_>>()
        ));
    }
    if rd.create_snapshot {
        parts.push("create_snapshot".into());
    }
    if !rd.send_snapshot_to.is_empty() {
        parts.push(format!("send_snapshot_to {:?}", rd.send_snapshot_to));
    }
    parts.join(", ")
}
