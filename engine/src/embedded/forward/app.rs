//! Forwarding of application commands (`crate::app`): a follower's
//! `AppEngine::propose` sends the command to the leader's
//! `dengine.v1.App/Propose` under the caller's write id, with the retry
//! rules of every forwarded call (the `forward` module contract). The
//! write id is the application's own (not one of the forwarder's write
//! sessions): the same id reaches the leader on every attempt and on the
//! application's own retries (`AppEngine::propose_with_id`), and the
//! leader's write-id table applies the command once.

use bytes::Bytes;
use d_engine_proto::v1 as pb;

use super::link::Stubs;
use super::{request, Forwarder};
use crate::runtime::{AppOutcome, NodeHandle};
use d_engine_api::{Error, Result};

impl Forwarder {
    /// Sends `command` under `(client_id, seq)` to the leader, or
    /// `Err(local)` when forwarding is off or no other member has a client
    /// address.
    pub(crate) async fn app_propose(
        &self,
        h: &NodeHandle,
        local: Error,
        command: &[u8],
        write_id: (u64, u64),
    ) -> Result<AppOutcome> {
        let mut call = self.begin(h, local)?;
        let req = pb::AppProposeRequest {
            command: command.to_vec(),
            write_id: Some(pb::WriteId {
                client_id: write_id.0,
                seq: write_id.1,
            }),
        };
        let resp = call
            .run("app propose", |Stubs { mut app, .. }, t| {
                let req = request(req.clone(), t);
                async move { app.propose(req).await }
            })
            .await?;
        Ok(AppOutcome {
            revision: resp.revision,
            output: Bytes::from(resp.output),
        })
    }
}
