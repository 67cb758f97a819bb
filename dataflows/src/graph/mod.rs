//! The three-way-match dataflow: SPEC §2 as differential-dataflow operators.
//!
//! Input: the *current* documents — collections of `(identity key, document)`,
//! one element per present document (upserts have already been resolved; see
//! [`crate::engine`]). Output: the collections of SPEC §3, keyed by `tenant_id`
//! so that readers can seek one tenant's rows (`po_lines` by PO, whose keys
//! sort by tenant; see [`po_key`]).
//!
//! Read top to bottom, the graph follows the SPEC:
//! 1. the effective policy of every active invoice, and its PO (or none);
//! 2. header and price exceptions, local to an invoice and its PO;
//! 3. per PO line: `received_qty`, `billed_qty`, the `po_lines` rows, and
//!    each invoice line's `billed_to_date` ([`lines`]);
//! 4. quantity exceptions from those per-line quantities;
//! 5. duplicates per (tenant, vendor, normalized invoice number) group;
//! 6. each exception with the analyst's decision on it (SPEC §6, [`resolutions`]);
//! 7. payments applied to invoices, by allocation or reference (SPEC §8, [`payments`]);
//! 8. the per-invoice output rows ([`invoices`]), what is paid on them included;
//! 9. PO suggestions for invoices whose PO is not found (SPEC §7, [`suggestions`]);
//! 10. the payment outputs: matches, exceptions, suggestions ([`payments`]).
//!
//! Beside each join and reduce, its cost per change. None grows with the size
//! of a PO line, a duplicate group or a tenant, except where SPEC §2 makes the
//! fan-out inherent (a policy re-checks its tenant's invoices, a PO amendment
//! its invoices, a receipt the invoices billed on its line), and then once.

pub mod invoices;
pub mod lines;
pub mod payments;
pub mod resolutions;
pub mod suggestions;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::operators::{left_join, Collection, KeyedArrangement};
use crate::rows::*;
use crate::rules;
use invoices::{duplicates, exception_row, exception_summary_rows, invoice_match_rows};
use lines::LineOutputs;

/// The present documents the graph matches.
pub struct Documents<'s> {
    pub purchase_orders: Collection<'s, (Fingerprint, Arc<PurchaseOrder>)>,
    pub goods_receipts: Collection<'s, (Fingerprint, Arc<GoodsReceipt>)>,
    pub invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    pub match_policies: Collection<'s, (Fingerprint, Arc<MatchPolicy>)>,
    pub exception_resolutions: Collection<'s, (Fingerprint, Arc<ExceptionResolution>)>,
    pub payments: Collection<'s, (Fingerprint, Arc<Payment>)>,
}

/// The output collections of SPEC §3, §7 and §8, keyed by `tenant_id` —
/// except those arranged by the document a row is about (`invoice_matches`
/// by invoice, `po_lines` by PO, `payment_matches` by payment), whose keys
/// sort by tenant ([`keys_of_tenant`]): they are the arrangements the graph
/// keeps anyway, so their rows are not held a second time by tenant.
pub struct MatchOutputs<'s> {
    /// Each row with its `total_tolerance_abs`.
    pub invoice_matches: KeyedArrangement<'s, Fingerprint, (InvoiceMatchRow, Decimal)>,
    pub match_exceptions: Collection<'s, (Text, ExceptionRow)>,
    /// The lines the rows are made of ([`lines::PoLineFacts::to_row`]).
    pub po_lines: KeyedArrangement<'s, Fingerprint, lines::PoLineFacts>,
    pub exception_summary: Collection<'s, (Text, ExceptionSummaryRow)>,
    pub po_suggestions: Collection<'s, (Text, PoSuggestionRow)>,
    /// Each row with its payment.
    pub payment_matches: KeyedArrangement<'s, Fingerprint, (PaymentMatchRow, Arc<Payment>)>,
    pub payment_exceptions: Collection<'s, (Text, PaymentExceptionRow)>,
    pub payment_suggestions: Collection<'s, (Text, PaymentSuggestionRow)>,
}

/// An active invoice with everything its header and price rules need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoiceContext {
    pub invoice: Arc<Invoice>,
    pub tolerances: Tolerances,
    /// The PO the invoice names, if it exists.
    pub po: Option<Arc<PurchaseOrder>>,
}

/// Builds the matching graph over the present documents.
pub fn three_way_match<'s>(
    documents: Documents<'s>,
    default_tolerances: Tolerances,
) -> MatchOutputs<'s> {
    let Documents {
        purchase_orders,
        goods_receipts,
        invoices,
        match_policies,
        exception_resolutions,
        payments,
    } = documents;

    let active_invoices = invoices.clone().filter(|(_, invoice)| invoice.is_active());
    let purchase_orders = purchase_orders.arrange_by_key_named("purchase orders");

    // 1. Every invoice with its effective tolerances; every active one with its PO, if any.
    let tenant_tolerances = tenant_tolerances(match_policies, default_tolerances);
    let with_tolerances =
        effective_tolerances(invoices.clone(), &tenant_tolerances, default_tolerances);
    let contexts = invoice_contexts(
        with_tolerances
            .clone()
            .filter(|(_, (invoice, _))| invoice.is_active()),
        &purchase_orders,
    );

    // 2. Exceptions local to an invoice and its PO.
    let local_exceptions = contexts.clone().flat_map(|(id, context)| {
        let mut raised = Vec::new();
        rules::header_exceptions(
            &context.invoice,
            context.po.as_deref(),
            &context.tolerances,
            &mut raised,
        );
        if let Some(po) = &context.po {
            rules::line_exceptions(&context.invoice, po, &context.tolerances, &mut raised);
        }
        raised
            .into_iter()
            .map(move |r| (id, (context.invoice.clone(), r)))
    });

    // 3. Per PO line: what was ordered, received and billed.
    let LineOutputs {
        po_lines,
        billed_lines,
    } = lines::po_lines(&purchase_orders, goods_receipts, active_invoices.clone());

    // 4. Quantity exceptions of each billed line, under its invoice's
    //    tolerances. Per change: a join by invoice, O(the invoice's lines).
    let contexts = contexts.arrange_by_key_named("invoice contexts");
    let quantity_exceptions = billed_lines.join_core(contexts, |id, quantities, context| {
        let mut raised = Vec::new();
        rules::quantity_exceptions(quantities, &context.tolerances, &mut raised);
        let id = *id;
        let invoice = context.invoice.clone();
        raised.into_iter().map(move |r| (id, (invoice.clone(), r)))
    });

    // 5. Duplicates.
    let duplicate_exceptions = duplicates(active_invoices);

    let exceptions = local_exceptions
        .concat(quantity_exceptions)
        .concat(duplicate_exceptions);

    // 6. Each exception with the analyst's decision on it.
    let unmatched = exceptions.clone().flat_map(|(id, (invoice, raised))| {
        let suggested = raised.exception_type == ExceptionType::PoNotFound
            && invoice.kind == InvoiceKind::Invoice;
        suggested.then_some((id, invoice))
    });
    let exceptions = resolutions::resolve(exceptions, exception_resolutions);

    // 7. Payments applied to invoices.
    let applications = payments::applications(payments.clone(), invoices);
    let paid = payments::paid_amounts(applications.applied.clone());

    // 8. Per-invoice rows.
    let invoice_rows = invoice_match_rows(with_tolerances, exceptions.clone(), paid);
    let payment_outputs = payments::payment_outputs(
        payments,
        applications,
        &invoice_rows,
        &tenant_tolerances,
        default_tolerances,
    );
    MatchOutputs {
        invoice_matches: invoice_rows,
        exception_summary: exception_summary_rows(exceptions.clone()),
        match_exceptions: exceptions.map(|(_, exception)| {
            let row = exception_row(exception);
            (row.tenant_id.clone(), row)
        }),
        // 9. PO suggestions for the invoices whose PO is not found.
        po_suggestions: suggestions::po_suggestions(unmatched, &po_lines),
        po_lines,
        // 10. The payment outputs.
        payment_matches: payment_outputs.payment_matches,
        payment_exceptions: payment_outputs.payment_exceptions,
        payment_suggestions: payment_outputs.payment_suggestions,
    }
}

/// Each tenant's policy resolved field by field over `default`, keyed by
/// tenant (a tenant without a policy has no entry: it uses `default`).
fn tenant_tolerances<'s>(
    match_policies: Collection<'s, (Fingerprint, Arc<MatchPolicy>)>,
    default: Tolerances,
) -> KeyedArrangement<'s, Fingerprint, Tolerances> {
    match_policies
        .map(move |(tenant, policy)| (tenant, policy.resolve(&default)))
        .arrange_by_key_named("policies")
}

/// Each present invoice paired with its tenant's tolerances, or `default`
/// for a tenant without a policy. (Cancelled invoices need them too: their `payment_status` reads
/// `total_tolerance_abs`.)
///
/// Per change: an invoice change is one lookup of its tenant's policy; a
/// policy change re-pairs every invoice of its tenant, once —
/// O(invoices of the tenant), which SPEC §2 makes inherent (every invoice is
/// re-checked under the new tolerances).
fn effective_tolerances<'s>(
    invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    tenant_tolerances: &KeyedArrangement<'s, Fingerprint, Tolerances>,
    default: Tolerances,
) -> Collection<'s, (Fingerprint, (Arc<Invoice>, Tolerances))> {
    let by_tenant = invoices
        .map(|(id, invoice)| (tenant_key(&invoice.tenant_id), (id, invoice)))
        .arrange_by_key_named("invoices by tenant");
    left_join(&by_tenant, tenant_tolerances)
        .map(move |(_, (id, invoice), tolerances)| (id, (invoice, tolerances.unwrap_or(default))))
}

/// Each active invoice with its tolerances and the PO it names (or `None`).
///
/// Per change: an invoice change is one lookup of its PO; a PO change (an
/// amendment) re-pairs every active invoice naming it — O(invoices on the
/// PO), inherent: their price and header checks read the PO's lines.
fn invoice_contexts<'s>(
    with_tolerances: Collection<'s, (Fingerprint, (Arc<Invoice>, Tolerances))>,
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
) -> Collection<'s, (Fingerprint, InvoiceContext)> {
    let by_po = with_tolerances
        .map(|(id, (invoice, tolerances))| (invoice.po_key(), (id, invoice, tolerances)))
        .arrange_by_key_named("invoices by PO");
    left_join(&by_po, purchase_orders).map(|(_, (id, invoice, tolerances), po)| {
        (
            id,
            InvoiceContext {
                invoice,
                tolerances,
                po,
            },
        )
    })
}
