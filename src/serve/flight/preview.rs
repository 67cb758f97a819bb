//! The `preview_policy` action (SPEC §12.4): what a set of policy changes
//! would raise and release, and which invoices would change status, at the
//! newest complete time, without changing anything.
//!
//! The body is decoded as the topic's documents are (a bad one is
//! INVALID_ARGUMENT naming the field); the caller must be an admin of the
//! policies' tenant (PERMISSION_DENIED otherwise). The answer is two
//! `Result`s, each an Arrow IPC stream (`output::preview`).
//!
//! In a cluster, the process asked reads its own workers' shards and asks
//! every other process for theirs, phase by phase at the same time, with the
//! internal action `preview_policy_shard` (for the cluster's processes
//! only: they present the cluster token).
//!
//! Bounds: a body of at most 1,000 documents
//! (`trimatch_dataflows::decode::policy_changes::MAX_PREVIEW_DOCUMENTS`, and the
//! gRPC message limit), at most [`MAX_EXCEPTION_CHANGES`] exception changes
//! in the answer (RESOURCE_EXHAUSTED beyond: a worker stops collecting once
//! past it), one preview at a time per process (the workers compute it
//! between dataflow steps), and [`PREVIEW_TIMEOUT`] in all.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tonic::Status;
use trimatch_dataflows::decode::policy_changes::policy_changes;
use trimatch_dataflows::model::{ExceptionResolution, Fingerprint, MatchPolicy, Text, Tolerances};
use trimatch_dataflows::preview::{
    self, InvoicePreview, PolicyChanges, PolicyScope, PreviewError, PreviewPlan, PreviewShards,
};
use trimatch_dataflows::{ReadError, Time};

use crate::output::preview::{ipc_stream, preview_batches};
use crate::pipeline::{LocalShards, ReadFailure};
use crate::serve::auth::Principal;
use crate::serve::gate::authorize_tenant_admin;
use crate::serve::reader::ClusterReader;

/// The action's name.
pub const PREVIEW_ACTION: &str = "preview_policy";

/// The action by which a process of a cluster asks another for its shards
/// of one of a preview's reads.
pub const PREVIEW_SHARD_ACTION: &str = "preview_policy_shard";

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
        let changes = changes_for(principal, body)?;
        let _running = self.0.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "another {PREVIEW_ACTION} is running on this process; try again when it has answered"
            ))
        })?;
        let reader = reader.clone();
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let pipeline = reader.pipeline().clone();
            let as_of = pipeline
                .resolve_as_of(None)
                .map_err(|failure| reader.status_of(failure))?;
            let mut shards = ClusterShards {
                local: pipeline.local_shards(as_of),
                reader: &reader,
                runtime,
                as_of,
            };
            let default = pipeline.default_tolerances();
            preview::preview(&mut shards, &changes, default, MAX_EXCEPTION_CHANGES).map_err(
                |error| match error {
                    PreviewError::Shards(status) => status,
                    too_large => Status::resource_exhausted(too_large.to_string()),
                },
            )
        });
        let preview = tokio::time::timeout(PREVIEW_TIMEOUT, task)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{PREVIEW_ACTION} took longer than {} s; preview a narrower change",
                    PREVIEW_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|error| Status::internal(format!("the preview failed: {error}")))??;
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

    /// The internal action: this process's shards of one read, as JSON.
    pub(super) async fn shard(
        &self,
        reader: &ClusterReader,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Vec<Vec<u8>>, Status> {
        if !principal.cluster {
            return Err(Status::permission_denied(format!(
                "{PREVIEW_SHARD_ACTION} is for the processes of this cluster (they present the cluster token); use {PREVIEW_ACTION}"
            )));
        }
        let request: ShardRequest = serde_json::from_slice(body).map_err(|error| {
            Status::invalid_argument(format!("{PREVIEW_SHARD_ACTION}: {error}"))
        })?;
        let wait = reader.peer_completion_wait();
        let reply = reader
            .blocking(move |pipeline| {
                let as_of = request.as_of;
                if !pipeline.wait_until_complete(as_of, wait) {
                    let newest = pipeline.newest_complete().unwrap_or(0);
                    return Err(ReadFailure::Read(ReadError::NotComplete { as_of, newest }));
                }
                let mut local = pipeline.local_shards(as_of);
                request.read.answer(&mut local)
            })
            .await?;
        Ok(vec![reply])
    }
}

/// The changes `body` asks to preview, once `principal` may preview them.
fn changes_for(principal: &Principal, body: &[u8]) -> Result<PolicyChanges, Status> {
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
    Ok(PolicyChanges {
        tenant,
        upsert: request.upsert,
        delete: request.delete.into_iter().map(|(_, scope)| scope).collect(),
    })
}

/// One of a preview's reads of another process's shards, at `as_of`.
#[derive(Serialize, Deserialize)]
struct ShardRequest {
    as_of: Time,
    read: ShardRead,
}

#[derive(Serialize, Deserialize)]
enum ShardRead {
    TenantPolicies(Text),
    Invoices {
        tenant: Text,
        scopes: Vec<PolicyScope>,
        after: Vec<Arc<MatchPolicy>>,
        default: Tolerances,
        max_changes: usize,
    },
    Decisions(Vec<Fingerprint>),
}

impl ShardRead {
    fn invoices(plan: &PreviewPlan) -> Self {
        ShardRead::Invoices {
            tenant: plan.tenant.clone(),
            scopes: plan.scopes.clone(),
            after: plan.after.policies(),
            default: plan.default,
            max_changes: plan.max_changes,
        }
    }

    /// The read on this process's shards, as the JSON reply (or the failure).
    fn answer(self, local: &mut LocalShards<'_>) -> Result<Vec<u8>, ReadFailure> {
        let json = |value: serde_json::Result<Vec<u8>>| {
            value.map_err(|error| ReadFailure::Stopped(format!("encoding a shard: {error}")))
        };
        match self {
            ShardRead::TenantPolicies(tenant) => {
                json(serde_json::to_vec(&local.tenant_policies(&tenant)?))
            }
            ShardRead::Invoices {
                tenant,
                scopes,
                after,
                default,
                max_changes,
            } => {
                let plan = PreviewPlan {
                    tenant,
                    scopes,
                    after: after.into_iter().collect(),
                    default,
                    max_changes,
                };
                json(serde_json::to_vec(&local.invoices(Arc::new(plan))?))
            }
            ShardRead::Decisions(keys) => {
                json(serde_json::to_vec(&local.decisions(Arc::new(keys))?))
            }
        }
    }
}

/// Every process's shards at `as_of`: this one's workers', and the other
/// processes' over Flight.
struct ClusterShards<'r> {
    local: LocalShards<'r>,
    reader: &'r ClusterReader,
    runtime: tokio::runtime::Handle,
    as_of: Time,
}

impl ClusterShards<'_> {
    /// What every other process answers `read` with.
    fn peers<T: DeserializeOwned>(&self, read: ShardRead) -> Result<Vec<T>, Status> {
        let request = ShardRequest {
            as_of: self.as_of,
            read,
        };
        let body = serde_json::to_vec(&request)
            .map_err(|error| Status::internal(format!("encoding a shard read: {error}")))?;
        let bodies = self
            .runtime
            .block_on(self.reader.peer_actions(PREVIEW_SHARD_ACTION, &body))?;
        let mut all = Vec::new();
        for body in bodies {
            let shard: Vec<T> = serde_json::from_slice(&body).map_err(|error| {
                Status::unavailable(format!(
                    "a cluster process answered a shard read with {error}"
                ))
            })?;
            all.extend(shard);
        }
        Ok(all)
    }

    fn status(&self, failure: ReadFailure) -> Status {
        self.reader.status_of(failure)
    }
}

impl PreviewShards for ClusterShards<'_> {
    type Error = Status;

    fn tenant_policies(&mut self, tenant: &str) -> Result<Vec<Arc<MatchPolicy>>, Status> {
        let local = self.local.tenant_policies(tenant);
        let mut all = local.map_err(|failure| self.status(failure))?;
        all.extend(self.peers(ShardRead::TenantPolicies(tenant.into()))?);
        Ok(all)
    }

    fn invoices(&mut self, plan: Arc<PreviewPlan>) -> Result<Vec<InvoicePreview>, Status> {
        let local = self.local.invoices(plan.clone());
        let mut all = local.map_err(|failure| self.status(failure))?;
        all.extend(self.peers(ShardRead::invoices(&plan))?);
        Ok(all)
    }

    fn decisions(
        &mut self,
        keys: Arc<Vec<Fingerprint>>,
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, Status> {
        let local = self.local.decisions(keys.clone());
        let mut all = local.map_err(|failure| self.status(failure))?;
        all.extend(self.peers(ShardRead::Decisions(keys.to_vec()))?);
        Ok(all)
    }
}
