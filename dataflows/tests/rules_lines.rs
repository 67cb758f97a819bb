//! Focused tests for SPEC §2's line and quantity rules and the
//! re-evaluations it lists (late receipts, PO amendments, policy changes,
//! cancelled or deleted earlier invoices, credit memos, two-way POs), plus the
//! offset tie rule, run through decoder, engine and snapshot reads on two workers.

mod common;

use serde_json::{json, Value};
use trimatch_dataflows::model::{keys_of_tenant, DocumentKind, ExceptionType::*};
use trimatch_dataflows::rows::MatchStatus;

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

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
    assert_eq!(acme.po_lines.len(), 1);
    assert!(acme.po_lines.iter().all(|row| &*row.tenant_id == "acme"));
}

#[test]
fn a_tenant_read_keeps_tenants_apart_when_their_document_keys_share_a_prefix() {
    // `po_lines`, `invoice_matches` and `payment_matches` are read by seeking
    // the range of document keys whose top bits hash the tenant; find two
    // tenants whose prefixes collide.
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0u32..)
        .map(|n| format!("tenant-{n}"))
        .find_map(|tenant| {
            let range = keys_of_tenant(&tenant);
            seen.insert(range, tenant.clone())
                .map(|other| (other, tenant))
        })
        .unwrap();
    let mut engine = TestEngine::start(WORKERS);
    let of = |tenant: &str, doc: Value| with(doc, "tenant_id", json!(tenant));
    let paying = |tenant: &str, id: &str| {
        payment(json!({
            "tenant_id": tenant, "payment_id": id, "vendor_id": "V-17", "currency": "USD",
            "amount": "10", "paid_at": "2026-11-20",
            "allocations": [{"invoice_id": "INV-1", "amount": "10"}]
        }))
    };
    engine.put(vec![
        po(of(&first, po_doc("PO-1", &[(1, "10", "1")]))),
        po(of(
            &second,
            po_doc("PO-1", &[(1, "10", "1"), (2, "5", "2")]),
        )),
        po(of(&second, po_doc("PO-2", &[(1, "1", "1")]))),
        invoice(of(
            &first,
            invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "10", "1")]),
        )),
        invoice(of(
            &second,
            invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "10", "1")]),
        )),
        invoice(of(
            &second,
            invoice_doc("INV-2", "PO-2", "2026-11-03", &[(1, "1", "1")]),
        )),
        paying(&first, "PAY-1"),
        paying(&second, "PAY-1"),
        paying(&second, "PAY-2"),
    ]);
    let first_rows = engine.read_tenant(engine.time(), &first).unwrap();
    let second_rows = engine.read_tenant(engine.time(), &second).unwrap();
    let counts = |rows: &Snapshot| {
        (
            rows.po_lines.len(),
            rows.invoice_matches.len(),
            rows.payment_matches.len(),
        )
    };
    assert_eq!(counts(&first_rows), (1, 1, 1));
    assert_eq!(counts(&second_rows), (3, 2, 2));
    for (tenant, rows) in [(&first, &first_rows), (&second, &second_rows)] {
        assert!(rows.po_lines.iter().all(|row| row.tenant_id == *tenant));
        assert!(rows
            .invoice_matches
            .iter()
            .all(|row| row.tenant_id == *tenant));
        assert!(rows
            .payment_matches
            .iter()
            .all(|row| row.tenant_id == *tenant));
    }
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
