//! A plain, non-incremental evaluation of SPEC §2, §6 and §7 over the final documents,
//! written from the SPEC independently of the engine: nested loops, no
//! dataflow, and the tolerance formulas as the SPEC states them (with division),
//! where the engine cross-multiplies.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use trimatch_dataflows::model::*;
use trimatch_dataflows::rows::*;

use super::Snapshot;

mod payments;
use payments::{apply_payments, gross_of, paid_on, payment_outputs, payment_status_of};

/// An exception as the oracle raises it: (type, po_line_no, expected, actual).
type RaisedByOracle = (ExceptionType, Option<u32>, Option<Decimal>, Option<Decimal>);

/// The outputs of SPEC §3 for the present `documents` (details left empty).
pub fn evaluate(documents: &BTreeMap<Fingerprint, Document>, default: &Tolerances) -> Snapshot {
    let mut pos = Vec::new();
    let mut receipts = Vec::new();
    let mut invoices = Vec::new();
    let mut policies = Vec::new();
    let mut resolutions = Vec::new();
    let mut payments = Vec::new();
    for document in documents.values() {
        match document {
            Document::PurchaseOrder(doc) => pos.push(&**doc),
            Document::GoodsReceipt(doc) => receipts.push(&**doc),
            Document::Invoice(doc) => invoices.push(&**doc),
            Document::MatchPolicy(doc) => policies.push(&**doc),
            Document::ExceptionResolution(doc) => resolutions.push(&**doc),
            Document::Payment(doc) => payments.push(&**doc),
        }
    }
    let find_po = |tenant: &str, number: &str| {
        pos.iter()
            .find(|po| &*po.tenant_id == tenant && &*po.po_number == number)
            .copied()
    };
    // §2 received_qty and §12.2 accepted_qty: sums over the receipt lines
    // linking to the PO line.
    let receipt_sum =
        |tenant: &str, number: &str, line_no: u32, of: fn(&ReceiptLine) -> Decimal| {
            let mut sum = Decimal::ZERO;
            for receipt in &receipts {
                if &*receipt.tenant_id == tenant && &*receipt.po_number == number {
                    for line in &receipt.lines {
                        if line.po_line_no == line_no {
                            sum += of(line);
                        }
                    }
                }
            }
            sum
        };
    let received = |tenant: &str, number: &str, line_no: u32| {
        receipt_sum(tenant, number, line_no, |line| line.quantity)
    };
    let accepted = |tenant: &str, number: &str, line_no: u32| {
        receipt_sum(tenant, number, line_no, |line| line.accepted_quantity)
    };
    // §12.2: the line's level, else the PO's, else from receipt_required.
    let level_of = |po: &PurchaseOrder, line: &PoLine| -> MatchLevel {
        match (line.match_level, po.match_level, po.receipt_required) {
            (Some(level), _, _) | (None, Some(level), _) => level,
            (None, None, true) => MatchLevel::ThreeWay,
            (None, None, false) => MatchLevel::TwoWay,
        }
    };
    let signed = |invoice: &Invoice, quantity: Decimal| {
        if invoice.kind == InvoiceKind::CreditMemo {
            -quantity
        } else {
            quantity
        }
    };
    // Active invoices with a line on (tenant, po, line): (date, id, signed qty).
    let billing_on = |tenant: &str, number: &str, line_no: u32| -> Vec<(i32, String, Decimal)> {
        let mut entries = Vec::new();
        for invoice in &invoices {
            if invoice.status == InvoiceStatus::Active
                && &*invoice.tenant_id == tenant
                && &*invoice.po_number == number
            {
                for line in &invoice.lines {
                    if line.po_line_no == line_no {
                        entries.push((
                            invoice.invoice_date,
                            invoice.invoice_id.to_string(),
                            signed(invoice, line.quantity),
                        ));
                    }
                }
            }
        }
        entries
    };
    // §12.1: the policy with exactly this scope, if present.
    let policy_at = |tenant: &str, vendor: Option<&str>, category: Option<&str>| {
        policies
            .iter()
            .find(|policy| {
                &*policy.tenant_id == tenant
                    && policy.vendor_id.as_deref() == vendor
                    && policy.category.as_deref() == category
            })
            .copied()
    };
    // §12.1: the effective policy of a line on a PO line of `category`
    // (levels 1–4), or of a header (`None`: levels 2 and 4), field by field.
    let effective = |tenant: &str, vendor: &str, category: Option<&str>| -> Tolerances {
        let mut levels: Vec<Option<&MatchPolicy>> = Vec::new();
        if let Some(category) = category {
            levels.push(policy_at(tenant, Some(vendor), Some(category)));
        }
        levels.push(policy_at(tenant, Some(vendor), None));
        if let Some(category) = category {
            levels.push(policy_at(tenant, None, Some(category)));
        }
        levels.push(policy_at(tenant, None, None));
        let first = |field: &dyn Fn(&MatchPolicy) -> Option<Decimal>| {
            levels.iter().flatten().find_map(|policy| field(policy))
        };
        Tolerances {
            price_tolerance_pct: first(&|p| p.price_tolerance_pct)
                .unwrap_or(default.price_tolerance_pct),
            price_tolerance_abs: first(&|p| p.price_tolerance_abs)
                .unwrap_or(default.price_tolerance_abs),
            price_tolerance_max_abs: first(&|p| p.price_tolerance_max_abs)
                .or(default.price_tolerance_max_abs),
            qty_tolerance_pct: first(&|p| p.qty_tolerance_pct).unwrap_or(default.qty_tolerance_pct),
            qty_tolerance_abs: first(&|p| p.qty_tolerance_abs).unwrap_or(default.qty_tolerance_abs),
            total_tolerance_abs: first(&|p| p.total_tolerance_abs)
                .unwrap_or(default.total_tolerance_abs),
            amount_tolerance_pct: first(&|p| p.amount_tolerance_pct)
                .unwrap_or(default.amount_tolerance_pct),
            amount_tolerance_abs: first(&|p| p.amount_tolerance_abs)
                .unwrap_or(default.amount_tolerance_abs),
        }
    };
    let hundred = Decimal::from(100);
    // §12.1: q + max(q × pct / 100, abs), for every q.
    let qty_limit = |q: Decimal, t: &Tolerances| {
        q + (q * t.qty_tolerance_pct / hundred).max(t.qty_tolerance_abs)
    };

    let mut snapshot = Snapshot::default();
    let applications = apply_payments(&payments, &invoices);

    for po in &pos {
        for line in &po.lines {
            let billing = billing_on(&po.tenant_id, &po.po_number, line.line_no);
            snapshot.po_lines.push(PoLineRow {
                tenant_id: po.tenant_id.clone(),
                po_number: po.po_number.clone(),
                line_no: line.line_no,
                vendor_id: po.vendor_id.clone(),
                currency: po.currency,
                po_status: po.status,
                sku: line.sku.clone(),
                ordered_qty: line.quantity,
                unit_price: line.unit_price,
                received_qty: received(&po.tenant_id, &po.po_number, line.line_no),
                billed_qty: billing.iter().map(|entry| entry.2).sum(),
                invoice_count: billing.len() as u32,
                match_level: level_of(po, line),
                category: line.category.clone(),
                accepted_qty: accepted(&po.tenant_id, &po.po_number, line.line_no),
            });
        }
    }

    for invoice in &invoices {
        let mut raised: Vec<RaisedByOracle> = Vec::new();
        if invoice.status == InvoiceStatus::Active {
            let t = effective(&invoice.tenant_id, &invoice.vendor_id, None);
            let is_invoice = invoice.kind == InvoiceKind::Invoice;
            let po = find_po(&invoice.tenant_id, &invoice.po_number);
            if po.is_none() {
                raised.push((ExceptionType::PoNotFound, None, None, None));
            }
            if is_invoice {
                let number = invoice.invoice_number.trim().to_ascii_uppercase();
                let duplicated = invoices.iter().any(|other| {
                    other.status == InvoiceStatus::Active
                        && other.kind == InvoiceKind::Invoice
                        && other.tenant_id == invoice.tenant_id
                        && other.vendor_id == invoice.vendor_id
                        && other.invoice_number.trim().to_ascii_uppercase() == number
                        && (other.invoice_date, &other.invoice_id)
                            < (invoice.invoice_date, &invoice.invoice_id)
                });
                if duplicated {
                    raised.push((ExceptionType::DuplicateInvoice, None, None, None));
                }
            }
            if let Some(total) = invoice.total {
                let mut computed = invoice.tax + invoice.freight;
                for line in &invoice.lines {
                    computed += line.quantity * line.unit_price;
                }
                if (total - computed).abs() > t.total_tolerance_abs {
                    raised.push((
                        ExceptionType::TotalMismatch,
                        None,
                        Some(computed),
                        Some(total),
                    ));
                }
            }
            if let Some(po) = po {
                if is_invoice && po.status != PoStatus::Open {
                    raised.push((ExceptionType::PoClosed, None, None, None));
                }
                if po.vendor_id != invoice.vendor_id {
                    raised.push((ExceptionType::VendorMismatch, None, None, None));
                }
                let currency_mismatch = po.currency != invoice.currency;
                if currency_mismatch {
                    raised.push((ExceptionType::CurrencyMismatch, None, None, None));
                }
                for line in &invoice.lines {
                    let n = line.po_line_no;
                    let Some(po_line) = po.lines.iter().find(|l| l.line_no == n) else {
                        raised.push((ExceptionType::LineNotOnPo, Some(n), None, None));
                        continue;
                    };
                    if !is_invoice {
                        continue;
                    }
                    let t = effective(
                        &invoice.tenant_id,
                        &invoice.vendor_id,
                        po_line.category.as_deref(),
                    );
                    let mut allowance = t
                        .price_tolerance_abs
                        .max(po_line.unit_price * t.price_tolerance_pct / hundred);
                    if let Some(cap) = t.price_tolerance_max_abs {
                        allowance = allowance.min(cap);
                    }
                    if !currency_mismatch && line.unit_price - po_line.unit_price > allowance {
                        raised.push((
                            ExceptionType::PriceVariance,
                            Some(n),
                            Some(po_line.unit_price),
                            Some(line.unit_price),
                        ));
                    }
                    let me = (invoice.invoice_date, invoice.invoice_id.to_string());
                    let billed_to_date: Decimal =
                        billing_on(&invoice.tenant_id, &invoice.po_number, n)
                            .into_iter()
                            .filter(|(date, id, _)| (*date, id.clone()) <= me)
                            .map(|entry| entry.2)
                            .sum();
                    let received_qty = received(&invoice.tenant_id, &invoice.po_number, n);
                    let level = level_of(po, po_line);
                    let receipts_checked = level != MatchLevel::TwoWay;
                    if receipts_checked && received_qty <= Decimal::ZERO {
                        raised.push((
                            ExceptionType::ReceiptMissing,
                            Some(n),
                            Some(received_qty),
                            Some(billed_to_date),
                        ));
                    }
                    if receipts_checked
                        && received_qty > Decimal::ZERO
                        && billed_to_date > qty_limit(received_qty, &t)
                    {
                        raised.push((
                            ExceptionType::QtyExceedsReceived,
                            Some(n),
                            Some(received_qty),
                            Some(billed_to_date),
                        ));
                    }
                    let accepted_qty = accepted(&invoice.tenant_id, &invoice.po_number, n);
                    if level == MatchLevel::FourWay
                        && received_qty > Decimal::ZERO
                        && billed_to_date > qty_limit(accepted_qty, &t)
                    {
                        raised.push((
                            ExceptionType::QtyExceedsAccepted,
                            Some(n),
                            Some(accepted_qty),
                            Some(billed_to_date),
                        ));
                    }
                    if billed_to_date > qty_limit(po_line.quantity, &t) {
                        raised.push((
                            ExceptionType::QtyExceedsOrdered,
                            Some(n),
                            Some(po_line.quantity),
                            Some(billed_to_date),
                        ));
                    }
                }
            }
        }
        // §6: the decision on each exception, by its full key.
        let decided: Vec<Option<ResolutionRecord>> = raised
            .iter()
            .map(|(exception_type, po_line_no, _, actual)| {
                let decision = resolutions.iter().find(|r| {
                    r.tenant_id == invoice.tenant_id
                        && r.invoice_id == invoice.invoice_id
                        && r.exception_type == *exception_type
                        && r.po_line_no == *po_line_no
                })?;
                let resolution = match decision.decision {
                    Decision::Reject => Resolution::Rejected,
                    Decision::Accept => match (decision.actual, actual) {
                        (None, _) => Resolution::Accepted,
                        (Some(accepted), Some(current)) if accepted == *current => {
                            Resolution::Accepted
                        }
                        (Some(_), _) => Resolution::Lapsed,
                    },
                };
                Some(ResolutionRecord {
                    resolution,
                    resolved_by: decision.resolved_by.clone(),
                    resolved_at: decision.resolved_at,
                    reason: decision.reason.clone(),
                })
            })
            .collect();
        let accepted = |d: &Option<ResolutionRecord>| matches!(d, Some(r) if r.resolution == Resolution::Accepted);
        let mut blocking = 0u32;
        let mut accepted_blocking = 0u32;
        for (r, d) in raised.iter().zip(&decided) {
            if r.0 != ExceptionType::TotalMismatch {
                if accepted(d) {
                    accepted_blocking += 1;
                } else {
                    blocking += 1;
                }
            }
        }
        snapshot.invoice_matches.push(InvoiceMatchRow {
            tenant_id: invoice.tenant_id.clone(),
            invoice_id: invoice.invoice_id.clone(),
            invoice_number: invoice.invoice_number.clone(),
            kind: invoice.kind,
            vendor_id: invoice.vendor_id.clone(),
            po_number: invoice.po_number.clone(),
            currency: invoice.currency,
            invoice_date: invoice.invoice_date,
            status: if invoice.status == InvoiceStatus::Cancelled {
                MatchStatus::Cancelled
            } else if blocking > 0 {
                MatchStatus::Exception
            } else if accepted_blocking > 0 {
                MatchStatus::Approved
            } else {
                MatchStatus::Matched
            },
            line_count: invoice.lines.len() as u32,
            invoice_amount: invoice
                .lines
                .iter()
                .map(|l| l.quantity * l.unit_price)
                .sum(),
            exception_count: raised.len() as u32,
            blocking_count: blocking,
            accepted_count: accepted_blocking,
            gross_amount: gross_of(invoice),
            paid_amount: paid_on(&applications, invoice),
            payment_status: payment_status_of(
                paid_on(&applications, invoice),
                gross_of(invoice),
                effective(&invoice.tenant_id, &invoice.vendor_id, None).total_tolerance_abs,
            ),
        });
        for ((exception_type, po_line_no, expected, actual), resolution) in
            raised.into_iter().zip(decided)
        {
            snapshot.match_exceptions.push(ExceptionRow {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                po_number: invoice.po_number.clone(),
                vendor_id: invoice.vendor_id.clone(),
                po_line_no,
                exception_type,
                expected,
                actual,
                detail: "".into(),
                resolution,
            });
        }
    }

    let mut summary: BTreeMap<(Text, ExceptionType), (u64, BTreeSet<Text>, u64)> = BTreeMap::new();
    for row in &snapshot.match_exceptions {
        let entry = summary
            .entry((row.tenant_id.clone(), row.exception_type))
            .or_default();
        entry.0 += 1;
        entry.1.insert(row.invoice_id.clone());
        let accepted = matches!(&row.resolution, Some(r) if r.resolution == Resolution::Accepted);
        if !accepted {
            entry.2 += 1;
        }
    }
    snapshot.exception_summary = summary
        .into_iter()
        .map(
            |((tenant_id, exception_type), (count, invoices, open))| ExceptionSummaryRow {
                tenant_id,
                exception_type,
                exception_count: count,
                invoice_count: invoices.len() as u64,
                open_count: open,
            },
        )
        .collect();

    snapshot.po_suggestions = po_suggestions(&pos, &invoices, &snapshot);
    payment_outputs(
        &payments,
        &applications,
        &mut snapshot,
        &|tenant: &str, vendor: &str| effective(tenant, vendor, None).total_tolerance_abs,
    );

    snapshot.invoice_matches.sort();
    snapshot.match_exceptions.sort();
    snapshot.po_lines.sort();
    snapshot.exception_summary.sort();
    snapshot.po_suggestions.sort();
    snapshot.payment_matches.sort();
    snapshot.payment_exceptions.sort();
    snapshot.payment_suggestions.sort();
    snapshot
}

/// SPEC §7's normalization, written out step by step as the SPEC says it.
pub(super) fn normalize(number: &str) -> String {
    let upper = number.to_ascii_uppercase();
    let kept: String = upper
        .chars()
        .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        .collect();
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            let trimmed = digits.trim_start_matches('0');
            out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
            digits.clear();
        }
    };
    for c in kept.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// `po_suggestions` (SPEC §7) by brute force: every PO against every
/// `PO_NOT_FOUND` invoice, the score as a fraction, ranked by
/// cross-multiplying.
fn po_suggestions(
    pos: &[&PurchaseOrder],
    invoices: &[&Invoice],
    snapshot: &Snapshot,
) -> Vec<PoSuggestionRow> {
    let mut rows = Vec::new();
    for invoice in invoices {
        let not_found = snapshot.match_exceptions.iter().any(|e| {
            e.tenant_id == invoice.tenant_id
                && e.invoice_id == invoice.invoice_id
                && e.exception_type == ExceptionType::PoNotFound
        });
        if invoice.status != InvoiceStatus::Active
            || invoice.kind != InvoiceKind::Invoice
            || !not_found
        {
            continue;
        }
        let amount: Decimal = invoice
            .lines
            .iter()
            .map(|l| l.quantity * l.unit_price)
            .sum();
        let wanted = normalize(&invoice.po_number);
        // (score numerator, score denominator, po_number, matched_by, difference)
        let mut candidates: Vec<(Decimal, Decimal, Text, MatchedBy, Option<Decimal>)> = Vec::new();
        for po in pos {
            if po.tenant_id != invoice.tenant_id
                || po.vendor_id != invoice.vendor_id
                || po.currency != invoice.currency
                || po.status != PoStatus::Open
            {
                continue;
            }
            if !wanted.is_empty() && normalize(&po.po_number) == wanted {
                candidates.push((
                    Decimal::ONE,
                    Decimal::ONE,
                    po.po_number.clone(),
                    MatchedBy::Number,
                    None,
                ));
                continue;
            }
            let mut open = Decimal::ZERO;
            for line in &po.lines {
                let row = snapshot
                    .po_lines
                    .iter()
                    .find(|r| {
                        r.tenant_id == po.tenant_id
                            && r.po_number == po.po_number
                            && r.line_no == line.line_no
                    })
                    .expect("every PO line has a row");
                let billed = row.billed_qty.max(Decimal::ZERO);
                open += (line.quantity - billed).max(Decimal::ZERO) * line.unit_price;
            }
            let difference = open - amount;
            let window = Decimal::from(10).max(amount * Decimal::from(2) / Decimal::from(100));
            if difference.abs() > window {
                continue;
            }
            let denominator = amount.max(Decimal::new(1, 2));
            let numerator = (denominator - difference.abs()).max(Decimal::ZERO);
            candidates.push((
                numerator,
                denominator,
                po.po_number.clone(),
                MatchedBy::Amount,
                Some(difference),
            ));
        }
        candidates.sort_by(|a, b| {
            // Higher score first: a/b vs c/d by a·d vs c·b (denominators > 0).
            (b.0 * a.1)
                .cmp(&(a.0 * b.1))
                .then_with(|| a.2.as_bytes().cmp(b.2.as_bytes()))
        });
        for (rank, (numerator, denominator, po_number, matched_by, difference)) in
            candidates.into_iter().take(3).enumerate()
        {
            rows.push(super::canonical_score(PoSuggestionRow {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                rank: rank as u32 + 1,
                po_number,
                matched_by,
                amount_difference: difference,
                score_numerator: numerator,
                score_denominator: denominator,
            }));
        }
    }
    rows
}

/// The snapshot with every exception's detail emptied (the oracle writes none),
/// after checking that each detail is a non-empty sentence.
pub fn without_details(mut snapshot: Snapshot) -> Snapshot {
    for row in &mut snapshot.match_exceptions {
        assert!(
            row.detail.ends_with('.') && row.detail.len() > 10,
            "detail: {:?}",
            row.detail
        );
        row.detail = "".into();
    }
    for row in &mut snapshot.payment_exceptions {
        assert!(
            row.detail.ends_with('.') && row.detail.len() > 10,
            "detail: {:?}",
            row.detail
        );
        row.detail = "".into();
    }
    snapshot.match_exceptions.sort();
    snapshot.payment_exceptions.sort();
    snapshot
}
