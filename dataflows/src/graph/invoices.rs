//! The per-invoice outputs: duplicate detection (SPEC §2), and the rows of
//! `match_exceptions`, `invoice_matches` and `exception_summary` (SPEC §3).

use std::sync::Arc;

use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::resolutions::ResolvedException;
use crate::model::*;
use crate::operators::{reduce_arranged, Collection, KeyedArrangement};
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
pub(crate) fn exception_row(exception: ResolvedException) -> ExceptionRow {
    let ResolvedException {
        invoice,
        raised,
        resolution,
    } = exception;
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
        resolution,
    }
}

/// What the per-invoice reduce of `invoice_matches` sees: the document with
/// its `total_tolerance_abs`; for each exception raised for it, its severity
/// and whether it is open; and what is paid on it, if anything.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum InvoiceFact {
    Document(Arc<Invoice>, Decimal),
    Raised { severity: Severity, open: bool },
    Paid(Decimal),
}

/// One `invoice_matches` row per present invoice (keyed by invoice, with
/// its `total_tolerance_abs`), with its exception counts and what is paid,
/// arranged by invoice: the payment rules join with it there, so the rows
/// are held once.
///
/// Per change: O(the invoice's exceptions), keyed by invoice — independent of
/// its PO, vendor or tenant.
pub(super) fn invoice_match_rows<'s>(
    invoices: Collection<'s, (Fingerprint, (Arc<Invoice>, Tolerances))>,
    exceptions: Collection<'s, (Fingerprint, ResolvedException)>,
    paid: Collection<'s, (Fingerprint, Decimal)>,
) -> KeyedArrangement<'s, Fingerprint, (InvoiceMatchRow, Decimal)> {
    let documents = invoices.map(|(id, (invoice, tolerances))| {
        (
            id,
            InvoiceFact::Document(invoice, tolerances.total_tolerance_abs),
        )
    });
    let paid = paid.map(|(id, amount)| (id, InvoiceFact::Paid(amount)));
    let severities = exceptions.map(|(id, exception)| {
        let fact = InvoiceFact::Raised {
            severity: exception.raised.exception_type.severity(),
            open: exception.is_open(),
        };
        (id, fact)
    });
    let facts = documents.concat(severities).concat(paid);
    reduce_arranged(facts, "invoice_matches", |_, facts, output| {
        let InvoiceFact::Document(invoice, tolerance) = facts[0].0 else {
            return; // exceptions or payments of an invoice no longer present
        };
        let mut exception_count = 0u32;
        let mut blocking_count = 0u32;
        let mut accepted_count = 0u32;
        let mut paid_amount = Decimal::ZERO;
        for (fact, count) in &facts[1..] {
            match fact {
                InvoiceFact::Raised { severity, open } => {
                    let count = *count as u32;
                    exception_count += count;
                    match (severity, open) {
                        (Severity::Blocking, true) => blocking_count += count,
                        (Severity::Blocking, false) => accepted_count += count,
                        (Severity::Warning, _) => {}
                    }
                }
                InvoiceFact::Paid(amount) => paid_amount = *amount,
                InvoiceFact::Document(..) => {}
            }
        }
        let invoice_amount = invoice.invoice_amount();
        let gross_amount = invoice_amount + invoice.tax + invoice.freight;
        let status = MatchStatus::of(invoice.is_active(), blocking_count, accepted_count);
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
            invoice_amount,
            exception_count,
            blocking_count,
            accepted_count,
            gross_amount,
            paid_amount,
            payment_status: InvoicePaymentStatus::of(paid_amount, gross_amount, *tolerance),
        };
        output.push(((row, *tolerance), 1));
    })
}

/// One of the counts an `exception_summary` row is made of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum SummaryCount {
    Exceptions(isize),
    Invoices(isize),
    Open(isize),
}

/// One `exception_summary` row per (tenant, exception type) that has exceptions.
///
/// Per change: O(1) in the size of the (tenant, type) group. `count` keeps
/// one accumulated number per group (its reduce sees a single `()` value with
/// the summed multiplicity): of the exceptions, of the open ones, and of
/// the distinct invoices after a `distinct` per (group, invoice), which reads
/// only that invoice's exceptions of the type. The final reduce sees at most
/// these three counts per group. A reduce over the group's membership read
/// every invoice of the tenant with that type, on every change.
pub(super) fn exception_summary_rows<'s>(
    exceptions: Collection<'s, (Fingerprint, ResolvedException)>,
) -> Collection<'s, (Text, ExceptionSummaryRow)> {
    let by_group = exceptions.map(|(id, exception)| {
        let group = (
            exception.invoice.tenant_id.clone(),
            exception.raised.exception_type,
        );
        (group, (id, exception.is_open()))
    });
    let exception_counts = by_group
        .clone()
        .map(|(group, _)| group)
        .count_total()
        .map(|(group, n)| (group, SummaryCount::Exceptions(n)));
    let open_counts = by_group
        .clone()
        .filter(|(_, (_, open))| *open)
        .map(|(group, _)| group)
        .count_total()
        .map(|(group, n)| (group, SummaryCount::Open(n)));
    let invoice_counts = by_group
        .map(|(group, (id, _))| (group, id))
        .distinct_total()
        .map(|(group, _)| group)
        .count_total()
        .map(|(group, n)| (group, SummaryCount::Invoices(n)));
    exception_counts
        .concat(open_counts)
        .concat(invoice_counts)
        .reduce_named(
            "exception_summary",
            |(tenant_id, exception_type), counts, output| {
                let (mut exception_count, mut invoice_count, mut open_count) = (0, 0, 0);
                for (count, _) in counts {
                    match count {
                        SummaryCount::Exceptions(n) => exception_count = *n as u64,
                        SummaryCount::Invoices(n) => invoice_count = *n as u64,
                        SummaryCount::Open(n) => open_count = *n as u64,
                    }
                }
                let row = ExceptionSummaryRow {
                    tenant_id: tenant_id.clone(),
                    exception_type: *exception_type,
                    exception_count,
                    invoice_count,
                    open_count,
                };
                output.push((row, 1));
            },
        )
        .map(|(_, row)| (row.tenant_id.clone(), row))
}
