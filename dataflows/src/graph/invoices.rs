//! The per-invoice outputs: duplicate detection (SPEC §2), and the rows of
//! `match_exceptions`, `invoice_matches` and `exception_summary` (SPEC §3).

use std::sync::Arc;

use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use serde::{Deserialize, Serialize};

use super::Collection;
use crate::model::*;
use crate::rows::*;
use crate::rules::{self, Raised};

/// An invoice in its duplicate group, ordered as SPEC §2 orders invoices: by
/// (`invoice_date`, `invoice_id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct DuplicateCandidate {
    invoice_date: i32,
    invoice_id: Text,
    id: Fingerprint,
    invoice: Arc<Invoice>,
}

/// `DUPLICATE_INVOICE`: within each (tenant, vendor, normalized invoice number)
/// group of active invoices, every one but the first in (`invoice_date`,
/// `invoice_id`) order.
///
/// Per change: O(the duplicate group) — the invoices sharing one vendor and
/// normalized number, one or two in practice; which one is the original
/// depends on all of them, so reading the group is inherent.
pub(super) fn duplicates<'s>(
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))> {
    active_invoices
        .filter(|(_, invoice)| ExceptionType::DuplicateInvoice.applies_to(invoice.kind))
        .map(|(id, invoice)| {
            let group = duplicate_group_key(
                &invoice.tenant_id,
                &invoice.vendor_id,
                &invoice.invoice_number,
            );
            let candidate = DuplicateCandidate {
                invoice_date: invoice.invoice_date,
                invoice_id: invoice.invoice_id.clone(),
                id,
                invoice,
            };
            (group, candidate)
        })
        .reduce_named("duplicates", |_, group, output| {
            let original = &group[0].0.invoice_id;
            for (candidate, _) in &group[1..] {
                let duplicate = (candidate.id, candidate.invoice.clone(), original.clone());
                output.push((duplicate, 1));
            }
        })
        .map(|(_, (id, invoice, original))| {
            let raised = rules::duplicate_exception(&invoice, &original);
            (id, (invoice, raised))
        })
}

/// A `match_exceptions` row.
pub(super) fn exception_row(invoice: &Invoice, raised: Raised) -> ExceptionRow {
    ExceptionRow {
        tenant_id: invoice.tenant_id.clone(),
        invoice_id: invoice.invoice_id.clone(),
        po_number: invoice.po_number.clone(),
        vendor_id: invoice.vendor_id.clone(),
        po_line_no: raised.po_line_no,
        exception_type: raised.exception_type,
        expected: raised.expected,
        actual: raised.actual,
        detail: raised.detail,
    }
}

/// What the per-invoice reduce of `invoice_matches` sees: the document and the
/// severity of each exception raised for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum InvoiceFact {
    Document(Arc<Invoice>),
    Raised(Severity),
}

/// One `invoice_matches` row per present invoice, with its exception counts.
///
/// Per change: O(the invoice's exceptions), keyed by invoice — independent of
/// its PO, vendor or tenant.
pub(super) fn invoice_match_rows<'s>(
    invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    exceptions: Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))>,
) -> Collection<'s, (Text, InvoiceMatchRow)> {
    let documents = invoices.map(|(id, invoice)| (id, InvoiceFact::Document(invoice)));
    let severities = exceptions
        .map(|(id, (_, raised))| (id, InvoiceFact::Raised(raised.exception_type.severity())));
    documents
        .concat(severities)
        .reduce_named("invoice_matches", |_, facts, output| {
            let InvoiceFact::Document(invoice) = facts[0].0 else {
                return; // exceptions of an invoice that is no longer present
            };
            let mut exception_count = 0u32;
            let mut blocking_count = 0u32;
            for (fact, count) in &facts[1..] {
                if let InvoiceFact::Raised(severity) = fact {
                    exception_count += *count as u32;
                    if *severity == Severity::Blocking {
                        blocking_count += *count as u32;
                    }
                }
            }
            let status = if !invoice.is_active() {
                MatchStatus::Cancelled
            } else if blocking_count > 0 {
                MatchStatus::Exception
            } else {
                MatchStatus::Matched
            };
            let row = InvoiceMatchRow {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                invoice_number: invoice.invoice_number.clone(),
                kind: invoice.kind,
                vendor_id: invoice.vendor_id.clone(),
                po_number: invoice.po_number.clone(),
                currency: invoice.currency,
                invoice_date: invoice.invoice_date,
                status,
                line_count: invoice.lines.len() as u32,
                invoice_amount: invoice.invoice_amount(),
                exception_count,
                blocking_count,
            };
            output.push((row, 1));
        })
        .map(|(_, row)| (row.tenant_id.clone(), row))
}

/// One `exception_summary` row per (tenant, exception type) that has exceptions.
///
/// Per change: O(1) in the size of the (tenant, type) group. `count` keeps
/// one accumulated number per group (its reduce sees a single `()` value with
/// the summed multiplicity), and the distinct invoices are counted the same
/// way after a `distinct` per (group, invoice), which reads only that
/// invoice's exceptions of the type; the two counts meet in a join of
/// single-valued keys. A reduce over the group's membership read every
/// invoice of the tenant with that type, on every change.
pub(super) fn exception_summary_rows<'s>(
    exceptions: Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))>,
) -> Collection<'s, (Text, ExceptionSummaryRow)> {
    let by_group = exceptions
        .map(|(id, (invoice, raised))| ((invoice.tenant_id.clone(), raised.exception_type), id));
    let exception_counts = by_group.clone().map(|(group, _)| group).count_total();
    let invoice_counts = by_group
        .distinct_total()
        .map(|(group, _)| group)
        .count_total();
    exception_counts.join_map(
        invoice_counts,
        |(tenant_id, exception_type), exception_count, invoice_count| {
            let row = ExceptionSummaryRow {
                tenant_id: tenant_id.clone(),
                exception_type: *exception_type,
                exception_count: *exception_count as u64,
                invoice_count: *invoice_count as u64,
            };
            (row.tenant_id.clone(), row)
        },
    )
}
