//! The three-way-match dataflow: SPEC §2 as differential-dataflow operators.
//!
//! Input: the *current* documents — collections of `(identity key, document)`,
//! one element per present document (upserts have already been resolved; see
//! [`crate::engine`]). Output: the collections of SPEC §3, keyed by `tenant_id`
//! so that readers can seek one tenant's rows (`po_lines` by PO, whose keys
//! sort by tenant; see [`po_key`]).
//!
//! Read top to bottom, the graph follows the SPEC:
//! 1. every invoice's header policies, every active one's PO (or none), and
//!    the effective policy of each of its lines (SPEC §12.1, [`policies`]);
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
pub mod policies;
pub mod resolutions;
pub mod suggestions;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::operators::{left_join, Collection, KeyedArrangement};
use crate::rows::*;
use crate::rules::{self, Raised};
use invoices::{duplicates, exception_row, exception_summary_rows, invoice_match_rows};
use lines::LineOutputs;
use policies::{HeaderPolicies, InvoiceTolerances, Policies};

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
    /// What a policy preview reads (SPEC §12.4, [`crate::preview`]).
    pub preview: PreviewInputs<'s>,
}

/// The arrangements a policy preview reads: each invoice's context and
/// billed lines (keyed by invoice), the policies by scope, and the
/// resolutions by exception key. All are arranged for the graph anyway.
pub struct PreviewInputs<'s> {
    pub contexts: KeyedArrangement<'s, Fingerprint, InvoiceContext>,
    pub billed_lines: KeyedArrangement<'s, Fingerprint, rules::LineQuantities>,
    pub policies: Policies<'s>,
    pub resolutions: KeyedArrangement<'s, Fingerprint, Arc<ExceptionResolution>>,
}

/// An active invoice with everything its header and price rules need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoiceContext {
    pub invoice: Arc<Invoice>,
    /// The header's and each line's effective tolerances (§12.1).
    pub tolerances: InvoiceTolerances,
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

    // 1. Every invoice with its header policies; every active one with its
    //    PO, if any, and the effective policy of each of its lines.
    let policies = policies::by_scope(match_policies);
    let with_header = policies::with_header_policies(
        invoices.clone().map(|(id, invoice)| {
            (
                invoice.tenant_id.clone(),
                invoice.vendor_id.clone(),
                (id, invoice),
            )
        }),
        &policies,
        "invoices",
    )
    .map(|((id, invoice), header)| (id, (invoice, header)));
    let with_tolerances = with_header.clone().map(move |(id, (invoice, header))| {
        (id, (invoice, header.tolerances(&default_tolerances)))
    });
    let contexts = invoice_contexts(
        with_header.filter(|(_, (invoice, _))| invoice.is_active()),
        &purchase_orders,
        &policies,
        default_tolerances,
    );

    // 2. Exceptions local to an invoice and its PO.
    let local_exceptions = contexts.clone().flat_map(|(id, context)| {
        context
            .local_exceptions(&context.tolerances)
            .into_iter()
            .map(move |r| (id, (context.invoice.clone(), r)))
    });

    // 3. Per PO line: what was ordered, received and billed.
    let LineOutputs {
        po_lines,
        billed_lines,
    } = lines::po_lines(&purchase_orders, goods_receipts, active_invoices.clone());

    // 4. Quantity exceptions of each billed line, under its own tolerances. Per change: a join by invoice, O(the invoice's lines).
    let contexts = contexts.arrange_by_key_named("invoice contexts");
    let quantity_exceptions =
        billed_lines
            .clone()
            .join_core(contexts.clone(), |id, quantities, context| {
                let raised = quantities.exceptions(&context.tolerances);
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
    let exception_resolutions = exception_resolutions.arrange_by_key_named("exception resolutions");
    let exceptions = resolutions::resolve(exceptions, &exception_resolutions);

    // 7. Payments applied to invoices.
    let applications = payments::applications(payments.clone(), invoices);
    let paid = payments::paid_amounts(applications.applied.clone());

    // 8. Per-invoice rows.
    let invoice_rows = invoice_match_rows(with_tolerances, exceptions.clone(), paid);
    let payment_outputs = payments::payment_outputs(
        payments,
        applications,
        &invoice_rows,
        &policies,
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
        preview: PreviewInputs {
            contexts,
            billed_lines,
            policies,
            resolutions: exception_resolutions,
        },
    }
}

impl InvoiceContext {
    /// The exceptions local to the invoice and its PO (header and price
    /// rules) under `tolerances`: the context's own in the graph, another
    /// policy's in a preview.
    pub fn local_exceptions(&self, tolerances: &InvoiceTolerances) -> Vec<Raised> {
        let mut raised = Vec::new();
        rules::header_exceptions(
            &self.invoice,
            self.po.as_deref(),
            &tolerances.header,
            &mut raised,
        );
        if let Some(po) = &self.po {
            let tolerances = |category: Option<&str>| tolerances.line(category);
            rules::line_exceptions(&self.invoice, po, tolerances, &mut raised);
        }
        raised
    }
}

impl rules::LineQuantities {
    /// The quantity exceptions of the line under the invoice's `tolerances`
    /// (the line's category picks them).
    pub fn exceptions(&self, tolerances: &InvoiceTolerances) -> Vec<Raised> {
        let mut raised = Vec::new();
        rules::quantity_exceptions(self, tolerances.line(self.category.as_deref()), &mut raised);
        raised
    }
}

/// Each active invoice with its PO (or `None`) and its tolerances.
///
/// Per change: an invoice change is one lookup of its PO; a PO change (an
/// amendment) re-pairs every active invoice naming it — O(invoices on the
/// PO), inherent: their price and header checks read the PO's lines (and
/// the categories of its lines pick their policies). The line policies:
/// [`policies::invoice_tolerances`].
fn invoice_contexts<'s>(
    with_header: Collection<'s, (Fingerprint, (Arc<Invoice>, HeaderPolicies))>,
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
    policies: &Policies<'s>,
    default: Tolerances,
) -> Collection<'s, (Fingerprint, InvoiceContext)> {
    let by_po = with_header
        .map(|(id, (invoice, header))| (invoice.po_key(), (id, invoice, header)))
        .arrange_by_key_named("invoices by PO");
    let paired = left_join(&by_po, purchase_orders);
    let on_a_po = paired
        .clone()
        .flat_map(|(_, (id, invoice, header), po)| Some((id, (invoice, po?, header))));
    let line_tolerances = policies::invoice_tolerances(on_a_po, policies, default)
        .arrange_by_key_named("invoice tolerances");
    let contexts = paired
        .map(|(_, (id, invoice, header), po)| (id, (invoice, header, po)))
        .arrange_by_key_named("invoices with their PO");
    left_join(&contexts, &line_tolerances).map(move |(id, (invoice, header, po), tolerances)| {
        let tolerances =
            tolerances.unwrap_or_else(|| InvoiceTolerances::uniform(header.tolerances(&default)));
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
