//! Admission checks for peer messages.
//!
//! Everything a peer sends is input: [`RaftNode::step`] runs
//! [`RaftNode::check_message`] before the message touches any state, and a
//! message that fails is refused as a whole ([`Refusal`]), exactly as if it
//! had been lost. The handlers behind `step` may then rely on what is checked
//! here; the assertions left in the core guard the node's own state only.
//!
//! What is checked, and why an honest member never trips it:
//! - addressing: `to` is this node, `from` is not 0 nor this node;
//! - membership: `from` is a voter or learner of this node's configuration,
//!   unless that configuration is empty (a node started to join);
//! - headroom: terms up to [`MAX_TERM`], indices up to [`MAX_INDEX`];
//! - one leader per term: no AppendEntries / InstallSnapshot in a term this
//!   node leads;
//! - AppendEntries: entries directly follow `prev_log_index`, are contiguous,
//!   their terms never decrease, start at or above `prev_log_term` and never
//!   exceed the message term (a leader only holds entries of its term or
//!   older); they never contradict a committed entry (Leader Completeness:
//!   a real leader holds every committed entry); configuration entries are
//!   valid against the configuration before them (the leader validated
//!   them against the same prefix when it appended them);
//! - AppendEntriesResponse: never acknowledges beyond the leader's log (the
//!   leader never sent anything beyond it, and its log only grows in its term);
//! - InstallSnapshot: `last_term` not above the message term nor below the
//!   term of this node's last committed entry, and a recorded membership has
//!   a voter and no id 0.

use crate::membership::{apply, validate};
use crate::node::RaftNode;
use crate::types::*;

impl RaftNode {
    /// Checks a peer message before it may change anything (see the module docs).
    pub(crate) fn check_message(&self, msg: &Message) -> Result<(), Refusal> {
        if msg.to != self.id {
            return Err(Refusal::WrongRecipient { to: msg.to });
        }
        if msg.from == 0 || msg.from == self.id {
            return Err(Refusal::InvalidSender { from: msg.from });
        }
        if !self.membership.members.is_empty() && !self.membership.contains(msg.from) {
            return Err(Refusal::NotAMember { from: msg.from });
        }
        if msg.term > MAX_TERM {
            return Err(Refusal::TermTooHigh { term: msg.term });
        }
        if msg.term < self.term {
            // Stale: `step_stale` only answers with our term.
            return Ok(());
        }
        let leading_this_term = msg.term == self.term && self.role == Role::Leader;
        match &msg.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                if leading_this_term {
                    return Err(Refusal::SecondLeader { term: msg.term });
                }
                self.check_append(msg.term, *prev_log_index, *prev_log_term, entries)
            }
            MessageBody::InstallSnapshot { meta } => {
                if leading_this_term {
                    return Err(Refusal::SecondLeader { term: msg.term });
                }
                self.check_snapshot_meta(msg.term, meta)
            }
            MessageBody::AppendEntriesResponse { match_index, .. } if leading_this_term => {
                let last_index = self.log.last_index();
                if *match_index > last_index {
                    return Err(Refusal::AckBeyondLog {
                        match_index: *match_index,
                        last_index,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_append(
        &self,
        term: Term,
        prev: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Result<(), Refusal> {
        if prev > MAX_INDEX {
            return Err(Refusal::IndexTooHigh { index: prev });
        }
        if prev_term > term {
            return Err(Refusal::MalformedEntries {
                reason: format!("prev_log_term {prev_term} is above the message term {term}"),
            });
        }
        // Shape: `prev` <= MAX_INDEX, so `prev + 1 + i` cannot overflow.
        let mut pred_term = prev_term;
        for (i, e) in entries.iter().enumerate() {
            let want = prev + 1 + i as u64;
            if e.index != want {
                return Err(Refusal::MalformedEntries {
                    reason: format!(
                        "entry #{i} has index {}, expected {want}: entries must directly \
                         follow prev_log_index {prev} without gaps",
                        e.index
                    ),
                });
            }
            if e.term < pred_term {
                return Err(Refusal::MalformedEntries {
                    reason: format!(
                        "entry {} has term {}, below its predecessor's term {pred_term}",
                        e.index, e.term
                    ),
                });
            }
            if e.term > term {
                return Err(Refusal::MalformedEntries {
                    reason: format!(
                        "entry {} has term {}, above the message term {term}",
                        e.index, e.term
                    ),
                });
            }
            pred_term = e.term;
        }
        // Against our log. Where `prev` is not in our log (or has another
        // term) the handler answers with an ordinary rejection: fine.
        let snap = self.log.snap_index();
        let commit = self.log.commit;
        if prev > self.log.last_index() {
            return Ok(());
        }
        if prev > snap {
            if self.log.term_at(prev) != Some(prev_term) {
                return Ok(());
            }
        } else if prev == snap && self.log.term_at(snap) != Some(prev_term) {
            // Our snapshot's last entry is committed: a leader has it.
            return Err(Refusal::ConflictsWithCommitted {
                index: snap,
                commit,
            });
        }
        for e in entries {
            if e.index < snap {
                continue;
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) if e.index <= commit => {
                    return Err(Refusal::ConflictsWithCommitted {
                        index: e.index,
                        commit,
                    })
                }
                // The first new or conflicting (uncommitted) entry: from here
                // on the message replaces our log.
                _ => break,
            }
        }
        if entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Config(_)))
        {
            // Replay the configuration changes over the configuration in
            // force at the last point our log shares with the sender.
            let base = prev.max(snap);
            let (mut m, _) = self.membership_and_index_at(base);
            for e in entries.iter().filter(|e| e.index > base) {
                if let EntryPayload::Config(c) = &e.payload {
                    validate(&m, c).map_err(|reason| Refusal::InvalidConfChange {
                        index: e.index,
                        reason,
                    })?;
                    m = apply(&m, c);
                }
            }
        }
        Ok(())
    }

    fn check_snapshot_meta(&self, term: Term, meta: &SnapshotMeta) -> Result<(), Refusal> {
        if meta.last_index > MAX_INDEX {
            return Err(Refusal::IndexTooHigh {
                index: meta.last_index,
            });
        }
        if meta.last_term > term {
            return Err(Refusal::InvalidSnapshot {
                reason: format!(
                    "last_term {} is above the message term {term}",
                    meta.last_term
                ),
            });
        }
        let m = &meta.membership;
        if !m.members.is_empty() {
            if m.contains(0) {
                return Err(Refusal::InvalidSnapshot {
                    reason: "its membership lists node id 0".into(),
                });
            }
            if m.voters().next().is_none() {
                return Err(Refusal::InvalidSnapshot {
                    reason: "its membership has no voter".into(),
                });
            }
        }
        let commit = self.log.commit;
        if meta.last_index > commit {
            let committed_term = self.log.term_at(commit).unwrap_or(0);
            if meta.last_term < committed_term {
                return Err(Refusal::InvalidSnapshot {
                    reason: format!(
                        "last_term {} at index {} is below the term {committed_term} of \
                         committed entry {commit}: log terms never decrease",
                        meta.last_term, meta.last_index
                    ),
                });
            }
        }
        Ok(())
    }
}
