//! SPEC §7: for each active invoice whose PO is not found, the (at most
//! three) open POs of its tenant, vendor and currency it most likely
//! belongs to — by normalized number, else by open amount.

use std::sync::Arc;

use differential_dataflow::operators::CountTotal;
use rust_decimal::Decimal;

use super::lines::PoLineFacts;
use crate::model::*;
use crate::operators::{Collection, CountedSum, KeyedArrangement};
use crate::rows::{PoLineRow, PoSuggestionRow};
use crate::rules::{self, OpenPo, PoCandidate, UnmatchedInvoice};

/// The most suggestions an invoice gets.
pub const MAX_SUGGESTIONS: usize = 3;

/// The open amount one `po_lines` row contributes to its PO:
/// max(ordered_qty − max(billed_qty, 0), 0) × unit_price.
fn open_amount_of_line(row: &PoLineRow) -> Decimal {
    let billed = row.billed_qty.max(Decimal::ZERO);
    (row.ordered_qty - billed).max(Decimal::ZERO) * row.unit_price
}

/// The `po_suggestions` rows, keyed by tenant.
///
/// `unmatched` are the active `kind = invoice` documents with `PO_NOT_FOUND`;
/// `po_lines` every present PO's lines, which its rows are made of.
///
/// Per change, never O(tenant): a PO line's change updates its PO's open
/// amount in O(1) (a sum carried as differences); an invoice meets the open
/// POs of its (tenant, vendor, currency) — O(the vendor's open POs); a PO's
/// open amount or status change meets that vendor's unmatched invoices —
/// O(the vendor's `PO_NOT_FOUND` invoices), inherent, since each one's
/// suggestions may change. Each invoice's ranking reads only the POs that
/// qualify for it.
pub(super) fn po_suggestions<'s>(
    unmatched: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    po_lines: &KeyedArrangement<'s, Fingerprint, PoLineFacts>,
) -> Collection<'s, (Text, PoSuggestionRow)> {
    let open_pos = po_lines
        .clone()
        .flat_map_ref(|_, line| (line.po().status == PoStatus::Open).then(|| line.to_row()))
        .explode(|row| {
            let group = vendor_currency_key(&row.tenant_id, &row.vendor_id, row.currency);
            let open = CountedSum::one(open_amount_of_line(&row));
            Some(((group, row.po_number), open))
        })
        .count_total()
        // A PO whose lines are all retracted has no lines left, whatever
        // rounding left of its sum.
        .filter(|(_, open)| open.count > 0)
        .map(|((group, po_number), open)| {
            let po = OpenPo {
                normalized: normalize_document_number(&po_number),
                po_number,
                open_amount: open.sum,
            };
            (group, po)
        })
        .arrange_by_key_named("open POs by vendor");
    let invoices = unmatched
        .map(|(id, invoice)| {
            let group =
                vendor_currency_key(&invoice.tenant_id, &invoice.vendor_id, invoice.currency);
            let unmatched = UnmatchedInvoice {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                po_number: normalize_document_number(&invoice.po_number),
                invoice_amount: invoice.invoice_amount(),
            };
            (group, (id, unmatched))
        })
        .arrange_by_key_named("PO_NOT_FOUND invoices by vendor");
    invoices
        .join_core(open_pos, |_, (id, invoice), po| {
            rules::po_candidate(invoice, po).map(|candidate| {
                let names = (invoice.tenant_id.clone(), invoice.invoice_id.clone());
                (*id, (candidate, names))
            })
        })
        .reduce_named("po_suggestions", |_, candidates, output| {
            // Candidates arrive sorted, and a `PoCandidate` sorts best first.
            for (rank, ((candidate, names), _)) in
                candidates.iter().take(MAX_SUGGESTIONS).enumerate()
            {
                output.push((suggestion_row(candidate, names, rank as u32 + 1), 1));
            }
        })
        .map(|(_, row)| (row.tenant_id.clone(), row))
}

/// The `po_suggestions` row of a candidate at `rank`.
fn suggestion_row(
    candidate: &PoCandidate,
    (tenant_id, invoice_id): &(Text, Text),
    rank: u32,
) -> PoSuggestionRow {
    PoSuggestionRow {
        tenant_id: tenant_id.clone(),
        invoice_id: invoice_id.clone(),
        rank,
        po_number: candidate.po_number.clone(),
        matched_by: candidate.matched_by,
        amount_difference: candidate.amount_difference,
        score_numerator: candidate.denominator - candidate.shortfall,
        score_denominator: candidate.denominator,
    }
}
