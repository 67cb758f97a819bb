//! The `preview_policy` action (SPEC §12.4): what a set of policy changes
//! would raise and release, and which invoices would change status, at the
//! newest complete time, without changing anything.
//!
//! The body is decoded as the topic's documents are (a bad one is
//! INVALID_ARGUMENT naming the field); the caller must be an admin of the
//! policies' tenant (PERMISSION_DENIED otherwise). The answer is two
//! `Result`s, each an Arrow IPC stream (`output::preview`).
//!
//! Bounds: a body of at most 1,000 documents
//! (`trimatch_dataflows::decode::policy_changes::MAX_PREVIEW_DOCUMENTS`, and the
//! gRPC message limit), at most [`MAX_EXCEPTION_CHANGES`] exception changes
//! in the answer (RESOURCE_EXHAUSTED beyond: a worker stops collecting once
//! past it), one preview at a time per process (the workers compute it
//! between dataflow steps), and [`PREVIEW_TIMEOUT`] in all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::Status;
use trimatch_dataflows::decode::policy_changes::policy_changes;
use trimatch_dataflows::preview::{PolicyChanges, PreviewError};

use crate::output::preview::{ipc_stream, preview_batches};
use crate::serve::auth::Principal;
use crate::serve::gate::authorize_tenant_admin;
use crate::serve::reader::ClusterReader;

/// The action's name.
pub const PREVIEW_ACTION: &str = "preview_policy";

/// The most exception changes one answer may hold.
pub const MAX_EXCEPTION_CHANGES: usize = 100_000;

/// The longest a preview may take.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs previews one at a time.
#[derive(Clone)]
pub(super) struct Previews(Arc<Semaphore>);

impl Default for Previews {
    fn default() -> Self {
        Previews(Arc::new(Semaphore::new(1)))
    }
}

impl Previews {
    /// The action: `body` previewed for `principal`, as the two IPC streams.
    pub(super) async fn preview(
        &self,
        reader: &ClusterReader,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Vec<Vec<u8>>, Status> {
        let request = policy_changes(body)
            .map_err(|error| Status::invalid_argument(format!("{PREVIEW_ACTION}: {error}")))?;
        let tenants = request.tenants();
        let tenant = match tenants.as_slice() {
            [] => {
                return Err(Status::invalid_argument(format!(
                    "{PREVIEW_ACTION}: the body names no policy; send {{\"upsert\": [policy, …], \"delete\": [identity, …]}}"
                )))
            }
            [tenant] => tenant.clone(),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{PREVIEW_ACTION}: a preview is of one tenant's policies; the body names {}",
                    tenants.join(", ")
                )))
            }
        };
        authorize_tenant_admin(principal, &tenant, "a policy preview")?;
        if reader.is_cluster() {
            return Err(Status::failed_precondition(format!(
                "{PREVIEW_ACTION} is answered by single-process deployments only for now: this process holds part of the state"
            )));
        }
        let changes = PolicyChanges {
            tenant,
            upsert: request.upsert,
            delete: request.delete.into_iter().map(|(_, scope)| scope).collect(),
        };
        let _running = self.0.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "another {PREVIEW_ACTION} is running on this process; try again when it has answered"
            ))
        })?;
        let read = reader.blocking(move |pipeline| {
            match pipeline.preview_policies(&changes, MAX_EXCEPTION_CHANGES) {
                Ok(answer) => Ok(Ok(answer)),
                Err(PreviewError::Shards(failure)) => Err(failure),
                Err(too_large) => Ok(Err(too_large.to_string())),
            }
        });
        let answer = tokio::time::timeout(PREVIEW_TIMEOUT, read)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{PREVIEW_ACTION} took longer than {} s; preview a narrower change",
                    PREVIEW_TIMEOUT.as_secs()
                ))
            })??;
        let (_, preview) = answer.map_err(Status::resource_exhausted)?;
        let batches = preview_batches(&preview)
            .map_err(|error| Status::internal(format!("encoding the preview: {error}")))?;
        batches
            .iter()
            .map(|batch| {
                ipc_stream(batch)
                    .map_err(|error| Status::internal(format!("encoding the preview: {error}")))
            })
            .collect()
    }
}
