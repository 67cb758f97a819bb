//! SPEC §12.4: what a set of policy changes would do to the live state,
//! worked out without changing it.
//!
//! A policy decides only the rules with a tolerance in them (price, quantity
//! and total checks), and those are pure functions of an invoice's context
//! (its PO and tolerances) and its billed lines — which the graph keeps
//! arranged by invoice. So a preview, on each worker, takes the invoices of
//! its shard whose effective policy a changed scope can touch, resolves their
//! tolerances under the policies as they would be ([`tolerances_of`]), and
//! runs the same rule functions the graph runs under both: the difference is
//! what the pipeline would raise and release ([`InvoicePreview`]). The
//! analysts' decisions on those exceptions and the invoices' new statuses
//! follow as in the graph ([`answer`]).
//!
//! ```text
//!   phase 1: every worker → the tenant's present policies  → PolicyChanges::apply
//!   phase 2: every worker → InvoicePreview per touched invoice of its shard
//!   phase 3: every worker → the decisions on the exceptions that change
//!   answer(): exception rows ±1 and status changes, sorted by key
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::graph::invoices::exception_row;
use crate::graph::policies::{tolerances_of, InvoiceTolerances};
use crate::graph::resolutions::ResolvedException;
use crate::graph::InvoiceContext;
use crate::model::*;
use crate::rows::{ExceptionRow, InvoiceMatchRow, MatchStatus};
use crate::rules::{self, LineQuantities, Raised};

/// A policy's scope within its tenant: (`vendor_id`, `category`).
pub type PolicyScope = (Option<Text>, Option<Text>);

/// The policy changes to preview, all of one tenant: documents as they would
/// be produced, and deletions by identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChanges {
    pub tenant: Text,
    pub upsert: Vec<Arc<MatchPolicy>>,
    pub delete: Vec<PolicyScope>,
}

impl PolicyChanges {
    /// The scopes the changes touch.
    pub fn scopes(&self) -> Vec<PolicyScope> {
        let mut scopes: Vec<PolicyScope> = self
            .upsert
            .iter()
            .map(|policy| (policy.vendor_id.clone(), policy.category.clone()))
            .chain(self.delete.iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The tenant's policies after the changes, by scope key: `present` with
    /// the deletions, then the upserts, applied in that order (an upsert and
    /// a deletion of the same scope leave the upsert, as producing the
    /// tombstone first would).
    pub fn apply(&self, present: Vec<Arc<MatchPolicy>>) -> PolicySet {
        let mut policies: BTreeMap<Fingerprint, Arc<MatchPolicy>> = present
            .into_iter()
            .map(|policy| (policy.key(), policy))
            .collect();
        for (vendor, category) in &self.delete {
            policies.remove(&policy_key(
                &self.tenant,
                vendor.as_deref(),
                category.as_deref(),
            ));
        }
        for policy in &self.upsert {
            policies.insert(policy.key(), policy.clone());
        }
        PolicySet(policies)
    }
}

/// A tenant's policies by scope key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet(pub BTreeMap<Fingerprint, Arc<MatchPolicy>>);

impl FromIterator<Arc<MatchPolicy>> for PolicySet {
    fn from_iter<I: IntoIterator<Item = Arc<MatchPolicy>>>(policies: I) -> Self {
        PolicySet(
            policies
                .into_iter()
                .map(|policy| (policy.key(), policy))
                .collect(),
        )
    }
}

impl PolicySet {
    /// The policies, in key order.
    pub fn policies(&self) -> Vec<Arc<MatchPolicy>> {
        self.0.values().cloned().collect()
    }
}

/// What a worker needs to preview its shard: the changed scopes and the
/// policies as they would be.
#[derive(Clone, Debug)]
pub struct PreviewPlan {
    pub tenant: Text,
    pub scopes: Vec<PolicyScope>,
    pub after: PolicySet,
    pub default: Tolerances,
    /// A worker stops once its previews hold more exception changes than
    /// this (the preview is then refused as too large): a bound on memory.
    pub max_changes: usize,
}

/// One invoice whose exceptions a change would raise or release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePreview {
    pub invoice: Arc<Invoice>,
    /// Its `invoice_matches` row now (status and counts before the change).
    pub before: InvoiceMatchRow,
    pub released: Vec<Raised>,
    pub raised: Vec<Raised>,
}

impl PreviewPlan {
    /// Whether a changed scope can change the effective policy of the
    /// invoice (SPEC §12.1's levels): a tenant scope any of its invoices, a
    /// vendor scope that vendor's, a category scope those billing a line of
    /// that category.
    pub fn touches(&self, invoice: &Invoice, po: Option<&PurchaseOrder>) -> bool {
        let bills_category = |category: &str| {
            po.is_some_and(|po| {
                invoice.lines.iter().any(|line| {
                    po.line(line.po_line_no)
                        .is_some_and(|po_line| po_line.category.as_deref() == Some(category))
                })
            })
        };
        self.scopes.iter().any(|(vendor, category)| {
            vendor
                .as_ref()
                .is_none_or(|vendor| *vendor == invoice.vendor_id)
                && category.as_deref().is_none_or(bills_category)
        })
    }

    /// What the change would raise and release on one active invoice, from
    /// its context and billed lines (as the graph holds them); `None` when
    /// nothing changes.
    pub fn invoice(
        &self,
        context: &InvoiceContext,
        lines: &[LineQuantities],
        before: InvoiceMatchRow,
    ) -> Option<InvoicePreview> {
        if !self.touches(&context.invoice, context.po.as_deref()) {
            return None;
        }
        let policy_at = |key: Fingerprint| self.after.0.get(&key).cloned();
        let after = tolerances_of(
            &context.invoice,
            context.po.as_deref(),
            policy_at,
            &self.default,
        );
        if after == context.tolerances {
            return None;
        }
        let raised_under = |tolerances: &InvoiceTolerances| {
            let mut raised = context.local_exceptions(tolerances);
            for line in lines {
                raised.extend(line.exceptions(tolerances));
            }
            raised.sort();
            raised
        };
        let (released, raised) =
            difference(raised_under(&context.tolerances), raised_under(&after));
        (!released.is_empty() || !raised.is_empty()).then(|| InvoicePreview {
            invoice: context.invoice.clone(),
            before,
            released,
            raised,
        })
    }
}

/// What is in `before` and not `after`, and what is in `after` and not
/// `before` (both sorted; as multisets).
fn difference(before: Vec<Raised>, after: Vec<Raised>) -> (Vec<Raised>, Vec<Raised>) {
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    let (mut before, mut after) = (before.into_iter().peekable(), after.into_iter().peekable());
    loop {
        match (before.peek(), after.peek()) {
            (Some(b), Some(a)) if b == a => {
                before.next();
                after.next();
            }
            (Some(b), Some(a)) if b < a => gone.push(before.next().expect("peeked")),
            (Some(_), Some(_)) | (None, Some(_)) => new.push(after.next().expect("peeked")),
            (Some(_), None) => gone.push(before.next().expect("peeked")),
            (None, None) => return (gone, new),
        }
    }
}

/// An invoice whose status a change would change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusChange {
    pub tenant_id: Text,
    pub invoice_id: Text,
    pub before: MatchStatus,
    pub after: MatchStatus,
}

/// A preview's answer (SPEC §12.4): `match_exceptions` rows with `_diff`
/// (−1 released, +1 raised) and the invoices whose status changes, each
/// sorted by its key columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyPreview {
    pub exceptions: Vec<(ExceptionRow, i64)>,
    pub statuses: Vec<StatusChange>,
}

impl PolicyPreview {
    /// "12 exceptions released, 3 raised; 9 invoices become matched".
    pub fn summary(&self) -> String {
        let released = self.exceptions.iter().filter(|(_, diff)| *diff < 0).count();
        let mut becoming: BTreeMap<&str, usize> = BTreeMap::new();
        for change in &self.statuses {
            *becoming.entry(change.after.as_str()).or_default() += 1;
        }
        summary_line(released, self.exceptions.len() - released, &becoming)
    }
}

/// A preview's one-line summary from its counts: exceptions released and
/// raised, and invoices by the status they would take.
///
/// ```
/// use std::collections::BTreeMap;
/// use trimatch_dataflows::preview::summary_line;
///
/// let becoming = BTreeMap::from([("matched", 9), ("exception", 1)]);
/// assert_eq!(
///     summary_line(12, 3, &becoming),
///     "12 exceptions released, 3 raised; 1 invoice becomes exception, 9 invoices become matched"
/// );
/// ```
pub fn summary_line(released: usize, raised: usize, becoming: &BTreeMap<&str, usize>) -> String {
    let statuses: Vec<String> = becoming
        .iter()
        .map(|(status, n)| {
            let noun = if *n == 1 {
                "invoice becomes"
            } else {
                "invoices become"
            };
            format!("{n} {noun} {status}")
        })
        .collect();
    let statuses = if statuses.is_empty() {
        "no invoice changes status".to_string()
    } else {
        statuses.join(", ")
    };
    format!("{released} exceptions released, {raised} raised; {statuses}")
}

/// Every worker's shard of the state at one time, as a preview reads it
/// (the pipeline's workers, or a test's).
pub trait PreviewShards {
    type Error;
    /// The tenant's present policies, from every shard.
    fn tenant_policies(&mut self, tenant: &str) -> Result<Vec<Arc<MatchPolicy>>, Self::Error>;
    /// Every shard's [`InvoicePreview`]s under `plan`.
    fn invoices(&mut self, plan: Arc<PreviewPlan>) -> Result<Vec<InvoicePreview>, Self::Error>;
    /// The decisions on the exceptions with `keys` (sorted), from every shard.
    fn decisions(
        &mut self,
        keys: Arc<Vec<Fingerprint>>,
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, Self::Error>;
}

/// Why a preview has no answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError<E> {
    #[error(transparent)]
    Shards(E),
    #[error("the change would raise or release more than {limit} exceptions; preview a narrower change (a vendor or category policy, or fewer policies at once)")]
    TooLarge { limit: usize },
}

/// Previews `changes` over `shards`: the three phases of this module's
/// outline, then [`answer`]. At most `max_changes` exception changes.
pub fn preview<S: PreviewShards>(
    shards: &mut S,
    changes: &PolicyChanges,
    default: Tolerances,
    max_changes: usize,
) -> Result<PolicyPreview, PreviewError<S::Error>> {
    let present = shards
        .tenant_policies(&changes.tenant)
        .map_err(PreviewError::Shards)?;
    let plan = Arc::new(PreviewPlan {
        tenant: changes.tenant.clone(),
        scopes: changes.scopes(),
        after: changes.apply(present),
        default,
        max_changes,
    });
    let previews = shards.invoices(plan).map_err(PreviewError::Shards)?;
    let count: usize = previews.iter().map(InvoicePreview::changes).sum();
    if count > max_changes {
        return Err(PreviewError::TooLarge { limit: max_changes });
    }
    let mut keys: Vec<Fingerprint> = previews
        .iter()
        .flat_map(|p| {
            p.released
                .iter()
                .chain(&p.raised)
                .map(|raised| decision_key(&p.invoice, raised))
        })
        .collect();
    keys.sort();
    keys.dedup();
    let decisions = shards
        .decisions(Arc::new(keys))
        .map_err(PreviewError::Shards)?
        .into_iter()
        .collect();
    Ok(answer(previews, &decisions))
}

impl InvoicePreview {
    /// How many exception changes it holds.
    pub fn changes(&self) -> usize {
        self.released.len() + self.raised.len()
    }
}

/// The resolution key of an exception of `invoice`.
pub fn decision_key(invoice: &Invoice, raised: &Raised) -> Fingerprint {
    resolution_key(
        &invoice.tenant_id,
        &invoice.invoice_id,
        raised.exception_type,
        raised.po_line_no,
    )
}

/// The answer from every worker's invoice previews and the decisions on the
/// exceptions they raise or release (by [`decision_key`]): each exception
/// as its `match_exceptions` row, and each invoice's status from its counts
/// of open and accepted blocking exceptions, as the graph derives them.
pub fn answer(
    previews: Vec<InvoicePreview>,
    decisions: &BTreeMap<Fingerprint, Arc<ExceptionResolution>>,
) -> PolicyPreview {
    let mut preview = PolicyPreview::default();
    for InvoicePreview {
        invoice,
        before,
        released,
        raised,
    } in previews
    {
        let (mut open, mut accepted) = (before.blocking_count as i64, before.accepted_count as i64);
        let changes = released
            .into_iter()
            .map(|r| (r, -1))
            .chain(raised.into_iter().map(|r| (r, 1)));
        for (raised, diff) in changes {
            let resolution = decisions
                .get(&decision_key(&invoice, &raised))
                .map(|decision| rules::resolution_record(raised.actual, decision));
            let exception = ResolvedException {
                invoice: invoice.clone(),
                raised,
                resolution,
            };
            if exception.raised.exception_type.severity() == Severity::Blocking {
                if exception.is_open() {
                    open += diff;
                } else {
                    accepted += diff;
                }
            }
            preview.exceptions.push((exception_row(exception), diff));
        }
        let after = MatchStatus::of(
            invoice.is_active(),
            open.max(0) as u32,
            accepted.max(0) as u32,
        );
        if after != before.status {
            preview.statuses.push(StatusChange {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                before: before.status,
                after,
            });
        }
    }
    preview.exceptions.sort_by(|(a, a_diff), (b, b_diff)| {
        let key = |row: &ExceptionRow| {
            (
                row.tenant_id.clone(),
                row.invoice_id.clone(),
                row.exception_type.as_str(),
                row.po_line_no,
            )
        };
        key(a).cmp(&key(b)).then(a_diff.cmp(b_diff))
    });
    preview.statuses.sort();
    preview
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(kind: ExceptionType, line: u32) -> Raised {
        Raised {
            exception_type: kind,
            po_line_no: Some(line),
            expected: None,
            actual: None,
            detail: "".into(),
        }
    }

    #[test]
    fn the_difference_is_what_only_one_side_has() {
        let before = vec![
            raised(ExceptionType::PriceVariance, 1),
            raised(ExceptionType::PriceVariance, 2),
            raised(ExceptionType::QtyExceedsOrdered, 2),
        ];
        let after = vec![
            raised(ExceptionType::PriceVariance, 2),
            raised(ExceptionType::QtyExceedsOrdered, 2),
            raised(ExceptionType::QtyExceedsOrdered, 3),
        ];
        let (released, new) = difference(before, after);
        assert_eq!(released, vec![raised(ExceptionType::PriceVariance, 1)]);
        assert_eq!(new, vec![raised(ExceptionType::QtyExceedsOrdered, 3)]);
    }

    #[test]
    fn a_deletion_then_an_upsert_of_one_scope_keeps_the_upsert() {
        let policy = |pct: i64| {
            Arc::new(MatchPolicy {
                tenant_id: "acme".into(),
                vendor_id: Some("V-1".into()),
                price_tolerance_pct: Some(pct.into()),
                ..MatchPolicy::default()
            })
        };
        let changes = PolicyChanges {
            tenant: "acme".into(),
            upsert: vec![policy(5)],
            delete: vec![(Some("V-1".into()), None)],
        };
        let after = changes.apply(vec![policy(1)]);
        assert_eq!(after.0.values().collect::<Vec<_>>(), vec![&policy(5)]);
        assert_eq!(changes.scopes(), vec![(Some("V-1".into()), None)]);
    }
}
