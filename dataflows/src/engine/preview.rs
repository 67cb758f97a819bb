//! One worker's part of a policy preview (SPEC §12.4, [`crate::preview`]):
//! the traces of the arrangements a preview reads, and the three reads it
//! makes of this worker's shard — the tenant's present policies, the
//! previews of the touched invoices, and the decisions on given exceptions.

use std::sync::Arc;

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::progress::frontier::AntichainRef;

use super::read::visit_present;
use super::{release_physical_compaction, Matcher, ReadError};
use crate::graph::{InvoiceContext, PreviewInputs};
use crate::model::*;
use crate::preview::{InvoicePreview, PreviewPlan};
use crate::rows::InvoiceMatchRow;
use crate::rules::LineQuantities;

type ByKey<V> = TraceAgent<ValSpine<Fingerprint, V, Time, isize>>;

/// The traces a preview reads, each kept readable over the same history as
/// the outputs (see [`Matcher::allow_compaction`]).
pub(super) struct PreviewTraces {
    contexts: ByKey<InvoiceContext>,
    billed_lines: ByKey<LineQuantities>,
    policies: ByKey<Arc<MatchPolicy>>,
    resolutions: ByKey<Arc<ExceptionResolution>>,
    /// A second handle on the `invoice_matches` trace: statuses before.
    invoice_matches: ByKey<(InvoiceMatchRow, rust_decimal::Decimal)>,
}

impl PreviewTraces {
    pub(super) fn new(
        inputs: PreviewInputs<'_>,
        invoice_matches: ByKey<(InvoiceMatchRow, rust_decimal::Decimal)>,
    ) -> Self {
        let mut traces = PreviewTraces {
            contexts: inputs.contexts.trace,
            billed_lines: inputs.billed_lines.trace,
            policies: inputs.policies.trace,
            resolutions: inputs.resolutions.trace,
            invoice_matches,
        };
        release_physical_compaction(&mut traces.contexts);
        release_physical_compaction(&mut traces.billed_lines);
        release_physical_compaction(&mut traces.policies);
        release_physical_compaction(&mut traces.resolutions);
        release_physical_compaction(&mut traces.invoice_matches);
        traces
    }

    pub(super) fn set_logical_compaction(&mut self, frontier: AntichainRef<Time>) {
        self.contexts.set_logical_compaction(frontier);
        self.billed_lines.set_logical_compaction(frontier);
        self.policies.set_logical_compaction(frontier);
        self.resolutions.set_logical_compaction(frontier);
        self.invoice_matches.set_logical_compaction(frontier);
    }
}

impl Matcher {
    /// The policies of `tenant` in this worker's shard as of `as_of`.
    pub fn tenant_policies(
        &mut self,
        as_of: Time,
        tenant: &str,
    ) -> Result<Vec<Arc<MatchPolicy>>, ReadError> {
        self.check_readable(as_of)?;
        let mut found = Vec::new();
        // Policies are few: a scan of every scope is cheaper than keeping
        // another arrangement by tenant.
        visit_present(&mut self.preview.policies, as_of, None, |_, policy| {
            if *policy.tenant_id == *tenant {
                found.push(policy.clone());
            }
        })?;
        Ok(found)
    }

    /// The previews of the invoices of `plan.tenant` in this worker's shard
    /// whose exceptions the planned change would raise or release, as of
    /// `as_of`. Reads the tenant's invoice contexts (a seek to its keys),
    /// and for each one `plan` touches its billed lines and its row.
    pub fn preview_invoices(
        &mut self,
        as_of: Time,
        plan: &PreviewPlan,
    ) -> Result<Vec<InvoicePreview>, ReadError> {
        self.check_readable(as_of)?;
        let mut touched = Vec::new();
        let range = keys_of_tenant(&plan.tenant);
        visit_present(
            &mut self.preview.contexts,
            as_of,
            Some(range),
            |id, context| {
                if *context.invoice.tenant_id == *plan.tenant
                    && plan.touches(&context.invoice, context.po.as_deref())
                {
                    touched.push((*id, context.clone()));
                }
            },
        )?;
        let mut previews: Vec<InvoicePreview> = Vec::new();
        let mut changes = 0;
        for (id, context) in touched {
            if changes > plan.max_changes {
                break; // the preview is too large: the caller refuses it
            }
            let mut lines = Vec::new();
            visit_present(
                &mut self.preview.billed_lines,
                as_of,
                Some((id, id)),
                |_, line| lines.push(line.clone()),
            )?;
            let mut row = None;
            visit_present(
                &mut self.preview.invoice_matches,
                as_of,
                Some((id, id)),
                |_, (found, _)| row = Some(found.clone()),
            )?;
            // Every active invoice has its row; one missing is not previewed.
            if let Some(preview) = row.and_then(|before| plan.invoice(&context, &lines, before)) {
                changes += preview.changes();
                previews.push(preview);
            }
        }
        Ok(previews)
    }

    /// The decisions in this worker's shard on the exceptions with `keys`
    /// (resolution keys, sorted), as of `as_of`.
    pub fn decisions(
        &mut self,
        as_of: Time,
        keys: &[Fingerprint],
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, ReadError> {
        self.check_readable(as_of)?;
        let mut found = Vec::new();
        for key in keys {
            visit_present(
                &mut self.preview.resolutions,
                as_of,
                Some((*key, *key)),
                |key, decision| found.push((*key, decision.clone())),
            )?;
        }
        Ok(found)
    }

    /// Refuses an `as_of` that is not complete (a retained one is checked
    /// by each [`visit_present`]).
    fn check_readable(&mut self, as_of: Time) -> Result<(), ReadError> {
        self.check_complete(as_of)
    }
}
