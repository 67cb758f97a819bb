//! One focused test per rule of SPEC §2 and per re-evaluation it lists, run
//! through the whole engine (decoder → upserts → dataflow → snapshot reads) on
//! two workers.

mod common;

use serde_json::{json, Value};
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::rows::{ExceptionType::*, MatchStatus, Severity};

use common::*;

const WORKERS: usize = 2;

/// A PO for tenant `acme`, vendor V-17, USD, with `lines` as (line_no, qty, price).
fn po_doc(number: &str, lines: &[(u32, &str, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "po_number": number, "vendor_id": "V-17", "currency": "USD",
        "lines": lines.iter().map(|(n, q, p)| json!({"line_no": n, "quantity": q, "unit_price": p})).collect::<Vec<_>>()
    })
}

/// An invoice of `acme`/V-17 in USD on `po`, with `lines` as (po_line_no, qty, price).
fn invoice_doc(id: &str, po: &str, date: &str, lines: &[(u32, &str, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "invoice_id": id, "vendor_id": "V-17", "invoice_number": id,
        "po_number": po, "currency": "USD", "invoice_date": date,
        "lines": lines.iter().map(|(n, q, p)| json!({"po_line_no": n, "quantity": q, "unit_price": p})).collect::<Vec<_>>()
    })
}

fn receipt_doc(id: &str, po: &str, lines: &[(u32, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "receipt_id": id, "po_number": po,
        "lines": lines.iter().map(|(n, q)| json!({"po_line_no": n, "quantity": q})).collect::<Vec<_>>()
    })
}

fn with(mut document: Value, field: &str, value: Value) -> Value {
    document[field] = value;
    document
}

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

#[test]
fn line_not_on_po_for_invoices_and_credit_memos() {
    let mut engine = TestEngine::start(WORKERS);
    let memo = with(
        invoice_doc("CM-1", "PO-1", "2026-11-03", &[(7, "1", "1")]),
        "kind",
        json!("credit_memo"),
    );
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "1")])),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(2, "1", "1")])),
        invoice(memo),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(LineNotOnPo, Some(2))]);
    assert_eq!(out.exceptions_of("CM-1"), vec![(LineNotOnPo, Some(7))]);
    // A PO amendment that adds line 2 re-checks the invoice.
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "1"), (2, "10", "1")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(2, "10")])),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
}

#[test]
fn price_variance_uses_the_larger_allowance_and_a_po_amendment_rechecks_it() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "10.00")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "1", "10.15")],
        )),
        invoice(invoice_doc(
            "INV-2",
            "PO-1",
            "2026-11-04",
            &[(1, "1", "9.00")],
        )),
    ]);
    let row = out
        .exception("INV-1", PriceVariance, Some(1))
        .expect("PRICE_VARIANCE");
    assert_eq!(
        (row.expected, row.actual),
        (Some(dec("10")), Some(dec("10.15")))
    );
    assert_eq!(
        out.exceptions_of("INV-2"),
        vec![],
        "a lower price is no variance"
    );
    // 2% of 10.00 = 0.20 allows 10.15.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "price_tolerance_pct": "2"}),
    )]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    // A PO price amendment re-checks every invoice on the line: now 9.50 + 2% = 9.69.
    let out = engine.put(vec![po(po_doc("PO-1", &[(1, "100", "9.50")]))]);
    let row = out
        .exception("INV-1", PriceVariance, Some(1))
        .expect("re-checked");
    assert_eq!(row.expected, Some(dec("9.5")));
    assert_eq!(out.exceptions_of("INV-2"), vec![]);
}

#[test]
fn a_receipt_arriving_later_releases_receipt_missing_and_returns_bring_it_back() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "40", "1")],
        )),
        po(po_doc("PO-1", &[(1, "100", "1")])),
    ]);
    let row = out
        .exception("INV-1", ReceiptMissing, Some(1))
        .expect("RECEIPT_MISSING");
    assert_eq!(
        (row.expected, row.actual),
        (Some(dec("0")), Some(dec("40")))
    );
    let out = engine.put(vec![receipt(receipt_doc(
        "GR-1",
        "PO-1",
        &[(1, "30"), (1, "20")],
    ))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).received_qty, dec("50"));
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Matched);
    // A return to vendor of everything: nothing received any more.
    let out = engine.put(vec![receipt(receipt_doc("GR-2", "PO-1", &[(1, "-50")]))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(ReceiptMissing, Some(1))]);
}

#[test]
fn qty_exceeds_received_and_ordered_follow_billed_to_date_and_the_policy() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "1")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "60")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "50", "1")],
        )),
        invoice(invoice_doc(
            "INV-2",
            "PO-1",
            "2026-11-04",
            &[(1, "53", "1")],
        )),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    // INV-2's billed_to_date is 103: over the 60 received and the 100 ordered.
    let received = out.exception("INV-2", QtyExceedsReceived, Some(1)).unwrap();
    assert_eq!(
        (received.expected, received.actual),
        (Some(dec("60")), Some(dec("103")))
    );
    let ordered = out.exception("INV-2", QtyExceedsOrdered, Some(1)).unwrap();
    assert_eq!(
        (ordered.expected, ordered.actual),
        (Some(dec("100")), Some(dec("103")))
    );
    // A 5% quantity tolerance allows 105 against the order, not 63 against receipts.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "qty_tolerance_pct": "5"}),
    )]);
    assert_eq!(
        out.exceptions_of("INV-2"),
        vec![(QtyExceedsReceived, Some(1))]
    );
    // Deleting the policy falls back to the default again.
    let out = engine.apply(vec![Feed::delete(tombstone_key(
        DocumentKind::MatchPolicy,
        json!({"tenant_id": "acme"}),
    ))]);
    assert_eq!(
        out.exceptions_of("INV-2"),
        vec![(QtyExceedsReceived, Some(1)), (QtyExceedsOrdered, Some(1))]
    );
}

#[test]
fn deleting_or_cancelling_an_earlier_invoice_lowers_billed_to_date_of_later_ones() {
    let mut engine = TestEngine::start(WORKERS);
    engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "1")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-01",
            &[(1, "60", "1")],
        )),
        invoice(invoice_doc(
            "INV-3",
            "PO-1",
            "2026-11-03",
            &[(1, "30", "1")],
        )),
    ]);
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-2",
        "PO-1",
        "2026-11-02",
        &[(1, "30", "1")],
    ))]);
    assert_eq!(out.exceptions_of("INV-2"), vec![]);
    assert_eq!(
        out.exception("INV-3", QtyExceedsOrdered, Some(1))
            .unwrap()
            .actual,
        Some(dec("120"))
    );
    // Cancelling INV-2 takes its 30 out of INV-3's billed_to_date.
    let cancelled = with(
        invoice_doc("INV-2", "PO-1", "2026-11-02", &[(1, "30", "1")]),
        "status",
        json!("cancelled"),
    );
    let out = engine.put(vec![invoice(cancelled)]);
    assert_eq!(out.exceptions_of("INV-3"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).billed_qty, dec("90"));
    // Re-activating and then deleting INV-1 (a tombstone by key) does the same.
    engine.put(vec![invoice(invoice_doc(
        "INV-2",
        "PO-1",
        "2026-11-02",
        &[(1, "30", "1")],
    ))]);
    let key = tombstone_key(
        DocumentKind::Invoice,
        json!({"tenant_id": "acme", "invoice_id": "INV-1"}),
    );
    let out = engine.apply(vec![Feed::delete(key)]);
    assert!(out
        .invoice_matches
        .iter()
        .all(|row| &*row.invoice_id != "INV-1"));
    assert_eq!(out.exceptions_of("INV-3"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).invoice_count, 2);
}

#[test]
fn credit_memos_count_negatively_and_raise_only_their_own_exceptions() {
    let mut engine = TestEngine::start(WORKERS);
    let memo = |id: &str, date: &str, qty: &str| {
        with(
            invoice_doc(id, "PO-1", date, &[(1, qty, "99")]),
            "kind",
            json!("credit_memo"),
        )
    };
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "1")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-01",
            &[(1, "80", "1")],
        )),
        invoice(memo("CM-1", "2026-11-02", "30")),
        invoice(invoice_doc(
            "INV-2",
            "PO-1",
            "2026-11-03",
            &[(1, "40", "1")],
        )),
    ]);
    // 80 − 30 + 40 = 90 ≤ 100: no quantity exception; the memo's price is not checked.
    assert_eq!(out.exceptions_of("INV-2"), vec![]);
    assert_eq!(out.exceptions_of("CM-1"), vec![]);
    let line = out.po_line("PO-1", 1);
    assert_eq!((line.billed_qty, line.invoice_count), (dec("90"), 3));
    // A memo dated after INV-2 does not help it.
    let out = engine.put(vec![invoice(memo("CM-1", "2026-11-04", "30"))]);
    assert_eq!(
        out.exception("INV-2", QtyExceedsOrdered, Some(1))
            .unwrap()
            .actual,
        Some(dec("120"))
    );
    // A memo with a foreign vendor and currency raises those, nothing else.
    let foreign = with(
        with(memo("CM-2", "2026-11-05", "1"), "vendor_id", json!("V-9")),
        "currency",
        json!("EUR"),
    );
    let out = engine.put(vec![invoice(foreign)]);
    assert_eq!(
        out.exceptions_of("CM-2"),
        vec![(VendorMismatch, None), (CurrencyMismatch, None)]
    );
}

#[test]
fn two_way_pos_skip_receipt_checks_but_not_the_order_check() {
    let mut engine = TestEngine::start(WORKERS);
    let two_way = with(
        po_doc("PO-1", &[(1, "10", "1")]),
        "receipt_required",
        json!(false),
    );
    let out = engine.put(vec![
        po(two_way.clone()),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "10", "1")],
        )),
        invoice(invoice_doc("INV-2", "PO-1", "2026-11-04", &[(1, "1", "1")])),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(
        out.exceptions_of("INV-2"),
        vec![(QtyExceedsOrdered, Some(1))]
    );
    // Switching the PO to three-way brings receipt checks.
    let out = engine.put(vec![po(with(two_way, "receipt_required", json!(true)))]);
    assert!(out
        .exceptions_of("INV-1")
        .contains(&(ReceiptMissing, Some(1))));
}

#[test]
fn a_policy_change_rechecks_only_its_tenant() {
    let mut engine = TestEngine::start(WORKERS);
    let other = |doc: Value| with(doc, "tenant_id", json!("globex"));
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "1.00")])),
        po(other(po_doc("PO-1", &[(1, "10", "1.00")]))),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "10")])),
        receipt(other(receipt_doc("GR-1", "PO-1", &[(1, "10")]))),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "1", "1.04")],
        )),
        invoice(other(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "1", "1.04")],
        ))),
    ]);
    assert_eq!(out.exception_summary.len(), 2);
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "price_tolerance_abs": 0.05}),
    )]);
    let tenants: Vec<&str> = out
        .match_exceptions
        .iter()
        .map(|row| &*row.tenant_id)
        .collect();
    assert_eq!(tenants, vec!["globex"]);
    // The tenant read seeks one tenant's rows only.
    let acme = engine.read_tenant(engine.time(), "acme").unwrap();
    assert_eq!(acme.invoice_matches.len(), 1);
    assert!(acme.match_exceptions.is_empty());
    assert!(acme.po_lines.iter().all(|row| &*row.tenant_id == "acme"));
}

#[test]
fn exception_summary_counts_exceptions_and_distinct_invoices() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "10", "1"), (2, "10", "1")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "1", "1"), (2, "1", "1")],
        )),
        invoice(invoice_doc("INV-2", "PO-1", "2026-11-04", &[(1, "1", "1")])),
    ]);
    let summary = out
        .exception_summary
        .iter()
        .find(|row| row.exception_type == ReceiptMissing)
        .unwrap();
    assert_eq!((summary.exception_count, summary.invoice_count), (3, 2));
}

#[test]
fn within_one_batch_the_highest_source_offset_wins() {
    let mut engine = TestEngine::start(1);
    let v1 = invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "1", "1")]));
    let v2 = invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "2", "1")]));
    // Handed over out of order: offset 8 (v2) must win over offset 7 (v1).
    let out = engine.apply(vec![
        Feed::put(v2.clone()).at_offset(8),
        Feed::put(v1.clone()).at_offset(7),
    ]);
    assert_eq!(out.invoice("INV-1").invoice_amount, dec("2"));
    // A delete at a higher offset wins over an upsert in the same batch...
    let out = engine.apply(vec![
        Feed::put(v1.clone()).at_offset(10),
        Feed::delete(v1.key()).at_offset(11),
    ]);
    assert!(out.invoice_matches.is_empty());
    // ...and an upsert at a higher offset wins over a delete.
    let out = engine.apply(vec![
        Feed::put(v1.clone()).at_offset(13),
        Feed::delete(v1.key()).at_offset(12),
    ]);
    assert_eq!(out.invoice("INV-1").invoice_amount, dec("1"));
    // Across batches the later batch wins regardless of offsets (a replay restarts them).
    let out = engine.apply(vec![Feed::put(v2).at_offset(0)]);
    assert_eq!(out.invoice("INV-1").invoice_amount, dec("2"));
}
