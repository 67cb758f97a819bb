//! A policy preview (SPEC §12.4) over the running job's workers: each of
//! the preview's three reads goes to every local worker at one complete
//! time, as any read does (`pipeline::reads`), and the answer is put
//! together by `trimatch_dataflows::preview`. A cluster's other processes
//! are asked by the serving layer, which adds their shards to these.

use std::sync::Arc;

use trimatch_dataflows::model::{ExceptionResolution, Fingerprint, MatchPolicy, Tolerances};
use trimatch_dataflows::preview::{
    self, InvoicePreview, PolicyChanges, PolicyPreview, PreviewError, PreviewPlan, PreviewShards,
};
use trimatch_dataflows::{OutputCollection, Time};

use super::reads::{PreviewRead, ReadKind, ReadReply};
use super::{PipelineHandle, ReadFailure};

impl PipelineHandle {
    /// What `changes` would do to the state at the newest complete time, with
    /// at most `max_changes` exception changes; the state is not changed.
    pub fn preview_policies(
        &self,
        changes: &PolicyChanges,
        max_changes: usize,
    ) -> Result<(Time, PolicyPreview), PreviewError<ReadFailure>> {
        let as_of = self.resolve_as_of(None).map_err(PreviewError::Shards)?;
        let mut shards = self.local_shards(as_of);
        let default = self.default_tolerances();
        preview::preview(&mut shards, changes, default, max_changes).map(|answer| (as_of, answer))
    }

    /// This process's workers' shards at `as_of`, as a preview reads them.
    pub fn local_shards(&self, as_of: Time) -> LocalShards<'_> {
        LocalShards {
            handle: self,
            as_of,
        }
    }

    /// The global default policy a preview falls back to.
    pub fn default_tolerances(&self) -> Tolerances {
        self.shared.default_tolerances
    }
}

/// Every local worker's shard at `as_of`.
pub struct LocalShards<'h> {
    handle: &'h PipelineHandle,
    as_of: Time,
}

impl LocalShards<'_> {
    /// Asks every worker for `read` and gathers what `take` finds in the replies.
    fn gather<T>(
        &self,
        read: impl Fn() -> PreviewRead,
        take: impl Fn(ReadReply) -> Option<Vec<T>>,
    ) -> Result<Vec<T>, ReadFailure> {
        // The collection only routes the read; previews read their own traces.
        let replies =
            self.handle
                .ask(OutputCollection::InvoiceMatches, self.as_of, None, || {
                    ReadKind::Preview(read())
                })?;
        Ok(replies.into_iter().filter_map(take).flatten().collect())
    }
}

impl PreviewShards for LocalShards<'_> {
    type Error = ReadFailure;

    fn tenant_policies(&mut self, tenant: &str) -> Result<Vec<Arc<MatchPolicy>>, ReadFailure> {
        self.gather(
            || PreviewRead::TenantPolicies(tenant.into()),
            |reply| match reply {
                ReadReply::Policies(policies) => Some(policies),
                _ => None,
            },
        )
    }

    fn invoices(&mut self, plan: Arc<PreviewPlan>) -> Result<Vec<InvoicePreview>, ReadFailure> {
        self.gather(
            || PreviewRead::Invoices(plan.clone()),
            |reply| match reply {
                ReadReply::Previews(previews) => Some(previews),
                _ => None,
            },
        )
    }

    fn decisions(
        &mut self,
        keys: Arc<Vec<Fingerprint>>,
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, ReadFailure> {
        self.gather(
            || PreviewRead::Decisions(keys.clone()),
            |reply| match reply {
                ReadReply::Decisions(decisions) => Some(decisions),
                _ => None,
            },
        )
    }
}
