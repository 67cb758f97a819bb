//! Focused tests for SPEC §8: payments applied by allocation and by
//! reference, `paid_amount` and `payment_status`, every payment exception,
//! and fuzzy suggestions — on two workers, through the real decoder.

mod common;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use trimatch_dataflows::rows::{
    InvoicePaymentStatus as Paid, MatchStatus, PaymentApplication, PaymentExceptionType::*,
    PaymentMatchedBy,
};

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

/// A payment of `acme` to V-17 in USD of `amount`, with `allocations` as
/// (invoice, amount), or by `reference` when there are none.
fn payment_doc(
    id: &str,
    amount: &str,
    allocations: &[(&str, &str)],
    reference: Option<&str>,
) -> Value {
    json!({
        "tenant_id": "acme", "payment_id": id, "vendor_id": "V-17", "currency": "USD",
        "amount": amount, "paid_at": "2026-11-20", "reference": reference,
        "allocations": allocations.iter().map(|(i, a)| json!({"invoice_id": i, "amount": a})).collect::<Vec<_>>()
    })
}

/// A PO, its receipt and INV-1 for 100.00 (40 × 2.50, clean), tax 0.
fn matched_invoice(engine: &mut TestEngine) -> Snapshot {
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "1000", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "1000")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "40", "2.50")],
        )),
    ]);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Matched);
    out
}

fn paid(out: &Snapshot, invoice: &str) -> (Decimal, Paid) {
    let row = out.invoice(invoice);
    (row.paid_amount, row.payment_status)
}

fn payment_exceptions(
    out: &Snapshot,
) -> Vec<(
    String,
    Option<String>,
    trimatch_dataflows::rows::PaymentExceptionType,
)> {
    out.payment_exceptions
        .iter()
        .map(|row| {
            (
                row.payment_id.to_string(),
                row.invoice_id.as_ref().map(|i| i.to_string()),
                row.exception_type,
            )
        })
        .collect()
}

#[test]
fn payment_status_follows_the_paid_amount_within_the_tolerance() {
    let mut engine = TestEngine::start(WORKERS);
    let out = matched_invoice(&mut engine);
    assert_eq!(paid(&out, "INV-1"), (dec("0"), Paid::Unpaid));
    assert_eq!(out.invoice("INV-1").gross_amount, dec("100"));
    // The default total tolerance is 0.01: 99.99 and 100.01 are paid.
    for (amount, status) in [
        ("50", Paid::PartiallyPaid),
        ("99.98", Paid::PartiallyPaid),
        ("99.99", Paid::Paid),
        ("100.01", Paid::Paid),
        ("100.02", Paid::Overpaid),
    ] {
        let out = engine.put(vec![payment(payment_doc(
            "PAY-1",
            amount,
            &[("INV-1", amount)],
            None,
        ))]);
        assert_eq!(paid(&out, "INV-1"), (dec(amount), status), "{amount}");
    }
    // Voided: nothing is paid any more.
    let out = engine.put(vec![payment(with(
        payment_doc("PAY-1", "50", &[("INV-1", "50")], None),
        "status",
        json!("void"),
    ))]);
    assert_eq!(paid(&out, "INV-1"), (dec("0"), Paid::Unpaid));
    assert!(out.payment_matches.is_empty() && out.payment_exceptions.is_empty());
}

#[test]
fn several_payments_add_up_to_an_overpayment_raised_for_each() {
    let mut engine = TestEngine::start(WORKERS);
    matched_invoice(&mut engine);
    let out = engine.put(vec![
        payment(payment_doc("PAY-1", "60", &[("INV-1", "60")], None)),
        payment(payment_doc("PAY-2", "60", &[("INV-1", "60")], None)),
    ]);
    assert_eq!(paid(&out, "INV-1"), (dec("120"), Paid::Overpaid));
    assert_eq!(
        payment_exceptions(&out),
        vec![
            ("PAY-1".into(), Some("INV-1".into()), Overpayment),
            ("PAY-2".into(), Some("INV-1".into()), Overpayment),
        ]
    );
    let row = &out.payment_exceptions[0];
    assert_eq!(
        (row.expected, row.actual),
        (Some(dec("100")), Some(dec("120")))
    );
    // One deleted: the other is a partial payment, and nothing is raised.
    let key = tombstone_key(
        trimatch_dataflows::model::DocumentKind::Payment,
        json!({"tenant_id": "acme", "payment_id": "PAY-2"}),
    );
    let out = engine.apply(vec![Feed::delete(key)]);
    assert_eq!(paid(&out, "INV-1"), (dec("60"), Paid::PartiallyPaid));
    assert!(out.payment_exceptions.is_empty());
}

#[test]
fn a_reference_applies_the_whole_payment_only_to_a_single_invoice() {
    let mut engine = TestEngine::start(WORKERS);
    matched_invoice(&mut engine);
    // INV-1's number is "INV-1": "inv 01" normalizes to it.
    let out = engine.put(vec![payment(payment_doc(
        "PAY-1",
        "100",
        &[],
        Some("inv 01"),
    ))]);
    let row = &out.payment_matches[0];
    assert_eq!(
        (row.applied_amount, row.matched_by, row.status),
        (
            dec("100"),
            PaymentMatchedBy::Reference,
            PaymentApplication::Applied
        )
    );
    assert_eq!(paid(&out, "INV-1"), (dec("100"), Paid::Paid));
    // A second invoice with the same number: the reference is ambiguous.
    let out = engine.put(vec![invoice(with(
        invoice_doc("INV-2", "PO-1", "2026-11-04", &[(1, "1", "2.50")]),
        "invoice_number",
        json!("INV-1"),
    ))]);
    let row = &out.payment_matches[0];
    assert_eq!(
        (row.applied_amount, row.matched_by, row.status),
        (
            dec("0"),
            PaymentMatchedBy::None,
            PaymentApplication::Unapplied
        )
    );
    assert_eq!(
        payment_exceptions(&out),
        vec![("PAY-1".into(), None, UnappliedPayment)]
    );
    assert_eq!(out.payment_exceptions[0].actual, Some(dec("100")));
    assert_eq!(paid(&out, "INV-1"), (dec("0"), Paid::Unpaid));
}

#[test]
fn allocations_to_missing_invoices_are_unapplied_and_unknown() {
    let mut engine = TestEngine::start(WORKERS);
    matched_invoice(&mut engine);
    let out = engine.put(vec![payment(payment_doc(
        "PAY-1",
        "150",
        &[("INV-1", "100"), ("INV-9", "30")],
        None,
    ))]);
    let row = &out.payment_matches[0];
    assert_eq!(
        (
            row.applied_amount,
            row.unapplied_amount(),
            row.matched_by,
            row.status
        ),
        (
            dec("100"),
            dec("50"),
            PaymentMatchedBy::Allocation,
            PaymentApplication::PartiallyApplied
        )
    );
    assert_eq!(
        payment_exceptions(&out),
        vec![("PAY-1".into(), Some("INV-9".into()), UnknownInvoice)]
    );
    assert_eq!(out.payment_exceptions[0].actual, Some(dec("30")));
    // The invoice arrives: no longer unknown, and paid.
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-9",
        "PO-1",
        "2026-11-05",
        &[(1, "12", "2.50")],
    ))]);
    assert!(
        out.payment_exceptions.is_empty(),
        "{:?}",
        out.payment_exceptions
    );
    assert_eq!(paid(&out, "INV-9"), (dec("30"), Paid::Paid));
}

#[test]
fn paying_a_blocked_invoice_is_an_exception_until_its_exception_is_accepted() {
    let mut engine = TestEngine::start(WORKERS);
    engine.put(vec![
        po(po_doc("PO-1", &[(1, "1000", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "1000")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "40", "2.60")],
        )),
    ]);
    let out = engine.put(vec![payment(payment_doc(
        "PAY-1",
        "104",
        &[("INV-1", "104")],
        None,
    ))]);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Exception);
    assert_eq!(
        payment_exceptions(&out),
        vec![("PAY-1".into(), Some("INV-1".into()), PaidWhileBlocked)]
    );
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        None,
    ))]);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Approved);
    assert!(out.payment_exceptions.is_empty());
}

#[test]
fn vendor_currency_cancelled_and_credit_memo_mismatches_are_raised() {
    let mut engine = TestEngine::start(WORKERS);
    matched_invoice(&mut engine);
    engine.put(vec![
        invoice(with(
            invoice_doc("INV-2", "PO-1", "2026-11-03", &[(1, "1", "2.50")]),
            "status",
            json!("cancelled"),
        )),
        invoice(with(
            invoice_doc("CM-1", "PO-1", "2026-11-03", &[(1, "1", "2.50")]),
            "kind",
            json!("credit_memo"),
        )),
    ]);
    let other_vendor = with(
        payment_doc("PAY-V", "100", &[("INV-1", "100")], None),
        "vendor_id",
        json!("V-99"),
    );
    let other_currency = with(
        payment_doc("PAY-C", "100", &[("INV-1", "100")], None),
        "currency",
        json!("EUR"),
    );
    let out = engine.put(vec![
        payment(other_vendor),
        payment(other_currency),
        payment(payment_doc(
            "PAY-X",
            "5",
            &[("INV-2", "2.50"), ("CM-1", "2.50")],
            None,
        )),
    ]);
    let mut raised = payment_exceptions(&out);
    raised.retain(|(_, _, kind)| *kind != Overpayment);
    assert_eq!(
        raised,
        vec![
            (
                "PAY-C".into(),
                Some("INV-1".into()),
                PaymentCurrencyMismatch
            ),
            ("PAY-V".into(), Some("INV-1".into()), PaymentVendorMismatch),
            ("PAY-X".into(), Some("CM-1".into()), PaidCancelledInvoice),
            ("PAY-X".into(), Some("INV-2".into()), PaidCancelledInvoice),
        ]
    );
    // A cancelled invoice still shows what was paid on it.
    assert_eq!(paid(&out, "INV-2"), (dec("2.50"), Paid::Paid));
}

#[test]
fn an_unapplied_reference_is_suggested_close_invoices_at_similarity_from_point_eight() {
    let mut engine = TestEngine::start(WORKERS);
    let number = |id: &str, n: &str| {
        invoice(with(
            invoice_doc(id, "PO-1", "2026-11-03", &[(1, "40", "2.50")]),
            "invoice_number",
            json!(n),
        ))
    };
    engine.put(vec![
        po(po_doc("PO-1", &[(1, "1000", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "1000")])),
        number("INV-1", "A3342"), // one edit from A3343 in 5: similarity 0.8
        number("INV-2", "A3352"), // two edits: 0.6
        number("INV-3", "AB3343"), // one edit in 6: 0.83
    ]);
    let out = engine.put(vec![payment(payment_doc(
        "PAY-1",
        "100",
        &[],
        Some("a-3343"),
    ))]);
    let suggested: Vec<(u32, &str, f64)> = out
        .payment_suggestions
        .iter()
        .map(|row| (row.rank, row.invoice_id.as_str(), row.similarity()))
        .collect();
    assert_eq!(suggested, vec![(1, "INV-3", 5.0 / 6.0), (2, "INV-1", 0.8)]);
    assert_eq!(out.payment_suggestions[0].amount_difference, dec("0"));
    // Out of the amount window (0.01), no suggestion.
    let out = engine.put(vec![payment(payment_doc(
        "PAY-1",
        "100.02",
        &[],
        Some("a-3343"),
    ))]);
    assert!(out.payment_suggestions.is_empty());
    // Paid in full, an invoice is no longer open to suggestions.
    let out = engine.put(vec![
        payment(payment_doc("PAY-1", "100", &[], Some("a-3343"))),
        payment(payment_doc("PAY-2", "100", &[("INV-3", "100")], None)),
    ]);
    let suggested: Vec<&str> = out
        .payment_suggestions
        .iter()
        .map(|row| row.invoice_id.as_str())
        .collect();
    assert_eq!(suggested, vec!["INV-1"]);
}
