//! The matching rules of SPEC §2, and the decisions of §6 and suggestions of
//! §7, as pure functions over documents.
//!
//! The dataflow in [`crate::graph`] decides *which* documents meet (which PO an
//! invoice names, which invoices order before it on a PO line); the functions
//! here decide what that meeting raises. Each raised exception carries its
//! `expected`/`actual` values and a sentence for the analyst.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::compare_products;
use crate::model::{
    Decision, ExceptionResolution, ExceptionType, Invoice, MatchLevel, PoStatus, PurchaseOrder,
    Text, Tolerances,
};
use crate::rows::{MatchedBy, Resolution, ResolutionRecord};

mod payments;
pub use payments::*;

/// An exception raised for one invoice, before it is dressed with the invoice's names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Raised {
    pub exception_type: ExceptionType,
    pub po_line_no: Option<u32>,
    pub expected: Option<Decimal>,
    pub actual: Option<Decimal>,
    pub detail: Text,
}

impl Raised {
    fn header(exception_type: ExceptionType, detail: String) -> Self {
        Raised {
            exception_type,
            po_line_no: None,
            expected: None,
            actual: None,
            detail: detail.into(),
        }
    }
    fn line(
        exception_type: ExceptionType,
        po_line_no: u32,
        expected: Option<Decimal>,
        actual: Option<Decimal>,
        detail: String,
    ) -> Self {
        Raised {
            exception_type,
            po_line_no: Some(po_line_no),
            expected,
            actual,
            detail: detail.into(),
        }
    }
}

/// `10.50` → `10.5`, for sentences.
fn show(value: Decimal) -> Decimal {
    value.normalize()
}

/// `price_allowance(p) = max(price_tolerance_abs, p × price_tolerance_pct / 100)`,
/// capped at `price_tolerance_max_abs` when the policy has a cap (§12.1):
/// whether `invoice_price − po_price` exceeds it. Exact: `d > cap ∨ (d > abs
/// ∧ 100·d > p·pct)`.
pub fn price_exceeds_allowance(
    po_price: Decimal,
    invoice_price: Decimal,
    tolerances: &Tolerances,
) -> bool {
    let difference = invoice_price - po_price;
    let over_cap = tolerances
        .price_tolerance_max_abs
        .is_some_and(|cap| difference > cap);
    over_cap
        || (difference > tolerances.price_tolerance_abs
            && compare_products(
                difference,
                Decimal::ONE_HUNDRED,
                po_price,
                tolerances.price_tolerance_pct,
            ) == Ordering::Greater)
}

/// `quantity > qty_limit(base) = base + max(base × qty_tolerance_pct / 100,
/// qty_tolerance_abs)` (§12.1; for `base > 0` and no absolute tolerance,
/// §2's `base × (1 + pct / 100)`). Exact: `quantity − base > abs ∧
/// 100·(quantity − base) > base·pct`.
pub fn exceeds_qty_limit(quantity: Decimal, base: Decimal, tolerances: &Tolerances) -> bool {
    let excess = quantity - base;
    excess > tolerances.qty_tolerance_abs
        && compare_products(
            excess,
            Decimal::ONE_HUNDRED,
            base,
            tolerances.qty_tolerance_pct,
        ) == Ordering::Greater
}

/// The header exceptions that depend on the invoice, its PO (if it exists) and
/// its tolerances: `PO_NOT_FOUND`, `PO_CLOSED`, `VENDOR_MISMATCH`,
/// `CURRENCY_MISMATCH`, `TOTAL_MISMATCH`. (`DUPLICATE_INVOICE` needs the other
/// invoices and is found in the graph.)
pub fn header_exceptions(
    invoice: &Invoice,
    po: Option<&PurchaseOrder>,
    tolerances: &Tolerances,
    out: &mut Vec<Raised>,
) {
    match po {
        None => out.push(Raised::header(
            ExceptionType::PoNotFound,
            format!(
                "No purchase order {} exists for tenant {}.",
                invoice.po_number, invoice.tenant_id
            ),
        )),
        Some(po) => {
            if ExceptionType::PoClosed.applies_to(invoice.kind) && po.status != PoStatus::Open {
                out.push(Raised::header(
                    ExceptionType::PoClosed,
                    format!(
                        "Purchase order {} is {}; it accepts no new invoices.",
                        po.po_number,
                        po.status.as_str()
                    ),
                ));
            }
            if invoice.vendor_id != po.vendor_id {
                out.push(Raised::header(
                    ExceptionType::VendorMismatch,
                    format!(
                        "Invoice vendor {} differs from vendor {} on purchase order {}.",
                        invoice.vendor_id, po.vendor_id, po.po_number
                    ),
                ));
            }
            if invoice.currency != po.currency {
                out.push(Raised::header(
                    ExceptionType::CurrencyMismatch,
                    format!(
                        "Invoice currency {} differs from currency {} on purchase order {}.",
                        invoice.currency, po.currency, po.po_number
                    ),
                ));
            }
        }
    }
    if let Some(stated) = invoice.total {
        let computed = invoice.invoice_amount() + invoice.tax + invoice.freight;
        if (stated - computed).abs() > tolerances.total_tolerance_abs {
            out.push(Raised {
                exception_type: ExceptionType::TotalMismatch,
                po_line_no: None,
                expected: Some(computed),
                actual: Some(stated),
                detail: format!(
                    "Stated total {} differs from lines + tax + freight = {} by more than {}.",
                    show(stated),
                    show(computed),
                    show(tolerances.total_tolerance_abs)
                )
                .into(),
            });
        }
    }
}

/// The line exceptions that need only the invoice and its PO: `LINE_NOT_ON_PO`
/// (both kinds) and `PRICE_VARIANCE` (invoices, unless the currencies differ).
/// `tolerances` gives a line's tolerances from its PO line's category.
pub fn line_exceptions<'t>(
    invoice: &Invoice,
    po: &PurchaseOrder,
    tolerances: impl Fn(Option<&str>) -> &'t Tolerances,
    out: &mut Vec<Raised>,
) {
    let check_price =
        ExceptionType::PriceVariance.applies_to(invoice.kind) && invoice.currency == po.currency;
    for line in &invoice.lines {
        match po.line(line.po_line_no) {
            None => out.push(Raised::line(
                ExceptionType::LineNotOnPo,
                line.po_line_no,
                None,
                None,
                format!(
                    "Purchase order {} has no line {}.",
                    po.po_number, line.po_line_no
                ),
            )),
            Some(po_line) => {
                if check_price
                    && price_exceeds_allowance(
                        po_line.unit_price,
                        line.unit_price,
                        tolerances(po_line.category.as_deref()),
                    )
                {
                    out.push(Raised::line(
                        ExceptionType::PriceVariance,
                        line.po_line_no,
                        Some(po_line.unit_price),
                        Some(line.unit_price),
                        format!(
                            "Unit price {} on line {} exceeds the PO price {} by more than the allowed tolerance.",
                            show(line.unit_price),
                            line.po_line_no,
                            show(po_line.unit_price)
                        ),
                    ));
                }
            }
        }
    }
}

/// What the quantity rules know about one invoice line on one PO line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LineQuantities {
    pub po_line_no: u32,
    /// The PO line's effective match level (§12.2).
    pub match_level: MatchLevel,
    /// The PO line's category, which picks the line's tolerances (§12.1).
    pub category: Option<Text>,
    pub ordered_qty: Decimal,
    pub received_qty: Decimal,
    /// What inspection accepted on the PO line (§12.2).
    pub accepted_qty: Decimal,
    /// Signed sum over active invoices and credit memos ordered at or before this one.
    pub billed_to_date: Decimal,
}

/// `RECEIPT_MISSING`, `QTY_EXCEEDS_RECEIVED` (three- and four-way lines),
/// `QTY_EXCEEDS_ACCEPTED` (four-way) and `QTY_EXCEEDS_ORDERED` for one line
/// of an active `kind = invoice`.
pub fn quantity_exceptions(line: &LineQuantities, tolerances: &Tolerances, out: &mut Vec<Raised>) {
    let LineQuantities {
        po_line_no,
        match_level,
        ordered_qty,
        received_qty,
        accepted_qty,
        billed_to_date,
        ..
    } = *line;
    if match_level.checks_receipts() {
        if received_qty <= Decimal::ZERO {
            out.push(Raised::line(
                ExceptionType::ReceiptMissing,
                po_line_no,
                Some(received_qty),
                Some(billed_to_date),
                format!(
                    "Line {po_line_no} is billed ({} to date) but nothing has been received.",
                    show(billed_to_date)
                ),
            ));
        } else if exceeds_qty_limit(billed_to_date, received_qty, tolerances) {
            out.push(Raised::line(
                ExceptionType::QtyExceedsReceived,
                po_line_no,
                Some(received_qty),
                Some(billed_to_date),
                format!(
                    "Billed to date {} on line {po_line_no} exceeds the received quantity {}.",
                    show(billed_to_date),
                    show(received_qty)
                ),
            ));
        }
        if match_level == MatchLevel::FourWay
            && received_qty > Decimal::ZERO
            && exceeds_qty_limit(billed_to_date, accepted_qty, tolerances)
        {
            out.push(Raised::line(
                ExceptionType::QtyExceedsAccepted,
                po_line_no,
                Some(accepted_qty),
                Some(billed_to_date),
                format!(
                    "Billed to date {} on line {po_line_no} exceeds the quantity inspection accepted ({}).",
                    show(billed_to_date),
                    show(accepted_qty)
                ),
            ));
        }
    }
    if exceeds_qty_limit(billed_to_date, ordered_qty, tolerances) {
        out.push(Raised::line(
            ExceptionType::QtyExceedsOrdered,
            po_line_no,
            Some(ordered_qty),
            Some(billed_to_date),
            format!(
                "Billed to date {} on line {po_line_no} exceeds the ordered quantity {}.",
                show(billed_to_date),
                show(ordered_qty)
            ),
        ));
    }
}

/// `DUPLICATE_INVOICE` for an invoice that an earlier one (`original`) duplicates.
pub fn duplicate_exception(invoice: &Invoice, original_invoice_id: &str) -> Raised {
    Raised::header(
        ExceptionType::DuplicateInvoice,
        format!(
            "Invoice number {} from vendor {} was already billed as invoice {}.",
            invoice.invoice_number.trim(),
            invoice.vendor_id,
            original_invoice_id
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn tolerances(price_pct: &str, price_abs: &str, qty_pct: &str) -> Tolerances {
        Tolerances {
            price_tolerance_pct: d(price_pct),
            price_tolerance_abs: d(price_abs),
            qty_tolerance_pct: d(qty_pct),
            total_tolerance_abs: d("0.01"),
            ..Tolerances::default()
        }
    }

    #[test]
    fn price_allowance_is_the_larger_of_absolute_and_percentage() {
        // 2% of 10.00 = 0.20 beats the absolute 0.05.
        let policy = tolerances("2", "0.05", "0");
        assert!(!price_exceeds_allowance(d("10.00"), d("10.20"), &policy));
        assert!(price_exceeds_allowance(d("10.00"), d("10.200001"), &policy));
        // 2% of 1.00 = 0.02 loses to the absolute 0.05.
        assert!(!price_exceeds_allowance(d("1.00"), d("1.05"), &policy));
        assert!(price_exceeds_allowance(d("1.00"), d("1.050001"), &policy));
        // A lower invoice price is never a variance.
        assert!(!price_exceeds_allowance(
            d("1.00"),
            d("0.01"),
            &Tolerances::default()
        ));
        // Zero tolerance: any increase is a variance.
        assert!(price_exceeds_allowance(
            d("1.00"),
            d("1.000001"),
            &Tolerances::default()
        ));
    }

    #[test]
    fn qty_limit_scales_with_the_percentage() {
        let policy = tolerances("0", "0", "5");
        assert!(!exceeds_qty_limit(d("105"), d("100"), &policy));
        assert!(exceeds_qty_limit(d("105.0001"), d("100"), &policy));
        assert!(!exceeds_qty_limit(
            d("100"),
            d("100"),
            &Tolerances::default()
        ));
        assert!(exceeds_qty_limit(
            d("100.0001"),
            d("100"),
            &Tolerances::default()
        ));
    }

    #[test]
    fn a_cap_binds_only_below_the_allowance() {
        // 10 % of 1,000.00 = 100.00, capped at 50.00.
        let capped = Tolerances {
            price_tolerance_max_abs: Some(d("50")),
            ..tolerances("10", "0", "0")
        };
        assert!(!price_exceeds_allowance(d("1000"), d("1050"), &capped));
        assert!(price_exceeds_allowance(d("1000"), d("1050.01"), &capped));
        // 10 % of 100.00 = 10.00, under the cap: the cap does not bind.
        assert!(!price_exceeds_allowance(d("100"), d("110"), &capped));
        assert!(price_exceeds_allowance(d("100"), d("110.01"), &capped));
    }

    #[test]
    fn qty_tolerance_abs_is_the_larger_allowance_and_applies_at_zero() {
        let policy = Tolerances {
            qty_tolerance_abs: d("2"),
            ..tolerances("0", "0", "5")
        };
        // 5 % of 100 = 5 beats 2.
        assert!(!exceeds_qty_limit(d("105"), d("100"), &policy));
        assert!(exceeds_qty_limit(d("105.0001"), d("100"), &policy));
        // 5 % of 10 = 0.5 loses to 2.
        assert!(!exceeds_qty_limit(d("12"), d("10"), &policy));
        assert!(exceeds_qty_limit(d("12.0001"), d("10"), &policy));
        // Nothing accepted yet (q = 0), and a negative q: the limit is q + 2.
        assert!(!exceeds_qty_limit(d("2"), d("0"), &policy));
        assert!(exceeds_qty_limit(d("2.0001"), d("0"), &policy));
        assert!(!exceeds_qty_limit(d("-1"), d("-3"), &policy));
        assert!(exceeds_qty_limit(d("-0.9999"), d("-3"), &policy));
    }
}

/// What an analyst's decision makes of a raised exception whose `actual` is
/// `exception_actual` (SPEC §6): an acceptance holds only for the `actual`
/// it names (compared as decimals), if it names one.
pub fn resolution_record(
    exception_actual: Option<Decimal>,
    decision: &ExceptionResolution,
) -> ResolutionRecord {
    let resolution = match (decision.decision, decision.actual) {
        (Decision::Reject, _) => Resolution::Rejected,
        (Decision::Accept, None) => Resolution::Accepted,
        (Decision::Accept, Some(accepted)) if exception_actual == Some(accepted) => {
            Resolution::Accepted
        }
        (Decision::Accept, Some(_)) => Resolution::Lapsed,
    };
    ResolutionRecord {
        resolution,
        resolved_by: decision.resolved_by.clone(),
        resolved_at: decision.resolved_at,
        reason: decision.reason.clone(),
    }
}

/// A `PO_NOT_FOUND` invoice as PO suggestions compare it (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnmatchedInvoice {
    pub tenant_id: Text,
    pub invoice_id: Text,
    /// The normalized `po_number` it gives.
    pub po_number: String,
    pub invoice_amount: Decimal,
}

/// An open PO of the invoice's tenant, vendor and currency.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpenPo {
    pub po_number: Text,
    /// `po_number`, normalized.
    pub normalized: String,
    /// Σ over its lines of max(ordered − max(billed, 0), 0) × unit_price.
    pub open_amount: Decimal,
}

/// A PO that qualifies as a suggestion for an invoice. Ordered best first:
/// by score (higher first), then `po_number` — the ranking of SPEC §7.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoCandidate {
    /// `denominator` − the score's numerator: the score is 1 − shortfall /
    /// denominator, and every candidate of one invoice has the same
    /// denominator, so ordering by shortfall ascending is ordering by score
    /// descending, exactly.
    pub shortfall: Decimal,
    pub po_number: Text,
    pub matched_by: MatchedBy,
    pub amount_difference: Option<Decimal>,
    /// max(invoice_amount, 0.01).
    pub denominator: Decimal,
}

/// Whether `po` is a suggestion for `invoice` (already known to share its
/// tenant, vendor and currency, and open), and how good a one (SPEC §7): by
/// number when the normalized numbers are equal and not empty (score 1),
/// else by amount when the PO's open amount is within max(10.00, 2 % of the
/// invoice's amount) of it (score 1 − |difference| / max(amount, 0.01),
/// clamped at 0).
pub fn po_candidate(invoice: &UnmatchedInvoice, po: &OpenPo) -> Option<PoCandidate> {
    let denominator = invoice.invoice_amount.max(Decimal::new(1, 2));
    if !invoice.po_number.is_empty() && invoice.po_number == po.normalized {
        return Some(PoCandidate {
            shortfall: Decimal::ZERO,
            po_number: po.po_number.clone(),
            matched_by: MatchedBy::Number,
            amount_difference: None,
            denominator,
        });
    }
    let difference = po.open_amount - invoice.invoice_amount;
    let window = Decimal::TEN.max(invoice.invoice_amount * Decimal::new(2, 2));
    (difference.abs() <= window).then(|| PoCandidate {
        shortfall: difference.abs().min(denominator),
        po_number: po.po_number.clone(),
        matched_by: MatchedBy::Amount,
        amount_difference: Some(difference),
        denominator,
    })
}
