//! Focused tests for SPEC §7: PO suggestions for invoices whose PO is not
//! found — by normalized number, by open amount within the window, ranked
//! and cut at three — on two workers.

mod common;

use rust_decimal::Decimal;
use serde_json::json;
use trimatch_dataflows::model::Document;
use trimatch_dataflows::rows::MatchedBy;

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

/// (rank, po_number, matched_by, amount_difference, score) of INV-1's suggestions.
fn suggestions(out: &Snapshot) -> Vec<(u32, String, MatchedBy, Option<Decimal>, f64)> {
    out.po_suggestions
        .iter()
        .filter(|row| &*row.invoice_id == "INV-1")
        .map(|row| {
            (
                row.rank,
                row.po_number.to_string(),
                row.matched_by,
                row.amount_difference,
                row.score(),
            )
        })
        .collect()
}

/// An invoice of 100.00 (one line, 40 × 2.50) naming PO `number`.
fn invoice_for(number: &str) -> Document {
    invoice(invoice_doc(
        "INV-1",
        number,
        "2026-11-03",
        &[(1, "40", "2.50")],
    ))
}

#[test]
fn a_mistyped_po_number_is_found_by_its_normalized_form() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO1001", &[(1, "1", "5000")])),
        invoice_for("po-01001"),
    ]);
    assert_eq!(
        suggestions(&out),
        vec![(1, "PO1001".into(), MatchedBy::Number, None, 1.0)]
    );
    // An invoice whose number normalizes to nothing matches no number.
    let out = engine.put(vec![invoice_for("--")]);
    assert_eq!(suggestions(&out), vec![]);
}

#[test]
fn the_amount_window_is_ten_or_two_percent_inclusive() {
    let mut engine = TestEngine::start(WORKERS);
    // Open amounts 110.00 (+10.00, in), 89.99 (−10.01, out), 100.00 (exact).
    let out = engine.put(vec![
        po(po_doc("PO-A", &[(1, "44", "2.50")])),
        po(po_doc("PO-B", &[(1, "8999", "0.01")])),
        po(po_doc("PO-C", &[(1, "1", "100")])),
        invoice_for("PO-X"),
    ]);
    assert_eq!(
        suggestions(&out),
        vec![
            (1, "PO-C".into(), MatchedBy::Amount, Some(dec("0")), 1.0),
            (2, "PO-A".into(), MatchedBy::Amount, Some(dec("10")), 0.9),
        ]
    );
    // For 1,000.00 the window is 2 % (20.00): 1,020.00 is in, 979.99 out.
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(po_doc("PO-A", &[(1, "102", "10")])),
        po(po_doc("PO-B", &[(1, "97999", "0.01")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-X",
            "2026-11-03",
            &[(1, "400", "2.50")],
        )),
    ]);
    assert_eq!(
        suggestions(&out),
        vec![(1, "PO-A".into(), MatchedBy::Amount, Some(dec("20")), 0.98)]
    );
}

#[test]
fn the_open_amount_follows_billing_and_the_score_clamps_at_zero() {
    let mut engine = TestEngine::start(WORKERS);
    // A PO of 20 × 1.00, and an invoice of 5.00 on another (missing) PO:
    // difference +15.00 is outside the window (10.00).
    let out = engine.put(vec![
        po(po_doc("PO-A", &[(1, "20", "1")])),
        invoice(invoice_doc("INV-1", "PO-X", "2026-11-03", &[(1, "5", "1")])),
    ]);
    assert_eq!(suggestions(&out), vec![]);
    // Another invoice bills 8 of PO-A: open 12.00, difference +7.00 (in);
    // the score 1 − 7/5 clamps to 0.
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-2",
        "PO-A",
        "2026-11-03",
        &[(1, "8", "1")],
    ))]);
    assert_eq!(
        suggestions(&out),
        vec![(1, "PO-A".into(), MatchedBy::Amount, Some(dec("7")), 0.0)]
    );
    // Over-billing counts as fully billed, never negative: open 0.00.
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-2",
        "PO-A",
        "2026-11-03",
        &[(1, "30", "1")],
    ))]);
    assert_eq!(
        suggestions(&out),
        vec![(1, "PO-A".into(), MatchedBy::Amount, Some(dec("-5")), 0.0)]
    );
}

#[test]
fn suggestions_rank_by_score_then_po_number_and_stop_at_three() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        // Open amounts 99, 101 (both score 0.99), 100 (1), 97 (0.97), 95 (0.95).
        po(po_doc("PO-Z", &[(1, "99", "1")])),
        po(po_doc("PO-Y", &[(1, "101", "1")])),
        po(po_doc("PO-E", &[(1, "97", "1")])),
        po(po_doc("PO-D", &[(1, "95", "1")])),
        po(po_doc("PO-Q", &[(1, "100", "1")])),
        invoice_for("PO-X"),
    ]);
    assert_eq!(
        suggestions(&out),
        vec![
            (1, "PO-Q".into(), MatchedBy::Amount, Some(dec("0")), 1.0),
            (2, "PO-Y".into(), MatchedBy::Amount, Some(dec("1")), 0.99),
            (3, "PO-Z".into(), MatchedBy::Amount, Some(dec("-1")), 0.99),
        ]
    );
    // A number match (`POX` for `PO-X`, score 1) ties with the exact
    // amount, and the two sort by number ('-' before 'X').
    let out = engine.put(vec![po(po_doc("POX", &[(1, "1", "1")]))]);
    assert_eq!(
        suggestions(&out)
            .iter()
            .map(|s| (s.0, s.1.as_str(), s.2))
            .collect::<Vec<_>>(),
        vec![
            (1, "PO-Q", MatchedBy::Amount),
            (2, "POX", MatchedBy::Number),
            (3, "PO-Y", MatchedBy::Amount)
        ]
    );
}

#[test]
fn only_open_pos_of_the_same_tenant_vendor_and_currency_are_suggested() {
    let mut engine = TestEngine::start(WORKERS);
    let same = po_doc("PO-1", &[(1, "40", "2.50")]);
    let out = engine.put(vec![
        po(with(
            po_doc("PO-2", &[(1, "40", "2.50")]),
            "vendor_id",
            json!("V-99"),
        )),
        po(with(
            po_doc("PO-3", &[(1, "40", "2.50")]),
            "currency",
            json!("EUR"),
        )),
        po(with(
            po_doc("PO-4", &[(1, "40", "2.50")]),
            "status",
            json!("closed"),
        )),
        po(with(
            po_doc("PO-5", &[(1, "40", "2.50")]),
            "tenant_id",
            json!("globex"),
        )),
        po(same.clone()),
        invoice_for("PO-X"),
        // A credit memo with PO_NOT_FOUND gets no suggestions.
        invoice(with(
            invoice_doc("CM-1", "PO-X", "2026-11-03", &[(1, "40", "2.50")]),
            "kind",
            json!("credit_memo"),
        )),
    ]);
    assert_eq!(
        out.po_suggestions
            .iter()
            .map(|row| (row.invoice_id.as_str(), row.po_number.as_str()))
            .collect::<Vec<_>>(),
        vec![("INV-1", "PO-1")]
    );
    // Closing PO-1 withdraws it; the invoice finding its PO withdraws all.
    let out = engine.put(vec![po(with(same.clone(), "status", json!("cancelled")))]);
    assert!(out.po_suggestions.is_empty());
    let out = engine.put(vec![po(same), invoice_for("PO-1")]);
    assert!(out.po_suggestions.is_empty());
}
