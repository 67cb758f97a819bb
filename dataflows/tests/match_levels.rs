//! Focused tests for SPEC §12.2: two-, three- and four-way match per PO and
//! per line, `accepted_qty` from inspected receipt lines (returns included),
//! and `QTY_EXCEEDS_ACCEPTED`. Run through decoder, engine and snapshot
//! reads on two workers.

mod common;

use serde_json::{json, Value};
use trimatch_dataflows::model::{ExceptionType::*, MatchLevel};

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

/// A receipt line with its inspected quantity.
fn inspected(receipt: &str, lines: &[(u32, &str, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "receipt_id": receipt, "po_number": "PO-1",
        "lines": lines.iter().map(|(n, q, a)| json!({"po_line_no": n, "quantity": q, "accepted_quantity": a})).collect::<Vec<_>>()
    })
}

#[test]
fn the_line_level_wins_over_the_po_level_which_wins_over_receipt_required() {
    let mut engine = TestEngine::start(WORKERS);
    // receipt_required says three-way; the PO says two-way; line 2 says three-way.
    let mut po_json = with(
        po_doc("PO-1", &[(1, "10", "1"), (2, "10", "1")]),
        "match_level",
        json!("two_way"),
    );
    po_json["receipt_required"] = json!(true);
    po_json["lines"][1]["match_level"] = json!("three_way");
    let out = engine.put(vec![
        po(po_json.clone()),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "5", "1"), (2, "5", "1")],
        )),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(ReceiptMissing, Some(2))]);
    assert_eq!(out.po_line("PO-1", 1).match_level, MatchLevel::TwoWay);
    assert_eq!(out.po_line("PO-1", 2).match_level, MatchLevel::ThreeWay);

    // Without a match_level, receipt_required decides again.
    po_json.as_object_mut().unwrap().remove("match_level");
    po_json["lines"][1]["match_level"] = Value::Null;
    let out = engine.put(vec![po(po_json.clone())]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(ReceiptMissing, Some(1)), (ReceiptMissing, Some(2))]
    );
    po_json["receipt_required"] = json!(false);
    let out = engine.put(vec![po(po_json)]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).match_level, MatchLevel::TwoWay);
}

#[test]
fn two_way_lines_still_check_the_ordered_quantity_and_the_price() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(with(
            po_doc("PO-1", &[(1, "10", "1")]),
            "match_level",
            json!("two_way"),
        )),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "11", "1.50")],
        )),
    ]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(PriceVariance, Some(1)), (QtyExceedsOrdered, Some(1))]
    );
}

#[test]
fn four_way_holds_what_inspection_has_not_accepted_yet() {
    let mut engine = TestEngine::start(WORKERS);
    let four_way = with(
        po_doc("PO-1", &[(1, "10", "1")]),
        "match_level",
        json!("four_way"),
    );
    // 10 received, nothing inspected: billing 6 exceeds accepted 0.
    let out = engine.put(vec![
        po(four_way),
        receipt(inspected("GR-1", &[(1, "10", "0")])),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "6", "1")])),
    ]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsAccepted, Some(1))]
    );
    let raised = out.exception("INV-1", QtyExceedsAccepted, Some(1)).unwrap();
    assert_eq!(raised.expected, Some(dec("0")));
    assert_eq!(raised.actual, Some(dec("6")));

    // Partial inspection: 4 accepted, still short of 6.
    let out = engine.put(vec![receipt(inspected("GR-1", &[(1, "10", "4")]))]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsAccepted, Some(1))]
    );
    assert_eq!(out.po_line("PO-1", 1).accepted_qty, dec("4"));

    // A second receipt's inspection accepts 2 more: 6 accepted, released.
    let out = engine.put(vec![receipt(inspected("GR-2", &[(1, "2", "2")]))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).accepted_qty, dec("6"));
    assert_eq!(out.po_line("PO-1", 1).received_qty, dec("12"));

    // A return of accepted goods takes them off accepted_qty again.
    let out = engine.put(vec![receipt(inspected("GR-3", &[(1, "-1", "-1")]))]);
    assert_eq!(out.po_line("PO-1", 1).accepted_qty, dec("5"));
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsAccepted, Some(1))]
    );
}

#[test]
fn four_way_raises_accepted_beside_received_and_uses_the_line_tolerances() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![
        po(with(
            po_doc("PO-1", &[(1, "10", "1")]),
            "match_level",
            json!("four_way"),
        )),
        receipt(inspected("GR-1", &[(1, "4", "2")])),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "5", "1")])),
    ]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsReceived, Some(1)), (QtyExceedsAccepted, Some(1))]
    );
    // An absolute quantity tolerance of 3 covers both: 5 ≤ 4 + 3 and 5 ≤ 2 + 3.
    let out = engine.put(vec![policy(json!({
        "tenant_id": "acme", "qty_tolerance_abs": "3"
    }))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
}

#[test]
fn nothing_received_is_receipt_missing_not_accepted_on_four_way_lines() {
    let mut engine = TestEngine::start(WORKERS);
    let mut po_json = po_doc("PO-1", &[(1, "10", "1")]);
    po_json["lines"][0]["match_level"] = json!("four_way");
    let out = engine.put(vec![
        po(po_json),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "1", "1")])),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(ReceiptMissing, Some(1))]);
    // Accepted quantity on a line whose PO is not four-way is still summed.
    let out = engine.put(vec![receipt(inspected("GR-1", &[(1, "3", "1")]))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    assert_eq!(out.po_line("PO-1", 1).accepted_qty, dec("1"));
}

#[test]
fn credit_memos_raise_no_accepted_quantity_exception() {
    let mut engine = TestEngine::start(WORKERS);
    let memo = with(
        invoice_doc("CM-1", "PO-1", "2026-11-04", &[(1, "2", "1")]),
        "kind",
        json!("credit_memo"),
    );
    let out = engine.put(vec![
        po(with(
            po_doc("PO-1", &[(1, "10", "1")]),
            "match_level",
            json!("four_way"),
        )),
        receipt(inspected("GR-1", &[(1, "10", "1")])),
        invoice(invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "3", "1")])),
        invoice(memo),
    ]);
    assert_eq!(out.exceptions_of("CM-1"), vec![]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsAccepted, Some(1))]
    );
}
