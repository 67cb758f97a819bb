//! Focused tests for SPEC §2's header rules (PO found/closed, vendor,
//! currency, duplicates, totals), run through decoder, engine and snapshot
//! reads on two workers.

mod common;

use serde_json::{json, Value};
use trimatch_dataflows::model::{ExceptionType::*, Severity};
use trimatch_dataflows::rows::MatchStatus;

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

#[test]
fn clean_three_way_match_is_matched_with_no_exceptions() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "60")])),
        invoice(with(
            invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "60", "2.50")]),
            "total",
            json!("150.00"),
        )),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    let row = out.invoice("INV-1");
    assert_eq!(row.status, MatchStatus::Matched);
    assert_eq!((row.line_count, row.invoice_amount), (1, dec("150")));
    let line = out.po_line("PO-1", 1);
    assert_eq!(
        (line.received_qty, line.billed_qty, line.invoice_count),
        (dec("60"), dec("60"), 1)
    );
    assert!(out.exception_summary.is_empty());
}

#[test]
fn po_not_found_limits_what_else_is_raised() {
    let mut engine = TestEngine::start(WORKERS);
    // A price, quantity and receipt problem that would be raised against a PO...
    let inv = with(
        invoice_doc("INV-1", "PO-404", "2026-11-03", &[(1, "999", "99")]),
        "total",
        json!("1"),
    );
    let out = engine.put(vec![invoice(inv)]);
    // ...but without one only PO_NOT_FOUND and TOTAL_MISMATCH can be raised.
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(PoNotFound, None), (TotalMismatch, None)]
    );
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Exception);
    // The PO arriving later releases PO_NOT_FOUND and brings the line checks.
    let out = engine.put(vec![po(po_doc("PO-404", &[(1, "10", "2")]))]);
    let kinds: Vec<_> = out
        .exceptions_of("INV-1")
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert!(!kinds.contains(&PoNotFound), "{kinds:?}");
    assert!(
        kinds.contains(&PriceVariance)
            && kinds.contains(&QtyExceedsOrdered)
            && kinds.contains(&ReceiptMissing)
    );
}

#[test]
fn po_closed_and_cancelled_block_invoices_but_not_credit_memos() {
    let mut engine = TestEngine::start(WORKERS);
    let closed = with(po_doc("PO-1", &[(1, "10", "1")]), "status", json!("closed"));
    let cancelled = with(
        po_doc("PO-2", &[(1, "10", "1")]),
        "status",
        json!("cancelled"),
    );
    let memo = with(
        invoice_doc("CM-1", "PO-1", "2026-11-03", &[(1, "1", "1")]),
        "kind",
        json!("credit_memo"),
    );
    let out = engine.put(vec![
        po(closed),
        po(cancelled),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "10")])),
        receipt(receipt_doc("GR-2", "PO-2", &[(1, "10")])),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "1", "1")])),
        invoice(invoice_doc("INV-2", "PO-2", "2026-11-03", &[(1, "1", "1")])),
        invoice(memo),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(PoClosed, None)]);
    assert_eq!(out.exceptions_of("INV-2"), vec![(PoClosed, None)]);
    assert_eq!(out.exceptions_of("CM-1"), vec![]);
    // Re-opening the PO releases the exception.
    let out = engine.put(vec![po(po_doc("PO-1", &[(1, "10", "1")]))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).po_status.as_str(), "open");
}

#[test]
fn vendor_and_currency_mismatch_and_currency_suppresses_the_price_check() {
    let mut engine = TestEngine::start(WORKERS);
    let inv = invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "1", "9.99")]);
    let inv = with(
        with(inv, "vendor_id", json!("V-99")),
        "currency",
        json!("EUR"),
    );
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "1.00")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "10")])),
        invoice(inv),
    ]);
    // The price is far above the PO's, but under CURRENCY_MISMATCH it is not compared.
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(VendorMismatch, None), (CurrencyMismatch, None)]
    );
    let detail = &out.exception("INV-1", VendorMismatch, None).unwrap().detail;
    assert!(
        detail.contains("V-99") && detail.contains("V-17"),
        "{detail}"
    );
    // In the PO's currency the variance appears.
    let inv = with(
        invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "1", "9.99")]),
        "vendor_id",
        json!("V-99"),
    );
    let out = engine.put(vec![invoice(inv)]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(VendorMismatch, None), (PriceVariance, Some(1))]
    );
}

#[test]
fn duplicate_detection_normalizes_the_invoice_number_and_orders_by_date_then_id() {
    let mut engine = TestEngine::start(WORKERS);
    let number = |doc: Value, n: &str| with(doc, "invoice_number", json!(n));
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "1")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(number(
            invoice_doc("INV-B", "PO-1", "2026-11-03", &[(1, "1", "1")]),
            " a-1 ",
        )),
        invoice(number(
            invoice_doc("INV-A", "PO-1", "2026-11-04", &[(1, "1", "1")]),
            "A-1",
        )),
        invoice(number(
            invoice_doc("INV-C", "PO-1", "2026-11-03", &[(1, "1", "1")]),
            "A-1",
        )),
        // Another vendor's A-1 is not a duplicate.
        invoice(with(
            number(
                invoice_doc("INV-D", "PO-1", "2026-11-01", &[(1, "1", "1")]),
                "A-1",
            ),
            "vendor_id",
            json!("V-2"),
        )),
    ]);
    // Order: INV-B (11-03, "INV-B") < INV-C (11-03, "INV-C") < INV-A (11-04).
    assert_eq!(out.exceptions_of("INV-B"), vec![]);
    assert_eq!(out.exceptions_of("INV-C"), vec![(DuplicateInvoice, None)]);
    assert_eq!(out.exceptions_of("INV-A"), vec![(DuplicateInvoice, None)]);
    assert!(!out
        .exceptions_of("INV-D")
        .contains(&(DuplicateInvoice, None)));
    // Cancelling the original makes INV-C the first; INV-A stays a duplicate.
    let cancelled = with(
        number(
            invoice_doc("INV-B", "PO-1", "2026-11-03", &[(1, "1", "1")]),
            " a-1 ",
        ),
        "status",
        json!("cancelled"),
    );
    let out = engine.put(vec![invoice(cancelled)]);
    assert_eq!(out.invoice("INV-B").status, MatchStatus::Cancelled);
    assert_eq!(out.invoice("INV-B").exception_count, 0);
    assert_eq!(out.exceptions_of("INV-C"), vec![]);
    assert_eq!(out.exceptions_of("INV-A"), vec![(DuplicateInvoice, None)]);
    // Credit memos never take part.
    let memo = with(
        number(
            invoice_doc("CM-1", "PO-1", "2026-01-01", &[(1, "1", "1")]),
            "A-1",
        ),
        "kind",
        json!("credit_memo"),
    );
    let out = engine.put(vec![invoice(memo)]);
    assert_eq!(out.exceptions_of("CM-1"), vec![]);
    assert_eq!(out.exceptions_of("INV-C"), vec![]);
}

#[test]
fn total_mismatch_is_a_warning_with_computed_and_stated_totals() {
    let mut engine = TestEngine::start(WORKERS);
    let inv = invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "3", "2.50")]);
    let inv = with(
        with(with(inv, "tax", json!("1.20")), "freight", json!(5)),
        "total",
        json!("13.72"),
    );
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "10")])),
        invoice(inv.clone()),
    ]);
    // 3 × 2.50 + 1.20 + 5 = 13.70; off by 0.02 > the default 0.01.
    let row = out
        .exception("INV-1", TotalMismatch, None)
        .expect("TOTAL_MISMATCH");
    assert_eq!(
        (row.expected, row.actual),
        (Some(dec("13.70")), Some(dec("13.72")))
    );
    assert_eq!(row.severity(), Severity::Warning);
    // A warning alone leaves the invoice matched.
    let status = out.invoice("INV-1");
    assert_eq!(
        (status.status, status.exception_count, status.blocking_count),
        (MatchStatus::Matched, 1, 0)
    );
    assert_eq!(out.exception_summary[0].severity(), Severity::Warning);
    // Within tolerance: no exception.
    let out = engine.put(vec![invoice(with(inv, "total", json!("13.71")))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
}
